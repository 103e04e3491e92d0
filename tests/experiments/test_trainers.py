"""Tests for the trainer registry (fpe_ref.experiments.trainers): names, run-key names, ``auto``,
one-line errors, refusals before any work, and that both trainers train the same model alike."""

from __future__ import annotations

import numpy as np
import pytest

from fpe_ref.errors import FPEError
from fpe_ref.experiments import trainers
from fpe_ref.mlp import MLP
from fpe_ref.optim import Adam
from fpe_ref.rewire import RewireSchedule, RewiringAdam
from fpe_ref.train import TrainConfig

# the names committed run keys carry; they never change
COMMITTED = {("numpy", "case_study"): "numpy", ("numba", "case_study"): "numba",
             ("numpy", "boolean"): "numpy-v2", ("numba", "boolean"): "numba-v2",
             ("numpy", "vision"): "numpy-reference", ("numba", "vision"): "numba-v1"}


def test_choices_and_get():
    assert trainers.CHOICES == ("auto", "numpy", "numba")
    for name in ("numpy", "numba"):
        for exp in trainers.EXPERIMENTS:
            assert trainers.get(name, exp).name == name


@pytest.mark.parametrize("experiment, resolved", [("case_study", "numba"), ("boolean", "numba"), ("vision", "numpy")])
def test_auto_resolves_to_what_the_committed_results_used(experiment, resolved):
    assert trainers.get("auto", experiment) is trainers.TRAINERS[resolved]
    assert trainers.key_name("auto", experiment) == COMMITTED[resolved, experiment]


@pytest.mark.parametrize("name, experiment", sorted(COMMITTED))
def test_key_name_and_from_key_round_trip(name, experiment):
    key = trainers.key_name(name, experiment)
    assert key == COMMITTED[name, experiment]
    assert trainers.from_key(key, experiment) is trainers.get(name, experiment)


def test_key_names_put_the_auto_trainer_first():
    assert trainers.key_names("boolean") == {"numba-v2": "numba", "numpy-v2": "numpy"}
    assert trainers.key_names("vision") == {"numpy-reference": "numpy", "numba-v1": "numba"}
    assert trainers.is_known_key("numpy-reference", "boolean") and not trainers.is_known_key("numba-v1", "boolean")


@pytest.mark.parametrize("call, match", [
    (lambda: trainers.get("cuda", "boolean"), "unknown trainer 'cuda'; choose from auto, numpy, numba"),
    (lambda: trainers.get("numpy", "mnist"), "unknown experiment 'mnist'"),
    (lambda: trainers.key_name("torch", "vision"), "unknown trainer 'torch'"),
    (lambda: trainers.from_key("numba-v1", "boolean"), "unknown trainer 'numba-v1' in a boolean run key"),
    (lambda: trainers.from_key("numpy-reference", "boolean"), "cannot be reproduced by this fpe-ref"),
    (lambda: trainers.from_key(None, "vision"), "unknown trainer None"),
])
def test_unknown_names_are_one_line_errors(call, match):
    with pytest.raises(FPEError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def _blobs(rng, n=60, d=6, C=3):
    y = rng.integers(0, C, size=n)
    X = 2.0 * np.eye(C, d)[y] + rng.normal(size=(n, d))
    return X, y


@pytest.mark.parametrize("kw, match", [
    (dict(sizes=[6, 4, 3], layer_norm=True), "no LayerNorm"),
    (dict(sizes=[6, 4, 4, 3]), "one-hidden-layer"),
])
def test_numba_refuses_layernorm_and_depth_before_any_work(kw, match):
    model = MLP.init(kw["sizes"], 0, layer_norm=kw.get("layer_norm", False))
    before = {k: v.copy() for k, v in model.params.items()}
    numba = trainers.get("numba", "vision")
    with pytest.raises(FPEError, match="the numba trainer cannot train this model: .*" + match) as err:
        numba.train(model, np.zeros((4, 6)), np.zeros(4, dtype=int), TrainConfig(epochs=1), np.random.default_rng(0))
    assert "\n" not in str(err.value)
    assert all(np.array_equal(model.params[k], before[k]) for k in before)  # nothing trained
    trainers.get("numpy", "vision").check(model, TrainConfig())  # the reference trains every model


def test_numba_refuses_the_rewiring_optimizer_and_orth():
    model = MLP.init([6, 4, 3], 0)
    numba = trainers.get("numba", "vision")
    numba.check(model, TrainConfig(), Adam(model.params))
    with pytest.raises(FPEError, match="RewiringAdam"):
        numba.check(model, TrainConfig(), RewiringAdam(model.params, RewireSchedule(every=1), 0))
    with pytest.raises(FPEError, match="orthogonality"):
        numba.check_sizes([6, 4, 3], TrainConfig(orth=0.1))
    with pytest.raises(FPEError, match="cannot train deep nets: .*one-hidden-layer"):
        numba.check_sizes([6, 4, 4, 3], TrainConfig(), what="deep nets")
    numba.check_sizes([6, 4, 3], TrainConfig(), optimizer=lambda params: Adam(params))


def test_both_trainers_train_a_model_alike(rng):
    """train() of each trainer: (optimizer, History), the same numbers to rounding (float64)."""
    X, y = _blobs(rng)
    cfg = TrainConfig(epochs=3, batch_size=20, warmup="none", warmup_epochs=1)
    out = {}
    for name in ("numpy", "numba"):
        model = MLP.init([6, 4, 3], 1)
        opt, hist = trainers.get(name, "vision").train(model, X, y, cfg, np.random.default_rng(2), X_test=X, y_test=y)
        out[name] = (model, opt, hist)
    (m0, o0, h0), (m1, o1, h1) = out["numpy"], out["numba"]
    for k in m0.params:
        np.testing.assert_allclose(m1.params[k], m0.params[k], rtol=1e-9, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(h1.loss, h0.loss, rtol=1e-9)
    assert h1.test_acc == h0.test_acc and o0.t == o1.t


def test_train_many_keeps_the_order_of_the_models(rng):
    X, y = _blobs(rng)
    cfg = TrainConfig(epochs=2, batch_size=30, warmup="none", warmup_epochs=1)
    models = [MLP.init([6, h, 3], h) for h in (2, 5)]
    res = trainers.get("numpy", "boolean").train_many(models, X, y, cfg, [np.random.default_rng(i) for i in range(2)])
    assert len(res) == 2 and all(len(hist.loss) == 2 for _, hist in res)
    assert [m.sizes for m in models] == [[6, 2, 3], [6, 5, 3]]
