"""The PyTorch twin's training loop against the reference loop: same batches, warm-up, penalties and rules."""

import numpy as np
import pytest

from fpe_ref import layers
from fpe_ref.errors import FPEError
from fpe_ref.expand import expand
from fpe_ref.mlp import MLP
from fpe_ref.train import TrainConfig, train

torch = pytest.importorskip("torch")
torch_ref = pytest.importorskip("fpe_ref.parity.torch_ref")

RNG_SEED = 7


def _data(rng, d, C, n=60):
    X = rng.standard_normal((n, d))
    y = rng.integers(0, max(2, C), n)
    return X, y


@pytest.mark.parametrize("n_logits", [1, 4])
def test_prediction_rules_are_the_core_table(rng, n_logits):
    """``torch_ref.predict`` gives :data:`fpe_ref.layers.LOSSES`' labels, ties and zero logits included."""
    z = rng.integers(-2, 3, (50, n_logits)).astype(np.float64)  # many ties, many exact zeros
    want = layers.LOSSES[layers.loss_name(n_logits)].predict(z)
    got = torch_ref.predict(torch.from_numpy(z)).numpy()
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    assert set(torch_ref.LOSSES) == set(layers.LOSSES)


@pytest.mark.parametrize("warmup", ["lr", "penalty", "none"])
@pytest.mark.parametrize("sizes,layer_norm,expanded", [
    ([6, 4, 1], False, True),  # the case-study shape: one hidden layer, BCE, FPE masks
    ([6, 4, 3], False, False),  # softmax cross-entropy, dense
    ([6, 5, 4, 3], True, True),  # two hidden layers with LayerNorm, masked first layer
])
def test_train_equals_the_reference_loop(rng, sizes, layer_norm, expanded, warmup):
    """float64: the same trajectory as :func:`fpe_ref.train.train` to rounding; masked weights exactly 0."""
    model = MLP.init(sizes, rng, layer_norm=layer_norm)
    if expanded:
        model = expand(model, 2, "random", rng).model
    X, y = _data(rng, sizes[0], sizes[-1])
    Xt, yt = _data(rng, sizes[0], sizes[-1], n=25)
    cfg = TrainConfig(epochs=6, warmup_epochs=4, warmup=warmup, batch_size=16, lr=1e-2, l1=1e-3, l2=1e-3, orth=1e-2,
                      eval_every=4)
    ref, twin = model.copy(), model.copy()
    _, h_ref = train(ref, X, y, cfg, np.random.default_rng(3), X_test=Xt, y_test=yt)
    h_twin = torch_ref.train(twin, X, y, cfg, np.random.default_rng(3), X_test=Xt, y_test=yt)
    for k in ref.params:
        np.testing.assert_allclose(twin.params[k], ref.params[k], rtol=0, atol=1e-12 * np.abs(ref.params[k]).max(),
                                   err_msg=k)
        assert twin.params[k].dtype == ref.params[k].dtype, k
    for k, M in twin.masks.items():
        assert np.all(twin.params[k][~M] == 0.0), k
    np.testing.assert_allclose(h_twin.loss, h_ref.loss, rtol=1e-12)
    assert h_twin.train_acc == h_ref.train_acc
    assert h_twin.test_epoch == h_ref.test_epoch == [4, 6]
    assert h_twin.test_acc == h_ref.test_acc


def test_trainer_epoch_returns_loss_and_accuracy_and_keeps_float32(rng):
    model = expand(MLP.init([8, 3, 1], rng, dtype=np.float32), 2, "random", rng).model
    X, y = _data(rng, 8, 1, n=40)
    tr = torch_ref.TorchTrainer(model, X.astype(np.float32), y, TrainConfig(epochs=1, warmup_epochs=1, batch_size=15))
    assert all(p.dtype == torch.float32 for p in tr.params.values())
    loss, acc = tr.epoch(1, np.random.default_rng(0).permutation(40))
    assert np.isfinite(loss) and 0.0 <= acc <= 1.0
    before = {k: v.copy() for k, v in model.params.items()}
    tr.write_back()
    assert any(not np.array_equal(before[k], model.params[k]) for k in before)
    for k, M in model.masks.items():
        assert np.all(model.params[k][~M] == 0.0), k


