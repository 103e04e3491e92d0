"""The JAX twin's training loop against the reference loop: same batches, warm-up, penalties, Adam and rules."""

import ast
import warnings
from pathlib import Path

import numpy as np
import pytest

from fpe_ref import layers
from fpe_ref.data.dnf import generate_dnf
from fpe_ref.errors import FPEError
from fpe_ref.expand import expand
from fpe_ref.mlp import MLP
from fpe_ref.optim import Penalties, penalty_loss_and_grads
from fpe_ref.train import TrainConfig, train

jax = pytest.importorskip("jax")
jax_ref = pytest.importorskip("fpe_ref.parity.jax_ref")

RNG_SEED = 11
ROOT = Path(__file__).resolve().parents[2]

# Agreement with the NumPy reference after a few epochs, relative to each tensor's largest
# entry (params) and to the loss. Measured: float32 <= 3e-7 (params) and 1.1e-7 (losses),
# float64 <= 6e-16; the bounds leave a factor ~10 in float32 and ~100 in float64.
TOL = {np.float32: 3e-6, np.float64: 1e-13}

CFG = dict(epochs=5, batch_size=64, lr=1e-2, l1=1e-3, l2=1e-3, orth=1e-2)  # n = 300: the last batch has 44


def _problem(kind, dtype, rng):
    """``(model, X, y)``: a Boolean DNF model [12, 4, 1] (dense or FPE-expanded) or a [20, 6, 5] classifier."""
    if kind.startswith("boolean"):
        data = generate_dnf(300, 12, 4, rng)
        X, y, sizes = data.X, data.y, [12, 4, 1]
    else:
        X, y, sizes = rng.standard_normal((300, 20)), rng.integers(0, 5, 300), [20, 6, 5]
    model = MLP.init(sizes, rng, dtype=dtype)
    if kind.endswith("fpe"):
        model = expand(model, 2, "random", rng).model  # masked W1 and W2
        assert model.masks
    return model, X.astype(dtype), y


def _train_both(model, X, y, cfg, seed=3, X_test=None, y_test=None):
    ref, twin = model.copy(), model.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # divergence() on a 5-epoch run is not what this tests
        _, h_ref = train(ref, X, y, cfg, np.random.default_rng(seed), X_test=X_test, y_test=y_test)
    h_twin = jax_ref.train(twin, X, y, cfg, np.random.default_rng(seed), X_test=X_test, y_test=y_test)
    return ref, h_ref, twin, h_twin


def _param_diff(a, b):
    """Max over tensors of ``max |a - b| / max |a|``."""
    return max(float(np.max(np.abs(a.params[k] - b.params[k])) / np.max(np.abs(a.params[k]))) for k in a.params)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("warmup", ["none", "lr", "penalty"])
@pytest.mark.parametrize("kind", ["boolean", "boolean-fpe", "multiclass", "multiclass-fpe"])
def test_train_equals_the_reference_loop(rng, kind, warmup, dtype):
    """Losses per epoch and final parameters as :func:`fpe_ref.train.train`'s to the dtype's rounding;
    the same training and test accuracies; the dtype kept; masked weights exactly 0."""
    model, X, y = _problem(kind, dtype, rng)
    cfg = TrainConfig(warmup=warmup, warmup_epochs=4, eval_every=2, **CFG)
    ref, h_ref, twin, h_twin = _train_both(model, X, y, cfg, X_test=X[:100], y_test=y[:100])
    tol = TOL[dtype]
    for k in ref.params:
        assert twin.params[k].dtype == ref.params[k].dtype == dtype, k
        np.testing.assert_allclose(twin.params[k], ref.params[k], rtol=0, atol=tol * np.abs(ref.params[k]).max(),
                                   err_msg=k)
    assert not np.array_equal(twin.params["W1"], model.params["W1"])  # it did train
    np.testing.assert_allclose(h_twin.loss, h_ref.loss, rtol=tol, atol=0)
    assert h_twin.train_acc == h_ref.train_acc
    assert h_twin.test_epoch == h_ref.test_epoch == [2, 4, 5] and h_twin.test_acc == h_ref.test_acc
    assert set(twin.masks) == set(model.masks)
    for k, M in twin.masks.items():
        np.testing.assert_array_equal(twin.masks[k], model.masks[k], err_msg=k)
        assert np.all(twin.params[k][~M] == 0.0), k


