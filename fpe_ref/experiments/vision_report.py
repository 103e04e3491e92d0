"""Tables (Markdown) and figures (PNG) of the real-data FPE sweeps (``fpe_ref.experiments.vision``).

Paper: Figure 5 (relative improvement and accuracy per parameter over the hidden size),
Figure 6b (training curves by pre-training length), 6d (relative improvement by alpha),
Tables A3/A4 (deep MLPs), A5 (2:4). Conventions, as the paper's:

* relative improvement ``RI = mean(FPE test acc) / mean(dense test acc)``, printed as
  ``RI - 1`` in percent (Table A3's "28%"), +- one standard error (delta method), ``*``
  where Welch's t-test gives p < 0.05;
* accuracy per parameter: mean test accuracy / (non-zero weights + biases + LayerNorm
  parameters), per 1000 parameters;
* "the number of neurons refers to the number of neurons pre-expansion";
* three selections side by side: the mean over trials, Alg. A3's best-of-T *selected on
  the test set* (optimistic), and the best-of-T *selected on the validation split*
  (its test accuracy), which the paper's reviewers asked for.

The figures draw, instead of the paper's accuracy per parameter (every model of a sweep
has the dense parent's non-zero weight count, so those lines lie on top of each other), the
test accuracy difference to dense in percentage points, ``± sqrt(SE_v^2 + SE_dense^2)``.

:func:`checked_summary` is ``vision.summarize`` after :func:`check_records`: every field the
summary reads is checked, and records that differ in anything but the hidden size and the
trial (``GRID_FIELDS``) are refused, not pooled.
"""

from __future__ import annotations

import os

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from fpe_ref.errors import FPEError  # noqa: E402
from fpe_ref.experiments.boolean_report import check_pooled, field, number  # noqa: E402
from fpe_ref.experiments.stats import SIG_LEVEL  # noqa: E402
from fpe_ref.experiments.tables import pct, ri_pct, table  # noqa: E402

GRID_FIELDS = ("hidden",)  # what a vision sweep varies; with "trial", all that its records may differ in

LABELS = {
    "dense": "dense (paper baseline)",
    "random": "random split",
    "gram": "Gram split",
    "two-four": "2:4 split",
    "rewire": "random split + rewiring",
    "dense-scratch": "dense from scratch†",
    "sparse-scratch": "sparse mask from scratch†",
}


def label(v: str) -> str:
    name, _, a = v.partition("@")
    base = LABELS.get(name, name)
    return f"{base}, alpha={a}" if a else base


def check_records(records, where: str = "runs.jsonl") -> None:
    """Every field :func:`checked_summary` reads, then that the records differ only in the hidden size and the trial.

    ``FPEError`` (one line) naming the run and the field for a missing or non-numeric field,
    or naming the key fields whose values differ (``seed: 0, 7``) for records of more than
    one setting. A record must hold every variant of its key's ``variants``.
    """
    for r in records:
        if not isinstance(r.get("key"), dict):
            raise FPEError(f"{where}: run {r.get('run_id', '?')} has no field key")
        for f in GRID_FIELDS + ("trial",):
            number(r, f"key.{f}", where, "count")
        variants = field(r, "key.variants", where)
        if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
            raise FPEError(f"{where}: run {r.get('run_id', '?')}: key.variants is {variants!r}, not a list of names")
        for v in ["parent", *variants]:
            at = "parent" if v == "parent" else f"models.{v}"
            number(r, f"{at}.test_acc", where, "accuracy")
            for f in ("nonzero_weights", "params_total"):
                number(r, f"{at}.{f}", where, "count")
            number(r, f"{at}.cosine_W1", where)
            per_class = field(r, f"{at}.per_class_test_acc", where)
            if not isinstance(per_class, list) or not all(x is None or isinstance(x, (int, float))
                                                          and not isinstance(x, bool) for x in per_class):
                raise FPEError(f"{where}: run {r.get('run_id', '?')}: {at}.per_class_test_acc is not a list of numbers")
            m = field(r, at, where)
            for f in ("val_acc", "test_acc_at_split"):
                if f in m:
                    number(r, f"{at}.{f}", where)
    check_pooled(records, GRID_FIELDS + ("trial",), where)
    seen = {}
    for r in records:
        cell = (r["key"]["hidden"], r["key"]["trial"])
        if cell in seen:
            raise FPEError(f"{where}: runs {seen[cell]} and {r.get('run_id', '?')} are both trial {cell[1]} "
                           f"of hidden={cell[0]}")
        seen[cell] = r.get("run_id", "?")


