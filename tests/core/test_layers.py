"""Layers (fpe_ref.layers): finite-difference gradients in float64, the losses and their prediction rules."""

import numpy as np
import pytest

from fpe_ref import layers

RNG_SEED = 1234  # the conftest ``rng`` fixture's seed for this module


@pytest.mark.parametrize("masked", [False, True])
def test_linear_gradients(numgrad, assert_grad, rng, masked):
    x, W, b = rng.normal(size=(5, 7)), rng.normal(size=(4, 7)), rng.normal(size=4)
    M = rng.random((4, 7)) < 0.5 if masked else None
    if masked:
        W *= M
    c = rng.normal(size=(5, 4))  # random linear read-out: loss = sum(c * out)

    def f():
        return float(np.sum(c * layers.linear_forward(x, W, b)[0]))

    _, cache = layers.linear_forward(x, W, b)
    dx, dW, db = layers.linear_backward(c, cache, M)
    assert_grad(dx, numgrad(f, x), "dx")
    num_dW = numgrad(f, W)
    if masked:
        num_dW *= M  # a masked weight is not a parameter: its gradient is defined as 0
        assert np.all(dW[~M] == 0.0)
    assert_grad(dW, num_dW, "dW")
    assert_grad(db, numgrad(f, b), "db")


def test_relu_gradient(numgrad, assert_grad, rng):
    x = rng.normal(size=(6, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    c = rng.normal(size=x.shape)
    _, cache = layers.relu_forward(x)
    assert_grad(layers.relu_backward(c, cache), numgrad(lambda: float(np.sum(c * layers.relu_forward(x)[0])), x), "dx")


def test_layernorm_gradients(numgrad, assert_grad, rng):
    x, g, b = rng.normal(size=(5, 6)), rng.normal(size=6), rng.normal(size=6)
    c = rng.normal(size=(5, 6))

    def f():
        return float(np.sum(c * layers.layernorm_forward(x, g, b)[0]))

    _, cache = layers.layernorm_forward(x, g, b)
    dx, dg, db = layers.layernorm_backward(c, cache)
    assert_grad(dx, numgrad(f, x), "dx")
    assert_grad(dg, numgrad(f, g), "dgamma")
    assert_grad(db, numgrad(f, b), "dbeta")


def test_layernorm_matches_definition(rng):
    x = rng.normal(size=(3, 8))
    out, _ = layers.layernorm_forward(x, np.ones(8), np.zeros(8))
    ref = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, ref, rtol=1e-12)


@pytest.mark.parametrize("shape", [(7,), (7, 1)])
def test_bce_gradient_and_value(numgrad, assert_grad, rng, shape):
    z, y = rng.normal(size=shape) * 3, (rng.random(7) < 0.5).astype(float)
    loss, dz = layers.bce_with_logits(z, y)
    p = 1 / (1 + np.exp(-z.reshape(-1)))
    ref = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert loss == pytest.approx(ref, rel=1e-12)
    assert_grad(dz, numgrad(lambda: layers.bce_with_logits(z, y)[0], z), "dz")


def test_bce_is_stable_for_huge_logits():
    loss, dz = layers.bce_with_logits(np.array([1000.0, -1000.0]), np.array([0.0, 1.0]))
    assert loss == pytest.approx(1000.0)
    np.testing.assert_allclose(dz, [0.5, -0.5])


def test_softmax_cross_entropy(numgrad, assert_grad, rng):
    z, y = rng.normal(size=(6, 4)) * 3, rng.integers(0, 4, size=6)
    loss, dz = layers.softmax_cross_entropy(z, y)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(6), y])), rel=1e-12)
    assert_grad(dz, numgrad(lambda: layers.softmax_cross_entropy(z, y)[0], z), "dz")
    big, _ = layers.softmax_cross_entropy(np.array([[1000.0, 0.0]]), np.array([1]))
    assert big == pytest.approx(1000.0)


# ---------------------------------------------------------------- the loss table
def test_losses_table_and_loss_name():
    assert set(layers.LOSSES) == {"bce", "xent"}
    assert layers.LOSSES["bce"].loss is layers.bce_with_logits
    assert layers.LOSSES["xent"].loss is layers.softmax_cross_entropy
    assert [layers.loss_name(c) for c in (1, 2, 3, 10)] == ["bce", "xent", "xent", "xent"]


def test_bce_predicts_positive_logits_only():
    """``z > 0`` (``sigmoid(z) > 1/2``): a logit of exactly 0 (or -0) predicts 0."""
    z = np.array([[-1.0], [0.0], [-0.0], [1e-300], [2.0], [-1e-300]])
    pred = layers.LOSSES["bce"].predict(z)
    np.testing.assert_array_equal(pred, [0, 0, 0, 1, 1, 0])
    assert pred.dtype == np.int64


def test_xent_predicts_the_first_argmax():
    z = np.array([[1.0, 3.0, 3.0],  # tie between 1 and 2 -> 1
                  [2.0, 2.0, 2.0],  # all equal -> 0
                  [0.0, -1.0, 0.0],  # tie between 0 and 2 -> 0
                  [-5.0, -4.0, -6.0]])
    pred = layers.LOSSES["xent"].predict(z)
    np.testing.assert_array_equal(pred, [1, 0, 0, 1])
    assert np.issubdtype(pred.dtype, np.integer)
