"""Splits (Sec. 3.1, 3.3, A.7): balanced random partitions, Gram clusters, the exact 2:4 pattern, errors."""

import numpy as np
import pytest

from fpe_ref import splits
from fpe_ref.errors import FPEError
from fpe_ref.expand import expand, split_masks_for
from fpe_ref.mlp import MLP

RNG_SEED = 7  # the conftest ``rng`` fixture's seed for this module


def _is_partition(S, h, alpha):
    return np.all(S.reshape(h, alpha, -1).sum(axis=1) == 1)


# ---------------------------------------------------------------- 2:4
@pytest.mark.parametrize("h,d", [(1, 4), (3, 8), (5, 784)])
def test_two_four_pattern_is_exact(rng, h, d):
    S = splits.two_four_split(h, d, 2, rng)
    assert S.shape == (2 * h, d) and S.dtype == bool
    blocks = S.reshape(2 * h, d // 4, 4).sum(axis=2)
    assert np.all(blocks == 2), "every child row must hold exactly 2 of every 4 consecutive inputs"
    assert _is_partition(S, h, 2)
    assert splits.is_two_four(S)


def test_two_four_draws_every_pair_uniformly(rng):
    """All C(4,2) = 6 pairs appear for child 0, each with frequency near 1/6 (4000 blocks)."""
    S = splits.two_four_split(1000, 16, 2, rng)
    pairs = S[0::2].reshape(-1, 4)  # child-0 blocks, (4000, 4)
    codes = pairs @ np.array([8, 4, 2, 1])
    values, counts = np.unique(codes, return_counts=True)
    assert set(values) == {3, 5, 6, 9, 10, 12}
    # binomial sd of a 1/6 share over 4000 blocks is 0.0059; 5 sd tolerance
    assert np.all(np.abs(counts / codes.size - 1 / 6) < 0.03), counts


def test_two_four_is_seeded():
    a = splits.two_four_split(4, 16, 2, np.random.default_rng(3))
    b = splits.two_four_split(4, 16, 2, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("alpha,d,msg", [(4, 16, "alpha=2 only"), (2, 10, "divisible by 4"), (1, 8, "alpha must be")])
def test_two_four_bad_input(rng, alpha, d, msg):
    with pytest.raises(FPEError, match=msg):
        splits.two_four_split(3, d, alpha, rng)


def test_two_four_survives_expansion_as_at_most_two_of_four(rng):
    model = MLP.init([16, 3, 10], rng)
    res = expand(model, 2, "two-four", rng)
    M1 = res.model.masks["W1"]
    assert splits.is_two_four(M1)
    assert np.all(res.split_masks.reshape(6, 4, 4).sum(axis=2) == 2)
    assert res.model.ledger().weights == model.ledger().weights
    assert res.pruned["W1"].shape[0] + res.pruned["W2"].shape[0] == 3 * 10  # (alpha-1) h C


def test_is_two_four_rejects_three_of_four():
    M = np.zeros((1, 8), dtype=bool)
    M[0, :3] = True
    assert not splits.is_two_four(M)


# ---------------------------------------------------------------- Gram clusters
def _block_weights(rng, n_blocks=4, size=5, h=6):
    """W whose columns come in n_blocks blocks of identical columns: G has n_blocks distinct row types."""
    base = rng.normal(size=(h, n_blocks))
    return np.repeat(base, size, axis=1)  # (h, n_blocks * size)


@pytest.mark.parametrize("linkage", splits.GRAM_LINKAGES)
def test_gram_groups_recover_planted_blocks(rng, linkage):
    W = _block_weights(rng)
    groups = splits.gram_groups(W, n_clusters=4, linkage=linkage)
    assert sorted(tuple(g) for g in groups) == [tuple(range(5 * b, 5 * b + 5)) for b in range(4)]


def test_gram_groups_partition_and_cap(rng):
    W = rng.normal(size=(8, 30))
    groups = splits.gram_groups(W, n_clusters=7)
    allidx = np.sort(np.concatenate(groups))
    np.testing.assert_array_equal(allidx, np.arange(30))
    assert 1 <= len(groups) <= 7
    assert len(splits.gram_groups(W, n_clusters=100)) == 30  # capped at d: singletons


def test_gram_split_keeps_clusters_together_and_balances(rng):
    W = _block_weights(rng, n_blocks=6, size=4, h=5)
    S = splits.gram_split(W, 2, rng, n_clusters=6)
    assert S.shape == (10, 24) and _is_partition(S, 5, 2)
    for row in S:
        for b in range(6):
            blk = row[4 * b:4 * b + 4]
            assert blk.all() or not blk.any(), "a cluster was split between children"
        assert row.sum() == 12  # 3 of the 6 equal clusters per child


def test_gram_split_through_expand(rng):
    model = MLP.init([24, 4, 10], rng)
    groups = splits.gram_groups(model.params["W1"], 6)
    res = expand(model, 2, "gram", rng, groups=groups)
    assert res.model.ledger().weights == model.ledger().weights
    for i in range(4):
        for g in groups:
            owners = res.split_masks[2 * i:2 * i + 2][:, g].any(axis=1)
            assert owners.sum() == 1


def test_split_names_and_errors(rng):
    with pytest.raises(FPEError, match="needs the Gram clusters"):
        split_masks_for("gram", 3, 8, 2, rng)
    with pytest.raises(FPEError, match="linkage must be"):
        splits.gram_groups(np.ones((2, 4)), 2, "single")
    with pytest.raises(FPEError, match="n_clusters must be"):
        splits.gram_groups(np.ones((2, 4)), 0)
    with pytest.raises(FPEError, match="NaN"):
        splits.gram_groups(np.full((2, 4), np.nan), 2)
    with pytest.raises(FPEError, match="leaves a child with no inputs"):
        splits.gram_split(_block_weights(rng, 2, 3, 4), 3, rng, n_clusters=2)


# ---------------------------------------------------------------- random partitions
def test_random_partition_balance_when_alpha_does_not_divide():
    rng = np.random.default_rng(0)
    counts = np.zeros(3)
    for _ in range(300):
        child_of = splits.random_partition(10, 3, rng)
        sizes = np.bincount(child_of, minlength=3)
        assert sorted(sizes) == [3, 3, 4]
        counts += sizes == 4
    assert counts.min() > 60  # the larger child is not always the same index


@pytest.mark.parametrize("groups,match", [
    ([[0.5, 1], [2, 3]], r"^index 0 of group 0 must be an index in \[0, 8\), got 0\.5$"),
    ([[0, 1], [2, 3.0]], r"^index 1 of group 1 must be an index in \[0, 8\), got 3\.0$"),
    ([np.ones(8, dtype=bool)], r"^index 0 of group 0 must be an index in \[0, 8\), got True$"),
    ([[0, 8]], r"^index 1 of group 0 must be an index in \[0, 8\), got 8$"),
    ([[0, 1], [1, 2]], r"^group 1 overlaps another group: groups must be disjoint$"),
    ([[0, 0]], r"^group 0 overlaps another group: groups must be disjoint$"),
    ([[], [1]], r"^group 0 of the split is empty$"),
    (5, r"^groups must be a list of index arrays, got 5$"),
], ids=["half", "integral-float", "bool-mask", "too-large", "overlap", "repeated", "empty", "not-a-list"])
def test_group_split_refuses_groups_it_would_misread(rng, groups, match):
    with pytest.raises(FPEError, match=match):
        splits.group_split(3, 8, 2, groups, rng)


@pytest.mark.parametrize("call,match", [
    (lambda rng: splits.random_split(2.5, 8, 2, rng), r"^h must be a positive integer, got 2\.5$"),
    (lambda rng: splits.random_split(2, 8.0, 2, rng), r"^d must be a positive integer, got 8\.0$"),
    (lambda rng: splits.group_split(0, 8, 2, [[0, 1]], rng), r"^h must be a positive integer, got 0$"),
    (lambda rng: splits.two_four_split("3", 8, 2, rng), r"^h must be a positive integer, got '3'$"),
    (lambda rng: splits.check_partition(np.ones((4, 8)), 2, 8, 2.5), r"^alpha must be an integer >= 2, got 2\.5$"),
    (lambda rng: splits.check_partition(np.full((4, 8), "x"), 2, 8, 2),
     r"^explicit split masks must be 0/1 \(or boolean\), got dtype <U1$"),
], ids=["float-h", "float-d", "zero-h", "string-h", "float-alpha", "string-masks"])
def test_split_sizes_are_validated(rng, call, match):
    with pytest.raises(FPEError, match=match):
        call(rng)


def test_random_split_takes_an_integral_float_alpha_as_expand_does(rng):
    a = splits.random_split(3, 8, 2.0, np.random.default_rng(1))
    np.testing.assert_array_equal(a, splits.random_split(3, 8, 2, np.random.default_rng(1)))