def checked_summary(records, variants, where: str = "runs.jsonl") -> dict:
    """``vision.summarize(records, variants)`` after :func:`check_records` (one setting, valid fields)."""
    from fpe_ref.experiments.vision import summarize

    check_records(records, where)
    return summarize(records, variants)


def ri_cell(row) -> str:
    """A summary row's relative improvement over dense, ``(RI − 1)`` in percent (``tables.ri_pct``); "-" if none."""
    if "ri" not in row:
        return "-"
    return ri_pct(row["ri"], row["ri_se"], row.get("p_welch", 1.0))



def tables(summary: dict, variants, n_classes: int | None = None, class_names=None) -> str:
    """All Markdown tables of one sweep (absolute, relative, per parameter, selection, per class)."""
    hs = sorted(summary)
    vs = [v for v in variants if any(v in summary[h] for h in hs)]
    n = max((summary[h][v]["n"] for h in hs for v in vs if v in summary[h]), default=0)
    parts = [f"### Test accuracy (%), mean ± s.e.m. over {n} trials\n",
             table(["neurons (pre-expansion)", "dense parent after pre-training"] + [label(v) for v in vs],
                   [[h, pct(summary[h]["parent"]["acc_mean"], summary[h]["parent"]["acc_sem"])]
                    + [pct(summary[h][v]["acc_mean"], summary[h][v]["acc_sem"]) if v in summary[h] else "-" for v in vs]
                    for h in hs])]
    rel = [v for v in vs if v != "dense"]
    if "dense" in vs and rel:
        parts += ["\n### Relative improvement over the dense baseline, (RI − 1) in %, ± s.e. (delta method); "
                  "* p < 0.05 (Welch)\n",
                  table(["neurons"] + [label(v) for v in rel],
                        [[h] + [ri_cell(summary[h][v]) if v in summary[h] else "-" for v in rel] for h in hs])]
    parts += ["\n### Test accuracy per 1000 parameters (non-zero weights + biases + LayerNorm)\n",
              table(["neurons"] + [f"{label(v)}" for v in vs],
                    [[h] + [f"{summary[h][v]['acc_per_kparam']:.4f} ({summary[h][v]['params_total']})"
                            if v in summary[h] else "-" for v in vs] for h in hs])]
    sel_rows = []
    for h in hs:
        for v in vs:
            if v not in summary[h]:
                continue
            r = summary[h][v]
            sel_rows.append([h, label(v), pct(r["acc_mean"], r["acc_sem"]), pct(r["acc_best_test_selected"]),
                             pct(r.get("acc_best_val_selected"))])
    parts += ["\n### Model selection: mean over trials, Alg. A3's best-of-T selected on the test set "
              "(optimistic), best-of-T selected on the validation split (its test accuracy)\n",
              table(["neurons", "model", "mean ± s.e.m.", "best of T (test-selected)", "best of T (val-selected)"],
                    sel_rows)]
    split_rows = [[h, label(v), pct(summary[h][v]["acc_at_split_mean"]), pct(summary[h][v]["acc_mean"]),
                   f"{summary[h][v]['cosine_W1']:.4f}"]
                  for h in hs for v in vs if v in summary[h] and "acc_at_split_mean" in summary[h][v]]
    if split_rows:
        parts += ["\n### At the split (before any training after it) and after; mean cosine of W1's rows "
                  "(Figure 6c's interference measure)\n",
                  table(["neurons", "model", "test acc at split (%)", "after training (%)", "cosine W1 after"],
                        split_rows + [[h, label("dense"), "-", pct(summary[h]["dense"]["acc_mean"]),
                                       f"{summary[h]['dense']['cosine_W1']:.4f}"] for h in hs if "dense" in summary[h]])]
    h0 = hs[0] if hs else None
    if h0 is not None and n_classes and n_classes <= 20:
        names = list(class_names) if class_names else [str(k) for k in range(n_classes)]
        parts += [f"\n### Per-class test accuracy (%) at {h0} neurons, mean over trials\n",
                  table(["class"] + [label(v) for v in vs],
                        [[names[k]] + [pct(summary[h0][v]["per_class_mean"][k]) for v in vs] for k in range(n_classes)])]
    return "\n".join(parts) + "\n"


