"""Batched training: many independent models in one compiled loop, each exactly as ``train`` would.

Paper: Alg. A3 (and Sec. 3.1's T trials x {dense, clause, random}). The Boolean models of the
paper have 8 to 32 neurons: a NumPy step of the case-study model is ~0.05 ms of per-call
overhead around ~1 MFLOP of arithmetic. :func:`train_batched` trains a list of models side by
side instead (the T trials, or the three variants of one experiment), one compiled call per
epoch for all of them, and returns what ``[train(m, X, y, cfg, r) for m, r in zip(models,
rngs)]`` returns.

What each model keeps to itself
-------------------------------
Its masks, its initial parameters, its optimizer state (a fresh :class:`~fpe_ref.optim.Adam`,
or the one passed in, whose step count may differ between models), and its shuffling: every
epoch each model draws ``rngs[i].permutation(n)`` in NumPy, exactly the draw ``train`` makes,
so each model sees the same batches in the same order as when trained alone. The models
share ``X, y``, the test set and ``cfg`` (epochs, batch size, learning-rate / penalty
warm-up). Nothing flows between models, so the result does not depend on which other models
are in the batch, on their order, or on the thread count.

Shapes
------
Models of different shapes may be mixed (the case study's phase 2 has dense ``[32, 8, 1]``
and expanded ``[32, 16, 1]`` models): they are grouped by ``(sizes, dtype)`` and each group
is one compiled call per epoch. No padding with inert neurons is used, so nothing has to be
kept inert and no penalty has to exclude padding. Within a group the models may have
different masks and non-zero counts (the stacked storage is padded to the largest count; each
model reads and updates only its own ``nnz`` entries).

Backends
--------
``"numpy"``
    the reference: one model after the other through :func:`fpe_ref.train.train`.
``"numba"``
    :mod:`fpe_ref.fast.fused`'s one-hidden-layer step (gather, forward, loss, backward,
    penalties and Adam in one compiled function) on the sparse CSR storage of
    :mod:`fpe_ref.fast.kernels`: masked weights are not stored, so they cannot become
    non-zero, and each product costs what its stored weights cost. A layer that keeps at least 30% of its entries (a dense parent, or the
    re-sparsified second layer of a wide expansion) is multiplied instead as a dense mirror
    with BLAS, which beats the sparse kernels there (:func:`storage_plan`; BLAS is held to one
    thread meanwhile, :func:`fpe_ref.fast.threads.warn_if_blas_unlimited`). Small models run
    one per thread (a pool of Python threads; the kernels release the GIL) with serial
    products; a large model (or fewer large models than threads) runs its products in
    parallel instead (:func:`kernel_plan`). Each model is trained by one chunk of epochs per
    compiled call (its permutations drawn beforehand, as ``train`` would draw them).
    Supported: ``[d, h, C]`` MLPs without LayerNorm, ``cfg.orth == 0`` and the plain
    :class:`~fpe_ref.optim.Adam`; anything else is an :class:`~fpe_ref.errors.FPEError`
    naming the numpy backend.

Agreement: the numba backend evaluates the same formulas as the NumPy reference, with sums
in another order (storage order, vectorised dot products) and the same Adam bit for bit, so
whole runs agree to rounding amplified by training: in float64, parameters and histories to
~1e-11 after 1000 steps (``tests/fast/test_trainer.py`` asserts 1e-9).

Each epoch's learning rate and penalties come from :func:`fpe_ref.optim.schedule` (Alg. A3
line 8), the one warm-up formula of fpe-ref; the Adam bias corrections are computed here in
Python floats exactly as :meth:`fpe_ref.optim.Adam.step` computes them, and passed in.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fpe_ref.errors import FPEError
from fpe_ref.rng import as_rng
from fpe_ref.fast import fused
from fpe_ref.fast import kernels as K
from fpe_ref.fast.threads import _single_threaded_blas, get_num_threads, warn_if_blas_unlimited
from fpe_ref.optim import Adam, schedule
from fpe_ref.train import History, TrainConfig, check_data

BACKENDS = ("numpy", "numba")
_PARALLEL_WORK = 1 << 21  # (nnz1 + nnz2) * batch above which one model's products run in parallel
# A layer at least this dense (and this large) is multiplied as a dense mirror with BLAS: the
# sparse kernels reach ~1/3 of BLAS's rate per stored weight on these machines.
_DENSE_DENSITY = 0.3
_DENSE_MIN_SIZE = 2048


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise FPEError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def numba_unsupported(model, cfg: TrainConfig, optimizer=None):
    """Why the numba backend cannot train ``model`` under ``cfg`` (None when it can)."""
    if model.n_layers != 2:
        hidden = model.n_layers - 1
        return (f"the numba trainer trains one-hidden-layer MLPs [d, h, C]; this model has {hidden} hidden layers "
                "(use the numpy trainer)")
    if model.layer_norm:
        return "the numba trainer has no LayerNorm (use the numpy trainer)"
    if cfg.orth:
        return "the numba trainer has no orthogonality penalty (orth > 0; use the numpy trainer)"
    if optimizer is not None and type(optimizer) is not Adam:
        return f"the numba trainer continues only a plain fpe_ref.optim.Adam, got {type(optimizer).__name__} (use the numpy trainer)"
    return None


# ----------------------------------------------------------------------------- stacked storage
@dataclass
class _Group:
    """Models of one shape and dtype, stacked for the fused step (:mod:`fpe_ref.fast.fused`)."""

    members: list  # indices into the caller's model list
    sizes: tuple  # (d, h, C)
    dtype: np.dtype
    layers: tuple  # (fused.Layer, fused.Layer) of (W1, b1) and (W2, b2), each field (G, ...)
    moments: tuple  # (fused.Moments, fused.Moments): their Adam moments, each field (G, ...)
    rows: list  # per model and layer: (rows, cols) of the stored entries, for the write-back
    t: np.ndarray  # (G,) Adam step counts
    hyper: np.ndarray  # (G, 5) beta1, beta2, 1 - beta1, 1 - beta2, eps (param dtype)
    betas: list  # (beta1, beta2) per model, as Python floats

    @property
    def G(self) -> int:
        return len(self.members)


def _stack(store_list, dtype):
    """Pad per-model 1-D arrays to one ``(G, max_len)`` array (at least one column)."""
    width = max(1, max(a.shape[0] for a in store_list))
    out = np.zeros((len(store_list), width), dtype=dtype)
    for g, a in enumerate(store_list):
        out[g, :a.shape[0]] = a
    return out


def _build_group(members, models, optimizers, cfg) -> _Group:
    d, h, C = models[members[0]].sizes
    dtype = models[members[0]].dtype
    parts = {k: [] for k in ("IP1", "IX1", "CP1", "RI1", "PM1", "W1", "B1", "IP2", "IX2", "CP2", "RI2", "PM2",
                             "W2", "B2", "MW1", "VW1", "MB1", "VB1", "MW2", "VW2", "MB2", "VB2")}
    rows, t, hyper, betas = [], [], [], []
    for i in members:
        model, opt = models[i], optimizers[i]
        entry = []
        for l, (nW, nb) in enumerate((("W1", "b1"), ("W2", "b2")), start=1):
            W = model.params[nW]
            M = model.masks.get(nW)
            M = np.ones(W.shape, dtype=bool) if M is None else M
            S = K.from_dense(W, M, dtype=dtype)
            r, c = np.nonzero(M)
            entry.append((r, c))
            for key, a in (("IP", S.indptr), ("IX", S.indices), ("CP", S.colptr), ("RI", S.rowind), ("PM", S.perm),
                           ("W", S.data)):
                parts[f"{key}{l}"].append(a)
            parts[f"B{l}"].append(model.params[nb])
            for mv in ("m", "v"):
                state = None if opt is None else getattr(opt, mv)
                parts[f"{mv.upper()}W{l}"].append(np.zeros(S.nnz, dtype) if state is None else state[nW][r, c].astype(dtype))
                parts[f"{mv.upper()}B{l}"].append(np.zeros(h if l == 1 else C, dtype) if state is None
                                                  else state[nb].astype(dtype))
        rows.append(entry)
        b1_, b2_, eps = ((cfg.betas[0], cfg.betas[1], cfg.eps) if opt is None
                         else (opt.betas[0], opt.betas[1], opt.eps))
        t.append(0 if opt is None else int(opt.t))
        betas.append((float(b1_), float(b2_)))
        hyper.append([b1_, b2_, 1.0 - b1_, 1.0 - b2_, eps])
    def pointers(k):  # (G, out + 1) or (G, in + 1): one length for every model
        return np.stack(parts[k]).astype(np.int64)

    def entries(k, dt):  # (G, max nnz): padded
        return _stack(parts[k], dt)

    def vectors(k):  # (G, out)
        return np.ascontiguousarray(np.stack(parts[k]), dtype=dtype)

    layers = tuple(fused.Layer(pointers(f"IP{l}"), entries(f"IX{l}", np.int64), pointers(f"CP{l}"),
                               entries(f"RI{l}", np.int64), entries(f"PM{l}", np.int64), entries(f"W{l}", dtype),
                               vectors(f"B{l}"))
                   for l in (1, 2))
    moments = tuple(fused.Moments(entries(f"MW{l}", dtype), entries(f"VW{l}", dtype), vectors(f"MB{l}"),
                                  vectors(f"VB{l}"))
                    for l in (1, 2))
    return _Group(list(members), (d, h, C), np.dtype(dtype), layers, moments, rows, np.array(t, dtype=np.int64),
                  np.array(hyper, dtype=dtype), betas)


def _model_view(stacked, g):
    """Model ``g``'s row of every field of a stacked named tuple (views, no copies)."""
    return type(stacked)(*(a[g] for a in stacked))


