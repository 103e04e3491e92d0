"""``fpe bench``: what a training step costs, dense vs FPE masked-dense vs FPE sparse (and PyTorch, JAX).

Models (batch 500, float32 and float64; sizes ``[d, h, C]``):

=============  ====================================  =========================================
name           sizes                                 stands for
=============  ====================================  =========================================
boolean        [32, 8, 1], [128, 16, 1]              Sec. 3.1 / 3.2 DNF models
embedding      [512, h, 100], h in {8, 32, 128}      Sec. 3.4 CLIP-embedding classifiers
fashion        [784, 64, 10]                         Sec. 3.3 FashionMNIST MLP
=============  ====================================  =========================================

Rows per model and dtype: the dense parent (NumPy, the reference ``train_step``; and the
numba fused step); for alpha in {2, 4, 8} (alpha <= d) the parent expanded with the random
split (Alg. A1, so the expanded model has exactly the parent's weight count) trained as
masked-dense NumPy and as sparse numba. Each timing is one epoch of ``n_train / 500`` steps
divided by its steps (the batches gathered from a fresh permutation, as ``train`` does, and
the loss / accuracy bookkeeping included), repeated after a warm-up epoch; the table gives
the median with min and max. "x dense" is the median over the NumPy dense parent's median of
the same model and dtype, measured in the same run. With PyTorch installed (extra ``bench``),
the same model trained by the one PyTorch twin, :class:`fpe_ref.parity.torch_ref.TorchTrainer`
(``F.linear`` as ``nn.Linear`` calls it, masks multiplied into the weights each step as
``torch.nn.utils.prune`` applies them, autograd, the fused ``torch.optim.Adam``, the same
warm-up and penalties, no host synchronisation inside an epoch) in the same run, on the
CPU with ``torch.set_num_threads`` equal to ours. With JAX installed (extra ``jax``, also in
``bench``), the same model trained by the JAX twin, :class:`fpe_ref.parity.jax_ref.JaxTrainer`
(autograd, masks multiplied in, Adam written out as :class:`fpe_ref.optim.Adam`; the epoch's
batches ``lax.scan``-ned in one ``jax.jit`` call), on JAX's CPU device: XLA's CPU client runs
its own thread pool over every core, which the bench's thread limits do not reach. A JAX row's
first epoch traces and compiles; it is not timed (``_timed`` warms up first) and its wall
time is the row's ``jit_warmup_s``.

The case study (Sec. 3.1: 5 trials x {dense parent phase 1, then dense / clause / random
phase 2}, 1000 + 1000 epochs, 8000 training samples) is timed end to end: NumPy one model at
a time (the reference, :func:`fpe_ref.train.train`), numba one model at a time (the
``numba`` trainer of :mod:`fpe_ref.experiments.trainers`), numba batched
(:func:`fpe_ref.experiments.case_study.run_trials`), numba with the trials in 2 worker
processes (:func:`fpe_ref.experiments.case_study.run_case_study` with
``runs.local_executor(2)``, files included); and the PyTorch peers: one model at a time
(:func:`fpe_ref.parity.torch_ref.train`), batched (:func:`fpe_ref.parity.torch_ref.train_many`:
each phase's models of one shape stacked and trained by batched matrix products, as a
PyTorch user would train 15 small models) and batched with ``torch.compile`` where it works
on this machine (its compilation is done by a 1-epoch run outside the timing, as numba's);
and the JAX peer, "jax, jit + vmap" (:func:`fpe_ref.parity.jax_ref.train_many`: the same
stacks of models, one jitted epoch of a vmapped step per call; its jit compilation is done by
a 1-epoch-per-phase run outside the timing, ``jax_jit_warmup_s``).
Every way trains the same batches from the same seeds, so the final test accuracies are
compared with NumPy's; only a way that agrees (to one test sample) counts, and the record
names the fastest PyTorch peer and the JAX peer, each with its wall time over our fastest way's.
A peer whose library is not installed (or is switched off: ``torch=False``, ``jax=False``)
has no rows; a missing JAX is named, with the reason, in the case study's ``skipped``.

Physical limit (roofline) of every step row. In the same run, under the bench's thread
limits, :func:`machine_peaks` measures the machine's matmul peak per dtype (FLOP/s: the best
of a few ``np.dot`` of two square ``peak_matrix`` x ``peak_matrix`` matrices, counted as
``2 n^3`` FLOPs) and its memory bandwidth (bytes/s: the best of a few ``np.copyto`` of an
array of ``max(peak_copy_mib MiB, 8 x the last-level cache)`` split over 1 and over
``threads`` Python threads, counted as ``2 x`` its bytes, one read and one write; the reads
of the destination that a write-allocate cache adds are not counted, here as in the steps'
bytes). Each row's work (:func:`step_work`) is that of one training step of
batch ``B`` for a model of widths ``[d, H, C]`` (``H = alpha h`` after expansion), with
``W`` the weights the implementation multiplies (the non-zero weights for the sparse numba
rows; the full dense ``d H + H C`` for the dense and the masked-dense NumPy, PyTorch and JAX
rows, which multiply the zeros too), ``W_1`` those of the first layer, and ``P = W + H + C``
the parameters with the biases:

* ``flops = 6 W B - 2 W_1 B``: per weight and sample the forward 2 (a multiply-add), the
  backward 4 (the weight gradient 2, the input gradient 2), less the first layer's input
  gradient, which no implementation computes (nothing needs ``dL/dX``: the NumPy backward
  skips it, ``need_dx = l > 1``, and so does autograd), so ``6 W B`` would overstate the
  work and understate the limit. The biases, ReLU, loss and Adam's element-wise work
  (O(P + B (H + C)), well under 1% here) are not counted.
* ``bytes = s (8 P + B d + 2 B (H + C))`` with ``s`` the dtype's item size: the parameters,
  their gradients and Adam's two moments each read and written once (``4 x 2 P``), the
  batch's inputs read once (``B d``), and each layer's outputs (``B H`` hidden, ``B C``
  logits) written in the forward pass and read in the backward once (``2 B (H + C)``);
  labels, masks and the sparse kernels' indices are not counted.

``limit_ms = max(flops / matmul peak, bytes / bandwidth)`` (``limit_bound`` says which side
binds) and ``fraction_of_limit = limit_ms / ms_median``, the fraction of the machine's
physical limit the row reaches (1 would be a step at the peak). The bound uses the DRAM
bandwidth although the small models' working sets stay in cache, so it is loose for them.
The peaks are measured once, in seconds: on a machine shared with other jobs they can come
out low (one busy core halves the 2-core matmul peak), and a row timed while the machine was
freer can then show a fraction above 1.
``machine_peaks`` is in ``bench.json``; ``flops``, ``bytes``, ``limit_ms``, ``limit_bound`` and
``fraction_of_limit`` are in every step row.

``--quick`` (:meth:`BenchConfig.make`) measures less, in under two minutes on 2 cores: the
models ``[32, 8, 1]``, ``[512, 32, 100]`` and ``[784, 64, 10]``, float32, alpha 2 and 8,
epochs of 8 steps (4000 samples), at least 2 timed epochs and up to 0.2 s per row, a
20 + 20-epoch case study of 2 trials, and no PyTorch one-model-at-a-time case-study way
(the batched PyTorch peers and the JAX peer still run; ``skipped`` in the record says so).

Everything runs on this machine's CPU in this process; the load average (before and after),
the thread counts of numba, BLAS (via threadpoolctl when installed) and torch, and the jax /
jaxlib versions and device are recorded in ``bench.json``: on a machine shared with other
jobs the numbers are indicative.
"""

