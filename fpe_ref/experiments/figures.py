"""Figures: Gram and W1 heat maps (paper Figures 2 and A1) and training curves.

Matplotlib with the Agg backend; every function writes one PNG and returns its path. Every
mark is named in a legend and every figure states its statistic in a footnote, so that a
figure can be read without the text around it.
"""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from fpe_ref.metrics import gram  # noqa: E402

CLAUSE_LINE = dict(color="k", lw=0.8)  # between clauses (both heat maps)
PARENT_LINE = dict(color="k", lw=1.6)  # between the children of two parents (W1 of a split model)
MASK_MARK = dict(marker="x", s=10, c="k", linewidths=0.6)  # a masked weight of W1


def _clause_lines(ax, groups, axis="x"):
    """Lines between consecutive clauses (clauses are contiguous literal blocks)."""
    for g in groups[:-1]:
        pos = np.max(g) + 0.5
        (ax.axvline if axis == "x" else ax.axhline)(pos, **CLAUSE_LINE)


def gram_and_weights(models: dict, groups, alpha: int, path, title=""):
    """One row per model: ``G = W1^T W1`` (left) and ``W1`` (right), as Figures 2 and A1.

    Vertical lines separate clauses; in ``W1``, horizontal lines group the children of one
    parent (rows ``i*alpha .. i*alpha+alpha-1``), and masked weights are marked with an x.
    A legend under the panels names the three marks; each colour bar names its quantity.
    """
    n = len(models)
    height = 3.2 * n + 0.6  # inches: the panels, then 0.6 for the legend and the footnote
    fig, axes = plt.subplots(n, 2, figsize=(11, height), gridspec_kw={"width_ratios": [1, 1.6]}, squeeze=False)
    any_mask = False
    for row, (name, model) in enumerate(models.items()):
        W1 = model.params["W1"]
        G = gram(W1)
        lim = np.abs(G).max() or 1.0
        ax = axes[row, 0]
        im = ax.imshow(G, cmap="RdBu_r", vmin=-lim, vmax=lim)
        _clause_lines(ax, groups, "x")
        _clause_lines(ax, groups, "y")
        ax.set_title(f"{name}: Gram G = W1^T W1")
        ax.set_xlabel("literal")
        ax.set_ylabel("literal")
        fig.colorbar(im, ax=ax, fraction=0.046, label="G[i, j] (overlap of literals i, j)")
        ax = axes[row, 1]
        lim = np.abs(W1).max() or 1.0
        im = ax.imshow(W1, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        _clause_lines(ax, groups, "x")
        M = model.masks.get("W1")
        if M is not None:
            any_mask = True
            r, c = np.nonzero(~M)
            ax.scatter(c, r, **MASK_MARK)
            for i in range(1, W1.shape[0] // alpha):
                ax.axhline(i * alpha - 0.5, **PARENT_LINE)
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(f"{name}: W1 ({W1.shape[0]} x {W1.shape[1]})")
        ax.set_xlabel("literal")
        ax.set_ylabel("neuron")
        fig.colorbar(im, ax=ax, fraction=0.046, label="weight W1[neuron, literal]")
    handles = [Line2D([], [], **CLAUSE_LINE, label="boundary between two clauses (blocks of literals)")]
    if any_mask:
        handles += [Line2D([], [], ls="", marker="x", color="k", mew=0.8, ms=5,
                           label="masked weight (held at 0 by the FPE mask)"),
                    Line2D([], [], **PARENT_LINE, label=f"boundary between the α = {alpha} children of two parents")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.2 / height))
    fig.text(0.5, 0.005, "One trained model per row (no averaging). Colours: red positive, blue negative, white 0; "
             "each panel scaled symmetrically to its own largest |value| (its colour bar).",
             ha="center", va="bottom", fontsize=8, color="0.25")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.5 / height, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(records: list, variants, path, split_epoch: int):
    """Test accuracy per epoch, mean over trials with a min-max band, phase 1 then phase 2."""
    fig, ax = plt.subplots(figsize=(7, 4.4))
    p1 = np.array([r["parent"]["history"]["test_acc"] for r in records])
    e1 = np.array(records[0]["parent"]["history"]["test_epoch"])
    ax.plot(e1, p1.mean(0), color="k", label="dense parent (phase 1)")
    ax.fill_between(e1, p1.min(0), p1.max(0), color="k", alpha=0.15)
    for v in variants:
        acc = np.array([r["models"][v]["history"]["test_acc"] for r in records])
        e = split_epoch + np.array(records[0]["models"][v]["history"]["test_epoch"])
        line, = ax.plot(e, acc.mean(0), label=f"{v} (phase 2)")
        ax.fill_between(e, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.15)
    ax.axvline(split_epoch, color="grey", ls="--", lw=0.8, label=f"split (end of phase 1, epoch {split_epoch})")
    ax.fill_between([], [], [], color="0.5", alpha=0.3, label=f"min to max over the {len(records)} trials")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Test accuracy per epoch; split at epoch {split_epoch}")
    ax.legend(fontsize=8)
    fig.text(0.5, 0.005, f"Lines: mean over {len(records)} trials; bands: the lowest and the highest trial "
             "at each epoch.", ha="center", va="bottom", fontsize=8, color="0.25")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
