"""Penalties and Adam (fpe_ref.optim): gradients, hand-computed Adam steps, the warm-up schedule."""

import numpy as np
import pytest

from fpe_ref.optim import Adam, Penalties, penalty_loss_and_grads, schedule
from fpe_ref.train import TrainConfig

RNG_SEED = 1234  # the conftest ``rng`` fixture's seed for this module


@pytest.mark.parametrize("pen", [Penalties(1e-2, 0, 0), Penalties(0, 1e-2, 0), Penalties(0, 0, 1e-2), Penalties(1e-2, 3e-2, 2e-2)])
@pytest.mark.parametrize("masked", [False, True])
def test_penalty_gradients(masked_model, numgrad, assert_grad, rng, pen, masked):
    model = masked_model([6, 5, 2], rng, True, (1, 2) if masked else ())
    model.params["W1"][model.params["W1"] == 0] = 0.0
    loss, grads = penalty_loss_and_grads(model.params, model.masks, pen)
    W1 = model.params["W1"]
    ref = pen.l1 * np.abs(W1).sum() + pen.l2 * sum((p**2).sum() for p in model.params.values()) \
        + pen.orth * ((W1 @ W1.T - np.eye(5)) ** 2).sum()
    assert loss == pytest.approx(ref, rel=1e-12)
    for name, p in model.params.items():
        num = numgrad(lambda: penalty_loss_and_grads(model.params, model.masks, pen)[0], p)
        if name in model.masks:
            num *= model.masks[name]
            assert np.all(grads[name][~model.masks[name]] == 0.0), name
        assert_grad(grads[name], num, name)


def test_l1_subgradient_at_zero_is_zero():
    params = {"W1": np.array([[0.0, 2.0, -3.0]]), "b1": np.zeros(1)}
    _, g = penalty_loss_and_grads(params, {}, Penalties(1.0, 0, 0))
    np.testing.assert_array_equal(g["W1"], [[0.0, 1.0, -1.0]])


def test_adam_matches_hand_computed_first_steps():
    p = {"w": np.array([1.0, -2.0])}
    opt = Adam(p, lr=0.1)
    opt.step(p, {"w": np.array([0.5, -0.25])}, {})
    # t=1: mhat = g, vhat = g^2, so the step is lr * g / (|g| + eps), almost lr * sign(g)
    w1 = np.array([1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 0.25 / (0.25 + 1e-8)])
    np.testing.assert_allclose(p["w"], w1, rtol=1e-15)
    opt.step(p, {"w": np.array([1.0, 0.0])}, {})
    m = 0.9 * np.array([0.05, -0.025]) + 0.1 * np.array([1.0, 0.0])
    v = 0.999 * 0.001 * np.array([0.25, 0.0625]) + 0.001 * np.array([1.0, 0.0])
    step = 0.1 / (1 - 0.9**2) * m / (np.sqrt(v) / np.sqrt(1 - 0.999**2) + 1e-8)
    np.testing.assert_allclose(p["w"], w1 - step, rtol=1e-14)


# ---------------------------------------------------------------- the warm-up schedule (Alg. A3 line 8)
def _cfg(warmup, W=1000):
    return TrainConfig(warmup=warmup, warmup_epochs=W, lr=1e-3, l1=1e-7, l2=1e-5, orth=4e-2)


@pytest.mark.parametrize("warmup,epoch,lr,pen", [
    # r = min(1, e / W) = 250 / 1000 = 1/4, a power of two: every product below is exact
    ("lr", 250, 2.5e-4, Penalties(1e-7, 1e-5, 4e-2)),
    ("penalty", 250, 1e-3, Penalties(2.5e-8, 2.5e-6, 1e-2)),
    ("none", 250, 1e-3, Penalties(1e-7, 1e-5, 4e-2)),
    # r reaches 1 at e = W and stays there
    ("lr", 1000, 1e-3, Penalties(1e-7, 1e-5, 4e-2)),
    ("lr", 3000, 1e-3, Penalties(1e-7, 1e-5, 4e-2)),
    ("penalty", 1000, 1e-3, Penalties(1e-7, 1e-5, 4e-2)),
    ("penalty", 5000, 1e-3, Penalties(1e-7, 1e-5, 4e-2)),
])
def test_schedule_hand_computed(warmup, epoch, lr, pen):
    got_lr, got_pen = schedule(_cfg(warmup), epoch)
    assert got_lr == lr
    assert got_pen == pen


def test_schedule_first_epoch_of_lr_warmup():
    """Epoch 1 of W = 1000 under "lr": lr / 1000; of W = 4: lr / 4 (the step of the training test)."""
    assert schedule(_cfg("lr"), 1)[0] == pytest.approx(1e-6, rel=1e-15)
    assert schedule(_cfg("lr", W=4), 1)[0] == 2.5e-4
    assert schedule(_cfg("penalty", W=4), 1)[1] == Penalties(2.5e-8, 2.5e-6, 1e-2)


def test_schedule_penalties_of_the_config_unchanged_outside_penalty_warmup():
    cfg = _cfg("lr")
    for epoch in (1, 500, 1000):
        assert schedule(cfg, epoch)[1] == cfg.penalties


@pytest.mark.parametrize("warmup,lr,pen", [
    ("lr", 2.5e-4, Penalties(1e-7, 1e-5, 4e-2)),
    ("penalty", 1e-3, Penalties(2.5e-8, 2.5e-6, 1e-2)),
])
def test_schedule_without_warmup_epochs_ramps_over_the_phase(warmup, lr, pen):
    """W unset: W = N, the phase's own epochs (epoch 50 of 200 gives r = 1/4, exactly)."""
    cfg = TrainConfig(epochs=200, warmup=warmup, lr=1e-3, l1=1e-7, l2=1e-5, orth=4e-2)
    assert schedule(cfg, 50) == (lr, pen)
    assert schedule(cfg, 200) == (1e-3, Penalties(1e-7, 1e-5, 4e-2))
