"""The reference training loop (fpe_ref.train, Alg. A3): masks through Adam, seeding, warm-up, divergence
warnings, bad input."""

import re
import warnings
from dataclasses import replace

import numpy as np
import pytest

from fpe_ref.errors import FPEError, FPEWarning
from fpe_ref.mlp import MLP
from fpe_ref.optim import schedule
from fpe_ref.train import History, TrainConfig, chance_accuracy, divergence, train, warmup_warning

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
    with pytest.raises(FPEError, match="epochs must be an integer >= 0, got 2.0"):
        TrainConfig(epochs=2.0)


# ---------------------------------------------------------------- the warm-up length W
def test_warmup_defaults_to_the_phase_length():
    """TrainConfig(epochs=200) warms up over its own 200 epochs (N = W), reaching lr at the last one."""
    cfg = TrainConfig(epochs=200, warmup="lr")
    assert cfg.warmup_epochs is None and cfg.to_dict()["warmup_epochs"] is None
    assert schedule(cfg, 200)[0] == cfg.lr
    assert schedule(cfg, 100)[0] == cfg.lr / 2
    phase = replace(cfg, epochs=50)  # how the experiments set each phase's epochs
    assert schedule(phase, 50)[0] == cfg.lr and schedule(phase, 25)[0] == cfg.lr / 2


def test_an_explicit_warmup_is_kept_and_warned_about_when_longer_than_the_phase(rng):
    cfg = TrainConfig(epochs=200, warmup_epochs=1000, warmup="lr")
    assert schedule(cfg, 200)[0] == pytest.approx(cfg.lr / 5)  # as given: the stored runs' W
    assert warmup_warning(cfg) == ("warmup_epochs=1000 is longer than the phase's epochs=200: the learning rate "
                                   "reaches only 20% of lr (leave warmup_epochs unset to warm up over the phase)")
    assert warmup_warning(TrainConfig(epochs=1000, warmup_epochs=1000, warmup="lr")) is None
    assert warmup_warning(TrainConfig(epochs=200, warmup_epochs=1000, warmup="none")) is None
    assert warmup_warning(TrainConfig(epochs=200)) is None
    X = rng.normal(size=(20, 3))
    y = (X[:, 0] > 0).astype(float)
    with pytest.warns(FPEWarning, match=r"^warmup_epochs=4 is longer than the phase's epochs=2: the penalties reach "
                                        r"only 50% of their lambdas"):
        train(MLP.init([3, 4, 1], 0), X, y, TrainConfig(epochs=2, warmup_epochs=4, warmup="penalty"), rng)


@pytest.mark.parametrize("value,match", [(0, "got 0"), (2.5, "got 2.5"), (True, "got True")])
def test_warmup_epochs_must_be_a_positive_integer_or_none(value, match):
    with pytest.raises(FPEError, match=rf"^warmup_epochs must be a positive integer, {match}$"):
        TrainConfig(warmup_epochs=value)


# ---------------------------------------------------------------- divergence
def _hist(loss, acc):
    return History(loss=list(loss), train_acc=list(acc))


@pytest.mark.parametrize("loss,acc,message", [
    ([0.7, 0.3, float("nan")], [0.5, 0.8, 0.5],
     r"^training diverged: the final training loss is nan after 3 epochs \(lower the learning rate\?\)$"),
    ([0.7, 5.0, 40.0], [0.6, 0.7, 0.9],
     r"^training diverged: the training loss rose from 0\.7 to 40 over 3 epochs \(lower the learning rate\?\)$"),
    ([0.7, 0.69, 0.69], [0.5, 0.52, 0.505],
     r"^training stayed at chance: final training accuracy 0\.5050 is not above the majority-class rate 0\.5000 "
     r"by more than 0\.01 after 3 epochs"),
    ([0.7, 0.69, 0.69], [0.5, 0.52, 0.41], r"^training stayed at chance: final training accuracy 0\.4100"),
], ids=["nan", "rose", "chance", "below-chance"])
def test_divergence_names_what_went_wrong(loss, acc, message):
    assert re.match(message, divergence(_hist(loss, acc), 0.5))


def test_divergence_passes_a_healthy_phase_and_an_empty_one():
    assert divergence(_hist([0.7, 0.4, 0.2], [0.6, 0.8, 0.95]), 0.5) is None
    assert divergence(_hist([0.2, 0.205], [0.9, 0.9]), 0.5) is None  # within the 5% noise allowance
    assert divergence(History(), 0.5) is None
    assert divergence(_hist([0.7, 0.4], [0.6, 0.52]), 0.5) is None  # 2 points above chance


