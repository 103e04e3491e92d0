"""Layers, MLP, penalties and Adam: finite-difference gradients in float64, invariants, I/O."""

import io
import json

import numpy as np
import pytest

from fpe_ref import layers
from fpe_ref.errors import FPEError
from fpe_ref.mlp import MLP
from fpe_ref.optim import Adam, Penalties, penalty_loss_and_grads
from fpe_ref.train import TrainConfig, train

RNG_SEED = 1234  # the conftest ``rng`` fixture's seed for this module





# ---------------------------------------------------------------- single layers
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


# ---------------------------------------------------------------- whole networks
def _masked_model(sizes, rng, layer_norm, mask_layers=(1,)):
    model = MLP.init(sizes, rng, layer_norm=layer_norm)
    masks = {f"W{l}": rng.random(model.params[f"W{l}"].shape) < 0.6 for l in mask_layers}
    return MLP(model.params, masks, layer_norm)


@pytest.mark.parametrize("sizes,layer_norm,masked", [
    ([5, 4, 1], False, False),
    ([5, 4, 1], False, True),
    ([6, 5, 4, 3], False, True),  # multiclass, two hidden layers
    ([6, 5, 4, 4, 5, 1], True, True),  # deep with LayerNorm, binary
    ([6, 5, 4, 4, 5, 3], True, False),  # deep with LayerNorm, multiclass
])
def test_mlp_gradients(numgrad, assert_grad, rng, sizes, layer_norm, masked):
    model = _masked_model(sizes, rng, layer_norm, (1, 2) if masked else ())
    X = rng.normal(size=(9, sizes[0]))
    y = rng.integers(0, max(2, sizes[-1]), size=9).astype(float)
    # move pre-activations away from the ReLU kink so central differences are valid
    loss, grads = model.loss_and_grads(X, y)
    for name, p in model.params.items():
        num = numgrad(lambda: model.loss_and_grads(X, y)[0], p)
        if name in model.masks:
            num *= model.masks[name]
        assert_grad(grads[name], num, name)


@pytest.mark.parametrize("pen", [Penalties(1e-2, 0, 0), Penalties(0, 1e-2, 0), Penalties(0, 0, 1e-2), Penalties(1e-2, 3e-2, 2e-2)])
@pytest.mark.parametrize("masked", [False, True])
def test_penalty_gradients(numgrad, assert_grad, rng, pen, masked):
    model = _masked_model([6, 5, 2], rng, True, (1, 2) if masked else ())
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


# ---------------------------------------------------------------- Adam
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


def test_masked_weights_stay_exactly_zero_through_adam_with_every_penalty(rng):
    model = _masked_model([8, 6, 5, 1], rng, True, (1, 2))
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


# ---------------------------------------------------------------- init, save/load, errors
def test_init_matches_pytorch_bounds(rng):
    model = MLP.init([100, 50, 3], rng)
    for l, fan_in in ((1, 100), (2, 50)):
        for name in (f"W{l}", f"b{l}"):
            p = model.params[name]
            assert np.abs(p).max() <= 1 / np.sqrt(fan_in)
            if p.size >= 100:
                assert np.abs(p).max() > 0.9 / np.sqrt(fan_in)  # fills the interval
    assert model.params["W1"].shape == (50, 100)  # (out, in) like nn.Linear


def test_save_load_roundtrip(tmp_path, rng):
    model = _masked_model([6, 5, 4, 2], rng, True, (1, 2))
    model.save(tmp_path / "m.npz")
    back = MLP.load(tmp_path / "m.npz")
    assert back.layer_norm and list(back.params) == list(model.params)
    for k in model.params:
        np.testing.assert_array_equal(back.params[k], model.params[k], err_msg=k)
    for k in model.masks:
        np.testing.assert_array_equal(back.masks[k], model.masks[k], err_msg=k)
        assert np.all(back.params[k][~back.masks[k]] == 0.0)


def test_load_rejects_nonzero_masked_weight_and_garbage(tmp_path, rng):
    model = _masked_model([4, 3, 1], rng, False, (1,))
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["W1"][~arrays["mask:W1"]] = 1.0
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(FPEError, match="W1 is non-zero at masked"):
        MLP.load(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FPEError, match="cannot read model file"):
        MLP.load(tmp_path / "junk.npz")


def _npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _corruptions(tmp_path, arrays):
    """(name, file writer) pairs: each writes one kind of damaged model file."""
    def savez(**changes):
        def write(p):
            a = dict(arrays)
            a.update(changes)
            np.savez(p, **{k: v for k, v in a.items() if v is not None})
        return write

    good = (tmp_path / "m.npz").read_bytes()
    return [
        ("truncated", lambda p: p.write_bytes(good[: len(good) // 2]), "cannot read model file"),
        ("empty", lambda p: p.write_bytes(b""), "cannot read model file"),
        ("npy", lambda p: p.write_bytes(_npy_bytes(np.zeros(3))), "cannot read model file"),
        ("meta not json", savez(meta=np.array("{oops")), "corrupt 'meta'"),
        ("meta a list", savez(meta=np.array("[1, 2]")), "corrupt 'meta'"),
        ("meta without sizes", savez(meta=np.array('{"format_version": 1, "layer_norm": false}')), "corrupt 'meta'"),
        ("int mask", savez(**{"mask:W1": arrays["mask:W1"].astype(np.int64)}), "dtype int64, expected bool"),
        ("NaN weight", savez(W2=np.full_like(arrays["W2"], np.nan)), r"bad_\d+\.npz: parameter W2 contains NaN"),
        ("missing bias", savez(b1=None), "lacks parameter"),
        ("string weights", savez(W2=arrays["W2"].astype(str)), "W2 has dtype <U"),
        ("sizes contradict", savez(meta=np.array('{"format_version": 1, "layer_norm": false, "sizes": [4, 5, 1]}')),
         r"meta says sizes \[4, 5, 1\], the stored weights have \[4, 3, 1\]"),
    ]


def test_load_gives_one_line_errors_on_damaged_files(tmp_path, rng):
    model = _masked_model([4, 3, 1], rng, False, (1,))
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    assert json.loads(str(arrays["meta"]))["format_version"] == 1  # the corruptions below assume it
    for i, (name, write, match) in enumerate(_corruptions(tmp_path, arrays)):
        path = tmp_path / f"bad_{i}.npz"
        write(path)
        with pytest.raises(FPEError, match=match) as info:
            MLP.load(path)
        assert "\n" not in str(info.value), name


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
    with pytest.raises(FPEError, match="layer sizes"):
        MLP.init([4, 0, 1], rng)
    with pytest.raises(FPEError, match="mask of W1"):
        MLP(model.params, {"W1": np.ones((2, 2), bool)})
    bad = dict(model.params)
    bad["W1"] = np.full((3, 4), np.nan)
    with pytest.raises(FPEError, match="W1 contains NaN"):
        MLP(bad)