def test_bad_labels_are_one_line_errors(rng):
    model = MLP.init([4, 3, 1], rng)
    X, y = _data(rng, 4, 1, n=10)
    y[0] = 5
    with pytest.raises(FPEError, match=r"labels must be integers in \[0, 2\)") as exc:
        torch_ref.TorchTrainer(model, X, y, TrainConfig(epochs=1, warmup_epochs=1, batch_size=5))
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------- train_many
def _dnf_problem():
    """A 450-row DNF set (360 train: batches of 100 and a last one of 60), its clauses."""
    from fpe_ref.data.dnf import generate_dnf, train_test_split

    data = generate_dnf(450, 32, 4, np.random.default_rng(RNG_SEED))
    tr, te = train_test_split(data, 0.2, np.random.default_rng(RNG_SEED + 1))
    return tr, te, [np.asarray(c) for c in data.clauses]


def _models(kind, groups):
    parents = [MLP.init([32, 8, 1], np.random.default_rng(20 + i)) for i in range(3)]
    if kind == "dense":
        return parents
    splits = ("clause", "random", "random")  # one shape, masks that differ per model
    return [expand(p, 2, s, np.random.default_rng(30 + i), groups=groups).model
            for i, (p, s) in enumerate(zip(parents, splits))]


_MANY_CFG = TrainConfig(epochs=3, warmup_epochs=2, warmup="penalty", batch_size=100, lr=1e-2, l1=1e-3, l2=1e-3,
                        orth=1e-2)


@pytest.mark.parametrize("kind", ["dense", "expanded"])
def test_train_many_equals_one_at_a_time_and_the_reference(kind):
    """float64: 3 models trained at once end where torch_ref.train (1e-12) and fpe_ref.train.train (1e-10)
    take each alone, with the same histories; masked weights exactly 0."""
    tr, te, groups = _dnf_problem()
    models = _models(kind, groups)
    many, one, ref = ([m.copy() for m in models] for _ in range(3))
    seeds = [40, 41, 42]
    h_many = torch_ref.train_many(many, tr.X, tr.y, _MANY_CFG, [np.random.default_rng(s) for s in seeds],
                                  X_test=te.X, y_test=te.y)
    h_one = [torch_ref.train(m, tr.X, tr.y, _MANY_CFG, np.random.default_rng(s), X_test=te.X, y_test=te.y)
             for m, s in zip(one, seeds)]
    h_ref = [train(m, tr.X, tr.y, _MANY_CFG, np.random.default_rng(s), X_test=te.X, y_test=te.y)[1]
             for m, s in zip(ref, seeds)]
    for i, (a, b, c) in enumerate(zip(many, one, ref)):
        assert a.masks.keys() == models[i].masks.keys()
        for k in a.params:
            scale = np.abs(c.params[k]).max()
            np.testing.assert_allclose(a.params[k], b.params[k], rtol=0, atol=1e-12 * scale, err_msg=f"{i} {k}")
            np.testing.assert_allclose(a.params[k], c.params[k], rtol=0, atol=1e-10 * scale, err_msg=f"{i} {k}")
            assert not np.array_equal(a.params[k], models[i].params[k]), f"{i} {k} did not train"
        for k, M in a.masks.items():
            assert np.all(a.params[k][~M] == 0.0), k
    for hm, ho, hr in zip(h_many, h_one, h_ref):
        np.testing.assert_allclose(hm.loss, hr.loss, rtol=1e-12)
        np.testing.assert_allclose(hm.loss, ho.loss, rtol=1e-12)
        assert hm.train_acc == ho.train_acc == hr.train_acc
        assert hm.test_epoch == ho.test_epoch == hr.test_epoch == [1, 2, 3]
        assert hm.test_acc == ho.test_acc == hr.test_acc