from __future__ import annotations

import functools
import json
import contextlib
import os
import platform
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from fpe_ref.errors import FPEError
from fpe_ref.expand import expand
from fpe_ref.experiments import trainers
from fpe_ref.fast import kernels as K
from fpe_ref.fast.trainer import FusedTrainer, train_batched
from fpe_ref.mlp import MLP
from fpe_ref.optim import Adam, schedule
from fpe_ref.rng import as_rng
from fpe_ref.train import TrainConfig, train, train_epoch

FORMAT_VERSION = 1
MODELS = (("boolean", 32, 8, 1), ("boolean", 128, 16, 1), ("embedding", 512, 8, 100), ("embedding", 512, 32, 100),
          ("embedding", 512, 128, 100), ("fashion", 784, 64, 10))
QUICK_MODELS = (("boolean", 32, 8, 1), ("embedding", 512, 32, 100), ("fashion", 784, 64, 10))


@dataclass(frozen=True)
class BenchConfig:
    """What ``fpe bench`` measures."""

    quick: bool = False  # fewer repetitions, a shorter case study
    dtypes: tuple = ("float32", "float64")
    alphas: tuple = (2, 4, 8)
    batch_size: int = 500  # B (A.3.1)
    n_train: int = 8000  # training samples: 16 steps per epoch, as the case study (quick: 4000, 8 steps)
    min_reps: int = 5  # timed epochs per row, at least (quick: 2)
    seconds_per_row: float = 2.0  # and up to this much time per row (quick: 0.2)
    threads: int = 0  # numba / BLAS / torch threads; 0: os.cpu_count()
    case_study_epochs: int = 1000  # per phase (quick: 20)
    case_study_trials: int = 5  # (quick: 2)
    case_study_torch_one: bool = True  # the PyTorch one-model-at-a-time case-study way (quick: skipped)
    torch: bool = True  # include PyTorch when it is installed
    jax: bool = True  # include JAX when it is installed (extra jax)
    seed: int = 0
    models: tuple | None = None  # (name, d, h, C) per model; None: MODELS (quick: QUICK_MODELS)
    peak_matrix: int = 2048  # n of the n x n matmuls of machine_peaks
    peak_copy_mib: int = 256  # MiB copied by machine_peaks, at least (and 8 x the last-level cache)

    @classmethod
    def make(cls, quick=False, **kw):
        """The full bench, or with ``quick`` the small one (options in ``kw`` still apply)."""
        if quick:
            kw = {"models": QUICK_MODELS, "dtypes": ("float32",), "alphas": (2, 8), "n_train": 4000, "min_reps": 2,
                  "seconds_per_row": 0.2, "case_study_epochs": 20, "case_study_trials": 2,
                  "case_study_torch_one": False, **kw}
        return cls(quick=quick, **kw)

    def model_list(self) -> tuple:
        return MODELS if self.models is None else tuple(tuple(m) for m in self.models)


# ----------------------------------------------------------------------------- environment
def _threads(cfg: BenchConfig) -> int:
    return cfg.threads or os.cpu_count() or 1


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _jax_ref(cfg: BenchConfig):
    """``(jax_ref, None)``: the JAX twin :mod:`fpe_ref.parity.jax_ref`, imported only here and
    only with ``cfg.jax``; ``(None, why)`` where it is switched off or jax is not installed."""
    if not cfg.jax:
        return None, "switched off (jax=False)"
    try:
        from fpe_ref.parity import jax_ref
    except ImportError as exc:
        return None, f"jax is not installed ({exc}; the extra jax: pip install 'fpe-ref[jax]')"
    return jax_ref, None