def _write_back(group: _Group, models, optimizers, steps: int, cfg):
    """Copy trained values into the models (in place) and their Adam states; returns the optimizers."""
    out = []
    for g, i in enumerate(group.members):
        model = models[i]
        opt = optimizers[i]
        if opt is None:
            opt = Adam(model.params, cfg.lr, cfg.betas, cfg.eps)
        else:
            _decay_masked_moments(model, opt, steps)
        for l, (nW, nb) in enumerate((("W1", "b1"), ("W2", "b2")), start=1):
            r, c = group.rows[g][l - 1]
            nnz = r.shape[0]
            W = model.params[nW]
            W[...] = 0.0
            layer, mom = group.layers[l - 1], group.moments[l - 1]
            W[r, c] = layer.data[g, :nnz]
            model.params[nb][...] = layer.bias[g]
            for mv, (on_w, on_b) in (("m", (mom.m, mom.m_bias)), ("v", (mom.v, mom.v_bias))):
                state = getattr(opt, mv)
                keep = state[nW][~model.masks[nW]].copy() if nW in model.masks else None
                state[nW][...] = 0.0
                if keep is not None:
                    state[nW][~model.masks[nW]] = keep
                state[nW][r, c] = on_w[g, :nnz]
                state[nb][...] = on_b[g]
        opt.t = int(group.t[g])
        out.append(opt)
    return out


