"""FPE expansion (Alg. A1): invariants over many seeds and shapes, tie-breaking, optimizer carry, errors."""

import numpy as np
import pytest

from fpe_ref.errors import FPEError
from fpe_ref.expand import carry_optimizer, expand
from fpe_ref.metrics import capacity, mean_cosine
from fpe_ref.mlp import MLP
from fpe_ref.train import TrainConfig, train

SHAPES = [(32, 8, 1, 2), (32, 8, 1, 4), (30, 5, 3, 4), (7, 3, 2, 3), (13, 4, 10, 2), (5, 2, 1, 5)]


def clauses(d, k):
    return [np.arange(i, min(i + k, d)) for i in range(0, d, k)]


@pytest.mark.parametrize("d,h,C,alpha", SHAPES)
@pytest.mark.parametrize("split", ["random", "clause"])
@pytest.mark.parametrize("seed", range(4))
def test_expand_invariants(d, h, C, alpha, split, seed):
    rng = np.random.default_rng(seed)
    parent = MLP.init([d, h, C], rng)
    groups = clauses(d, 2 if d < 10 else 4)
    if split == "clause" and len(groups) < alpha:
        pytest.skip("fewer clauses than children")
    res = expand(parent, alpha, split, np.random.default_rng(100 + seed), groups=groups)
    child = res.model
    M1, M2, S = child.masks["W1"], child.masks["W2"], res.split_masks
    # the defining invariant: the weight count is the parent's, exactly
    assert child.ledger().weights == parent.ledger().weights == d * h + h * C
    assert child.ledger().biases == parent.ledger().biases + (alpha - 1) * h
    # children of a parent are disjoint and cover its inputs
    np.testing.assert_array_equal(S.reshape(h, alpha, d).sum(axis=1), np.ones((h, d)))
    assert not np.any(M1 & ~S)
    # balanced random split: d // alpha or d // alpha + 1 inputs per child
    if split == "random":
        sizes = S.sum(axis=1)
        assert set(np.unique(sizes)) <= {d // alpha, d // alpha + 1}
        assert np.all(S.reshape(h, alpha, d).sum(axis=2).sum(axis=1) == d)
    else:  # a clause split never cuts a clause
        for g in groups:
            assert np.all(S[:, g].all(axis=1) | ~S[:, g].any(axis=1))
    # children copy the parent's weights on their inputs; W2 columns duplicated; biases copied
    P = res.parent_of
    np.testing.assert_array_equal(child.params["W1"][M1], parent.params["W1"][P][M1])
    np.testing.assert_array_equal(child.params["W2"][M2], parent.params["W2"][:, P][M2])
    np.testing.assert_array_equal(child.params["b1"], parent.params["b1"][P])
    np.testing.assert_array_equal(child.params["b2"], parent.params["b2"])
    # masked weights are exactly zero
    assert np.all(child.params["W1"][~M1] == 0) and np.all(child.params["W2"][~M2] == 0)
    # pruned = the smallest magnitudes (one global ranking over W1' and W2')
    n_pruned = sum(len(v) for v in res.pruned.values())
    assert n_pruned == (alpha - 1) * h * C
    pruned_mag = np.concatenate([np.abs(parent.params["W1"][P][r, c]) for r, c in [res.pruned["W1"].T]]
                                + [np.abs(parent.params["W2"][:, P][r, c]) for r, c in [res.pruned["W2"].T]])
    kept_mag = np.concatenate([np.abs(child.params["W1"][M1]), np.abs(child.params["W2"][M2])])
    assert pruned_mag.max() <= kept_mag.min()
    # the parent is untouched
    assert "W1" not in parent.masks


def test_expand_is_seeded_and_ties_break_by_seed_not_memory_order():
    rng = np.random.default_rng(0)
    parent = MLP.init([16, 4, 1], rng)
    parent.params["W1"][:] = 1.0  # every W1 weight ties, so pruning is decided by the tie-break key alone
    a = expand(parent, 2, "random", np.random.default_rng(7))
    b = expand(parent, 2, "random", np.random.default_rng(7))
    c = expand(parent.copy(), 2, "random", np.random.default_rng(8))
    for k in a.model.params:
        np.testing.assert_array_equal(a.model.params[k], b.model.params[k], err_msg=k)
    np.testing.assert_array_equal(a.model.masks["W1"], b.model.masks["W1"])
    assert not np.array_equal(a.model.masks["W1"], c.model.masks["W1"])


def test_tied_duplicate_columns_are_pruned_without_favouring_a_child():
    """W2 copies are exact ties; over many seeds the pruned copy is child 0 or 1 about equally."""
    parent = MLP.init([8, 4, 1], np.random.default_rng(0))
    parent.params["W2"][:] = 1e-6  # W2 smallest: all pruning hits W2's duplicated columns
    first = 0
    for s in range(200):
        res = expand(parent, 2, "random", np.random.default_rng(s))
        assert len(res.pruned["W2"]) == 4 and len(res.pruned["W1"]) == 0
        first += np.sum(res.pruned["W2"][:, 1] % 2 == 0)
    assert 300 < first < 500  # 800 pruned columns; binomial(800, 1/2) sd ~ 14


def test_explicit_masks_and_partition_errors():
    parent = MLP.init([4, 2, 1], np.random.default_rng(0))
    S = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=bool)
    res = expand(parent, 2, S, np.random.default_rng(0))
    np.testing.assert_array_equal(res.split_masks, S)
    bad = S.copy()
    bad[0, 2] = True  # input 2 of parent 0 given to two children
    with pytest.raises(FPEError, match="not a partition: parent 0, input 2"):
        expand(parent, 2, bad, np.random.default_rng(0))
    with pytest.raises(FPEError, match="shape"):
        expand(parent, 2, S[:3], np.random.default_rng(0))
    with pytest.raises(FPEError, match="0/1"):
        expand(parent, 2, S * 2, np.random.default_rng(0))