def environment(cfg: BenchConfig) -> dict:
    """Machine, load average and the thread count of every library that runs a kernel."""
    env = {"load_average": list(os.getloadavg()), "cpu_count": os.cpu_count(), "machine": platform.machine(),
           "python": platform.python_version(), "numpy": np.__version__, "numba_threads": K.get_num_threads(),
           "threads": _threads(cfg), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        env["cpu"] = names[0] if names else None
    except OSError:
        env["cpu"] = None
    try:
        from threadpoolctl import threadpool_info

        env["blas"] = [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "threading_layer")}
                       for i in threadpool_info()]
    except ImportError:
        env["blas"] = "threadpoolctl not installed: BLAS kernel and thread count not recorded"
    torch = _torch() if cfg.torch else None
    env["torch"] = None if torch is None else {"version": torch.__version__, "threads": torch.get_num_threads()}
    jax_ref, why = _jax_ref(cfg)
    env["jax"] = why if jax_ref is None else jax_ref.describe()  # versions and device, or why there is no JAX
    env.update(K.numba_info())
    return env


class _ThreadLimits:
    """numba, BLAS (threadpoolctl, when installed) and torch threads, for the bench only."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.numba_before = K.get_num_threads()
        K.set_num_threads(min(self.n, K.max_threads()))
        try:
            from threadpoolctl import threadpool_limits

            import scipy.linalg  # noqa: F401  loads SciPy's BLAS (numba's np.dot calls it) so it is limited too
            self.blas = threadpool_limits(self.n)
        except ImportError:
            self.blas = None
        torch = _torch()
        self.torch_before = torch.get_num_threads() if torch is not None else None
        if torch is not None:
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        K.set_num_threads(self.numba_before)
        if self.blas is not None:
            self.blas.restore_original_limits()
        if self.torch_before is not None:
            _torch().set_num_threads(self.torch_before)


# ----------------------------------------------------------------------------- physical limits
def _last_level_cache_bytes() -> int:
    """The largest CPU cache of cpu0 (Linux sysfs); 0 where unknown."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        names = os.listdir(base)
    except OSError:
        return 0
    for name in names:
        try:
            with open(os.path.join(base, name, "size")) as f:
                txt = f.read().strip()
        except OSError:
            continue
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(txt[-1:].upper(), 1)
        try:
            best = max(best, int(txt.rstrip("KMGkmg")) * mult)
        except ValueError:
            continue
    return best


def _best_seconds(fn, reps):
    fn()  # warm-up: page faults, BLAS buffers
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def machine_peaks(threads: int, n: int = 2048, copy_mib: int = 256, reps: int = 5) -> dict:
    """This machine's matmul peak per dtype (FLOP/s) and memory bandwidth (bytes/s), measured now.

    Call it with the bench's thread limits in force (:class:`_ThreadLimits`): BLAS then uses
    ``threads`` threads. The matmul peak is the best of ``reps`` ``np.dot`` of two ``n x n``
    matrices (``2 n^3`` FLOPs) after a warm-up; the bandwidth the best of ``reps`` copies
    ``np.copyto(b, a)`` of a float64 array of ``max(copy_mib MiB, 8 x the last-level cache)``
    (``2 x`` its bytes: read a, write b), in 1 thread and split over ``threads`` Python threads
    (NumPy's copy releases the GIL), the faster counted.
    """
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    out = {"matmul_n": n, "matmul_flops_per_s": {}}
    for dts in ("float32", "float64"):
        a = rng.standard_normal((n, n)).astype(dts)
        b = rng.standard_normal((n, n)).astype(dts)
        c = np.empty_like(a)
        out["matmul_flops_per_s"][dts] = 2.0 * n**3 / _best_seconds(lambda: np.dot(a, b, out=c), reps)
    llc = _last_level_cache_bytes()
    nbytes = max(copy_mib * 2**20, 8 * llc)
    src = np.empty(nbytes // 8)
    src.fill(1.0)  # touch every page
    dst = np.empty_like(src)
    bw = {}
    for t in sorted({1, max(1, threads)}):
        srcs, dsts = np.array_split(src, t), np.array_split(dst, t)
        with ThreadPoolExecutor(t) as ex:
            bw[t] = 2.0 * src.nbytes / _best_seconds(lambda: list(ex.map(np.copyto, dsts, srcs)), reps)
    out.update({"copy_bytes": int(src.nbytes), "last_level_cache_bytes": llc,
                "copy_bytes_per_s_by_threads": {str(t): v for t, v in bw.items()},
                "bandwidth_bytes_per_s": max(bw.values()), "threads": threads})
    return out


def step_work(sizes, weights, batch: int, itemsize: int) -> tuple:
    """``(flops, bytes)`` of one training step (the module docstring says what they count).

    ``sizes`` are the widths ``[d, h_1, ..., C]`` of the model as trained, ``weights`` the
    weight entries each layer multiplies (the non-zeros for a sparse layout, every entry for a
    dense or masked-dense one), first layer first: ``flops = B (6 W - 2 W_1)`` and
    ``bytes = s (8 P + B d + 2 B sum(h_1..C))`` with ``W = sum(weights)`` and
    ``P = W + sum(h_1..C)`` (weights and biases).
    """
    weights = [int(w) for w in weights]
    outs = sum(sizes[1:])
    total = sum(weights)
    params = total + outs
    flops = batch * (6 * total - 2 * weights[0])
    nbytes = itemsize * (8 * params + batch * sizes[0] + 2 * batch * outs)
    return int(flops), int(nbytes)


def roofline(flops, nbytes, ms_median, peaks, dtype) -> dict:
    """A row's physical limit: ``limit_ms = max(flops / peak, bytes / bandwidth)`` and the fraction reached."""
    compute_ms = flops / peaks["matmul_flops_per_s"][dtype] * 1e3
    memory_ms = nbytes / peaks["bandwidth_bytes_per_s"] * 1e3
    limit = max(compute_ms, memory_ms)
    return {"flops": int(flops), "bytes": int(nbytes), "limit_ms": limit,
            "limit_bound": "compute" if compute_ms >= memory_ms else "memory",
            "fraction_of_limit": limit / ms_median if ms_median > 0 else None}


# ----------------------------------------------------------------------------- data and models
def bench_data(d, C, n, dtype, rng):
    """Gaussian inputs and uniform labels: the cost of a step does not depend on the data."""
    rng = as_rng(rng)  # an int seed or a Generator
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, max(2, C), n)
    return X, y


