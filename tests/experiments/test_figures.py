"""Figures 2/A1 and the training curves (fpe_ref.experiments.figures): every mark named on the figure."""

from __future__ import annotations

import numpy as np

from fpe_ref.experiments import figures
from fpe_ref.mlp import MLP


GROUPS = [np.arange(0, 4), np.arange(4, 8)]  # two clauses of four literals


def models(rng):
    dense = MLP.init([8, 4, 1], rng)
    split = MLP.init([8, 8, 1], rng)
    mask = np.zeros((8, 8), dtype=bool)
    mask[0::2, :4] = True  # child 0 of each parent sees clause 0, child 1 clause 1
    mask[1::2, 4:] = True
    split.masks["W1"] = mask
    split.params["W1"] = split.params["W1"] * mask
    return dense, split


def legend_texts(fig):
    return [t.get_text() for leg in fig.legends + [a.get_legend() for a in fig.axes if a.get_legend()]
            for t in leg.get_texts()]


def test_gram_and_weights_names_every_mark_and_colour_bar(tmp_path, closed, rng):
    dense, split = models(rng)
    figures.gram_and_weights({"dense": dense, "clause": split}, GROUPS, 2, tmp_path / "f.png", "t")
    (fig,) = closed
    texts = legend_texts(fig)
    assert any("masked weight" in t for t in texts), texts
    assert any("clauses" in t for t in texts), texts
    assert any("children of two parents" in t and "α = 2" in t for t in texts), texts
    colorbars = fig.axes[4:]  # the four heat maps come first, then one colour bar each
    assert len(colorbars) == 4
    labels = [cb.get_ylabel() for cb in colorbars]
    assert all(labels), labels
    assert labels[0].startswith("G[i, j]") and labels[1].startswith("weight W1")
    assert any("no averaging" in t.get_text() for t in fig.texts)


def test_gram_and_weights_without_a_mask_does_not_explain_masks(tmp_path, closed, rng):
    dense, _ = models(rng)
    figures.gram_and_weights({"dense": dense}, GROUPS, 2, tmp_path / "f.png")
    (fig,) = closed
    texts = legend_texts(fig)
    assert texts == ["boundary between two clauses (blocks of literals)"]


def test_training_curves_legend_has_the_band_and_the_split(tmp_path, closed):
    hist = {"test_acc": [0.5, 0.6, 0.7], "test_epoch": [1, 2, 3]}
    rec = {"parent": {"history": hist}, "models": {v: {"history": hist} for v in ("dense", "clause")}}
    figures.training_curves([rec, rec], ("dense", "clause"), tmp_path / "c.png", 3)
    (fig,) = closed
    texts = legend_texts(fig)
    assert "min to max over the 2 trials" in texts
    assert "split (end of phase 1, epoch 3)" in texts
    assert any("mean over 2 trials" in t.get_text() for t in fig.texts)