def _trials_text(ns) -> str:
    """"5 trials", or "3-5 trials" where the cells hold different numbers of finished trials."""
    ns = sorted(set(ns))
    if not ns:
        return "no trials"
    return f"{ns[0]} trial{'s' if ns[0] != 1 else ''}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]} trials"


def difference_to_dense(row, dense) -> tuple:
    """``(d, se)``: a summary row's mean test accuracy minus dense's, in percentage points, ± 1 SE.

    ``SE = sqrt(SE_v^2 + SE_dense^2)``, the standard error of a difference of two independent
    means (the conservative choice for paired trials, as for the relative improvement); NaN
    with a single trial.
    """
    d = 100.0 * (row["acc_mean"] - dense["acc_mean"])
    n_v, n_d = row.get("n", 0), dense.get("n", 0)
    se = 100.0 * float(np.hypot(row["acc_sem"], dense["acc_sem"])) if n_v > 1 and n_d > 1 else float("nan")
    return d, se


def _hidden_sweep_footnote(ns, has_scratch) -> str:
    lines = [f"Mean over {_trials_text(ns)}; error bars: ± 1 standard error (relative improvement: delta method;",
             "difference: sqrt(SE_model² + SE_dense²)); * Welch two-sided p < 0.05 against dense.",
             "Accuracy per 1000 parameters is not drawn: every model has the dense parent's non-zero weight",
             "count, so it orders the models as accuracy does (its numbers are in tables.md)."]
    if has_scratch:
        lines.append("† baseline beyond the paper, trained from scratch (dashed lines).")
    return "\n".join(lines)