def _models(d, h, C, dtype, alphas, rng):
    parent = MLP.init([d, h, C], rng, dtype=dtype)
    out = [("dense parent", None, parent)]
    for a in alphas:
        if a <= d:
            out.append((f"FPE alpha={a}", a, expand(parent, a, "random", rng).model))
    return out


def _timed(run_epoch, cfg: BenchConfig, steps):
    """ms per step of each timed epoch: one warm-up epoch, then min_reps .. until seconds_per_row."""
    run_epoch()
    times = []
    start = time.perf_counter()
    while len(times) < cfg.min_reps or (time.perf_counter() - start < cfg.seconds_per_row and len(times) < 200):
        t0 = time.perf_counter()
        run_epoch()
        times.append((time.perf_counter() - t0) / steps * 1e3)
    return times


def _numpy_epoch(model, X, y, tcfg, rng):
    opt = Adam(model.params, tcfg.lr, tcfg.betas, tcfg.eps)
    lr, pen = schedule(tcfg, 1)

    def run():  # one epoch of fpe_ref.train.train
        return train_epoch(model, opt, X, y, rng.permutation(X.shape[0]), tcfg.batch_size, lr, pen)[0]
    return run


def _numba_epoch(model, X, y, tcfg, rng):
    trainer = FusedTrainer([model], X, y, tcfg)
    n = X.shape[0]

    def run():
        trainer.run([1], [rng.permutation(n)[None]])
    return run, trainer.plans[0]


# ----------------------------------------------------------------------------- PyTorch
def _torch_ref():
    """The PyTorch twin, :mod:`fpe_ref.parity.torch_ref` (imported only when torch is)."""
    from fpe_ref.parity import torch_ref

    return torch_ref


def _torch_epoch(model, X, y, tcfg, rng):
    tr = _torch_ref().TorchTrainer(model, X, y, tcfg)

    def run():
        tr.epoch(1, rng.permutation(X.shape[0]))
    return run


# ----------------------------------------------------------------------------- JAX
@contextlib.contextmanager
def pinned(n: int):
    """Every thread of this process on the first ``n`` of its CPUs while the block runs.

    XLA's CPU client keeps a thread pool over every core and has no setting that limits it
    (``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` leaves its matrix products on two
    threads here), so the JAX peer is held to ``--threads`` by CPU affinity, thread by
    thread (a thread started inside the block inherits it); afterwards every thread gets the
    affinity it had. ``n`` at least the CPUs available: nothing is changed.
    """
    avail = sorted(os.sched_getaffinity(0))
    if n >= len(avail):
        yield
        return
    cpus = set(avail[:n])
    before = {}
    for t in os.listdir("/proc/self/task"):
        before[int(t)] = os.sched_getaffinity(int(t))
        os.sched_setaffinity(int(t), cpus)
    try:
        yield
    finally:
        for t in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(t), before.get(int(t), set(avail)))
            except OSError:  # the thread has ended
                pass


def _jax_epoch(jax_ref, model, X, y, tcfg, rng):
    """One epoch of :class:`fpe_ref.parity.jax_ref.JaxTrainer` for ``model``, and the wall time
    of its first epoch (tracing and jit compilation included), run here, before any timing."""
    tr = jax_ref.JaxTrainer([model], X, y, tcfg)

    def run():
        tr.epoch(1, rng.permutation(X.shape[0])[None])
        tr.sync()  # JAX dispatches asynchronously: the epoch has ended when its results exist
    t0 = time.perf_counter()
    run()
    return run, time.perf_counter() - t0