def test_divergence_takes_labels_or_a_history_dict():
    y = np.array([0, 0, 0, 1])  # majority rate 0.75: 0.755 training accuracy is chance
    assert chance_accuracy(y) == 0.75
    assert divergence(_hist([0.7, 0.6], [0.7, 0.755]), y).startswith("training stayed at chance")
    assert divergence(_hist([0.7, 0.6], [0.7, 0.755]).to_dict(), 0.75).startswith("training stayed at chance")
    assert divergence(_hist([0.7, 0.6], [0.7, 0.9]), y) is None


def test_a_learning_rate_far_too_large_warns_from_train():
    X = np.random.default_rng(0).normal(size=(200, 4))
    y = (X[:, 0] * X[:, 1] > 0).astype(float)
    cfg = TrainConfig(epochs=20, warmup_epochs=1, batch_size=50, lr=3e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FPEWarning)  # a sensible rate learns the task: no warning
        train(MLP.init([4, 8, 1], 5), X, y, cfg, 6)
    with pytest.warns(FPEWarning, match=r"^training stayed at chance"):
        train(MLP.init([4, 8, 1], 5), X, y, replace(cfg, lr=100.0), 6)


# ---------------------------------------------------------------- the data and arguments train takes
def test_train_takes_lists_as_the_arrays_they_hold(rng):
    X = rng.normal(size=(20, 3))
    y = (X[:, 0] > 0).astype(float)
    cfg = TrainConfig(epochs=2, batch_size=10, lr=1e-2)
    a, b = MLP.init([3, 4, 1], 0), MLP.init([3, 4, 1], 0)
    train(a, X, y, cfg, 1)
    train(b, X.tolist(), y.tolist(), cfg, 1)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)


@pytest.mark.parametrize("call,match", [
    (lambda m, X, y, c: train(m, X, y[:15], c, 0), r"^training labels have shape \(15,\), expected \(20,\)$"),
    (lambda m, X, y, c: train(m, np.where(np.arange(60).reshape(20, 3) == 7, np.nan, X), y, c, 0),
     r"^training inputs contain NaN or inf \(row 2, column 1: nan\)$"),
    (lambda m, X, y, c: train(m, X[:, 0], y, c, 0),
     r"^training inputs have shape \(20,\), the model expects \(n, 3\)$"),
    (lambda m, X, y, c: train(m, X, y[:, None], c, 0), r"^training labels have shape \(20, 1\), expected \(20,\)$"),
    (lambda m, X, y, c: train(m, X, y, c, 0, X_test=X[:5], y_test=y[:4]),
     r"^test labels have shape \(4,\), expected \(5,\)$"),
    (lambda m, X, y, c: train(m, X, y, c, 0, y_test=y),
     r"^test inputs must be a 2-D array \(n, 3\) of numbers, got dtype object$"),
    (lambda m, X, y, c: train(m.params, X, y, c, 0), r"^model must be an fpe_ref\.MLP, got dict$"),
    (lambda m, X, y, c: train(m, X, y, {"epochs": 1}, 0), r"^cfg must be a TrainConfig, got dict$"),
], ids=["lengths", "NaN", "1-D X", "label column", "test lengths", "y_test alone", "not an MLP", "cfg dict"])
def test_train_refuses_bad_data_and_arguments_in_one_line(rng, call, match):
    X = rng.normal(size=(20, 3))
    y = (X[:, 0] > 0).astype(float)
    with pytest.raises(FPEError, match=match):
        call(MLP.init([3, 4, 1], 0), X, y, TrainConfig(epochs=1, batch_size=10))


@pytest.mark.parametrize("kw, match", [
    (dict(betas=(-1, 2)), r"betas must be two numbers in \[0, 1\)"),
    (dict(betas=(1.5, 0.9)), r"betas must be two numbers in \[0, 1\)"),
    (dict(betas=(0.9,)), r"betas must be two numbers"),
    (dict(eps=0), "eps must be > 0"),
    (dict(epochs=-1), "epochs must be an integer >= 0"),
])
def test_adam_settings_out_of_range_are_refused(kw, match):
    with pytest.raises(FPEError, match=match):
        TrainConfig(**kw)


def test_training_on_no_samples_is_refused():
    from fpe_ref.mlp import MLP

    with pytest.raises(FPEError, match=r"training inputs have no samples \(shape \(0, 32\)\)"):
        train(MLP.init([32, 8, 1], 0), np.zeros((0, 32)), np.zeros(0, int), TrainConfig(epochs=1), 0)
