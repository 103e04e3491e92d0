"""The simulators of fpe_ref.theory.monte_carlo: kernels plain vs compiled vs dense NumPy, determinism, the
simulators against the closed forms (Sec. A.5) on fixed seeds, the confidence intervals, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from fpe_ref.errors import FPEError
from fpe_ref.rng import stream
from fpe_ref.theory import closed_form as cf
from fpe_ref.theory import monte_carlo as mc

LEVEL = 0.999  # confidence level of every closed-form-vs-samples assertion below


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("m,k,alpha,r", [(16, 2, 2, 3), (24, 3, 4, 2), (12, 4, 5, 2), (32, 4, 2, 4), (10, 2, 3, 3), (9, 3, 1, 2)])
def test_kernel_plain_compiled_dense_agree(m, k, alpha, r):
    """Fused model (a) kernel: plain Python == Numba == mask_stats(sample_supports(...)) on the same draws."""
    degrees = mc.slot_degrees(m, alpha, r)
    n_nets = 7
    u = mc.uniform_u32(stream(3, "test-kernel", m, k, alpha), (n_nets * degrees.size, max(1, max(min(d, m - d) for d in degrees))))
    plain = mc.independent_stats(u, m, k, degrees, net0=5, compiled=False)
    fast = mc.independent_stats(u, m, k, degrees, net0=5, compiled=True)
    perm = np.arange(m, dtype=np.int64)  # chunked with a carried buffer == one call
    half = (n_nets // 2) * degrees.size
    parts = [mc.independent_stats(u[:half], m, k, degrees, 5, perm), mc.independent_stats(u[half:], m, k, degrees, 5 + n_nets // 2, perm)]
    for i in range(3):
        np.testing.assert_array_equal(np.concatenate([parts[0][i], parts[1][i]]), fast[i], err_msg="chunked vs one call")
    assert parts[0][3] + parts[1][3] == fast[3]
    masks = mc.sample_supports(u, m, degrees)
    assert np.array_equal(masks, mc.sample_supports(u, m, degrees, compiled=False))
    assert np.array_equal(masks.sum(axis=1), np.tile(degrees, n_nets)), "every neuron has exactly its degree"
    dense = mc.mask_stats(masks, n_nets, k, unit=1, net0=5)
    for name, a, b, c in zip(("all_covered", "collisions", "missed_one", "unit_hits"), plain, fast, dense):
        np.testing.assert_array_equal(a, b, err_msg=f"plain vs compiled: {name}")
        np.testing.assert_array_equal(a, c, err_msg=f"plain vs dense NumPy: {name}")


def test_split_simulator_uses_fpe_ref_random_split(monkeypatch):
    """Model (b) is fpe_ref.splits.random_split itself: same rng -> same masks -> same statistics."""
    from fpe_ref.splits import random_split

    calls = []

    def spy(h, d, alpha, rng):
        calls.append((h, d, alpha))
        return random_split(h, d, alpha, rng)

    monkeypatch.setattr(mc, "random_split", spy)
    res = mc.simulate_split(16, 2, 4, 3, 10, stream(1, "spy"))
    assert calls == [(30, 16, 4)]
    masks = random_split(30, 16, 4, stream(1, "spy"))
    ac, co, mi, h = mc.mask_stats(masks, 10, 2, unit=4)
    np.testing.assert_array_equal(res.all_covered, ac)
    np.testing.assert_array_equal(res.collisions, co)
    assert res.unit_hits == h and res.unit_trials == 30 and res.n_neurons == 120


def test_simulators_are_deterministic():
    a1 = mc.simulate_independent(32, 4, 2, 8, 50, stream(0, "det"))
    a2 = mc.simulate_independent(32, 4, 2, 8, 50, stream(0, "det"), chunk=1000)  # other chunking, same numbers
    np.testing.assert_array_equal(a1.collisions, a2.collisions)
    np.testing.assert_array_equal(a1.all_covered, a2.all_covered)


# ----------------------------------------------------------------------------- simulators vs closed forms


def _assert_in(est: mc.Estimate, closed: float, what: str):
    assert est.contains(closed), (
        f"{what}: closed form {closed:.6g} outside the {est.level:.1%} {est.method} interval "
        f"[{est.lo:.6g}, {est.hi:.6g}] (estimate {est.value:.6g})"
    )


@pytest.mark.parametrize("m,k,alpha,r", [(16, 2, 2, 6), (24, 3, 2, 11), (32, 4, 2, 25), (12, 2, 5, 4), (32, 4, 2, 8)])
def test_model_a_matches_closed_forms(m, k, alpha, r):
    """Model (a) simulation vs p, (1-p)^(alpha r), exact coverage and E_FPE (Sec. A.5), seed fixed, 99.9% intervals."""
    res = mc.simulate_independent(m, k, alpha, r, 3000, stream(11, "test-a", m, k, alpha, r))
    p_bar = sum(cnt * cf.p_cover(m, d, k) for d, cnt in cf.degree_profile(m, alpha)) / alpha
    _assert_in(mc.proportion_interval(res.unit_hits, res.unit_trials, LEVEL), p_bar, "p")
    _assert_in(mc.proportion_interval(res.missed_one.sum(), res.n_networks, LEVEL), cf.p_missed(m, k, alpha, r), "P[clause missed]")
    _assert_in(mc.proportion_interval(res.all_covered.sum(), res.n_networks, LEVEL), cf.coverage_exact(m, k, alpha, r), "P[all covered]")
    _assert_in(mc.mean_interval(res.collisions, LEVEL), cf.expected_collisions_fpe(m, k, alpha, r), "E_FPE")


@pytest.mark.parametrize("m,k,alpha,r", [(16, 2, 2, 6), (24, 3, 2, 11), (12, 2, 5, 4), (16, 4, 2, 12)])
def test_model_b_matches_closed_forms(m, k, alpha, r):
    """Model (b) (fpe_ref random split) vs its own exact P_parent, miss, coverage, and E_FPE; 99.9% intervals."""
    res = mc.simulate_split(m, k, alpha, r, 400, stream(12, "test-b", m, k, alpha, r))
    _assert_in(mc.proportion_interval(res.unit_hits, res.unit_trials, LEVEL), cf.p_parent_cover(m, k, alpha), "P_parent")
    _assert_in(mc.proportion_interval(res.missed_one.sum(), res.n_networks, LEVEL), cf.p_missed_split(m, k, alpha, r), "P[clause missed]")
    _assert_in(mc.proportion_interval(res.all_covered.sum(), res.n_networks, LEVEL), cf.coverage_exact_split(m, k, alpha, r), "P[all covered]")
    _assert_in(mc.mean_interval(res.collisions, LEVEL), cf.expected_collisions_split(m, k, alpha, r), "E_FPE (b)")


def test_dense_is_deterministic():
    res = mc.simulate_dense(32, 4, 8, 3)
    assert res.all_covered.all() and not res.missed_one.any()
    assert (res.collisions == cf.expected_collisions_dense(8, 8)).all()


def test_b_differs_from_a_where_the_theory_says():
    """(b) covers better than (a) at m=16, k=2, alpha=2, r=6: (a)'s exact value is outside (b)'s 99.9% interval."""
    m, k, alpha, r = 16, 2, 2, 6
    res = mc.simulate_split(m, k, alpha, r, 1500, stream(13, "a-vs-b"))
    est = mc.proportion_interval(res.all_covered.sum(), res.n_networks, LEVEL)
    assert cf.coverage_exact_split(m, k, alpha, r) - cf.coverage_exact(m, k, alpha, r) > 0.1
    assert not est.contains(cf.coverage_exact(m, k, alpha, r)), f"(a) {cf.coverage_exact(m, k, alpha, r):.4f} inside (b)'s 99.9% interval [{est.lo:.4f}, {est.hi:.4f}]"
    _assert_in(est, cf.coverage_exact_split(m, k, alpha, r), "P[all covered] (b)")


# ----------------------------------------------------------------------------- intervals


@pytest.mark.parametrize("x,n", [(0, 50), (50, 50), (7, 100), (500, 1000)])
def test_intervals_contain_estimate(x, n):
    for f in (mc.proportion_interval, mc.wilson_interval):
        e = f(x, n, 0.99)
        assert 0.0 <= e.lo <= e.value <= e.hi <= 1.0
    cp = mc.proportion_interval(x, n, 0.99)
    if x == 0:
        assert cp.lo == 0.0 and cp.hi == pytest.approx(1 - 0.005 ** (1 / n))
    if x == n:
        assert cp.hi == 1.0


def test_mean_interval_width():
    v = np.array([0.0, 1.0] * 50)
    e = mc.mean_interval(v, 0.95)
    assert e.value == 0.5
    assert e.hi - e.value == pytest.approx(1.959964 * v.std(ddof=1) / 10, rel=1e-5)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: mc.simulate_independent(8, 2, 2, 2, 1, np.random.default_rng(0)), "n_networks .* got 1"),
        (lambda: mc.simulate_split(10, 4, 2, 2, 5, np.random.default_rng(0)), "m=10 is not divisible by k=4"),
        (lambda: mc.proportion_interval(3, 2, 0.9), "x=3, n=2"),
        (lambda: mc.mean_interval([1.0, 2.0], 1.5), "1.5"),
    ],
)
def test_bad_input_raises_fpe_error(call, match):
    """Invalid simulator and interval inputs (n_networks < 2, m not divisible by k, x > n, a level outside (0, 1))
    raise FPEError naming the value."""
    with pytest.raises(FPEError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
