"""Closed forms of fpe_ref.theory.closed_form (Sec. A.5) against brute-force enumeration, exact fractions and
the Sec. 3.1 case study's hand-checkable numbers."""

from __future__ import annotations

import functools
import itertools
import math
from fractions import Fraction

import pytest

from fpe_ref.errors import FPEError
from fpe_ref.theory import closed_form as cf


# ----------------------------------------------------------------------------- brute force


def clause_sets(m, k):
    return [frozenset(range(c * k, c * k + k)) for c in range(m // k)]


def covered_mask(support, clauses):
    """Bitmask of the clauses contained in ``support``."""
    return sum(1 << c for c, cl in enumerate(clauses) if cl <= support)


def neuron_distribution(m, d, k):
    """Exact distribution of one uniform d-subset's covered-clause bitmask, by enumerating every subset."""
    clauses = clause_sets(m, k)
    dist = {}
    subsets = list(itertools.combinations(range(m), d))
    for s in subsets:
        b = covered_mask(frozenset(s), clauses)
        dist[b] = dist.get(b, 0) + 1
    return {b: Fraction(c, len(subsets)) for b, c in dist.items()}


def partitions(items, sizes):
    """Every labelled partition of ``items`` into blocks of the given sizes."""
    if not sizes:
        yield ()
        return
    for block in itertools.combinations(items, sizes[0]):
        rest = [x for x in items if x not in block]
        for tail in partitions(rest, sizes[1:]):
            yield (frozenset(block),) + tail


@functools.lru_cache(maxsize=None)
def parent_enumeration(m, k, alpha):
    """Every balanced labelled partition of one parent: (distribution of its covered-clause bitmask,
    mean of sum over children C(t_c, 2))."""
    clauses = clause_sets(m, k)
    sizes = [d for d, cnt in cf.degree_profile(m, alpha) for _ in range(cnt)]
    dist, total, coll = {}, 0, 0
    for part in partitions(list(range(m)), sizes):
        masks = [covered_mask(block, clauses) for block in part]
        b = 0
        for x in masks:
            b |= x
        dist[b] = dist.get(b, 0) + 1
        coll += sum(math.comb(bin(x).count("1"), 2) for x in masks)
        total += 1
    return {b: Fraction(c, total) for b, c in dist.items()}, Fraction(coll, total)


def parent_distribution(m, k, alpha):
    return parent_enumeration(m, k, alpha)[0]


def or_convolve(dists):
    """Distribution of the OR of independent bitmasks."""
    out = {0: Fraction(1)}
    for d in dists:
        new = {}
        for a, pa in out.items():
            for b, pb in d.items():
                new[a | b] = new.get(a | b, 0) + pa * pb
        out = new
    return out


def brute_coverage_a(m, k, alpha, r):
    C = m // k
    units = [neuron_distribution(m, d, k) for d, cnt in cf.degree_profile(m, alpha) for _ in range(cnt * r)]
    return or_convolve(units).get((1 << C) - 1, Fraction(0))


def brute_coverage_b(m, k, alpha, r):
    C = m // k
    return or_convolve([parent_distribution(m, k, alpha)] * r).get((1 << C) - 1, Fraction(0))


def brute_collisions_a(m, k, alpha, r):
    """E[sum over neurons C(t, 2)] by enumeration of every d-subset."""
    tot = Fraction(0)
    for d, cnt in cf.degree_profile(m, alpha):
        e = sum(p * math.comb(bin(b).count("1"), 2) for b, p in neuron_distribution(m, d, k).items())
        tot += cnt * r * e
    return tot


def brute_collisions_b(m, k, alpha, r):
    return r * parent_enumeration(m, k, alpha)[1]


# ----------------------------------------------------------------------------- closed forms vs enumeration


@pytest.mark.parametrize("m,d,k", [(6, 3, 2), (8, 4, 2), (8, 5, 2), (9, 6, 3), (10, 4, 2), (12, 6, 3), (12, 8, 4), (12, 12, 4), (12, 3, 3)])
def test_p_and_p_pair_equal_enumeration(m, d, k):
    """p = C(m-k,d-k)/C(m,d) and p' = C(m-2k,d-2k)/C(m,d) (Sec. A.5) against every d-subset."""
    subsets = list(itertools.combinations(range(m), d))
    S, T = set(range(k)), set(range(k, 2 * k))
    p = Fraction(sum(S <= set(s) for s in subsets), len(subsets))
    p2 = Fraction(sum((S | T) <= set(s) for s in subsets), len(subsets))
    assert cf.p_cover(m, d, k) == pytest.approx(float(p), rel=1e-12, abs=1e-15)
    assert cf.p_pair(m, d, k) == pytest.approx(float(p2), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "m,k,alpha,r",
    [(8, 2, 2, 1), (8, 2, 2, 3), (8, 2, 4, 2), (9, 3, 3, 2), (12, 3, 2, 2), (12, 4, 2, 3), (12, 4, 3, 2),
     (10, 2, 4, 2), (12, 2, 5, 1), (12, 4, 4, 2), (6, 2, 1, 1)],
)
def test_coverage_a_equals_enumeration(m, k, alpha, r):
    """Exact inclusion-exclusion coverage under model (a) (incl. mixed degrees) = OR-convolution of enumerated neurons."""
    exact = cf.coverage_exact(m, k, alpha, r, exact=True)
    assert exact == brute_coverage_a(m, k, alpha, r)
    assert cf.coverage_exact(m, k, alpha, r) == pytest.approx(float(exact), rel=1e-13, abs=1e-300)


@pytest.mark.parametrize("m,k,alpha,r", [(8, 2, 2, 1), (8, 2, 2, 3), (8, 4, 2, 2), (9, 3, 3, 2), (10, 2, 4, 2), (12, 4, 3, 2), (12, 3, 2, 2), (10, 2, 3, 2), (12, 3, 3, 1)])
def test_coverage_b_equals_enumeration(m, k, alpha, r):
    """Exact coverage under model (b) = OR-convolution over every balanced labelled partition (independent parents)."""
    exact = cf.coverage_exact_split(m, k, alpha, r, exact=True)
    assert exact == brute_coverage_b(m, k, alpha, r)
    assert cf.coverage_exact_split(m, k, alpha, r) == pytest.approx(float(exact), rel=1e-13, abs=1e-300)


@pytest.mark.parametrize("m,k,alpha", [(8, 2, 2), (9, 3, 3), (10, 2, 4), (12, 4, 2), (12, 3, 3), (10, 2, 3)])
def test_parent_cover_and_missed_equal_enumeration(m, k, alpha):
    """P_parent = sum_c C(s_c,k)/C(m,k) and (1-P_parent)^r, against every partition; (b) misses less than (a)."""
    dist = parent_distribution(m, k, alpha)
    p_parent = sum(p for b, p in dist.items() if b & 1)
    assert cf.p_parent_cover(m, k, alpha) == pytest.approx(float(p_parent), rel=1e-12)
    for r in (1, 3):
        assert cf.p_missed_split(m, k, alpha, r) == pytest.approx(float((1 - p_parent) ** r), rel=1e-12)
        assert cf.p_missed_split(m, k, alpha, r) <= cf.p_missed(m, k, alpha, r) + 1e-15


@pytest.mark.parametrize("m,k,alpha,r", [(8, 2, 2, 2), (12, 3, 2, 1), (12, 4, 3, 3), (10, 2, 4, 2), (10, 2, 3, 2), (12, 4, 1, 2)])
def test_expected_collisions_equal_enumeration(m, k, alpha, r):
    """E_FPE = alpha r C(C,2) p' (Sec. A.5) for (a), and the same value for (b), against enumeration."""
    assert cf.expected_collisions_fpe(m, k, alpha, r) == pytest.approx(float(brute_collisions_a(m, k, alpha, r)), rel=1e-12)
    assert cf.expected_collisions_split(m, k, alpha, r) == pytest.approx(float(brute_collisions_b(m, k, alpha, r)), rel=1e-12)
    C = m // k
    assert cf.expected_collisions_fpe(m, k, alpha, r) / cf.expected_collisions_dense(C, r) == pytest.approx(cf.collision_ratio(m, k, alpha), rel=1e-12)


@pytest.mark.parametrize("m,k,alpha,r", [(8, 2, 2, 3), (12, 4, 2, 5), (32, 4, 2, 8), (64, 2, 4, 9)])
def test_union_bound_identities(m, k, alpha, r):
    """1 - C (1-p)^(alpha r) (Sec. A.5) is the union bound on exact coverage, under (a) and (b)."""
    C = m // k
    p = cf.p_cover(m, m // alpha, k)
    assert cf.union_bound(m, k, alpha, r) == pytest.approx(1 - C * (1 - p) ** (alpha * r), rel=1e-12)
    assert cf.union_bound(m, k, alpha, r) <= cf.coverage_exact(m, k, alpha, r) + 1e-12
    assert cf.union_bound(m, k, alpha, r) <= cf.union_bound_split(m, k, alpha, r) + 1e-12
    assert cf.union_bound_split(m, k, alpha, r) <= cf.coverage_exact_split(m, k, alpha, r) + 1e-12


@pytest.mark.parametrize("m,k,alpha,r", [(32, 4, 2, 8), (64, 2, 4, 9), (96, 3, 4, 40), (128, 4, 2, 30), (128, 2, 8, 20), (60, 4, 4, 100), (128, 4, 8, 8), (128, 4, 4, 8), (32, 4, 8, 8)])
def test_decimal_sum_equals_fraction(m, k, alpha, r):
    """The high-precision decimal inclusion-exclusion equals the exact Fraction to 1e-12 relative (C up to 64; values down to 1e-66)."""
    for f in (cf.coverage_exact, cf.coverage_exact_split):
        exact = float(f(m, k, alpha, r, exact=True))
        assert f(m, k, alpha, r) == pytest.approx(exact, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("m", [100, 1000, 10_000])
@pytest.mark.parametrize("k,alpha", [(2, 2), (4, 2), (4, 8), (3, 5)])
def test_log_binomials_stable_to_1e4(m, k, alpha):
    """p and p' via log-binomials match exact integer ratios for m up to 10^4."""
    d = m // alpha
    p_exact = Fraction(math.comb(m - k, d - k), math.comb(m, d))
    p2_exact = Fraction(math.comb(m - 2 * k, d - 2 * k), math.comb(m, d))
    assert cf.p_cover(m, d, k) == pytest.approx(float(p_exact), rel=1e-10)
    assert cf.p_pair(m, d, k) == pytest.approx(float(p2_exact), rel=1e-10)


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("alpha", [2, 4, 8])
def test_approximations_converge(k, alpha):
    """p -> alpha^-k and alpha p' -> alpha^-(2k-1) as m grows (Sec. A.5), from below."""
    m = 9600
    p = cf.p_cover(m, m // alpha, k)
    assert p < cf.p_cover_approx(k, alpha)
    assert p == pytest.approx(cf.p_cover_approx(k, alpha), rel=k * k * alpha / m)
    ratio = cf.collision_ratio(m, k, alpha)
    assert ratio < cf.collision_ratio_approx(k, alpha)
    assert ratio == pytest.approx(cf.collision_ratio_approx(k, alpha), rel=4 * k * k * alpha / m)


def test_case_study_numbers():
    """Hand-checkable numbers of the Sec. 3.1 case study (m=32, k=4, alpha=2, d=16, r=8)."""
    assert cf.p_cover(32, 16, 4) == pytest.approx(1820 / 35960, rel=1e-12)  # C(16,4)/C(32,4)
    assert cf.p_pair(32, 16, 4) == pytest.approx(12870 / 10518300, rel=1e-12)  # C(16,8)/C(32,8)
    assert cf.union_bound(32, 4, 2, 8) == pytest.approx(1 - 8 * (1 - 1820 / 35960) ** 16, rel=1e-12)
    assert cf.union_bound(32, 4, 2, 8) < 0  # vacuous at the paper's own case study
    assert cf.width_requirement(4, 2, 8, 0.01) == pytest.approx(8 * math.log(800))
    assert cf.smallest_r(32, 4, 2, 0.01, criterion="union_bound") == 65
    assert cf.degree_profile(10, 4) == ((2, 2), (3, 2))


def test_smallest_r_is_smallest():
    for crit, f in (("union_bound", cf.union_bound), ("coverage_a", cf.coverage_exact), ("coverage_b", cf.coverage_exact_split)):
        r = cf.smallest_r(32, 4, 2, 0.05, criterion=crit)
        assert f(32, 4, 2, r) >= 0.95 > f(32, 4, 2, r - 1), crit


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: cf.p_cover(8, 9, 2), "d=9 > m=8"),
        (lambda: cf.p_cover(8, 3, 4), "k=4 > d=3"),
        (lambda: cf.p_pair(8, 2, 3), "k=3 > d=2"),
        (lambda: cf.p_pair(6, 6, 4), "2k=8 > m=6"),
        (lambda: cf.coverage_exact(8, 2, 0, 3), "alpha .* got 0"),
        (lambda: cf.degree_profile(8, -1), "alpha .* got -1"),
        (lambda: cf.coverage_exact(8, 2, 9, 3), "alpha=9 > m=8"),
        (lambda: cf.coverage_exact(10, 4, 2, 3), "m=10 is not divisible by k=4"),
        (lambda: cf.coverage_exact_split(10, 4, 2, 3), "m=10 is not divisible by k=4"),
        (lambda: cf.union_bound(10, 3, 2, 3), "m=10 is not divisible by k=3"),
        (lambda: cf.n_clauses(3, 4), "k=4 > m=3"),
        (lambda: cf.expected_collisions_fpe(8, 2, 2, 0), "r .* got 0"),
        (lambda: cf.p_cover(8, 2.5, 2), "got 2.5"),
        (lambda: cf.p_cover(8, True, 1), "got True"),
        (lambda: cf.width_requirement(4, 2, 8, 1.5), "eps .* 1.5"),
        (lambda: cf.smallest_r(8, 2, 2, 0.1, criterion="nope"), "'nope'"),
    ],
)
def test_bad_input_raises_fpe_error(call, match):
    """Invalid inputs (d > m, k > d, alpha < 1, m not divisible by k, ...) raise FPEError naming the value."""
    with pytest.raises(FPEError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_degree_below_k_gives_zero_coverage():
    """Table A1's m=12 at alpha=4: children of 3 inputs never hold a 4-literal clause (coverage 0, not an error)."""
    assert cf.coverage_exact(12, 4, 4, 8) == 0.0
    assert cf.coverage_exact_split(12, 4, 4, 8) == 0.0
    assert cf.collision_ratio(12, 4, 4) == 0.0