@pytest.mark.parametrize("alpha,match", [(1, "alpha must be an integer >= 2"), (2.5, "alpha must be an integer"),
                                         ("2", "alpha must be an integer"), (5, "larger than the fan-in d=4"),
                                         (True, "alpha must be an integer")])
def test_bad_alpha(alpha, match):
    parent = MLP.init([4, 2, 1], np.random.default_rng(0))
    with pytest.raises(FPEError, match=match):
        expand(parent, alpha, "random", np.random.default_rng(0))


def test_other_expand_errors():
    parent = MLP.init([8, 2, 1], np.random.default_rng(0))
    with pytest.raises(FPEError, match="needs the clause groups"):
        expand(parent, 2, "clause", np.random.default_rng(0))
    with pytest.raises(FPEError, match="leaves a child with no inputs"):
        expand(parent, 4, "clause", np.random.default_rng(0), groups=[np.arange(4), np.arange(4, 8)])
    with pytest.raises(FPEError, match="split must be one of"):
        expand(parent, 2, "no-such-split", np.random.default_rng(0))
    with pytest.raises(FPEError, match="needs a seed"):
        expand(parent, 2, "random", None)
    with pytest.raises(FPEError, match="hidden layer"):
        expand(parent, 2, "random", np.random.default_rng(0), layer=2)
    # a parent input that is already masked cannot give a child anything
    masked = MLP(parent.params, {"W1": np.array([[1, 1, 0, 0, 0, 0, 0, 0], [1] * 8], dtype=bool)})
    S = np.zeros((4, 8), bool)
    S[0, :2] = S[1, 2:] = S[2, ::2] = S[3, 1::2] = True
    with pytest.raises(FPEError, match="child 1 .parent 0. with no inputs"):
        expand(masked, 2, S, np.random.default_rng(0))


def test_expand_a_masked_parent_keeps_its_count():
    rng = np.random.default_rng(3)
    dense = MLP.init([12, 4, 3], rng)
    M = rng.random((4, 12)) < 0.7
    parent = MLP(dense.params, {"W1": M})
    res = expand(parent, 2, "random", rng)
    assert res.model.ledger().weights == parent.ledger().weights
    assert not np.any(res.model.masks["W1"] & ~M[res.parent_of])


def test_deep_alternating_expansion_keeps_count():
    rng = np.random.default_rng(0)
    model = MLP.init([10, 6, 6, 6, 6, 3], rng, layer_norm=True)
    before = model.ledger().weights
    for layer in (1, 3):
        model = expand(model, 2, "random", rng, layer=layer).model
        assert model.ledger().weights == before
    assert model.sizes == [10, 12, 6, 12, 6, 3]
    X = rng.normal(size=(4, 10))
    assert model.forward(X)[0].shape == (4, 3)


def test_carry_optimizer_maps_moments_child_by_child():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 6)), (rng.random(50) < 0.5).astype(float)
    parent = MLP.init([6, 3, 1], rng)
    opt, _ = train(parent, X, y, TrainConfig(epochs=3, batch_size=25), rng)
    res = expand(parent, 2, "random", rng)
    new = carry_optimizer(opt, res, parent)
    M1, M2, P = res.model.masks["W1"], res.model.masks["W2"], res.parent_of
    assert new.t == opt.t
    np.testing.assert_array_equal(new.m["W1"], opt.m["W1"][P] * M1)
    np.testing.assert_array_equal(new.v["W2"], opt.v["W2"][:, P] * M2)
    np.testing.assert_array_equal(new.m["b1"], opt.m["b1"][P])
    train(res.model, X, y, TrainConfig(epochs=2, batch_size=25), rng, optimizer=new)
    assert np.all(res.model.params["W1"][~M1] == 0) and np.all(new.m["W1"][~M1] == 0)


def test_split_raises_capacity_and_lowers_cosine_by_construction():
    """Sec. 3.2's metrics move at the split itself: a clause split of a dense W1 isolates clauses."""
    rng = np.random.default_rng(0)
    groups = clauses(16, 4)
    parent = MLP.init([16, 4, 1], rng)
    parent.params["W1"][:] = np.abs(parent.params["W1"]) + 0.1  # all-positive: maximal overlap
    res = expand(parent, 4, "clause", rng, groups=groups)
    assert capacity(res.model.params["W1"], groups)[1] > capacity(parent.params["W1"], groups)[1]
    assert mean_cosine(res.model.params["W1"]) < mean_cosine(parent.params["W1"])


def test_expand_refuses_a_model_that_is_not_an_mlp(rng):
    model = MLP.init([8, 4, 1], rng)
    with pytest.raises(FPEError, match=r"^model must be an fpe_ref\.MLP, got dict$"):
        expand(model.params, 2, "random", rng)


def test_expand_refuses_clause_groups_with_non_integer_indices(rng):
    parent = MLP.init([8, 4, 1], rng)
    with pytest.raises(FPEError, match=r"^index 0 of group 0 must be an index in \[0, 8\), got 0\.5$"):
        expand(parent, 2, "clause", rng, groups=[[0.5, 1], [2, 3]])


def test_expand_refuses_an_expansion_larger_than_memory(rng, monkeypatch):
    from fpe_ref import errors

    parent = MLP.init([8, 4, 1], rng)
    monkeypatch.setattr(errors, "available_memory", lambda: 1000)
    with pytest.raises(FPEError, match=r"^expanding layer 1 \(4 x 8\) by alpha=4 needs .* but only 1000 B of "
                                       r"memory is available$"):
        expand(parent, 4, "random", rng)
