"""Dynamic rewiring (A.7, after RigL): exact counts, zero starts, schedule, and training with it."""

import numpy as np
import pytest

from fpe_ref.errors import FPEError
from fpe_ref.expand import expand
from fpe_ref.mlp import MLP
from fpe_ref.optim import Adam
from fpe_ref.rewire import RewireSchedule, RewiringAdam, rewire_matrix
from fpe_ref.train import TrainConfig, train

RNG_SEED = 3  # the conftest ``rng`` fixture's seed for this module


def _sparse(rng, shape=(6, 10), density=0.5):
    M = rng.random(shape) < density
    W = rng.normal(size=shape) * M
    return W, M


def test_rewire_matrix_hand_example():
    """Active |w| = [3, 1, 2] at positions 0, 1, 2; masked 3, 4, 5; f = 1/3 of 3 masked -> k = 1."""
    W = np.array([[3.0, -1.0, 2.0, 0.0, 0.0, 0.0]])
    M = W != 0
    m, v = np.ones_like(W), np.ones_like(W)
    pruned, grown = rewire_matrix(W, M, 1 / 3, np.random.default_rng(0), (m, v))
    assert pruned.tolist() == [1]  # the smallest |w|
    assert grown.size == 1 and grown[0] in (3, 4, 5)
    assert M.sum() == 3 and not M[0, 1] and M[0, grown[0]]
    assert W[0, 1] == 0.0 and W[0, grown[0]] == 0.0
    assert m[0, 1] == v[0, 1] == m[0, grown[0]] == v[0, grown[0]] == 0.0
    assert m[0, 0] == 1.0  # untouched positions keep their moments


@pytest.mark.parametrize("frac", [0.0, 0.1, 0.5, 1.0])
def test_rewire_matrix_keeps_count_and_invariant(rng, frac):
    W, M = _sparse(rng)
    before, was_masked = int(M.sum()), ~M.copy()
    pruned, grown = rewire_matrix(W, M, frac, rng)
    assert int(M.sum()) == before
    assert np.all(W[~M] == 0.0)
    assert pruned.size == grown.size == min(round(frac * was_masked.sum()), before)
    assert np.all(was_masked.reshape(-1)[grown]), "growth only from positions masked before the event"
    assert not np.any(was_masked.reshape(-1)[pruned]), "pruning only among weights active before the event"
    assert np.all(W.reshape(-1)[grown] == 0.0)


def test_rewire_matrix_rejects_non_contiguous(rng):
    W, M = _sparse(rng, (6, 10))
    with pytest.raises(FPEError, match="contiguous"):
        rewire_matrix(W[:, ::2], M[:, ::2], 0.1, rng)


def test_schedule_constant_and_cosine():
    s = RewireSchedule(every=10, fraction=0.3)
    assert [t for t in range(1, 41) if s.is_event(t)] == [10, 20, 30, 40]
    assert s.fraction_at(25) == 0.3
    c = RewireSchedule(every=10, fraction=0.4, decay="cosine", end=100)
    assert c.fraction_at(0) == pytest.approx(0.4)
    assert c.fraction_at(50) == pytest.approx(0.2)
    assert c.fraction_at(100) == pytest.approx(0.0, abs=1e-12)
    assert not c.is_event(110) and c.fraction_at(110) == 0.0


@pytest.mark.parametrize("kwargs,msg", [
    (dict(every=0), "every"), (dict(fraction=1.5), "fraction"), (dict(decay="linear"), "decay"),
    (dict(decay="cosine"), "needs an end"), (dict(end=0), "end"),
])
def test_schedule_bad_input(kwargs, msg):
    with pytest.raises(FPEError, match=msg):
        RewireSchedule(**kwargs)


def assert_rewired(child, parent, opt, counts, masks_before):
    """Per matrix: count unchanged, masked weights and Adam moments exactly 0; some mask moved."""
    for k, M in child.masks.items():
        assert int(M.sum()) == counts[k], k
        assert np.all(child.params[k][~M] == 0.0), k
        assert np.all(opt.m[k][~M] == 0.0) and np.all(opt.v[k][~M] == 0.0), k
    assert any(not np.array_equal(child.masks[k], masks_before[k]) for k in child.masks), "nothing was rewired"
    assert child.ledger().weights == parent.ledger().weights


def test_training_with_rewiring_holds_count_per_layer(rng):
    X = rng.normal(size=(200, 12))
    y = rng.integers(0, 4, size=200)
    parent = MLP.init([12, 3, 4], rng)
    train(parent, X, y, TrainConfig(epochs=2, warmup="none", batch_size=50), rng)
    child = expand(parent, 2, "random", rng).model
    counts = {k: int(M.sum()) for k, M in child.masks.items()}
    opt = RewiringAdam(child.params, RewireSchedule(every=3, fraction=0.2), np.random.default_rng(9))
    masks_before = {k: M.copy() for k, M in child.masks.items()}
    train(child, X, y, TrainConfig(epochs=3, warmup="none", batch_size=50), rng, optimizer=opt)
    assert opt.t == 12 and [e["step"] for e in opt.log if e["name"] == "W1"] == [3, 6, 9, 12]
    assert_rewired(child, parent, opt, counts, masks_before)


def test_from_adam_and_names(rng):
    W, M = _sparse(rng, (4, 6))
    params = {"W1": W, "b1": np.zeros(4)}
    base = Adam(params)
    base.t = 7
    opt = RewiringAdam.from_adam(base, RewireSchedule(every=1, fraction=0.5), rng, names=["W1"])
    assert opt.t == 7
    opt.step(params, {"W1": np.ones_like(W) * M, "b1": np.zeros(4)}, {"W1": M})
    assert opt.log[-1]["step"] == 8 and opt.log[-1]["count"] == int(M.sum())
    bad = RewiringAdam(params, RewireSchedule(every=1), rng, names=["b1"])
    with pytest.raises(FPEError, match="no mask"):
        bad.step(params, {"W1": np.zeros_like(W), "b1": np.zeros(4)}, {"W1": M})


def test_rewiring_a_deep_expanded_net_with_layer_norm(rng):
    """A.7 combined: a 5-layer net with LayerNorm, alternating expansion, then rewiring."""
    from fpe_ref.deep import expand_alternating

    X = rng.normal(size=(120, 16))
    y = rng.integers(0, 3, size=120)
    parent = MLP.init([16, 8, 8, 8, 8, 3], rng, layer_norm=True)
    train(parent, X, y, TrainConfig(epochs=2, warmup="none", batch_size=40), rng)
    child = expand_alternating(parent, 2, "random", rng).model
    assert child.layer_norm and len(child.masks) >= 2
    counts = {k: int(M.sum()) for k, M in child.masks.items()}
    masks_before = {k: M.copy() for k, M in child.masks.items()}
    opt = RewiringAdam(child.params, RewireSchedule(every=2, fraction=0.3), np.random.default_rng(5))
    train(child, X, y, TrainConfig(epochs=2, warmup="none", batch_size=40), rng, optimizer=opt)
    assert_rewired(child, parent, opt, counts, masks_before)
    assert all(np.all(np.isfinite(p)) for p in child.params.values())