@pytest.mark.parametrize("perturb", ["shuffle seed", "warm-up", "adam betas"])
def test_the_comparison_can_fail(rng, perturb):
    """A twin run that differs from the reference in one choice lands far outside the float32 tolerance."""
    model, X, y = _problem("boolean-fpe", np.float32, rng)
    cfg = TrainConfig(warmup="lr", **CFG)
    other = {"warm-up": TrainConfig(warmup="none", **CFG),
             "adam betas": TrainConfig(warmup="lr", betas=(0.8, 0.999), **CFG)}.get(perturb, cfg)
    ref = model.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(ref, X, y, cfg, np.random.default_rng(3))
    twin = model.copy()
    jax_ref.train(twin, X, y, other, np.random.default_rng(4 if perturb == "shuffle seed" else 3))
    assert _param_diff(ref, twin) > 100 * TOL[np.float32]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_train_many_equals_separate_runs(rng, dtype):
    """N models at once (masked and dense mixed, one rng each) end as N runs of one model; as the reference, too."""
    n = 130  # batches 50, 50, 30
    X, y = rng.standard_normal((n, 12)).astype(dtype), rng.integers(0, 2, n)
    parent = MLP.init([12, 4, 1], rng, dtype=dtype)
    models = [expand(parent, 2, "random", rng).model for _ in range(3)] + [MLP.init([12, 8, 1], rng, dtype=dtype)]
    cfg = TrainConfig(epochs=4, batch_size=50, lr=1e-2, l1=1e-3, orth=1e-2, eval_every=3)
    seeds = [10, 11, 12, 13]
    many = [m.copy() for m in models]
    h_many = jax_ref.train_many(many, X, y, cfg, [np.random.default_rng(s) for s in seeds], X_test=X[:40],
                                y_test=y[:40])
    assert len(h_many) == len(models)
    tol = TOL[dtype]
    for m, s, h in zip(models, seeds, h_many):
        one = m.copy()
        h_one = jax_ref.train(one, X, y, cfg, np.random.default_rng(s), X_test=X[:40], y_test=y[:40])
        ref = m.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, h_ref = train(ref, X, y, cfg, np.random.default_rng(s), X_test=X[:40], y_test=y[:40])
        got = many[seeds.index(s)]
        assert _param_diff(one, got) <= tol and _param_diff(ref, got) <= tol
        np.testing.assert_allclose(h.loss, h_one.loss, rtol=tol)
        np.testing.assert_allclose(h.loss, h_ref.loss, rtol=tol)
        assert h.train_acc == h_one.train_acc == h_ref.train_acc
        assert h.test_epoch == h_ref.test_epoch == [3, 4] and h.test_acc == h_one.test_acc == h_ref.test_acc
        for k, M in got.masks.items():
            assert np.all(got.params[k][~M] == 0.0), k


@pytest.mark.parametrize("n,batch", [(30, 50), (30, 10)], ids=["one short batch", "B divides n"])
def test_batch_edge_cases(rng, n, batch):
    """No full batch (only the smaller last one) and no smaller last batch: both as the reference."""
    X, y = rng.standard_normal((n, 12)), rng.integers(0, 2, n)
    cfg = TrainConfig(epochs=3, batch_size=batch, lr=1e-2)
    ref, h_ref, twin, h_twin = _train_both(MLP.init([12, 4, 1], rng), X, y, cfg)
    assert _param_diff(ref, twin) <= TOL[np.float64]
    np.testing.assert_allclose(h_twin.loss, h_ref.loss, rtol=TOL[np.float64])


def test_penalty_gradient_is_the_reference_one_at_exact_zeros(rng):
    """d penalty / d W1 is :func:`fpe_ref.optim.penalty_loss_and_grads`' (sign(0) = 0, not jnp.abs' 1)."""
    with jax_ref._x64(np.float64):  # float64 inside JAX
        W1 = rng.standard_normal((4, 6))
        W1[0, :3] = 0.0  # exact zeros, unmasked
        p = {"W1": W1, "b1": rng.standard_normal(4)}
        pen = Penalties(l1=0.3, l2=0.2, orth=0.1)
        want_loss, want = penalty_loss_and_grads(p, {}, pen)
        val, got = jax.value_and_grad(jax_ref.penalty)({k: jax.numpy.asarray(v) for k, v in p.items()},
                                                       np.array([pen.l1, pen.l2, pen.orth]), (True, True, True))
        assert float(val) == pytest.approx(want_loss, rel=1e-14)
        for k in p:
            np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=1e-13, atol=1e-15, err_msg=k)


