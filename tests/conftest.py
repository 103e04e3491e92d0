"""Fixtures shared by the whole suite: seeded generators, finite-difference gradients, tiny models
and data."""

import numpy as np
import pytest

from fpe_ref.mlp import MLP

GRAD_RTOL = 1e-6  # central differences with h = 1e-6 in float64: truncation ~h^2, rounding ~1e-10/h


@pytest.fixture
def rng(request):
    """A Generator seeded by the test module's ``RNG_SEED`` (0 when it sets none)."""
    return np.random.default_rng(getattr(request.module, "RNG_SEED", 0))


def _numgrad(f, x, h=1e-6):
    """Central-difference gradient of scalar ``f()`` with respect to array ``x`` (modified in place)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def _assert_grad(analytic, numeric, name, rtol=GRAD_RTOL):
    scale = max(1.0, np.abs(numeric).max())
    err = np.abs(analytic - numeric).max() / scale
    assert err < rtol, f"{name}: max scaled error {err:.2e} >= {rtol}"


@pytest.fixture
def numgrad():
    """``numgrad(f, x, h=1e-6)``: the central-difference gradient of ``f()`` in ``x``."""
    return _numgrad


@pytest.fixture
def assert_grad():
    """``assert_grad(analytic, numeric, name)``: max error scaled by ``max(1, |numeric|)`` below 1e-6."""
    return _assert_grad


def _masked_model(sizes, rng, layer_norm, mask_layers=(1,)):
    """``MLP.init(sizes, rng)`` with a random mask (density ~0.6) on each ``W<l>`` of ``mask_layers``."""
    model = MLP.init(sizes, rng, layer_norm=layer_norm)
    masks = {f"W{l}": rng.random(model.params[f"W{l}"].shape) < 0.6 for l in mask_layers}
    return MLP(model.params, masks, layer_norm)


@pytest.fixture
def masked_model():
    """``masked_model(sizes, rng, layer_norm, mask_layers=(1,))``: a net with random masks on some layers."""
    return _masked_model


def _embedding_arrays(d: int = 4, dtype=np.float32) -> dict:
    """The four arrays of a valid embeddings file: 6 training and 3 test rows of ``d`` features, 3 classes."""
    rng = np.random.default_rng(0)
    return {
        "X_train": rng.standard_normal((6, d)).astype(dtype),
        "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "X_test": rng.standard_normal((3, d)).astype(dtype),
        "y_test": np.array([2, 1, 0], dtype=np.int32),
    }


@pytest.fixture
def embedding_arrays():
    """``embedding_arrays(d=4, dtype=np.float32)``: a fresh dict of valid embedding arrays."""
    return _embedding_arrays


@pytest.fixture
def closed(monkeypatch):
    """The figures the code under test closes, kept open for inspection (closed after the test)."""
    import matplotlib.pyplot as plt

    kept = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    yield kept
    for f in kept:
        real_close(f)


@pytest.fixture
def lock_held_elsewhere():
    """``lock_held_elsewhere(folder)``: another process holds ``FolderLock(folder)`` until it is
    killed (by the test, or when the test ends); returns that ``Popen``."""
    import subprocess
    import sys

    procs = []

    def hold(folder):
        proc = subprocess.Popen([sys.executable, "-c", (
            "import time\n"
            "from fpe_ref.experiments.outputs import FolderLock\n"
            f"with FolderLock({str(folder)!r}):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()