def _decay_masked_moments(model, opt, steps):
    """NumPy's Adam keeps moments at masked positions and decays them (g = 0 there); the
    kernels do not store them. Reproduce that decay exactly (``m <- beta1 m`` each step)."""
    b1, b2 = opt.betas
    for name, M in model.masks.items():
        for state, beta in ((opt.m, b1), (opt.v, b2)):
            vals = state[name][~M]
            if np.any(vals != 0):
                for _ in range(steps):
                    vals *= beta
                state[name][~M] = vals


# ----------------------------------------------------------------------------- planning
def kernel_plan(models, batch_size: int, n_threads: int | None = None) -> str:
    """``"models"`` (one model per thread, serial products) or ``"single"`` (models one after
    another, parallel products) for one group of same-shaped models.

    Parallel products pay a few microseconds of thread start-up per product; a small model's
    whole step is shorter than that, so small models (or more models than threads) run one
    per thread.
    """
    n_threads = get_num_threads() if n_threads is None else n_threads
    work = max(sum(int(m.masks["W%d" % l].sum()) if "W%d" % l in m.masks else m.params["W%d" % l].size
                   for l in (1, 2)) for m in models) * batch_size
    if len(models) < n_threads and work >= _PARALLEL_WORK:
        return "single"
    return "models"


def storage_plan(group: _Group, storage: str = "auto") -> tuple:
    """Per layer, whether the fused step multiplies it densely (BLAS on a mirror with zeros
    where masked) rather than with the sparse kernels: ``"auto"`` when at least
    ``_DENSE_DENSITY`` of the layer is stored and it has ``_DENSE_MIN_SIZE`` entries or more
    (a dense parent, the re-sparsified second layer of a wide expansion).

    The plan depends on the shapes only, never on the machine or the environment: the two
    give the same values to rounding, not bit for bit, and a run key names the trainer, not
    the plan. The mirrors' BLAS runs inside numba's parallel loops and must run one thread
    there (:mod:`fpe_ref.fast.threads`)."""
    if storage not in ("auto", "sparse", "dense"):
        raise FPEError(f"storage must be 'auto', 'sparse' or 'dense', got {storage!r}")
    d, h, C = group.sizes
    out = []
    for l, size in ((1, h * d), (2, C * h)):
        if storage != "auto":
            out.append(storage == "dense")
            continue
        density = max(r[l - 1][0].shape[0] for r in group.rows) / size
        out.append(bool(density >= _DENSE_DENSITY and size >= _DENSE_MIN_SIZE))
    return tuple(out)


