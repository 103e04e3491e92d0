"""Thread limits of the fast path: numba's thread pool, BLAS inside it, and the one warning.

Two pools matter. Numba's runs the ``prange`` loops of the parallel kernels
(:func:`set_num_threads`); results never depend on its size, since no reduction is split
across threads. BLAS runs the dense mirrors' products (:mod:`fpe_ref.fast.trainer`), which are
called from inside numba's parallel loops and must then run one thread each
(:func:`_single_threaded_blas`), or the cores are oversubscribed; where that cannot be
arranged, :func:`warn_if_blas_unlimited` says so once.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numba

__all__ = ["set_num_threads", "get_num_threads", "max_threads", "numba_info", "blas_threads",
           "warn_if_blas_unlimited"]


def set_num_threads(n: int) -> None:
    """Threads of the parallel kernels (Numba's pool; default: one per core).

    Results never depend on it (no reduction is split across threads). When several
    processes already share the cores (a sweep), give each process 1 thread: a parallel loop
    waits for its slowest thread, and on an oversubscribed machine that is far slower than
    running serially.
    """
    numba.set_num_threads(int(n))


def get_num_threads() -> int:
    """Threads the parallel kernels use now."""
    return int(numba.get_num_threads())


def max_threads() -> int:
    """The most threads :func:`set_num_threads` accepts (numba's ``NUMBA_NUM_THREADS``)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def numba_info() -> dict:
    """Version, threading layer and thread count, for benchmark records."""
    return {"numba": numba.__version__, "numba_threading_layer": str(numba.config.THREADING_LAYER),
            "numba_threads": get_num_threads()}


def _can_limit_blas() -> bool:
    """Whether threadpoolctl is installed (it can hold a loaded BLAS to one thread)."""
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


def _single_threaded_blas(active: bool):
    """A context in which BLAS runs one thread (threadpoolctl), or a no-op."""
    if not active or not _can_limit_blas():
        return contextlib.nullcontext()
    import scipy.linalg  # noqa: F401  numba's np.dot calls SciPy's BLAS: load it so that it is limited too
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


_warned = False


def warn_if_blas_unlimited() -> None:
    """Warn once (stderr) when the mirrors will call a BLAS that may run several threads.

    The mirrors call BLAS from inside numba's parallel loops; a multi-threaded BLAS there
    oversubscribes the cores and was measured 15-25x slower than the sparse kernels
    (FashionMNIST [784, 8, 10], 2 cores). With threadpoolctl installed (extra ``bench``)
    :class:`~fpe_ref.fast.trainer.FusedTrainer` holds BLAS to one thread while it runs;
    otherwise only ``OPENBLAS_NUM_THREADS=1`` (or MKL / OMP) set before Python starts does.
    """
    global _warned
    if _warned or _can_limit_blas() or blas_threads() == 1:
        return
    _warned = True
    print("warning: the numba backend multiplies dense layers with BLAS inside parallel loops and cannot "
          "hold BLAS to one thread here, which can make it many times slower: pip install threadpoolctl, "
          "or set OPENBLAS_NUM_THREADS=1 (results are the same either way)", file=sys.stderr)


def blas_threads() -> int | None:
    """BLAS threads as the environment sets them (``OPENBLAS_NUM_THREADS``, MKL, OMP); ``None`` if unset.

    What matters when threadpoolctl is missing: the variables, set before NumPy loaded its
    BLAS, are then the only limit (the sweep's workers get them at spawn;
    :func:`fpe_ref.experiments.runs.local_executor` never sets them in the parent).
    """
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(name, "").strip().isdigit():
            return int(os.environ[name])
    return None
