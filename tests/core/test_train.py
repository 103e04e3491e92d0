"""The reference training loop (fpe_ref.train, Alg. A3): masks through Adam, seeding, warm-up, bad input."""

import numpy as np
import pytest

from fpe_ref.errors import FPEError
from fpe_ref.mlp import MLP
from fpe_ref.train import TrainConfig, train

RNG_SEED = 1234  # the conftest ``rng`` fixture's seed for this module


def test_masked_weights_stay_exactly_zero_through_adam_with_every_penalty(masked_model, rng):
    model = masked_model([8, 6, 5, 1], rng, True, (1, 2))
    X, y = rng.normal(size=(64, 8)), (rng.random(64) < 0.5).astype(float)
    cfg = TrainConfig(epochs=100, warmup_epochs=10, batch_size=64, lr=1e-2, l1=1e-3, l2=1e-3, orth=1e-2)
    opt, _ = train(model, X, y, cfg, rng)
    for name, M in model.masks.items():
        assert np.all(model.params[name][~M] == 0.0), name
        assert np.all(opt.m[name][~M] == 0.0) and np.all(opt.v[name][~M] == 0.0), name
        assert np.count_nonzero(model.params[name][M]) == M.sum(), name  # unmasked weights moved


def test_training_reduces_loss_and_is_seeded(rng):
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(float)
    runs = []
    for _ in range(2):
        model = MLP.init([4, 8, 1], np.random.default_rng(5))
        _, hist = train(model, X, y, TrainConfig(epochs=30, warmup_epochs=1, batch_size=50, lr=1e-2), np.random.default_rng(6))
        runs.append((model, hist))
    assert runs[0][1].loss[-1] < 0.5 * runs[0][1].loss[0]
    for k in runs[0][0].params:
        np.testing.assert_array_equal(runs[0][0].params[k], runs[1][0].params[k], err_msg=k)


@pytest.mark.parametrize("warmup", ["lr", "penalty", "none"])
def test_warmup_interpretations_differ_as_documented(rng, warmup):
    """lr warm-up scales the first epoch's step by 1/W; the others take full steps."""
    X, y = rng.normal(size=(10, 3)), (rng.random(10) < 0.5).astype(float)
    m0 = MLP.init([3, 2, 1], np.random.default_rng(0))
    m1 = m0.copy()
    cfg = TrainConfig(epochs=1, warmup_epochs=4, warmup=warmup, batch_size=10, l1=0, l2=0)
    train(m1, X, y, cfg, np.random.default_rng(0))
    step = np.abs(m1.params["b2"] - m0.params["b2"])[0]  # first Adam step = lr * r (|sign| = 1)
    assert step == pytest.approx(1e-3 * (0.25 if warmup == "lr" else 1.0), rel=1e-6)


def test_bad_inputs_raise_clear_errors(rng):
    model = MLP.init([4, 3, 1], rng)
    cfg = TrainConfig(epochs=1)
    with pytest.raises(FPEError, match=r"shape \(5, 3\)"):
        train(model, np.zeros((5, 3)), np.zeros(5), cfg, rng)
    with pytest.raises(FPEError, match="NaN"):
        train(model, np.full((5, 4), np.nan), np.zeros(5), cfg, rng)
    with pytest.raises(FPEError, match="labels"):
        train(model, np.zeros((5, 4)), np.full(5, 2.0), cfg, rng)
    with pytest.raises(FPEError, match="warmup"):
        TrainConfig(warmup="cosine")
    with pytest.raises(FPEError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(FPEError, match="batch_size must be a positive integer, got True"):
        TrainConfig(batch_size=True)  # a bool is never a count
    with pytest.raises(FPEError, match="epochs must be a positive integer, got 2.0"):
        TrainConfig(epochs=2.0)