def _mirrors(group: _Group, dense) -> tuple:
    """Dense copies ``(G, h, d)`` / ``(G, C, h)`` of the layers multiplied densely (else (G, 1, 1))."""
    d, h, C = group.sizes
    out = []
    for l, shape in ((1, (h, d)), (2, (C, h))):
        if not dense[l - 1]:
            out.append(np.zeros((group.G, 1, 1), dtype=group.dtype))
            continue
        W = np.zeros((group.G, *shape), dtype=group.dtype)
        for g in range(group.G):
            r, c = group.rows[g][l - 1]
            W[g, r, c] = group.layers[l - 1].data[g, :r.shape[0]]
        out.append(W)
    return tuple(out)


def _tiles(group: _Group, batch: int, parallel: bool) -> np.ndarray:
    d, h, C = group.sizes
    threads = get_num_threads() if parallel else 1
    itemsize = group.dtype.itemsize
    col1 = max(16, K._L2_TILE_BYTES // max(1, batch * itemsize))
    return np.array([max(1, -(-h // threads)), col1, max(1, -(-C // threads)), col1], dtype=np.int64)


# ----------------------------------------------------------------------------- training
def train_batched(models, X, y, cfg: TrainConfig, rngs, *, X_test=None, y_test=None, optimizers=None,
                  on_epoch=None, backend: str = "numba", plan: str = "auto", storage: str = "auto"):
    """Train every model of ``models`` in place, as ``train`` would one at a time.

    Parameters
    ----------
    models : list of MLP
        Trained in place. Shapes, masks and dtypes may differ (see the module docstring).
    X, y : shared training inputs ``(n, d)`` and labels ``(n,)``.
    cfg : TrainConfig, shared (epochs, batch size, warm-up, penalties).
    rngs : list of numpy Generators, one per model (distinct objects), used only for each
        model's per-epoch ``permutation(n)``, as in ``train``.
    X_test, y_test : optional shared test set, evaluated every ``cfg.eval_every`` epochs.
    optimizers : optional list (None entries allowed) of Adam states to continue from.
    on_epoch : callable(epoch, history), optional; called once per model per epoch.
    backend : "numba" (fused kernels, default) or "numpy" (the reference loop).
    plan : "auto", "models" or "single" (numba only; see :func:`kernel_plan`). Speed only.
    storage : "auto", "sparse" or "dense" (numba only; see :func:`storage_plan`). Speed only.

    Returns
    -------
    list of (optimizer, History), in the order of ``models``.
    """
    check_backend(backend)
    models = list(models)
    rngs = list(rngs)
    if len(rngs) != len(models):
        raise FPEError(f"train_batched needs one rng per model: {len(models)} models, {len(rngs)} rngs")
    for i, r in enumerate(rngs):  # an int seed s shuffles as np.random.default_rng(s)
        try:
            rngs[i] = as_rng(r)
        except FPEError:
            raise FPEError(f"train_batched needs an int seed or a numpy Generator per model; rngs[{i}] is "
                           f"{type(r).__name__} (use fpe_ref.rng.stream(seed, ...) or np.random.default_rng(seed))") from None
    if len({id(r) for r in rngs}) != len(rngs):  # as_rng passes a Generator through: a shared one is caught here
        raise FPEError("train_batched needs a distinct rng object per model (each model shuffles with its own stream)")
    optimizers = [None] * len(models) if optimizers is None else list(optimizers)
    if len(optimizers) != len(models):
        raise FPEError(f"train_batched: {len(models)} models but {len(optimizers)} optimizers")
    if plan not in ("auto", "models", "single"):
        raise FPEError(f"plan must be 'auto', 'models' or 'single', got {plan!r}")
    if not models:
        return []
    if backend == "numpy":
        from fpe_ref.train import train

        return [train(m, X, y, cfg, r, X_test=X_test, y_test=y_test, optimizer=o, on_epoch=on_epoch)
                for m, r, o in zip(models, rngs, optimizers)]
    X = np.asarray(X)
    y = np.asarray(y)
    for i, (m, o) in enumerate(zip(models, optimizers)):
        why = numba_unsupported(m, cfg, o)
        if why is not None:
            raise FPEError(why)
        nonfinite = [k for k, p in m.params.items() if not np.all(np.isfinite(p))]
        if nonfinite:  # before training, so it is not reported as divergence
            raise FPEError(f"model {i}: parameter {nonfinite[0]} contains NaN or inf before training")
        check_data(X, y, m)
        if X_test is not None:
            check_data(np.asarray(X_test), np.asarray(y_test), m, "test")
    if storage not in ("auto", "sparse", "dense"):
        raise FPEError(f"storage must be 'auto', 'sparse' or 'dense', got {storage!r}")
    return _train_numba(models, X, y, cfg, rngs, X_test, y_test, optimizers, on_epoch, plan, storage)


def _map_models(fn, calls):
    """Run ``fn(*a)`` for every argument tuple ``a`` of ``calls`` on up to
    :func:`~fpe_ref.fast.threads.get_num_threads` threads."""
    threads = min(len(calls), get_num_threads())
    if threads <= 1:
        for a in calls:
            fn(*a)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(lambda a: fn(*a), calls):  # re-raises a worker's exception
            pass


_ORDER_ENTRIES = 1 << 22  # int64 entries of the (G, epochs, n) permutations drawn per kernel call (32 MB)


class FusedTrainer:
    """The numba backend's state: models stacked by shape, advanced a chunk of epochs at a time.

    ``train_batched`` uses it for whole runs; ``fpe bench`` times :meth:`run` directly. The
    models' own arrays are untouched until :meth:`write_back`.
    """

    def __init__(self, models, X, y, cfg: TrainConfig, X_test=None, y_test=None, optimizers=None, plan="auto",
                 storage="auto"):
        self.models = list(models)
        self.cfg = cfg
        self.optimizers = [None] * len(self.models) if optimizers is None else list(optimizers)
        self.n = X.shape[0]
        self.steps = -(-self.n // cfg.batch_size)
        self.has_test = X_test is not None
        keys = {}
        for i, m in enumerate(self.models):
            keys.setdefault((tuple(m.sizes), np.dtype(m.dtype).str), []).append(i)
        self.groups = [_build_group(members, self.models, self.optimizers, cfg) for members in keys.values()]
        self.data = {}
        for grp in self.groups:
            dt = grp.dtype
            if dt.str not in self.data:
                Xte = np.zeros((0, X.shape[1])) if X_test is None else X_test
                yte = np.zeros(0) if X_test is None else y_test
                self.data[dt.str] = (np.ascontiguousarray(X, dtype=dt), np.ascontiguousarray(y, dtype=dt),
                                     np.ascontiguousarray(y, dtype=np.int64),
                                     np.ascontiguousarray(Xte, dtype=dt), np.ascontiguousarray(yte, dtype=np.int64))
        B = cfg.batch_size
        self.plans = [kernel_plan([self.models[i] for i in grp.members], B) if plan == "auto" else plan
                      for grp in self.groups]
        self.tiles = [_tiles(grp, B, p == "single") for grp, p in zip(self.groups, self.plans)]
        self.dense = [storage_plan(grp, storage) for grp in self.groups]
        if any(any(d) for d in self.dense):
            warn_if_blas_unlimited()
        self.mirrors = [_mirrors(grp, dense) for grp, dense in zip(self.groups, self.dense)]
        self._bc = {}  # (beta1, beta2, t) -> (1 - beta1^t, sqrt(1 - beta2^t)), Python floats as in Adam.step
        self.epochs_run = 0

    @property
    def chunk(self) -> int:
        """Epochs per kernel call (bounded memory for the drawn permutations)."""
        return max(1, _ORDER_ENTRIES // (len(self.models) * self.n))

    def run(self, epochs, orders):
        """Train the epochs ``epochs`` (1-based numbers, for the warm-up) with ``orders[i]`` of
        shape ``(len(epochs), n)``: model i's permutation of each epoch.

        Returns ``{i: (loss_sum (E,), correct (E,), test_hits (E,), n_test)}`` and ``evals (E,)``.
        """
        cfg, n, steps, B = self.cfg, self.n, self.steps, self.cfg.batch_size
        epochs = list(epochs)
        E = len(epochs)
        sched = [schedule(cfg, e) for e in epochs]  # Alg. A3 line 8: (lr, Penalties) per epoch
        evals = np.array([self.has_test and (e % cfg.eval_every == 0 or e == cfg.epochs) for e in epochs], dtype=bool)
        pens64 = np.array([[p.l1, p.l2] for _, p in sched], dtype=np.float64)
        pens = np.array([[p.l1, 2.0 * p.l2] for _, p in sched], dtype=np.float64)
        results = {}
        for grp, plan, tl, dense, (W1D, W2D) in zip(self.groups, self.plans, self.tiles, self.dense, self.mirrors):
            Xd, yf, yi, Xte, yte = self.data[grp.dtype.str]
            order = np.empty((grp.G, E, n), dtype=np.int64)
            coefs = np.empty((grp.G, E, steps, 2), dtype=np.float64)
            for g, i in enumerate(grp.members):
                order[g] = orders[i]
                b1_, b2_ = grp.betas[g]
                for k, (lr, _) in enumerate(sched):
                    for s in range(steps):
                        t = int(grp.t[g]) + k * steps + s + 1
                        bc = self._bc.get((b1_, b2_, t))
                        if bc is None:
                            bc = self._bc[(b1_, b2_, t)] = (1.0 - b1_**t, (1.0 - b2_**t) ** 0.5)
                        coefs[g, k, s, 0] = lr / bc[0]  # Adam.step: step_size = lr / (1 - beta1^t)
                        coefs[g, k, s, 1] = bc[1]
            loss = np.zeros((grp.G, E))
            correct = np.zeros((grp.G, E))
            hits = np.zeros((grp.G, E), dtype=np.int64)
            coefs_p, pens_p = coefs.astype(grp.dtype), pens.astype(grp.dtype)
            calls = [(Xd, yf, yi, grp.sizes[2] == 1, order[g], B,
                      *(_model_view(L, g) for L in grp.layers), *(_model_view(M, g) for M in grp.moments),
                      fused.Mirrors(dense[0], dense[1], W1D[g], W2D[g]),
                      fused.Schedule(grp.hyper[g], coefs_p[g], pens_p, pens64, evals), Xte, yte, tl,
                      fused.Totals(loss[g], correct[g], hits[g]))
                     for g in range(grp.G)]  # model g's rows of every stacked array (views)
            with _single_threaded_blas(any(dense)):  # BLAS on the mirrors runs inside parallel loops
                if plan == "single":  # one model after another, parallel products
                    for a in calls:
                        fused.model_epochs_parallel(*a)
                else:  # one model per thread (the kernels release the GIL); models share nothing
                    _map_models(fused.model_epochs_serial, calls)
            grp.t += E * steps
            for g, i in enumerate(grp.members):
                results[i] = (loss[g], correct[g], hits[g], Xte.shape[0])
        self.epochs_run += E
        return results, evals

    def write_back(self):
        """Copy the trained values into the models and their Adam states; returns the optimizers."""
        opts = [None] * len(self.models)
        for grp in self.groups:
            for i, o in zip(grp.members, _write_back(grp, self.models, self.optimizers, self.epochs_run * self.steps,
                                                     self.cfg)):
                opts[i] = o
        return opts


def _train_numba(models, X, y, cfg, rngs, X_test, y_test, optimizers, on_epoch, plan, storage="auto"):
    trainer = FusedTrainer(models, X, y, cfg, X_test, y_test, optimizers, plan, storage)
    n = trainer.n
    hists = [History() for _ in models]
    for e0 in range(1, cfg.epochs + 1, trainer.chunk):
        epochs = list(range(e0, min(cfg.epochs, e0 + trainer.chunk - 1) + 1))
        # the draws train() makes, one permutation per epoch from each model's own stream
        orders = [np.stack([r.permutation(n) for _ in epochs]) for r in rngs]
        results, evals = trainer.run(epochs, orders)
        for k, epoch in enumerate(epochs):
            for i, h in enumerate(hists):
                loss, correct, hits, n_test = results[i]
                h.loss.append(float(loss[k]) / n)
                h.train_acc.append(float(correct[k]) / n)
                if evals[k]:
                    h.test_epoch.append(epoch)
                    h.test_acc.append(float(hits[k]) / n_test)
                if not np.isfinite(h.loss[-1]):
                    which = f" (model {i})" if len(models) > 1 else ""
                    raise FPEError(f"training diverged{which}: loss is {h.loss[-1]} at epoch {epoch} (lower the learning rate?)")
            if on_epoch is not None:
                for h in hists:
                    on_epoch(epoch, h)
    return list(zip(trainer.write_back(), hists))
