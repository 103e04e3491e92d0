"""The JAX twin of Alg. A3's training loop: the third peer of ``fpe bench`` (extra ``jax``).

Written the way a JAX user trains many small MLPs: pure functions of parameter pytrees,
``jax.value_and_grad`` for every gradient, ``jax.vmap`` over a leading model axis, and one
``jax.jit`` per epoch in which ``lax.scan`` runs the epoch's batches. It reproduces
:func:`fpe_ref.train.train` (the reference) step for step:

- **Batches.** Each model's epoch order is ``rngs[m].permutation(n)``, drawn on the host as
  :func:`fpe_ref.train.train` draws it; the batches are consecutive slices of it, the last
  one smaller when ``B`` does not divide ``n`` (a DataLoader with ``drop_last=False``). The
  full batches go through ``lax.scan``; a smaller last batch is one more step in the same
  compiled epoch.
- **Loss.** ``data loss + l1 sum|W1| + l2 sum_p sum p^2 + orth ||W1 W1^T - I||_F^2`` on the
  masked weights, the epoch's learning rate and coefficients from
  :func:`fpe_ref.optim.schedule` (Alg. A3 line 8). The data loss is the mean BCE-with-logits
  (``softplus(z) - z y``, whose autograd gradient is ``sigmoid(z) - y`` also at ``z = 0``) for
  one logit and the mean softmax cross-entropy (``logsumexp(z) - z_y``) otherwise; the
  prediction rules are those of :data:`fpe_ref.layers.LOSSES` (``z > 0``; the first argmax).
  ``|W1|`` is written ``W1 * sign(W1)``: the same value, and the gradient ``sign(W1)`` with
  ``sign(0) = 0`` as :func:`fpe_ref.optim.penalty_loss_and_grads` and torch have it (JAX's own
  ``abs`` has derivative 1 at 0).
- **Masks.** A masked weight enters every computation as ``W * M`` (forward and penalties),
  so autograd multiplies its gradient by ``M``, exactly the masked gradient of the reference.
- **Adam** is :class:`fpe_ref.optim.Adam` written out, in its order of operations::

      m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
      p <- p - s_t (m / (sqrt(v) / c_t + eps));  p[~M] <- 0

  with ``s_t = lr / (1 - b1^t)`` and ``c_t = sqrt(1 - b2^t)`` computed on the host in
  float64 for every step ``t`` (counted over all epochs) and rounded to the model's dtype, as
  NumPy rounds a Python float that multiplies a float32 array. Masked weights have
  ``g = m = v = 0`` and stay exactly 0.0; the mask is re-applied after each step anyway, as
  the reference does.

Dtypes: float32 models train in float32. JAX truncates float64 to float32 unless
``jax_enable_x64`` is on, so a float64 model trains inside ``jax.enable_x64(True)`` (a
context, entered around every call that touches its arrays; the process-wide flag is left
as it is). The per-epoch losses are returned per step in the model's dtype and summed on the
host in float64 (``sum_b loss_b |b| / n``, as the reference's ``train_epoch``).
One difference from IEEE arithmetic that no option here changes: XLA's CPU backend flushes
subnormal numbers to zero (``1e-39 * 1.5`` is 0.0 in float32 under ``jax.jit``, 1.5e-39 in
NumPy), so a value that underflows below the smallest normal number (float32: 1.2e-38, e.g.
an Adam second moment ``v = g^2`` of a gradient under 1e-19) is 0 here and not in the
reference. The tests' runs agree to rounding, so it did not matter there; masked weights are
exactly 0 either way.

Compilation: the epoch and the test evaluation are module-level jitted functions whose
static arguments are the network's depth, the loss, the batch size and which penalties are
on, so a second run of the same shapes (another call of :func:`train_many` included) reuses
the compiled code. The first call for new shapes traces and compiles; ``fpe bench`` does that
in an untimed warm-up run and reports its time separately.

Only :mod:`fpe_ref.experiments.bench` uses this module, importing it lazily, so that
fpe-ref itself never needs jax.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fpe_ref.errors import FPEError
from fpe_ref.layers import LOSSES
from fpe_ref.optim import schedule
from fpe_ref.parity import check_many
from fpe_ref.rng import as_rng
from fpe_ref.train import History, check_data


def describe() -> dict:
    """jax and jaxlib versions and the CPU device the twin runs on (for ``bench.json``)."""
    import jaxlib

    return {"version": jax.__version__, "jaxlib": jaxlib.__version__, "default_backend": jax.default_backend(),
            "device": str(_cpu()),
            "threads": ("XLA's CPU client: a thread pool over every core; fpe bench holds it to --threads "
                        "by CPU affinity (fpe_ref.experiments.bench.pinned)")}


def _cpu():
    return jax.devices("cpu")[0]


def _x64(dtype):
    """The context a model of ``dtype`` trains in: ``jax.enable_x64(True)`` for float64, else none."""
    if np.dtype(dtype) != np.float64:
        return contextlib.nullcontext()
    enable = getattr(jax, "enable_x64", None)  # jax >= 0.5: a config context
    if enable is None:  # jax 0.4
        from jax.experimental import enable_x64 as enable
    return enable(True)


# ---------------------------------------------------------------- one model (vmapped below)
def _effective(params, masks):
    """``W * M`` for masked weights, the parameter itself otherwise."""
    return {k: p * masks[k] if k in masks else p for k, p in params.items()}


def forward(p, X, n_layers):
    """Logits ``(n, C)`` of an MLP without LayerNorm: ``h W^T + b`` per layer, ReLU between."""
    h = X
    for l in range(1, n_layers + 1):
        a = h @ p[f"W{l}"].T + p[f"b{l}"]  # (n, out)
        h = jax.nn.relu(a) if l < n_layers else a  # relu's derivative at 0 is 0, as the reference's
    return h


def _bce(z, y):
    """Mean BCE-with-logits of one logit ``(n, 1)``; ``y`` 0/1 in z's dtype."""
    z = z[:, 0]
    return jnp.mean(jax.nn.softplus(z) - z * y)  # softplus(z) = max(z, 0) + log1p(exp(-|z|))


