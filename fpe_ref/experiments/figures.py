"""Figures: Gram and W1 heat maps (paper Figures 2 and A1) and training curves.

Matplotlib with the Agg backend; every function writes one PNG and returns its path.
"""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fpe_ref.metrics import gram  # noqa: E402


def _clause_lines(ax, groups, axis="x"):
    """Lines between consecutive clauses (clauses are contiguous literal blocks)."""
    for g in groups[:-1]:
        pos = np.max(g) + 0.5
        (ax.axvline if axis == "x" else ax.axhline)(pos, color="k", lw=0.8)


def gram_and_weights(models: dict, groups, alpha: int, path, title=""):
    """One row per model: ``G = W1^T W1`` (left) and ``W1`` (right), as Figures 2 and A1.

    Vertical lines separate clauses; in ``W1``, horizontal lines group the children of one
    parent (rows ``i*alpha .. i*alpha+alpha-1``), and masked weights are marked with an x.
    """
    n = len(models)
    fig, axes = plt.subplots(n, 2, figsize=(11, 3.2 * n), gridspec_kw={"width_ratios": [1, 1.6]}, squeeze=False)
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
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax = axes[row, 1]
        lim = np.abs(W1).max() or 1.0
        im = ax.imshow(W1, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        _clause_lines(ax, groups, "x")
        M = model.masks.get("W1")
        if M is not None:
            r, c = np.nonzero(~M)
            ax.scatter(c, r, marker="x", s=10, c="k", linewidths=0.6, label="masked")
            for i in range(1, W1.shape[0] // alpha):
                ax.axhline(i * alpha - 0.5, color="k", lw=1.2)
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(f"{name}: W1 ({W1.shape[0]} x {W1.shape[1]})")
        ax.set_xlabel("literal")
        ax.set_ylabel("neuron")
        fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(records: list, variants, path, split_epoch: int):
    """Test accuracy per epoch, mean over trials with a min-max band, phase 1 then phase 2."""
    fig, ax = plt.subplots(figsize=(7, 4))
    p1 = np.array([r["parent"]["history"]["test_acc"] for r in records])
    e1 = np.array(records[0]["parent"]["history"]["test_epoch"])
    ax.plot(e1, p1.mean(0), color="k", label="dense (phase 1)")
    ax.fill_between(e1, p1.min(0), p1.max(0), color="k", alpha=0.15)
    for v in variants:
        acc = np.array([r["models"][v]["history"]["test_acc"] for r in records])
        e = split_epoch + np.array(records[0]["models"][v]["history"]["test_epoch"])
        line, = ax.plot(e, acc.mean(0), label=v)
        ax.fill_between(e, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.15)
    ax.axvline(split_epoch, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"mean over {len(records)} trials (band: min-max); split at epoch {split_epoch}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
