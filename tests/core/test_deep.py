"""Alternating deep FPE (A.7): which layers split, exact non-zero count, gradients of the expanded net."""

import numpy as np
import pytest

from fpe_ref.deep import alternating_layers, carry_optimizer_alternating, expand_alternating
from fpe_ref.errors import FPEError
from fpe_ref.mlp import MLP
from fpe_ref.train import TrainConfig, train


RNG_SEED = 11  # the conftest ``rng`` fixture's seed for this module


@pytest.mark.parametrize("n_layers,expected", [(2, [1]), (3, [1]), (4, [1, 3]), (5, [1, 3]), (7, [1, 3, 5]), (9, [1, 3, 5, 7])])
def test_alternating_layers(n_layers, expected):
    assert alternating_layers(n_layers) == expected


@pytest.mark.parametrize("n_layers", [5, 7, 9])
@pytest.mark.parametrize("split", ["random", "gram", "two-four"])
def test_count_is_exact_and_shapes_alternate(rng, n_layers, split):
    h = 8
    sizes = [16] + [h] * (n_layers - 1) + [10]
    model = MLP.init(sizes, rng, layer_norm=True)
    res = expand_alternating(model, 2, split, rng)
    child = res.model
    assert child.ledger().weights == model.ledger().weights
    for l in range(1, n_layers):
        assert child.sizes[l] == (2 * h if l % 2 == 1 else h), f"layer {l}"
    for name, M in child.masks.items():
        assert np.all(child.params[name][~M] == 0.0), name
    assert "W%d" % n_layers not in res.layers
    # pruned excess of each step = (alpha - 1) * nnz(W_{i+1}) = h * (next layer's fan-out)
    for s in res.steps:
        fan_out = sizes[s.layer + 1]
        assert sum(len(v) for v in s.pruned.values()) == h * fan_out
    assert child.sizes[-1] == 10  # the head is never split


def test_two_layer_deep_equals_single_expand(rng):
    from fpe_ref.expand import expand

    model = MLP.init([12, 4, 3], rng)
    a = expand_alternating(model, 2, "random", np.random.default_rng(5)).model
    b = expand(model, 2, "random", np.random.default_rng(5)).model
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)


def test_gradients_of_expanded_five_layer_net_with_layernorm(numgrad, assert_grad, rng):
    """Finite differences (float64) through a 5-layer LayerNorm MLP after alternating FPE."""
    model = MLP.init([8, 4, 4, 4, 4, 3], rng, layer_norm=True)
    child = expand_alternating(model, 2, "random", rng).model
    assert child.sizes == [8, 8, 4, 8, 4, 3]
    X = rng.normal(size=(7, 8))
    y = rng.integers(0, 3, size=7)
    _, grads = child.loss_and_grads(X, y)
    for name, p in child.params.items():
        num = numgrad(lambda: child.loss_and_grads(X, y)[0], p)
        if name in child.masks:
            num *= child.masks[name]
            assert np.all(grads[name][~child.masks[name]] == 0.0), name
        assert_grad(grads[name], num, name)


def test_training_after_deep_expansion_holds_count(rng):
    X = rng.normal(size=(60, 8))
    y = rng.integers(0, 3, size=60)
    model = MLP.init([8, 4, 4, 4, 4, 3], rng, layer_norm=True)
    opt, _ = train(model, X, y, TrainConfig(epochs=2, warmup="none", batch_size=20), rng)
    res = expand_alternating(model, 2, "random", rng)
    opt2 = carry_optimizer_alternating(opt, res, model)
    assert opt2.t == opt.t
    for k, M in res.model.masks.items():
        assert np.all(opt2.m[k][~M] == 0) and np.all(opt2.v[k][~M] == 0)
    train(res.model, X, y, TrainConfig(epochs=3, warmup="none", batch_size=20), rng, optimizer=opt2)
    assert res.model.ledger().weights == model.ledger().weights
    for name, M in res.model.masks.items():
        assert np.all(res.model.params[name][~M] == 0.0)


def test_bad_layers(rng):
    model = MLP.init([8, 4, 4, 4, 3], rng, layer_norm=True)
    with pytest.raises(FPEError, match="consecutive"):
        expand_alternating(model, 2, "random", rng, layers=[1, 2])
    with pytest.raises(FPEError, match="hidden layers"):
        expand_alternating(model, 2, "random", rng, layers=[4])
    with pytest.raises(FPEError, match="clause"):
        expand_alternating(model, 2, "clause", rng)
    with pytest.raises(FPEError, match="n_layers >= 2"):
        alternating_layers(1)
