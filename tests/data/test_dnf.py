"""Tests for fpe_ref.data.dnf (Alg. A2): invariants asserted exactly, checked independently."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fpe_ref.data import dnf
from fpe_ref.data.dnf import (
    DEFAULT_N_SAMPLES,
    DEFAULT_TEST_FRACTION,
    ORIGIN_NEAR_MISS,
    ORIGIN_POSITIVE,
    ORIGIN_UNIFORM,
    DNFData,
    evaluate_dnf,
    generate_dnf,
    prob_no_full_clause,
    split_indices,
    train_test_split,
)
from fpe_ref.errors import FPEError

N = 400
SEEDS = [0, 1, 7]
# (m, k): the paper's 4-literal tasks (m = 12, 24, 32, 128) and k = 2, 3
CASES = [(12, 2), (12, 3), (12, 4), (24, 3), (32, 2), (32, 4), (128, 4)]


def satisfied(bits, k):
    """Independent DNF check: some block of k consecutive literals is all on."""
    n, m = bits.shape
    return bits.reshape(n, m // k, k).astype(bool).all(-1).any(-1)


def bounds(m, k):
    """A2's floor(m/4), floor(m/4)+floor(m/8), raised to at least k (as documented)."""
    lo = max(m // 4, k)
    return lo, max(m // 4 + m // 8, lo)


@pytest.fixture(scope="module", params=[(m, k, s) for m, k in CASES for s in SEEDS],
                ids=lambda p: f"m{p[0]}-k{p[1]}-seed{p[2]}")
def generated(request):
    m, k, seed = request.param
    return m, k, generate_dnf(N, m, k, seed)


# ----------------------------------------------------------------------------- structure

def test_shapes_and_dtypes(generated):
    m, k, d = generated
    assert d.bits.shape == (N, m) and d.bits.dtype == np.uint8
    assert d.X.shape == (N, m) and d.X.dtype == np.float64
    assert d.y.shape == (N,) and d.y.dtype == np.float64
    assert d.origin.shape == (N,)
    assert (d.m, d.k, d.n, d.n_clauses) == (m, k, N, m // k)
    np.testing.assert_array_equal(d.clauses, np.arange(m).reshape(m // k, k))
    assert d.clauses.dtype == np.int64
    assert set(np.unique(d.bits)) <= {0, 1}


def test_labels_exactly_balanced(generated):
    _, _, d = generated
    assert set(np.unique(d.y)) == {0.0, 1.0}
    assert d.y.sum() == N // 2
    np.testing.assert_array_equal(d.y == 1, d.origin == ORIGIN_POSITIVE)


def test_labels_match_formula(generated):
    _, k, d = generated
    sat = satisfied(d.bits, k)
    assert sat[d.y == 1].all(), "a positive satisfies no clause"
    assert not sat[d.y == 0].any(), "a negative satisfies a clause"


def test_rows_are_shuffled(generated):
    _, _, d = generated
    # A2 stacks positives then negatives; we interleave them
    assert not (np.all(d.y[: N // 2] == 1) and np.all(d.y[N // 2:] == 0))


# ----------------------------------------------------------------------------- active counts

def test_active_counts(generated):
    m, k, d = generated
    lo, hi = bounds(m, k)
    s = d.bits.sum(axis=1)
    pos, near, unif = (d.origin == o for o in (ORIGIN_POSITIVE, ORIGIN_NEAR_MISS, ORIGIN_UNIFORM))
    assert s[pos].min() >= lo and s[pos].max() <= hi
    assert s[near].min() >= lo - 1 and s[near].max() <= hi - 1  # one literal removed
    assert s[unif].min() >= lo and s[unif].max() <= hi
    assert s[d.y == 0].min() >= lo - 1 and s[d.y == 0].max() <= hi


def test_explicit_bounds():
    d = generate_dnf(300, 32, 4, 3, min_ones=5, max_ones=6)
    s = d.bits.sum(axis=1)
    assert set(s[d.origin == ORIGIN_POSITIVE]) <= {5, 6}
    assert set(s[d.origin == ORIGIN_NEAR_MISS]) <= {4, 5}
    assert set(s[d.origin == ORIGIN_UNIFORM]) <= {5, 6}


def test_only_min_ones_given_moves_default_max_up():
    d = generate_dnf(100, 32, 4, 0, min_ones=14)  # default max 12 follows up to 14
    assert set(d.bits[d.y == 1].sum(axis=1)) == {14}


def test_only_max_ones_given_moves_default_min_down():
    d = generate_dnf(100, 32, 4, 0, max_ones=5)  # default min 8 follows down to 5
    assert set(d.bits[d.y == 1].sum(axis=1)) == {5}


def test_m12_k4_defaults_give_exactly_one_clause():
    # floor(12/4) = 3 < k: the default bound is raised to 4, so a positive is one clause only
    d = generate_dnf(200, 12, 4, 0)
    pos = d.bits[d.y == 1]
    assert (pos.sum(axis=1) == 4).all()
    assert (pos.reshape(-1, 3, 4).all(-1).sum(-1) == 1).all()


def test_rejected_negatives_keep_their_s():
    # m=32, k=2, s in 8..12: a uniform 12-subset avoids all 16 clauses with p ~ 0.033, an
    # 8-subset with p ~ 0.23. Redrawing with the same s (A2's u <- s) keeps s uniform over
    # 8..12 among accepted uniform negatives: 1000 rows, ~200 per value, sd ~ 12.6.
    d = generate_dnf(4000, 32, 2, 11)
    s = d.bits[d.origin == ORIGIN_UNIFORM].sum(axis=1)
    counts = np.bincount(s, minlength=13)[8:13]
    assert counts.sum() == 1000
    assert counts.min() > 140, f"s counts {counts} not uniform (expected ~200 each, 4.7 sd)"


# ----------------------------------------------------------------------------- near misses

def test_near_miss_half(generated):
    _, k, d = generated
    n_neg = N - N // 2
    near = d.origin == ORIGIN_NEAR_MISS
    assert near.sum() == n_neg // 2
    assert (d.origin == ORIGIN_UNIFORM).sum() == n_neg - n_neg // 2
    blocks = d.bits.reshape(N, -1, k).sum(-1)  # (n, C) ones per clause
    has_k_minus_1 = (blocks == k - 1).any(-1)
    assert has_k_minus_1[near].all(), "a near miss has no clause block with k-1 ones"
    # a uniform negative may also look like a near miss, hence >=
    assert has_k_minus_1[d.y == 0].sum() >= n_neg // 2


def test_odd_n():
    d = generate_dnf(401, 32, 4, 5)
    assert (d.y == 1).sum() == 200 and (d.y == 0).sum() == 201
    assert (d.origin == ORIGIN_NEAR_MISS).sum() == 100
    assert (d.origin == ORIGIN_UNIFORM).sum() == 101


@pytest.mark.parametrize("n", [2, 3])
def test_smallest_n(n):
    d = generate_dnf(n, 32, 4, 0)
    assert (d.y == 1).sum() == 1 and (d.y == 0).sum() == n - 1
    assert not satisfied(d.bits, 4)[d.y == 0].any()


# ----------------------------------------------------------------------------- encoding

def test_encoding_ranges(generated):
    _, _, d = generated
    on, off = d.X[d.bits == 1], d.X[d.bits == 0]
    assert on.min() >= 3.0 and on.max() <= 3.5
    assert off.min() >= 0.0 and off.max() <= 0.5


def test_encoding_fills_interval():
    d = generate_dnf(2000, 32, 4, 0)
    on, off = d.X[d.bits == 1], d.X[d.bits == 0]
    assert on.max() - on.min() > 0.49 and off.max() - off.min() > 0.49
    assert abs(on.mean() - 3.25) < 0.01 and abs(off.mean() - 0.25) < 0.01


# ----------------------------------------------------------------------------- randomness

def test_same_seed_same_data():
    a = generate_dnf(300, 32, 4, 42)
    b = generate_dnf(300, 32, 4, np.random.default_rng(42))
    for name in ("bits", "X", "y", "origin", "clauses"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_different_seed_different_data():
    a = generate_dnf(300, 32, 4, 1)
    b = generate_dnf(300, 32, 4, 2)
    assert not np.array_equal(a.bits, b.bits)
    assert not np.array_equal(a.y, b.y)
    assert not np.allclose(a.X, b.X)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, match", [
    (dict(n=1), r"n must be an integer >= 2, got 1"),
    (dict(n=2.5), r"n must be .*got 2\.5"),
    (dict(n=True), r"n must be .*got True"),
    (dict(m=0), r"m must be an integer >= 1, got 0"),
    (dict(m=30), r"m=30 is not divisible by k=4"),
    (dict(k=0), r"k must be an integer >= 1, got 0"),
    (dict(m=8, k=1), r"max_ones=3 exceeds C\*\(k-1\)=0"),
    (dict(min_ones=3), r"min_ones=3 is below k=4"),
    (dict(max_ones=3), r"max_ones=3 is below k=4"),
    (dict(min_ones=10, max_ones=9), r"min_ones=10 exceeds max_ones=9"),
    (dict(max_ones=33), r"max_ones=33 exceeds m=32"),
    (dict(max_ones=25), r"max_ones=25 exceeds C\*\(k-1\)=24"),
    (dict(min_ones=-1), r"min_ones must be an integer >= 0, got -1"),
    (dict(m=128, k=2), r"max_ones=48 is too large for m=128, k=2"),
    (dict(m=32, k=2, min_ones=16, max_ones=16), r"max_ones=16 is too large"),
    (dict(rng=None), r"seed must be .*None"),
    (dict(rng="abc"), r"seed must be .*'abc'"),
])
def test_bad_input(kwargs, match):
    args = dict(n=100, m=32, k=4, rng=0) | kwargs
    with pytest.raises(FPEError, match=match):
        generate_dnf(**args)


def test_rejection_loop_guard(monkeypatch):
    # skip the up-front check so the loop itself must stop at the guard
    monkeypatch.setattr(dnf, "_check_rejection_feasible", lambda *a: None)
    monkeypatch.setattr(dnf, "MAX_REJECTION_ROUNDS", 1)
    with pytest.raises(FPEError, match=r"after 1 redraw rounds"):
        generate_dnf(200, 32, 2, 0, min_ones=16, max_ones=16)  # acceptance ~1e-4


# ----------------------------------------------------------------------------- acceptance

@pytest.mark.parametrize("C, k", [(1, 3), (3, 2), (3, 3), (2, 4)])
def test_prob_no_full_clause_brute_force(C, k):
    m = C * k
    for t in range(m + 1):
        subsets = list(itertools.combinations(range(m), t))
        good = sum(all(len(set(range(c * k, c * k + k)) - set(sub)) > 0 for c in range(C))
                   for sub in subsets)
        assert prob_no_full_clause(C, k, t) == pytest.approx(good / math.comb(m, t), abs=1e-15)
        assert (prob_no_full_clause(C, k, t) == 0.0) == (t > C * (k - 1))


# ----------------------------------------------------------------------------- evaluate_dnf

def test_evaluate_dnf_worked_example():
    bits = [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [1, 0, 1, 0], [1, 1, 1, 1]]
    np.testing.assert_array_equal(evaluate_dnf(bits, 2), [True, False, True, False, True])
    np.testing.assert_array_equal(evaluate_dnf(np.array(bits, bool), 4),
                                  [False, False, False, False, True])


def test_evaluate_dnf_agrees_with_labels(generated):
    _, k, d = generated
    out = evaluate_dnf(d.bits, k)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, d.y == 1)


@pytest.mark.parametrize("bits, k, match", [
    (np.zeros(8), 4, r"2-D .*got shape \(8,\)"),
    (np.zeros((2, 6)), 4, r"m=6 is not divisible by k=4"),
    (np.full((2, 4), 2), 2, r"0/1, got value 2"),
    (np.zeros((2, 4)), 0, r"k must be an integer >= 1, got 0"),
])
def test_evaluate_dnf_bad_input(bits, k, match):
    with pytest.raises(FPEError, match=match):
        evaluate_dnf(bits, k)


# ----------------------------------------------------------------------------- split

def test_split_indices_partition():
    train, test = split_indices(400, 0.2, 0)
    assert len(train) == 320 and len(test) == 80
    assert not set(train) & set(test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(400))


def test_train_test_split_rows():
    d = generate_dnf(N, 32, 4, 0)
    train, test = train_test_split(d, 0.25, 1)
    assert (train.n, test.n) == (300, 100)
    assert (train.m, train.k, test.m, test.k) == (32, 4, 32, 4)
    # X rows are distinct with probability 1, so they identify rows: a disjoint partition
    whole = {r.tobytes() for r in d.X}
    tr, te = {r.tobytes() for r in train.X}, {r.tobytes() for r in test.X}
    assert not tr & te and tr | te == whole and len(tr) + len(te) == N
    # bits, y and origin stay attached to their rows
    idx = {r.tobytes(): i for i, r in enumerate(d.X)}
    rows = np.array([idx[r.tobytes()] for r in test.X])
    np.testing.assert_array_equal(test.bits, d.bits[rows])
    np.testing.assert_array_equal(test.y, d.y[rows])
    np.testing.assert_array_equal(test.origin, d.origin[rows])


def test_train_test_split_seeded():
    d = generate_dnf(N, 32, 4, 0)
    a, _ = train_test_split(d, 0.2, 5)
    b, _ = train_test_split(d, 0.2, np.random.default_rng(5))
    c, _ = train_test_split(d, 0.2, 6)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)


@pytest.mark.parametrize("n, frac, match", [
    (100, 0.0, r"test_fraction must be a number in \(0, 1\), got 0\.0"),
    (100, 1.0, r"got 1\.0"),
    (100, 1.5, r"got 1\.5"),
    (100, -0.2, r"got -0\.2"),
    (100, float("nan"), r"got nan"),
    (100, True, r"got True"),
    (100, "0.2", r"got '0\.2'"),
    (10, 0.01, r"test_fraction=0\.01 with n=10 leaves the test set empty"),
    (10, 0.99, r"test_fraction=0\.99 with n=10 leaves the training set empty"),
])
def test_split_bad_input(n, frac, match):
    d = generate_dnf(n, 32, 4, 0)
    with pytest.raises(FPEError, match=match):
        train_test_split(d, frac, 0)


def test_split_needs_dnfdata():
    with pytest.raises(FPEError, match=r"data must be a DNFData, got ndarray"):
        train_test_split(np.zeros((4, 4)), 0.5, 0)


def test_dnfdata_checks_shapes():
    with pytest.raises(FPEError, match=r"DNFData.X must have shape \(2, 4\), got \(2, 3\)"):
        DNFData(bits=np.zeros((2, 4), np.uint8), X=np.zeros((2, 3)), y=np.zeros(2),
                clauses=np.arange(4).reshape(2, 2), m=4, k=2)


# ----------------------------------------------------------------------------- defaults

def test_defaults_give_whole_batches():
    n_test = round(DEFAULT_N_SAMPLES * DEFAULT_TEST_FRACTION)
    assert (DEFAULT_N_SAMPLES - n_test) % 500 == 0  # batch size B = 500 (A.3.1)
    assert math.sqrt(0.25 / n_test) < 0.012  # worst-case binomial SE of test accuracy


def test_sizes_beyond_memory_are_refused_before_drawing():
    with pytest.raises(FPEError, match=r"^generate_dnf\(n=1000000000000, m=32\) needs .* but only .* of memory "
                                       r"is available$"):
        generate_dnf(10**12, 32, 4, rng=0)