def test_train_many_keeps_each_models_own_batches():
    """Model 0 trained beside others ends where it ends alone, and two models with different rngs differ."""
    tr, te, groups = _dnf_problem()
    models = _models("expanded", groups)
    alone = models[0].copy()
    torch_ref.train_many([alone], tr.X, tr.y, _MANY_CFG, [np.random.default_rng(40)])
    twins = [models[0].copy(), models[0].copy()]
    torch_ref.train_many(twins, tr.X, tr.y, _MANY_CFG, [np.random.default_rng(40), np.random.default_rng(41)])
    for k in alone.params:
        np.testing.assert_allclose(twins[0].params[k], alone.params[k], rtol=0, atol=1e-14, err_msg=k)
    assert not np.allclose(twins[1].params["W1"], twins[0].params["W1"])


def test_train_many_refuses_what_it_cannot_stack(rng):
    X, y = _data(rng, 6, 1, n=20)
    cfg = TrainConfig(epochs=1, warmup_epochs=1, batch_size=10)
    a, b = MLP.init([6, 4, 1], rng), MLP.init([6, 5, 1], rng)
    with pytest.raises(FPEError, match="one shape: model 1 is \\[6, 5, 1\\]"):
        torch_ref.train_many([a, b], X, y, cfg, [0, 1])
    with pytest.raises(FPEError, match="one shape"):
        torch_ref.train_many([a, MLP.init([6, 4, 1], rng, dtype=np.float32)], X, y, cfg, [0, 1])
    with pytest.raises(FPEError, match="without LayerNorm"):
        torch_ref.train_many([MLP.init([6, 4, 1], rng, layer_norm=True)], X, y, cfg, [0])
    with pytest.raises(FPEError, match="one rng per model: 1 rngs for 2 models"):
        torch_ref.train_many([a, a.copy()], X, y, cfg, [0])
    with pytest.raises(FPEError, match="at least one model"):
        torch_ref.train_many([], X, y, cfg, [])


def test_train_many_compile_failure_is_one_fpe_error_and_changes_nothing(rng, monkeypatch):
    """A torch.compile that fails at the first step: an FPEError naming it, the models as they were."""
    def broken(fn):
        def run(*args):
            raise RuntimeError("no C++ compiler\nsecond line")
        return run
    monkeypatch.setattr(torch_ref, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", broken)
    model = MLP.init([6, 4, 1], rng)
    before = {k: v.copy() for k, v in model.params.items()}
    X, y = _data(rng, 6, 1, n=20)
    with pytest.raises(FPEError, match=r"^torch.compile failed on cpu: RuntimeError: no C\+\+ compiler$"):
        torch_ref.train_many([model], X, y, TrainConfig(epochs=2, warmup_epochs=2, batch_size=10), [0], compile=True)
    for k in before:
        np.testing.assert_array_equal(model.params[k], before[k])


def test_train_many_with_compile_runs_the_compiled_function(rng, monkeypatch):
    """``compile=True`` trains through the function torch.compile returns (here a counting stand-in)."""
    calls = []

    def counting(fn):
        def run(*args):
            calls.append(1)
            return fn(*args)
        return run
    monkeypatch.setattr(torch_ref, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", counting)
    X, y = _data(rng, 6, 1, n=20)
    cfg = TrainConfig(epochs=2, warmup_epochs=2, batch_size=10)
    a = MLP.init([6, 4, 1], rng)
    b = a.copy()
    torch_ref.train_many([a], X, y, cfg, [0], compile=True)
    torch_ref.train_many([b], X, y, cfg, [0])
    assert len(calls) == 4  # 2 epochs x 2 batches
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