def _xent(z, y):
    """Mean softmax cross-entropy of logits ``(n, C)`` against integer labels ``(n,)``."""
    zy = jnp.take_along_axis(z, y[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(z, axis=1) - zy)


def _predict_bce(z):
    return (z[:, 0] > 0).astype(jnp.int32)


def _predict_xent(z):
    return jnp.argmax(z, axis=1).astype(jnp.int32)  # the first index of the largest, as numpy's


# The keys of fpe_ref.layers.LOSSES: (mean loss, prediction rule).
LOSS_FNS = {"bce": (_bce, _predict_bce), "xent": (_xent, _predict_xent)}
assert set(LOSS_FNS) == set(LOSSES)


def penalty(p, coef, terms):
    """``l1 sum|W1| + l2 sum_p sum p^2 + orth ||W1 W1^T - I||_F^2`` on the (masked) parameters ``p``.

    ``coef`` holds the epoch's ``(l1, l2, orth)`` (traced: the warm-up changes them without
    recompiling); ``terms`` says which of them ``cfg`` switches on (static, as the
    reference's ``if pen.l1:``).
    """
    W1 = p["W1"]
    out = jnp.zeros((), W1.dtype)
    if terms[0]:
        out = out + coef[0] * jnp.sum(W1 * jnp.sign(W1))  # |W1| with d/dW1 = sign(W1), sign(0) = 0
    if terms[1]:
        out = out + coef[1] * sum(jnp.sum(q * q) for q in p.values())
    if terms[2]:
        R = W1 @ W1.T - jnp.eye(W1.shape[0], dtype=W1.dtype)  # (h, h)
        out = out + coef[2] * jnp.sum(R * R)
    return out


def _step(params, m, v, masks, X, y_loss, y, idx, coef, step_size, c2, consts, n_layers, loss, terms):
    """One Alg. A3 step (lines 10-19) of one model on the batch ``idx``.

    Returns the new ``params, m, v``, the step's ``data loss + penalty`` (before the update)
    and its hit count under the prediction rule.
    """
    loss_fn, predict = LOSS_FNS[loss]
    b1, omb1, b2, omb2, eps = consts[0], consts[1], consts[2], consts[3], consts[4]
    Xb, yb = X[idx], y_loss[idx]

    def objective(q):
        p = _effective(q, masks)
        z = forward(p, Xb, n_layers)
        return loss_fn(z, yb) + penalty(p, coef, terms), z

    (total, z), g = jax.value_and_grad(objective, has_aux=True)(params)
    new_p, new_m, new_v = {}, {}, {}
    for k, p in params.items():  # fpe_ref.optim.Adam.step, term by term
        mk = m[k] * b1 + omb1 * g[k]
        vk = v[k] * b2 + omb2 * (g[k] * g[k])
        pk = p - step_size * (mk / (jnp.sqrt(vk) / c2 + eps))
        if k in masks:
            pk = jnp.where(masks[k] != 0, pk, jnp.zeros_like(pk))  # p[~M] = 0
        new_p[k], new_m[k], new_v[k] = pk, mk, vk
    hits = jnp.sum(predict(z) == y[idx])
    return new_p, new_m, new_v, total, hits


# ---------------------------------------------------------------- many models: vmap, scan, jit
@functools.partial(jax.jit, static_argnames=("batch", "n_layers", "loss", "terms"))
def _epoch(params, m, v, masks, X, y_loss, y, order, coef, step_sizes, c2s, consts, *, batch, n_layers, loss,
           terms):
    """One epoch of ``M`` stacked models: every batch of ``order`` ``(M, n)``, in one compiled call.

    ``params``, ``m``, ``v``, ``masks`` are dicts of ``(M, ...)`` arrays; ``X``, ``y`` are
    shared. ``step_sizes`` and ``c2s`` hold Adam's ``s_t`` and ``c_t`` of this epoch's steps.
    Returns the new ``params, m, v``, each step's loss ``(steps, M)`` and the epoch's hit
    count per model ``(M,)``.
    """
    step = jax.vmap(functools.partial(_step, n_layers=n_layers, loss=loss, terms=terms),
                    in_axes=(0, 0, 0, 0, None, None, None, 0, None, None, None, None))
    M, n = order.shape
    nb, rest = divmod(n, batch)

    def body(carry, xs):
        p, m_, v_ = carry
        idx, s, c = xs
        p, m_, v_, total, hits = step(p, m_, v_, masks, X, y_loss, y, idx, coef, s, c, consts)
        return (p, m_, v_), (total, hits)

    carry, totals, hits = (params, m, v), [], []
    if nb:
        full = order[:, :nb * batch].reshape(M, nb, batch).transpose(1, 0, 2)  # (nb, M, B)
        carry, (t, h) = lax.scan(body, carry, (full, step_sizes[:nb], c2s[:nb]))
        totals.append(t)
        hits.append(h)
    if rest:  # the smaller last batch
        carry, (t, h) = body(carry, (order[:, nb * batch:], step_sizes[nb], c2s[nb]))
        totals.append(t[None])
        hits.append(h[None])
    params, m, v = carry
    return params, m, v, jnp.concatenate(totals), jnp.concatenate(hits).sum(axis=0)


@functools.partial(jax.jit, static_argnames=("n_layers", "loss"))
def _hits(params, masks, X, y, *, n_layers, loss):
    """Hit count ``(M,)`` of each of ``M`` stacked models on ``(X, y)``."""
    predict = LOSS_FNS[loss][1]

    def one(p, mk):
        return jnp.sum(predict(forward(_effective(p, mk), X, n_layers)) == y)
    return jax.vmap(one)(params, masks)


def _check_many(models, rngs):
    return check_many(models, rngs, "the JAX twin trains MLPs without LayerNorm")


class JaxTrainer:
    """``M`` MLPs of one shape stacked along a leading model axis, trained by :func:`_epoch`.

    Parameters
    ----------
    models : list of MLP
        The same sizes and dtype, no LayerNorm, dense or masked (masks may differ per model;
        a model without a mask where another has one gets an all-ones mask).
    X, y : training inputs ``(n, d)`` and integer labels ``(n,)``.
    cfg : TrainConfig
    X_test, y_test : optional test set, for :meth:`test_hits`.
    device : ``"cpu"`` (the bench's) or a ``jax.Device``.

    Every result stays on the device (JAX dispatches asynchronously); :meth:`epoch` returns
    device arrays, and nothing waits for the computation until they are read.
    """

    def __init__(self, models, X, y, cfg, *, X_test=None, y_test=None, device="cpu"):
        models = _check_many(models, None)
        X, y = check_data(X, y, models[0])
        if X_test is not None or y_test is not None:
            X_test, y_test = check_data(X_test, y_test, models[0], "test")
        self.models, self.cfg = models, cfg
        self.dtype, self.n_layers, self.loss = models[0].dtype, models[0].n_layers, models[0].loss_name
        self.device = _cpu() if device == "cpu" else device
        self.n, self.t = X.shape[0], 0  # Adam's step count, over every epoch
        self.steps = -(-self.n // cfg.batch_size)
        self.terms = tuple(bool(x) for x in (cfg.l1, cfg.l2, cfg.orth))
        names = list(models[0].params)
        masked = set().union(*(m.masks for m in models))
        with self.x64():
            put = functools.partial(jax.device_put, device=self.device)
            self.params = {k: put(np.stack([m.params[k] for m in models])) for k in names}
            self.masks = {k: put(np.stack([m.masks[k] if k in m.masks else np.ones(m.params[k].shape, bool)
                                           for m in models]).astype(self.dtype)) for k in names if k in masked}
            self.m = {k: jnp.zeros_like(p) for k, p in self.params.items()}
            self.v = {k: jnp.zeros_like(p) for k, p in self.params.items()}
            b1, b2 = cfg.betas
            self.consts = put(np.array([b1, 1.0 - b1, b2, 1.0 - b2, cfg.eps], dtype=self.dtype))
            self.X, self.y, self.y_loss = self._data(X, y)
            self.X_test, self.y_test, _ = (None, None, None) if X_test is None else self._data(X_test, y_test)

    def x64(self):
        """The dtype's context (:func:`_x64`); every method that touches the arrays enters it."""
        return _x64(self.dtype)

    def _data(self, X, y):
        X = jax.device_put(np.ascontiguousarray(X, dtype=self.dtype), self.device)
        y_int = jax.device_put(np.asarray(y).astype(np.int32), self.device)
        return X, y_int, (y_int.astype(self.dtype) if self.loss == "bce" else y_int)

    def epoch(self, epoch: int, orders):
        """Epoch ``epoch = 1..N`` over ``orders`` ``(M, n)`` (one permutation per model).

        Returns the device arrays ``(loss per step (steps, M), hits (M,))``.
        """
        lr, pen = schedule(self.cfg, epoch)  # Alg. A3 line 8
        b1, b2 = self.cfg.betas
        ts = range(self.t + 1, self.t + self.steps + 1)
        self.t += self.steps
        # Adam's bias corrections in float64, as fpe_ref.optim.Adam computes them, then rounded
        step_sizes = np.array([lr / (1.0 - b1**t) for t in ts], dtype=self.dtype)
        c2s = np.array([(1.0 - b2**t) ** 0.5 for t in ts], dtype=self.dtype)
        coef = np.array([pen.l1, pen.l2, pen.orth], dtype=self.dtype)
        with self.x64():
            put = functools.partial(jax.device_put, device=self.device)
            order = put(np.asarray(orders).astype(np.int32))
            self.params, self.m, self.v, losses, hits = _epoch(
                self.params, self.m, self.v, self.masks, self.X, self.y_loss, self.y, order, put(coef),
                put(step_sizes), put(c2s), self.consts, batch=self.cfg.batch_size, n_layers=self.n_layers,
                loss=self.loss, terms=self.terms)
        return losses, hits

    def sync(self):
        """Wait until every epoch dispatched so far has finished (JAX dispatches asynchronously)."""
        jax.block_until_ready((self.params, self.m, self.v))

    def test_hits(self):
        """Hit count per model ``(M,)`` on the test set with the current weights (a device array)."""
        with self.x64():
            return _hits(self.params, self.masks, self.X_test, self.y_test, n_layers=self.n_layers, loss=self.loss)

    def write_back(self):
        """Copy the trained parameters into every model's ``params`` in place (masks re-applied)."""
        with self.x64():
            trained = {k: np.asarray(p) for k, p in self.params.items()}
        for j, model in enumerate(self.models):
            for k, p in trained.items():
                model.params[k][...] = p[j]
            model.apply_masks()


def train_many(models, X, y, cfg, rngs, *, X_test=None, y_test=None, device="cpu") -> list:
    """Train MLPs of one shape in place, all at once: :func:`fpe_ref.train.train` for each.

    The models are stacked (:class:`JaxTrainer`) and every epoch is one jitted call of a
    vmapped step scanned over the epoch's batches (module docstring). Model ``m`` shuffles
    with ``rngs[m].permutation(n)`` once per epoch, as :func:`fpe_ref.train.train` does; the
    warm-up and penalties come from :func:`fpe_ref.optim.schedule`. Losses, hit counts and test
    accuracies stay on the device until training ends (one host synchronisation).

    Parameters
    ----------
    models : list of MLP
        The same sizes and dtype, no LayerNorm, dense or masked (masks may differ per model).
    X, y : training inputs ``(n, d)`` and integer labels ``(n,)``.
    cfg : TrainConfig
    rngs : one Generator (or int seed) per model, for its per-epoch shuffle.
    X_test, y_test : optional test set, evaluated every ``cfg.eval_every`` epochs and at the last.
    device : ``"cpu"`` or a ``jax.Device``.

    Returns
    -------
    list of History, one per model, as :func:`fpe_ref.train.train` records it.
    """
    models = _check_many(models, rngs)
    rngs = [as_rng(r) for r in rngs]
    tr = JaxTrainer(models, X, y, cfg, X_test=X_test, y_test=y_test, device=device)
    n, M = tr.n, len(models)
    losses, hits, test_hits, test_epoch = [], [], [], []
    for epoch in range(1, cfg.epochs + 1):
        loss, h = tr.epoch(epoch, np.stack([r.permutation(n) for r in rngs]))
        losses.append(loss)
        hits.append(h)
        if X_test is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            test_hits.append(tr.test_hits())
            test_epoch.append(epoch)
    # the one host synchronisation: every epoch's numbers at once
    with tr.x64():
        step_loss = np.stack([np.asarray(v, dtype=np.float64) for v in losses]) if losses else \
            np.zeros((0, tr.steps, M))  # (epochs, steps, M)
        hits_np = np.stack([np.asarray(v) for v in hits]) if hits else np.zeros((0, M), np.int64)
        test_np = np.stack([np.asarray(v) for v in test_hits]) if test_hits else np.zeros((0, M), np.int64)
    B = cfg.batch_size
    sizes = np.array([min(B, n - s) for s in range(0, n, B)], dtype=np.float64)  # (steps,)
    loss_np = (step_loss * sizes[None, :, None]).sum(axis=1) / n  # (epochs, M), train_epoch's mean
    bad = np.argwhere(~np.isfinite(loss_np))
    if bad.size:
        e, m = bad[0]
        raise FPEError(f"training diverged: model {m}'s loss is {loss_np[e, m]} at epoch {e + 1} "
                       "(lower the learning rate?)")
    tr.write_back()
    n_test = None if X_test is None else np.shape(X_test)[0]
    return [History(loss=[float(v) for v in loss_np[:, j]], train_acc=[int(v) / n for v in hits_np[:, j]],
                    test_epoch=list(test_epoch),
                    test_acc=[int(v) / n_test for v in test_np[:, j]] if X_test is not None else [])
            for j in range(M)]


def train(model, X, y, cfg, rng, *, X_test=None, y_test=None, device="cpu") -> History:
    """Train one ``model`` in place like :func:`fpe_ref.train.train`: :func:`train_many` of one."""
    return train_many([model], X, y, cfg, [rng], X_test=X_test, y_test=y_test, device=device)[0]
