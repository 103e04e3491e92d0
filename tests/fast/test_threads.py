"""fpe_ref.fast.threads: numba's thread count, the BLAS limits of the dense mirrors, the one warning."""

from __future__ import annotations

import numpy as np
import pytest

from fpe_ref.fast import kernels as K
from fpe_ref.fast import threads


def test_set_and_get_num_threads_and_the_kernels_names():
    before = threads.get_num_threads()
    assert 1 <= before <= threads.max_threads()
    try:
        threads.set_num_threads(1)
        assert threads.get_num_threads() == 1
    finally:
        threads.set_num_threads(before)
    assert threads.get_num_threads() == before
    info = threads.numba_info()
    assert set(info) == {"numba", "numba_threading_layer", "numba_threads"} and info["numba_threads"] == before
    for name in ("set_num_threads", "get_num_threads", "max_threads", "numba_info"):
        assert getattr(K, name) is getattr(threads, name), name


def test_blas_threads_reads_the_environment_without_threadpoolctl(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    assert threads.blas_threads() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.blas_threads() == 1


@pytest.mark.parametrize("limit,n_threads,warns", [(True, 2, False), (False, 1, False), (False, 2, True),
                                                   (False, None, True)])
def test_warns_once_when_blas_cannot_be_limited(monkeypatch, capsys, limit, n_threads, warns):
    monkeypatch.setattr(threads, "_can_limit_blas", lambda: limit)
    monkeypatch.setattr(threads, "blas_threads", lambda: n_threads)
    monkeypatch.setattr(threads, "_warned", False)
    for _ in range(2):
        threads.warn_if_blas_unlimited()
    err = capsys.readouterr().err
    assert err.count("cannot hold BLAS to one thread") == (1 if warns else 0), err
    assert "\n" not in err.rstrip("\n")


def test_single_threaded_blas_is_a_no_op_when_inactive():
    with threads._single_threaded_blas(False):
        assert np.dot(np.ones(3), np.ones(3)) == 3.0


def test_mirrored_runs_hold_every_blas_to_one_thread():
    """NumPy's and SciPy's BLAS (numba's np.dot calls SciPy's) are both limited while mirrors run."""
    import os

    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy

    scipy_dir = os.path.dirname(os.path.dirname(scipy.__file__))  # site-packages: scipy/ and scipy.libs/
    with threads._single_threaded_blas(True):
        infos = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
        assert infos and all(i["num_threads"] == 1 for i in infos), infos
        own = [i for i in infos if os.path.realpath(i["filepath"]).startswith(os.path.join(scipy_dir, "scipy"))]
        if not own:
            pytest.skip("SciPy shares NumPy's BLAS here (nothing separate to limit)")