def figure_hidden_sweep(summary: dict, variants, path, title: str):
    """Figure 5 layout: relative improvement over dense (top) and accuracy difference to dense (bottom).

    Top: ``(RI - 1)`` in % ± 1 SE; bottom: mean test accuracy minus dense's, in percentage
    points, ± 1 SE (:func:`difference_to_dense`), with dense's own mean accuracy printed
    under each neuron count. The paper's bottom panel, accuracy per 1000 parameters, is not drawn:
    all models of a sweep have the same non-zero weight count, so its lines lie on top of
    each other (the numbers stay in ``tables.md``). With a single neuron count (Table A5)
    the models are side by side as bars, one per model, instead of lines over the neurons.
    """
    hs = sorted(summary)
    shown = [v for v in variants if v != "dense" and any(v in summary[h] for h in hs)]
    colors = {v: f"C{i}" for i, v in enumerate(variants)}  # one colour per model in both panels
    ns = [summary[h][v]["n"] for h in hs for v in variants if v in summary[h]]
    has_scratch = any(v.endswith("scratch") for v in shown)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 8), sharex=True)

    def points(v):
        out = []
        for h in hs:
            r = summary[h].get(v)
            if r is None or "dense" not in summary[h] or "ri" not in r:
                continue
            d, dse = difference_to_dense(r, summary[h]["dense"])
            out.append((h, 100 * (r["ri"] - 1), 100 * r["ri_se"], d, dse, r.get("p_welch", 1.0) < SIG_LEVEL))
        return out

    def star(ax, x, y, e, color):
        ax.annotate("*", (x, y + (0 if np.isnan(e) else e)), textcoords="offset points", xytext=(0, 1),
                    ha="center", color=color, fontsize=12)

    single = len(hs) == 1
    for i, v in enumerate(shown):
        pts = points(v)
        if not pts:
            continue
        ls = "--" if v.endswith("scratch") else "-"
        for ax, (yi, ei) in ((ax1, (1, 2)), (ax2, (3, 4))):
            y = [p[yi] for p in pts]
            e = [0.0 if np.isnan(p[ei]) else p[ei] for p in pts]
            if single:
                ax.bar([i], y, yerr=e, capsize=4, color=colors[v], alpha=0.8, label=label(v),
                       hatch="//" if v.endswith("scratch") else None, edgecolor="k", lw=0.6)
                xs = [i]
            else:
                ax.errorbar([p[0] for p in pts], y, yerr=e, marker="o", capsize=3, ls=ls, label=label(v),
                            color=colors[v])
                xs = [p[0] for p in pts]
            for x, yy, ee, p in zip(xs, y, e, pts):
                if p[5]:
                    star(ax, x, yy, ee, colors[v])
    for ax in (ax1, ax2):
        ax.axhline(0, color="k", lw=0.8, ls=":", label="dense baseline (0)")
        ax.margins(y=0.12)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_ylabel("relative improvement over dense, (RI − 1) %")
    ax1.set_title(title, fontsize=10)
    ax2.set_ylabel("test accuracy − dense (percentage points)")
    dense_acc = {h: f"dense {100 * summary[h]['dense']['acc_mean']:.1f}%" for h in hs if "dense" in summary[h]}
    if single:
        ax2.set_xticks(range(len(shown)), [label(v) for v in shown], fontsize=8)
        ax2.set_xlabel(f"model ({hs[0]} neurons pre-expansion; {dense_acc.get(hs[0], 'no dense run')})")
    else:
        ax2.set_xlabel("neurons (pre-expansion), and dense's mean test accuracy there")
        ax2.set_xscale("log", base=2)
        ax2.set_xticks(hs)
        ax2.set_xticklabels([f"{h}\n{dense_acc.get(h, '')}" for h in hs], fontsize=8)
        ax2.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    fig.text(0.01, 0.005, _hidden_sweep_footnote(ns, has_scratch), ha="left", va="bottom", fontsize=7, color="0.25")
    fig.tight_layout(rect=(0, 0.075 + 0.018 * has_scratch, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure_curves(curves: dict, path, title: str, zoom_from: int | None = None, trials: int | None = None):
    """Figure 6b: test accuracy per epoch.

    ``curves = {label: (epochs, mean, sem, split_epoch or None, group)}``; curves of one
    ``group`` (one split time) share a colour, dense dashed, FPE solid. With ``zoom_from``
    a second panel shows the epochs from there on, where the curves separate. The left
    panel's legend names the colours (split times) and the marks; the right one each curve.
    ``trials``, when given, is the number of trials behind each mean (for the footnote).
    """
    groups = list(dict.fromkeys(c[4] for c in curves.values()))
    colors = {g: f"C{i}" for i, g in enumerate(groups)}
    splits = {c[4]: c[3] for c in curves.values()}
    n = 2 if zoom_from else 1
    fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 4.6), squeeze=False)
    for k, ax in enumerate(axes[0]):
        for name, (ep, mean, sem, split, group) in curves.items():
            ep, mean, sem = map(np.asarray, (ep, mean, sem))
            sel = ep >= (zoom_from if k == 1 else 0)
            ls = "--" if name.startswith("dense") else "-"
            ax.plot(ep[sel], mean[sel], label=name, ls=ls, color=colors[group])
            ax.fill_between(ep[sel], (mean - sem)[sel], (mean + sem)[sel], color=colors[group], alpha=0.12)
            if split is not None and (k == 0 or split >= zoom_from):
                ax.axvline(split, color=colors[group], lw=0.6, ls=":")
        ax.set_xlabel("epoch (pre-training + after the split)")
        ax.set_ylabel("test accuracy (mean ± s.e.m.)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(title, fontsize=10)
    keys = [Line2D([], [], color=colors[g], lw=2, label=f"split at epoch {splits[g]}" if splits[g] is not None
                   else str(g)) for g in groups]
    keys += [Line2D([], [], color="0.3", ls="--", label="dense baseline"),
             Line2D([], [], color="0.3", ls="-", label="random-split FPE"),
             Patch(color="0.3", alpha=0.2, label="± 1 s.e.m. over trials"),
             Line2D([], [], color="0.3", ls=":", lw=0.8, label="epoch of the split (its colour)")]
    axes[0, 0].legend(handles=keys, fontsize=7, loc="lower right", ncol=2)
    if n == 2:
        axes[0, 1].set_title(f"from epoch {zoom_from} (dashed: dense, solid: random split)", fontsize=10)
        axes[0, 1].legend(fontsize=7, ncol=2, loc="lower right")
    over = f"{trials} trials" if trials else "the trials"
    fig.text(0.01, 0.005, f"Lines: mean test accuracy over {over} at each epoch; bands: ± 1 standard error of "
             "that mean.\nEach split time is its own sweep: the dense parent pre-trains until the split, then the "
             "dense baseline (fresh Adam) and the random split train to the same last epoch.",
             ha="left", va="bottom", fontsize=7, color="0.25")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(path, text):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path