# ----------------------------------------------------------------------------- steps
def bench_steps(cfg: BenchConfig, log=print, peaks=None) -> list:
    """One record per (model, dtype, variant, implementation); with ``peaks``
    (:func:`machine_peaks`) each with its physical limit (:func:`roofline`)."""
    rows = []
    torch = _torch() if cfg.torch else None
    jax_ref, why = _jax_ref(cfg)
    if jax_ref is None and cfg.jax:
        log(f"  jax rows: skipped ({why})")
    for name, d, h, C in cfg.model_list():
        for dts in cfg.dtypes:
            dtype = np.dtype(dts)
            rng = np.random.default_rng([cfg.seed, d, h, C])
            X, y = bench_data(d, C, cfg.n_train, dtype, rng)
            tcfg = TrainConfig(epochs=1, warmup_epochs=1, batch_size=cfg.batch_size)
            steps = -(-cfg.n_train // cfg.batch_size)
            dense_ms = None
            for variant, alpha, model in _models(d, h, C, dtype, cfg.alphas, rng):
                nnz = model.ledger().per_layer
                impls = [("numpy", "dense" if alpha is None else "masked-dense"), ("numba", "sparse")]
                if torch is not None:
                    impls.append(("torch", "dense" if alpha is None else "masked-dense"))
                if jax_ref is not None:
                    impls.append(("jax", "dense" if alpha is None else "masked-dense"))
                for impl, layout in impls:
                    m = model.copy()
                    plan = warmup_s = None
                    if impl == "numpy":
                        run = _numpy_epoch(m, X, y, tcfg, np.random.default_rng(1))
                    elif impl == "numba":
                        run, plan = _numba_epoch(m, X, y, tcfg, np.random.default_rng(1))
                    elif impl == "torch":
                        run = _torch_epoch(m, X, y, tcfg, np.random.default_rng(1))
                    else:
                        with pinned(_threads(cfg)):
                            run, warmup_s = _jax_epoch(jax_ref, m, X, y, tcfg, np.random.default_rng(1))
                    with pinned(_threads(cfg)) if impl == "jax" else contextlib.nullcontext():
                        ms = _timed(run, cfg, steps)
                    med = float(np.median(ms))
                    if impl == "numpy" and alpha is None:
                        dense_ms = med
                    row = {"model": f"{name} [{d}, {h}, {C}]", "d": d, "h": h, "C": C, "dtype": dts, "variant": variant,
                           "alpha": alpha, "impl": impl, "layout": layout, "plan": plan, "hidden": model.sizes[1],
                           "nnz": nnz, "ms_median": med, "ms_min": float(np.min(ms)), "ms_max": float(np.max(ms)),
                           "reps": len(ms), "x_dense": med / dense_ms if dense_ms else None}
                    if impl == "jax":  # its first epoch (trace + compile + run), not timed above
                        row["jit_warmup_s"] = warmup_s
                    # the dense and masked-dense layouts multiply every entry, zeros included
                    w = [nnz[f"W{l}"] if layout == "sparse" else model.params[f"W{l}"].size
                         for l in range(1, model.n_layers + 1)]
                    flops, nbytes = step_work(model.sizes, w, cfg.batch_size, dtype.itemsize)
                    row.update(roofline(flops, nbytes, med, peaks, dts) if peaks else
                               {"flops": flops, "bytes": nbytes, "limit_ms": None, "limit_bound": None,
                                "fraction_of_limit": None})
                    rows.append(row)
                    lim = f"  limit {row['limit_ms']:.3f} ms ({row['fraction_of_limit']:.1%})" if peaks else ""
                    log(f"  {row['model']:<22} {dts:<8} {variant:<14} {impl:<6} {layout:<13} {med:9.3f} ms "
                        f"[{row['ms_min']:.3f}, {row['ms_max']:.3f}]  x{row['x_dense']:.2f}{lim}")
    return rows


# ----------------------------------------------------------------------------- case study
def _case_study_loop(cs, train_fn):
    """The Sec. 3.1 workflow (as :func:`fpe_ref.experiments.case_study.run_trials`) one model at a time;
    returns ``{variant: [final test acc per trial]}``."""
    from fpe_ref.experiments.case_study import VARIANTS, make_data
    from fpe_ref.rng import stream

    tr, te, groups = make_data(cs)
    tcfg1 = replace(cs.train, epochs=cs.dense_epochs)
    tcfg2 = replace(cs.train, epochs=cs.fpe_epochs)
    accs = {v: [] for v in VARIANTS}
    for t in range(cs.trials):
        parent = MLP.init([cs.m, cs.hidden, 1], stream(cs.seed, "init", t))
        train_fn(parent, tr.X, tr.y, tcfg1, stream(cs.seed, "shuffle", t, "dense-phase1"), te.X, te.y)
        for v in VARIANTS:
            model = parent.copy() if v == "dense" else expand(parent, cs.alpha, v, stream(cs.seed, "split", t, v),
                                                              groups=groups, out_scale=cs.out_scale).model
            train_fn(model, tr.X, tr.y, tcfg2, stream(cs.seed, "shuffle", t, v), te.X, te.y)
            accs[v].append(model.accuracy(te.X, te.y))
    return accs


def _case_study_torch_batched(cs, compile=False):
    """:func:`_case_study_batched` by :func:`fpe_ref.parity.torch_ref.train_many` (``compile``:
    under ``torch.compile``)."""
    return _case_study_batched(cs, functools.partial(_torch_ref().train_many, compile=compile))


def _case_study_jax_batched(jax_ref, cs):
    """:func:`_case_study_batched` by :func:`fpe_ref.parity.jax_ref.train_many` (jit + vmap)."""
    return _case_study_batched(cs, jax_ref.train_many)


def _case_study_batched(cs, train_many):
    """The Sec. 3.1 workflow as :func:`~fpe_ref.experiments.case_study.run_trials` batches it,
    trained by a peer's ``train_many(models, X, y, cfg, rngs, X_test=, y_test=)``: one call per
    phase and shape (the parents; the dense continuations; the clause and random splits, of one
    shape), each model with run_trials' streams. Returns ``{variant: [final test acc per trial]}``."""
    from fpe_ref.experiments.case_study import VARIANTS, make_data
    from fpe_ref.rng import stream

    tr, te, groups = make_data(cs)
    tcfg1 = replace(cs.train, epochs=cs.dense_epochs)
    tcfg2 = replace(cs.train, epochs=cs.fpe_epochs)
    ts = range(cs.trials)
    parents = [MLP.init([cs.m, cs.hidden, 1], stream(cs.seed, "init", t)) for t in ts]
    train_many(parents, tr.X, tr.y, tcfg1, [stream(cs.seed, "shuffle", t, "dense-phase1") for t in ts],
               X_test=te.X, y_test=te.y)
    dense = [p.copy() for p in parents]
    splits = [(t, v, expand(parents[t], cs.alpha, v, stream(cs.seed, "split", t, v), groups=groups,
                            out_scale=cs.out_scale).model) for t in ts for v in VARIANTS if v != "dense"]
    train_many(dense, tr.X, tr.y, tcfg2, [stream(cs.seed, "shuffle", t, "dense") for t in ts],
               X_test=te.X, y_test=te.y)
    train_many([m for _, _, m in splits], tr.X, tr.y, tcfg2, [stream(cs.seed, "shuffle", t, v) for t, v, _ in splits],
               X_test=te.X, y_test=te.y)
    accs = {"dense": [m.accuracy(te.X, te.y) for m in dense]}
    for t, v, m in splits:  # trial-major: each variant's list is in trial order
        accs.setdefault(v, []).append(m.accuracy(te.X, te.y))
    return {v: accs[v] for v in VARIANTS}


def _case_study_in_workers(cs, jobs):
    """:func:`~fpe_ref.experiments.case_study.run_case_study` with ``jobs`` worker processes into a
    temporary folder (the workers' start and the files included); ``{variant: [acc per trial]}``."""
    import tempfile

    from fpe_ref.experiments.case_study import VARIANTS, run_case_study
    from fpe_ref.experiments.runs import local_executor

    with tempfile.TemporaryDirectory() as tmp, local_executor(jobs) as executor:
        summary, _ = run_case_study(cs, tmp, log=lambda s: None, executor=executor)
    return {v: summary["models"][v]["accs"] for v in VARIANTS}


# the ways of bench_case_study that are ours; every other way is a peer: PyTorch ("torch, ...") or JAX ("jax, ...")
OURS = ("numpy, one model at a time", "numba, one model at a time", "numba, batched",
        "numba, trials in 2 worker processes")
TORCH_COMPILE = "torch, batched + torch.compile"
JAX = "jax, jit + vmap"


def _fastest(wall, names):
    names = [n for n in names if n in wall]
    return min(names, key=wall.get) if names else None


def bench_case_study(cfg: BenchConfig, log=print) -> dict:
    """Wall time of the case study: ours (NumPy, numba one at a time / batched / in workers), the PyTorch and JAX peers.

    The record: ``wall_s`` and ``accs`` per way that ran, ``max_acc_difference_vs_numpy``,
    ``acc_tolerance`` (one test sample) and ``agrees`` (difference within it), ``skipped``
    (way -> why it did not run, e.g. torch.compile failing here, jax not installed),
    ``torch_compile_warmup_s`` and ``jax_jit_warmup_s`` (the untimed compiling runs) and
    ``fastest`` (our fastest agreeing way; the fastest agreeing PyTorch peer and the JAX peer
    where it agrees, each with its time over ours).
    """
    from fpe_ref.experiments.case_study import VARIANTS, CaseStudyConfig, make_data, run_trials

    e = cfg.case_study_epochs
    cs = CaseStudyConfig(dense_epochs=e, fpe_epochs=e, trials=cfg.case_study_trials, seed=cfg.seed,
                         train=TrainConfig(warmup_epochs=e))
    numba = trainers.get("numba", "case_study")

    def numpy_one(m, X, y, c, r, Xt, yt):
        train(m, X, y, c, r, X_test=Xt, y_test=yt)

    def numba_one(m, X, y, c, r, Xt, yt):
        numba.train(m, X, y, c, r, X_test=Xt, y_test=yt)

    def batched():
        tr, te, groups = make_data(cs)
        out = run_trials(cs, list(range(cs.trials)), tr, te, groups, trainer="numba")
        return {v: [rec["models"][v]["after"]["test_acc"] for rec, _, _ in out] for v in VARIANTS}

    ways = {"numpy, one model at a time": lambda: _case_study_loop(cs, numpy_one),
            "numba, one model at a time": lambda: _case_study_loop(cs, numba_one),
            "numba, batched": batched,
            "numba, trials in 2 worker processes": lambda: _case_study_in_workers(cs, 2)}
    out = {"epochs_per_phase": e, "trials": cs.trials, "runs": cs.trials * (1 + len(VARIANTS)),
           "steps": cs.trials * (1 + len(VARIANTS)) * e * -(-int(cs.n_samples * (1 - cs.test_fraction)) // 500),
           "wall_s": {}, "accs": {}, "skipped": {}, "torch_compile_warmup_s": None, "jax_jit_warmup_s": None}
    if cfg.torch and _torch() is not None:
        torch_ref = _torch_ref()

        def torch_one(m, X, y, c, r, Xt, yt):
            torch_ref.train(m, X, y, c, r, X_test=Xt, y_test=yt)
        if cfg.case_study_torch_one:
            ways["torch, one model at a time"] = lambda: _case_study_loop(cs, torch_one)
        else:
            out["skipped"]["torch, one model at a time"] = "not run in --quick (case_study_torch_one=False)"
            log("  case study, torch, one model at a time: skipped (--quick)")
        ways["torch, batched (bmm)"] = lambda: _case_study_torch_batched(cs)
        # compile outside the timing, on the shapes of the timed run (1 epoch per phase)
        t0 = time.perf_counter()
        try:
            _case_study_torch_batched(replace(cs, dense_epochs=1, fpe_epochs=1), compile=True)
        except FPEError as exc:
            out["skipped"][TORCH_COMPILE] = str(exc)
            log(f"  case study, {TORCH_COMPILE}: skipped ({exc})")
        else:
            out["torch_compile_warmup_s"] = time.perf_counter() - t0
            ways[TORCH_COMPILE] = lambda: _case_study_torch_batched(cs, compile=True)
    jax_ref, why = _jax_ref(cfg)
    if jax_ref is not None:
        # jit-compile outside the timing: the timed run's shapes, 1 epoch per phase
        t0 = time.perf_counter()
        with pinned(_threads(cfg)):
            _case_study_jax_batched(jax_ref, replace(cs, dense_epochs=1, fpe_epochs=1))
        out["jax_jit_warmup_s"] = time.perf_counter() - t0

        def jax_way():
            with pinned(_threads(cfg)):
                return _case_study_jax_batched(jax_ref, cs)
        ways[JAX] = jax_way
    elif cfg.jax:
        out["skipped"][JAX] = why
        log(f"  case study, {JAX}: skipped ({why})")
    # compile the numba kernels outside the timing (a 2-epoch run)
    small = replace(cs, dense_epochs=1, fpe_epochs=1, trials=2)
    tr, te, groups = make_data(small)
    run_trials(small, [0, 1], tr, te, groups, trainer="numba")
    _case_study_loop(replace(small, trials=1), numba_one)
    for name, fn in ways.items():
        t0 = time.perf_counter()
        accs = fn()
        out["wall_s"][name] = time.perf_counter() - t0
        out["accs"][name] = accs
        log(f"  case study, {name}: {out['wall_s'][name]:.1f} s")
    # small's test set is cs's (the same data options)
    out.update(_summarize_case_study(out["wall_s"], out["accs"], te.X.shape[0]))
    return out


def _summarize_case_study(wall_s, accs, n_test) -> dict:
    """Each way's final test accuracies against NumPy's, which ways agree, and the fastest of each side.

    A way agrees when no accuracy differs from NumPy's by more than one test sample (a
    prediction exactly at the decision boundary may flip with rounding); only agreeing ways
    are named fastest.
    """
    from fpe_ref.experiments.case_study import VARIANTS

    ref = accs["numpy, one model at a time"]
    diff = {name: max(abs(a - b) for v in VARIANTS for a, b in zip(ref[v], acc[v])) for name, acc in accs.items()}
    tol = 1.0 / n_test
    agrees = {name: round(d * n_test) <= 1 for name, d in diff.items()}  # d * n_test: differing samples
    counted = [name for name, ok in agrees.items() if ok]
    ours = _fastest(wall_s, [n for n in counted if n in OURS])
    fastest = {"ours": ours, "ours_s": wall_s.get(ours)}
    for lib in ("torch", "jax"):  # the fastest agreeing peer of each library
        peer = _fastest(wall_s, [n for n in counted if n not in OURS and n.startswith(lib + ",")])
        fastest.update({lib: peer, f"{lib}_s": wall_s.get(peer),
                        f"{lib}_over_ours": wall_s[peer] / wall_s[ours] if ours and peer else None})
    return {"max_acc_difference_vs_numpy": diff, "acc_tolerance": tol, "agrees": agrees, "fastest": fastest}


def case_study_lines(cs) -> list:
    """The case study as text: one line per way (wall time, accuracy difference from NumPy,
    whether it counts), the ways skipped and why, and the fastest PyTorch and JAX peers against ours."""
    lines = []
    for name, w in cs["wall_s"].items():
        d = cs["max_acc_difference_vs_numpy"][name]
        ok = "" if cs.get("agrees", {}).get(name, True) else "  DIFFERS: not counted"
        lines.append(f"  {name:<36} {w:8.1f} s   (max |acc - numpy| {d:.4f}){ok}")
    for name, why in cs.get("skipped", {}).items():
        lines.append(f"  {name:<36} skipped: {why}")
    f = cs.get("fastest") or {}
    for lib, label in (("torch", "PyTorch"), ("jax", "JAX")):
        if f.get(f"{lib}_over_ours") is not None:
            lines.append(f"  fastest {label} peer: {f[lib]} ({f[lib + '_s']:.1f} s) = {f[lib + '_over_ours']:.2f} x "
                         f"our fastest, {f['ours']} ({f['ours_s']:.1f} s)")
    if cs.get("jax_jit_warmup_s") is not None:
        lines.append(f"  (jax jit compilation, untimed above: {cs['jax_jit_warmup_s']:.1f} s for a 1 + 1-epoch run)")
    return lines


# ----------------------------------------------------------------------------- agreement
def agreement(steps: int = 1000, seed: int = 0) -> dict:
    """Max relative parameter difference after ``steps`` float64 steps: numba vs numpy (the
    case-study parent and its random-split child) and batched vs one at a time."""
    rng = np.random.default_rng(seed)
    n, B = 1000, 100
    X = rng.integers(0, 2, (n, 32)).astype(np.float64)
    y = (X[:, :4].sum(axis=1) >= 2).astype(np.int64)
    tcfg = TrainConfig(epochs=steps * B // n, warmup_epochs=steps * B // n, batch_size=B)
    parent = MLP.init([32, 8, 1], np.random.default_rng(seed + 1))
    models = [parent, expand(parent, 2, "random", np.random.default_rng(seed + 2)).model]

    def rel(a, b):
        return max(float(np.max(np.abs(a.params[k] - b.params[k])) / np.max(np.abs(a.params[k]))) for k in a.params)
    ref = [m.copy() for m in models]
    for i, m in enumerate(ref):
        train(m, X, y, tcfg, np.random.default_rng(10 + i))
    single = [m.copy() for m in models]
    for i, m in enumerate(single):
        train_batched([m], X, y, tcfg, [np.random.default_rng(10 + i)], backend="numba")
    batch = [m.copy() for m in models]
    train_batched(batch, X, y, tcfg, [np.random.default_rng(10 + i) for i in range(len(batch))], backend="numba")
    return {"steps": steps, "numba_vs_numpy": max(rel(a, b) for a, b in zip(ref, single)),
            "batched_vs_one_at_a_time": max(rel(a, b) for a, b in zip(single, batch)),
            "batched_vs_numpy": max(rel(a, b) for a, b in zip(ref, batch))}


# ----------------------------------------------------------------------------- report
def _find(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def targets(rows, cs, agree) -> dict:
    """The bench's targets, evaluated on this run (float32, d=512 C=100 h=32, alpha=4)."""
    out = {}
    base = dict(d=512, h=32, C=100, dtype="float32")
    sp = _find(rows, **base, alpha=4, impl="numba")
    md = _find(rows, **base, alpha=4, impl="numpy")
    if sp and md:
        out["sparse_a4_x_dense"] = {"value": sp["x_dense"], "target": "<= 1.2", "met": sp["x_dense"] <= 1.2}
        out["masked_over_sparse_a4"] = {"value": md["ms_median"] / sp["ms_median"], "target": ">= 2.5",
                                        "met": md["ms_median"] / sp["ms_median"] >= 2.5}
    if cs:
        w = cs["wall_s"]
        b = w.get("numba, batched")
        out["case_study_batched_s"] = {"value": b, "target": "< 60 (at 1000 + 1000 epochs)",
                                       "met": b < 60 if cs["epochs_per_phase"] >= 1000 else None}
        if "torch, one model at a time" in w:
            sp_ = w["torch, one model at a time"] / b
            out["case_study_torch_over_batched"] = {"value": sp_, "target": ">= 5", "met": sp_ >= 5}
        f = cs.get("fastest") or {}
        if f.get("torch_over_ours") is not None:
            r = f["torch_over_ours"]
            out["case_study_fastest_torch_over_fastest_ours"] = {"value": r, "target": ">= 1", "met": r >= 1,
                                                                 "torch": f["torch"], "ours": f["ours"]}
        if f.get("jax_over_ours") is not None:
            r = f["jax_over_ours"]
            out["case_study_jax_over_fastest_ours"] = {"value": r, "target": ">= 1", "met": r >= 1,
                                                       "jax": f["jax"], "ours": f["ours"]}
    if agree:
        out["numba_vs_numpy_1000_steps"] = {"value": agree["numba_vs_numpy"], "target": "<= 1e-9",
                                            "met": agree["numba_vs_numpy"] <= 1e-9}
        out["batched_vs_single_1000_steps"] = {"value": agree["batched_vs_one_at_a_time"], "target": "<= 1e-9",
                                               "met": agree["batched_vs_one_at_a_time"] <= 1e-9}
    return out


def peaks_line(peaks) -> str:
    """The machine peaks of :func:`machine_peaks` in one line."""
    mm = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in peaks["matmul_flops_per_s"].items())
    return (f"matmul peak (GFLOP/s, {peaks['matmul_n']}^2 np.dot, {peaks['threads']} threads): {mm}; memory "
            f"bandwidth {peaks['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (np.copyto of {peaks['copy_bytes'] / 2**20:.0f} "
            "MiB, read + write)")


def _pct(x):
    return f"{x:.1%}" if x is not None else "-"


def table(rows) -> str:
    """The step table: one line per (model, dtype, variant, implementation); PyTorch and JAX on
    the NumPy lines (the same model written the usual way: dense, or masks multiplied in).

    ``MFLOP`` and ``kB`` are one step's work (:func:`step_work`), ``limit ms`` its physical
    limit on this machine (:func:`roofline`; ``c`` compute-bound, ``m`` memory-bound) and
    ``of limit`` / ``torch of lim`` / ``jax of lim`` the fraction of it the row reaches
    (limit / median).
    """
    peers = ("torch", "jax")
    head = (f"{'model':<22} {'dtype':<7} {'variant':<36} {'ms/step':>9} {'[min, max]':<20} {'x dense':>7} "
            f"{'MFLOP':>8} {'kB':>8} {'limit ms':>10} {'of limit':>8}"
            + "".join(f" {lib + ' ms':>9} {lib + ' x':>7} {lib + ' of lim':>12}" for lib in peers))
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["impl"] in peers:
            continue
        label = f"{r['variant']} ({r['layout']}, {r['impl']})"
        t = ""
        for lib in peers:
            pr = _find(rows, model=r["model"], dtype=r["dtype"], variant=r["variant"], impl=lib) \
                if r["impl"] == "numpy" else None
            t += (f" {pr['ms_median']:9.3f} {pr['x_dense']:7.2f} {_pct(pr.get('fraction_of_limit')):>12}" if pr
                  else f" {'':>9} {'':>7} {'':>12}")
        lim = "-" if r.get("limit_ms") is None else f"{r['limit_ms']:.4f} {r['limit_bound'][0]}"
        work = (f"{r['flops'] / 1e6:8.2f} {r['bytes'] / 1e3:8.1f}" if r.get("flops") is not None else f"{'-':>8} {'-':>8}")
        lines.append(f"{r['model']:<22} {r['dtype']:<7} {label:<36} {r['ms_median']:9.3f} "
                     f"{'[%.3f, %.3f]' % (r['ms_min'], r['ms_max']):<20} {r['x_dense']:7.2f} {work} {lim:>10} "
                     f"{_pct(r.get('fraction_of_limit')):>8}{t}".rstrip())
    return "\n".join(lines)


def run_bench(cfg: BenchConfig, out_dir, log=print) -> dict:
    """Run everything, write ``out_dir/bench.json``, return the record."""
    if cfg.batch_size < 1 or cfg.n_train < cfg.batch_size:
        raise FPEError(f"need 1 <= batch_size <= n_train, got {cfg.batch_size} and {cfg.n_train}")
    for dt in cfg.dtypes:
        if dt not in ("float32", "float64"):
            raise FPEError(f"dtypes must be float32 and/or float64, got {dt!r}")
    if cfg.threads < 0:
        raise FPEError(f"threads must be >= 0 (0: all cores), got {cfg.threads}")
    os.makedirs(out_dir, exist_ok=True)
    rec = {"format_version": FORMAT_VERSION, "config": asdict(cfg)}
    with _ThreadLimits(_threads(cfg)):
        rec["environment_before"] = environment(cfg)
        t0 = time.perf_counter()
        log("machine peaks ...")
        rec["machine_peaks"] = machine_peaks(_threads(cfg), cfg.peak_matrix, cfg.peak_copy_mib)
        log("  " + peaks_line(rec["machine_peaks"]))
        log("agreement after 1000 float64 steps ...")
        rec["agreement"] = agreement()
        log(f"  {rec['agreement']}")
        log("steps ...")
        rec["steps"] = bench_steps(cfg, log, rec["machine_peaks"])
        log("case study ...")
        rec["case_study"] = bench_case_study(cfg, log)
        rec["environment_after"] = environment(cfg)
        rec["bench_wall_s"] = time.perf_counter() - t0
    rec["targets"] = targets(rec["steps"], rec["case_study"], rec["agreement"])
    with open(os.path.join(out_dir, "bench.json"), "w") as f:
        json.dump(rec, f, indent=1)
    return rec
