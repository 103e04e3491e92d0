"""Fixtures shared by the whole suite: seeded generators and finite-difference gradients."""

import numpy as np
import pytest

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
