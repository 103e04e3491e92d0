"""Tables and figures of the real-data sweeps (fpe_ref.experiments.vision_report) on hand-made records."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from fpe_ref.errors import FPEError
from fpe_ref.experiments import vision_report as vr
from fpe_ref.experiments.vision import summarize


VARIANTS = ["dense", "random", "dense-scratch"]
# test accuracy of (variant, hidden, trial): random beats dense by 2 points at h=4 and 1 point at h=8
ACC = {"dense": 0.80, "random": 0.82, "dense-scratch": 0.79}


def model(acc, nnz=100):
    return {"test_acc": acc, "val_acc": acc, "nonzero_weights": nnz, "params_total": nnz + 10, "cosine_W1": 0.1,
            "per_class_test_acc": [acc, acc]}


def record(hidden, trial, seed=0, variants=VARIANTS):
    jitter = 0.01 * (trial - 1)  # trials 0, 1, 2: -1, 0, +1 point
    shift = 0.0 if hidden == 4 else -0.01
    key = {"hidden": hidden, "trial": trial, "seed": seed, "variants": list(variants), "train": {"lr": 0.001}}
    models = {v: model(ACC[v] + jitter + (shift if v == "random" else 0.0)) for v in variants}
    return {"run_id": f"h{hidden}t{trial}s{seed}", "sweep": "vision", "key": key, "parent": model(0.78 + jitter),
            "models": models}


def records(hiddens=(4, 8), trials=3):
    return [record(h, t) for h in hiddens for t in range(trials)]


def legend_texts(ax):
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


def test_summarise_equals_vision_summarize_on_valid_records():
    recs = records()
    assert vr.checked_summary(recs, VARIANTS) == summarize(recs, VARIANTS)


def test_records_of_two_seeds_are_refused_with_the_values():
    recs = records() + [record(4, 0, seed=7)]
    with pytest.raises(FPEError, match=r"differ in more than hidden, trial: seed: 0, 7") as exc:
        vr.checked_summary(recs, VARIANTS)
    assert "\n" not in str(exc.value)


def test_nested_key_fields_are_named_with_their_path():
    recs = records()
    recs[2]["key"]["train"]["lr"] = 0.01
    with pytest.raises(FPEError, match=r"train\.lr: 0\.001, 0\.01"):
        vr.check_records(recs)


@pytest.mark.parametrize("path, value, message", [
    (("models", "random", "test_acc"), None, "no field models.random.test_acc"),
    (("models", "random", "test_acc"), "0.8", "models.random.test_acc is '0.8', not an accuracy"),
    (("parent", "params_total"), 1.5, "parent.params_total is 1.5, not a non-negative integer"),
    (("models", "dense", "per_class_test_acc"), ["a"], "per_class_test_acc is not a list of numbers"),
    (("key", "trial"), "1", "key.trial is '1'"),
])
def test_a_bad_field_is_one_line_naming_the_run_and_the_field(path, value, message):
    recs = records()
    bad = copy.deepcopy(recs[1])
    target = bad
    for p in path[:-1]:
        target = target[p]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    recs[1] = bad
    with pytest.raises(FPEError, match=re.escape(f"run {bad['run_id']}") + ".*" + re.escape(message)) as exc:
        vr.checked_summary(recs, VARIANTS)
    assert "\n" not in str(exc.value)


def test_two_records_of_one_trial_are_refused():
    recs = records()
    twin = copy.deepcopy(recs[0])
    twin["run_id"] = "other"
    with pytest.raises(FPEError, match="both trial 0 of hidden=4"):
        vr.check_records(recs + [twin])


def test_hidden_sweep_figure_draws_the_difference_to_dense_not_accuracy_per_parameter(tmp_path, closed):
    summary = vr.checked_summary(records(), VARIANTS)
    vr.figure_hidden_sweep(summary, VARIANTS, tmp_path / "f.png", "title")
    (fig,) = closed
    top, bottom = fig.axes
    assert "dense" in bottom.get_ylabel() and "percentage points" in bottom.get_ylabel()
    assert bottom.get_yscale() == "linear"
    for ax in (top, bottom):
        assert "random split" in legend_texts(ax) and "dense baseline (0)" in legend_texts(ax)
    bars = next(c for c in bottom.containers if c.get_label() == "random split")
    y = np.asarray(bars.lines[0].get_ydata(), float)
    np.testing.assert_allclose(y, [2.0, 1.0], atol=1e-9)  # random minus dense, points, at h = 4 and 8
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["4\ndense 80.0%", "8\ndense 80.0%"]
    foot = " ".join(t.get_text() for t in fig.texts)
    assert "Mean over 3 trials" in foot and "± 1 standard error" in foot and "* Welch" in foot
    assert "† baseline beyond the paper" in foot and "Accuracy per 1000 parameters is not drawn" in foot


def test_a_single_hidden_size_is_drawn_as_bars_with_the_model_names(tmp_path, closed):
    summary = vr.checked_summary(records(hiddens=(8,)), VARIANTS)
    vr.figure_hidden_sweep(summary, VARIANTS, tmp_path / "f.png", "title")
    (fig,) = closed
    top, bottom = fig.axes
    assert [type(c).__name__ for c in bottom.containers].count("BarContainer") == 2  # one bar per model
    assert all(c.lines[0] is None for c in bottom.containers if isinstance(c, ErrorbarContainer))  # no data line
    assert [t.get_text() for t in bottom.get_xticklabels()] == [vr.label("random"), vr.label("dense-scratch")]
    np.testing.assert_allclose([p.get_height() for p in bottom.patches], [1.0, -1.0], atol=1e-9)
    assert "dense 80.0%" in bottom.get_xlabel()
    assert top.get_yscale() == bottom.get_yscale() == "linear"


def test_curves_figure_has_a_legend_in_both_panels(tmp_path, closed):
    ep = list(range(1, 6))
    curves = {f"{v}, split at {p}": (ep, np.linspace(0.5, 0.8, 5), np.full(5, 0.01), p, p)
              for p in (1, 3) for v in ("dense", "random")}
    vr.figure_curves(curves, tmp_path / "c.png", "title", zoom_from=2, trials=4)
    (fig,) = closed
    left, right = fig.axes
    assert {"split at epoch 1", "split at epoch 3", "dense baseline", "random-split FPE",
            "± 1 s.e.m. over trials", "epoch of the split (its colour)"} <= set(legend_texts(left))
    assert set(curves) == set(legend_texts(right))
    assert any("over 4 trials" in t.get_text() for t in fig.texts)