@pytest.mark.parametrize("n_logits", [1, 4])
def test_losses_and_prediction_rules_are_the_core_table(rng, n_logits):
    """Loss value and gradient as :data:`fpe_ref.layers.LOSSES` (z = 0 included), the same labels on ties."""
    z = rng.integers(-2, 3, (50, n_logits)).astype(np.float64)  # many ties, many exact zeros
    y = rng.integers(0, max(2, n_logits), 50)
    name = layers.loss_name(n_logits)
    want_loss, want_dz = layers.LOSSES[name].loss(z, y)
    loss_fn, predict = jax_ref.LOSS_FNS[name]
    with jax_ref._x64(np.float64):  # float64 inside JAX
        yl = y.astype(np.float64) if name == "bce" else y
        val, dz = jax.value_and_grad(loss_fn)(jax.numpy.asarray(z), jax.numpy.asarray(yl))
        assert float(val) == pytest.approx(want_loss, rel=1e-14)
        np.testing.assert_allclose(np.asarray(dz), want_dz, rtol=1e-13, atol=1e-16)
        np.testing.assert_array_equal(np.asarray(predict(jax.numpy.asarray(z))), layers.LOSSES[name].predict(z))


def test_trainer_keeps_results_on_the_device_and_writes_back(rng):
    model = expand(MLP.init([8, 3, 1], rng, dtype=np.float32), 2, "random", rng).model
    X, y = rng.standard_normal((40, 8)).astype(np.float32), rng.integers(0, 2, 40)
    tr = jax_ref.JaxTrainer([model], X, y, TrainConfig(epochs=1, warmup_epochs=1, batch_size=15))
    assert all(p.dtype == np.float32 and p.shape[0] == 1 for p in tr.params.values())
    loss, hits = tr.epoch(1, np.random.default_rng(0).permutation(40)[None])
    assert isinstance(loss, jax.Array) and loss.shape == (3, 1) and hits.shape == (1,)
    assert np.all(np.isfinite(np.asarray(loss))) and 0 <= int(hits[0]) <= 40
    before = {k: v.copy() for k, v in model.params.items()}
    tr.sync()
    tr.write_back()
    assert any(not np.array_equal(before[k], model.params[k]) for k in before)
    for k, M in model.masks.items():
        assert np.all(model.params[k][~M] == 0.0), k


def test_bad_inputs_are_one_line_errors(rng):
    X, y = rng.standard_normal((20, 4)), rng.integers(0, 2, 20)
    cfg = TrainConfig(epochs=1)
    with pytest.raises(FPEError, match="without LayerNorm"):
        jax_ref.train(MLP.init([4, 3, 1], rng, layer_norm=True), X, y, cfg, 0)
    with pytest.raises(FPEError, match="one shape"):
        jax_ref.train_many([MLP.init([4, 3, 1], rng), MLP.init([4, 5, 1], rng)], X, y, cfg, [0, 1])
    with pytest.raises(FPEError, match="one rng per model"):
        jax_ref.train_many([MLP.init([4, 3, 1], rng)], X, y, cfg, [0, 1])
    with pytest.raises(FPEError, match="at least one model"):
        jax_ref.train_many([], X, y, cfg, [])
    with pytest.raises(FPEError):
        jax_ref.train(MLP.init([5, 3, 1], rng), X, y, cfg, 0)  # 4 input columns for a d = 5 model


def test_divergence_is_an_error_and_leaves_the_model(rng):
    model = MLP.init([4, 3, 1], rng)
    X, y = rng.standard_normal((20, 4)) * 1e200, rng.integers(0, 2, 20)
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(FPEError, match="^training diverged: model 0's loss is"):
        jax_ref.train(model, X, y, TrainConfig(epochs=2, batch_size=10, lr=1e200), 0)
    for k, v in before.items():
        np.testing.assert_array_equal(model.params[k], v, err_msg=k)


def test_jax_is_imported_only_by_the_twin():
    """fpe-ref runs without jax: no other module imports it (at any depth)."""
    bad = []
    for path in sorted((ROOT / "fpe_ref").rglob("*.py")) + sorted((ROOT / "theory").rglob("*.py")):
        if path == ROOT / "fpe_ref" / "parity" / "jax_ref.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                    if n.split(".")[0] in ("jax", "jaxlib")]
    assert not bad, "\n".join(bad)
