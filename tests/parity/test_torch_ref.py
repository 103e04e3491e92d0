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
