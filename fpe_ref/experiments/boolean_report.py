"""``fpe report``: a Boolean sweep's runs.jsonl -> Figures 3 and 4, Tables A1/A2 and accuracies.

Paper: Sec. 3.2 (Figure 3: relative improvement; Figure 4: capacity and cosine fold change
and their regressions), A.6 (Tables A1/A2).

Statistics (choices, since the paper names its quantities but not its estimators)
---------------------------------------------------------------------------------
Computed by :mod:`fpe_ref.experiments.stats`; number formats from :mod:`fpe_ref.experiments.tables`.
For a cell (grid point ``(m, hidden)`` and ``alpha``) with FPE values ``a_1..a_n`` and dense
values ``b_1..b_n`` over trials (one dense baseline per trial, the same trial seeds):

Relative improvement (Figure 3; "FPE test accuracy / dense test accuracy")
    the ratio of the means ``R = mean(a) / mean(b)``, with the delta-method standard error
    of a ratio of two independent means::

        SE(R) = |R| * sqrt( SE(a)^2 / mean(a)^2 + SE(b)^2 / mean(b)^2 ),  SE(x) = sd(x, ddof=1) / sqrt(n)

    The trials are in fact paired (FPE model t grows out of dense parent t), and the
    dense and FPE accuracies of a trial are positively correlated, so this independent-
    sample error is the conservative one; it matches the unpaired test below.
Significance (the paper's ``*``)
    Welch's t-test of ``a`` against ``b`` (``scipy.stats.ttest_ind(a, b, equal_var=False)``),
    two-sided, ``*`` where ``p < 0.05``. Cells with fewer than two trials on either side,
    or with zero variance on both, get ``p = nan`` and no mark.
Fold change (Figure 4a, b; "normalized to dense values")
    the same ratio and error with capacity or mean |cosine| in place of accuracy, FPE model
    after phase 2 over the dense baseline after phase 2.
Difference (Figure 3a/b's bottom row: accuracy; Figure 4a/b's middle row: signed cosine)
    ``D = mean(a) - mean(b)`` with ``SE(D) = sqrt(SE(a)^2 + SE(b)^2)`` (independent means,
    the conservative choice, as above) and the same Welch p. The signed mean cosine is near
    zero for most models, so its fold change (a ratio of two means near zero, printed in the
    tables as the paper defines it) swings in sign and size from cell to cell; the figure
    draws the difference instead. The paper's accuracy per parameter is not drawn: the
    dense model and its splits have the same non-zero weights, so it differs from accuracy
    only by the split's (alpha - 1) * hidden extra biases.
Regressions (Figure 4c)
    ordinary least squares of the cell means ``R`` on the cell means of the fold change,
    over the hidden sizes of the Figure 3a grid, one line per (split, alpha);
    ``R^2 = 1 - SS_res / SS_tot`` (= Pearson r^2 for a line with an intercept). A fit needs
    ``MIN_FIT_POINTS`` = 3 cells: two points always give R^2 = 1, so with fewer no line is
    drawn and the table says "too few points".
Tables A1/A2
    mean +- sample standard deviation (ddof = 1) over trials, beside the paper's numbers, at
    both alphas. Table A2 leads with the mean |cosine| of the rows of ``[W1 | b1]``
    (``cosine_bias_abs``), the reading ``fpe study choices`` chose; the signed and unsigned
    cosines of ``W1`` alone follow. Runs recorded before that field existed show "—" there.

Partially finished grids: a cell with no finished trial is drawn grey / printed "—"; a cell
with fewer trials than planned is printed with its count ("n=3/5"). A grid point that
cannot exist (fewer clauses than alpha: ``fpe_ref.experiments.boolean.feasible``) is
drawn hatched and labelled "not possible" / printed "n/a", or left out of a 1-D panel.

Records
-------
``load_sweep`` checks every record before use (``check_records``): the fields the report
reads must be there with numbers in them (an ``FPEError`` names the run and the field), and
the records may differ only in the grid point (``GRID_FIELDS``) and the trial. Records of
other settings (another seed, other epochs, another trainer...) are refused, not pooled:
the error names each field that differs and its values, and so it does where the records
and ``sweep.json`` disagree.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from fpe_ref.errors import FPEError
from fpe_ref.experiments.boolean import feasible
from fpe_ref.experiments.runs import STORE_NAME, RunStore, record_problem
from fpe_ref.experiments.outputs import flatten
from fpe_ref.experiments.stats import difference, linfit, mean_sd_se, relative_improvement
from fpe_ref.experiments.tables import count_note, mean_pm, num, p_value, ratio_cell, table

VARIANTS = ("dense", "clause", "random")
SPLITS = ("clause", "random")
SPLIT_COLORS = {"clause": "tab:blue", "random": "tab:orange", "dense": "k"}
ALPHA_STYLES = {2: ":", 4: "-"}  # Figure 4c: dotted alpha 2, solid alpha 4
ALPHA_MARKERS = {2: "o", 4: "s"}
METRICS = ("capacity", "cosine", "cosine_abs", "cosine_bias_abs")  # interference metrics with a fold change
METRIC_LABEL = {"capacity": "feature capacity", "cosine": "mean neuron cosine (signed)",
                "cosine_abs": "mean neuron |cosine| (unsigned)",
                "cosine_bias_abs": "mean neuron |cosine| of [W1 | b1]"}
METRIC_AXIS = {"capacity": "capacity: FPE / dense", "cosine": "cosine: FPE − dense",
               "cosine_abs": "|cosine|: FPE / dense", "cosine_bias_abs": "|cosine| [W1|b1]: FPE / dense"}
DIFFERENCE_METRICS = ("cosine",)  # Figure 4a/b draws FPE - dense for these, the fold change for the others
MIN_FIT_POINTS = 3  # Figure 4c: fewer cells give no fit (two points always lie on a line, R^2 = 1)
GRID_FIELDS = ("m", "hidden", "alpha")  # what the grids vary; with "trial", all that records may differ in
METRIC_FIELDS = ("capacity", "cosine", "cosine_abs")  # numbers or null (not computed) in every record
OPTIONAL_METRIC_FIELDS = ("cosine_bias_abs",)  # numbers or null where present: runs made before it have none

# The paper's Tables A1 (total feature capacity) and A2 (mean neuron cosine similarity):
# literals -> ((dense mean, sd), (clause-split mean, sd), (random-split mean, sd)); 8 neurons, 5 trials.
PAPER_TABLE_A1 = {
    12: ((1.896, 0.377), (2.740, 0.114), (2.780, 0.133)),
    24: ((2.907, 0.370), (5.479, 0.400), (5.268, 0.317)),
    32: ((3.944, 0.409), (6.977, 0.426), (6.848, 0.568)),
    40: ((4.819, 0.491), (7.853, 0.469), (7.825, 0.365)),
    60: ((5.584, 0.670), (10.79, 0.868), (10.90, 0.747)),
    80: ((5.812, 1.044), (13.07, 1.093), (12.00, 1.726)),
    100: ((6.219, 0.535), (14.21, 1.866), (15.00, 0.727)),
    128: ((7.699, 1.029), (16.87, 0.926), (13.80, 1.037)),
}
PAPER_TABLE_A2 = {
    12: ((0.332, 0.123), (0.230, 0.021), (0.243, 0.083)),
    24: ((0.382, 0.127), (0.173, 0.041), (0.219, 0.067)),
    32: ((0.291, 0.230), (0.150, 0.072), (0.171, 0.092)),
    40: ((0.257, 0.096), (0.137, 0.019), (0.146, 0.049)),
    60: ((0.275, 0.095), (0.145, 0.030), (0.142, 0.045)),
    80: ((0.303, 0.101), (0.108, 0.035), (0.113, 0.025)),
    100: ((0.312, 0.081), (0.134, 0.028), (0.144, 0.041)),
    128: ((0.262, 0.081), (0.105, 0.031), (0.108, 0.027)),
}


# ---------------------------------------------------------------- loading
def load_sweep(sweep_dir):
    """``(records, meta)`` of a sweep directory (``runs.jsonl`` and ``sweep.json``)."""
    path = os.path.join(sweep_dir, STORE_NAME)
    if not os.path.exists(path):
        raise FPEError(f"no {STORE_NAME} in {sweep_dir}: run 'fpe sweep boolean --out {sweep_dir}' first")
    meta_path = os.path.join(sweep_dir, "sweep.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise FPEError(f"no sweep.json in {sweep_dir}: not a sweep directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FPEError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "kind" not in meta:
        raise FPEError(f"{meta_path} is not a sweep description (a JSON object with 'kind' and a 'config' object)")
    records = list(RunStore(path).load().values())
    kinds = {r.get("sweep") for r in records}
    if meta["kind"] != "boolean" or kinds - {"boolean"}:
        what = meta["kind"] if meta["kind"] != "boolean" else ", ".join(sorted(map(str, kinds - {"boolean"})))
        raise FPEError(f"{sweep_dir} holds a {what!r} sweep; fpe report reports Boolean sweeps")
    check_records(records, meta, path)
    for rec in records:  # then what the fields cannot show: a record edited after it was written
        problem = record_problem(rec)
        if problem:
            raise FPEError(f"{path}: run {rec['run_id']}: {problem}")
    return records, meta


# ---------------------------------------------------------------- record checks
def field(rec, path: str, where: str):
    """``rec``'s field at the dotted ``path``; ``FPEError`` naming the run and the field if it is absent."""
    x = rec
    for part in path.split("."):
        if not isinstance(x, dict) or part not in x:
            raise FPEError(f"{where}: run {rec.get('run_id', '?')} has no field {path}")
        x = x[part]
    return x


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def number(rec, path: str, where: str, kind: str = "number"):
    """A numeric field: ``kind`` "number" (null allowed: not computed), "accuracy" (in [0, 1]) or "count"."""
    x = field(rec, path, where)
    rid = rec.get("run_id", "?")
    if kind == "number":
        if x is None or _is_number(x):
            return x
        raise FPEError(f"{where}: run {rid}: {path} is {x!r}, not a number")
    if kind == "accuracy":
        if _is_number(x) and 0.0 <= x <= 1.0:
            return x
        raise FPEError(f"{where}: run {rid}: {path} is {x!r}, not an accuracy in [0, 1]")
    if isinstance(x, int) and not isinstance(x, bool) and x >= 0:
        return x
    raise FPEError(f"{where}: run {rid}: {path} is {x!r}, not a non-negative integer")


_ABSENT = object()  # a field a record does not have (``key_differences``)


def _shown(values) -> str:
    """Distinct values as text, numbers in numeric order: "0, 7"; an absent field as "(absent)"."""
    def text(v):
        return "(absent)" if v is _ABSENT else v if isinstance(v, str) else json.dumps(v)

    def order(v):
        return (0, v, "") if _is_number(v) else (1, 0, text(v))
    return ", ".join(text(v) for v in sorted(values, key=order))


def key_differences(records, vary) -> dict:
    """``{field: "values"}`` for every key field outside ``vary`` whose value is not the same in all records."""
    flats = [flatten(r["key"]) for r in records]
    names = sorted({n for f in flats for n in f if n.split(".")[0] not in vary})
    out = {}
    for n in names:
        seen = {}
        for f in flats:
            v = f.get(n, _ABSENT)
            seen.setdefault(json.dumps(v, sort_keys=True) if v is not _ABSENT else "", v)
        if len(seen) > 1:
            out[n] = _shown(seen.values())
    return out


def check_pooled(records, vary, where: str) -> None:
    """Refuse records that differ in a key field outside ``vary`` (one line naming the fields and values)."""
    diff = key_differences(records, vary)
    if diff:
        raise FPEError(f"{where}: the records differ in more than {', '.join(vary)}: "
                       + "; ".join(f"{k}: {v}" for k, v in diff.items())
                       + "; keep each setting in its own sweep directory")


def _metric_fields(src: dict) -> tuple:
    """The metric fields a record's model entry must hold numbers (or null) in."""
    return METRIC_FIELDS + tuple(f for f in OPTIONAL_METRIC_FIELDS if f in src)


def check_records(records, meta, where: str) -> None:
    """Every field the report reads, then that the records differ only in the grid point and the trial.

    ``FPEError`` (one line) for a missing or non-numeric field (naming the run and the
    field), for records of more than one setting (naming the fields and their values), for
    records whose settings are not ``sweep.json``'s, and for two records of one trial of a
    cell.
    """
    settings = {k: v for k, v in meta["config"].items() if k != "trials"}
    for r in records:
        if not isinstance(r.get("key"), dict):
            raise FPEError(f"{where}: run {r.get('run_id', '?')} has no field key")
        for f in GRID_FIELDS + ("trial",):
            number(r, f"key.{f}", where, "count")
        for f in settings:
            field(r, f"key.{f}", where)
        number(r, "parent.test_acc", where, "accuracy")
        for f in _metric_fields(field(r, "parent", where)):
            number(r, f"parent.{f}", where)
        for v in VARIANTS:
            number(r, f"models.{v}.after.test_acc", where, "accuracy")
            for f in _metric_fields(field(r, f"models.{v}.after", where)):
                number(r, f"models.{v}.after.{f}", where)
            for f in ("weights", "biases"):
                number(r, f"models.{v}.ledger.{f}", where, "count")
            if "layernorm" in field(r, f"models.{v}.ledger", where):
                number(r, f"models.{v}.ledger.layernorm", where, "count")
    vary = GRID_FIELDS + ("trial",)
    check_pooled(records, vary, where)
    if records:
        ours = flatten({k: v for k, v in records[0]["key"].items() if k not in vary})
        theirs = flatten(settings)
        diff = [f"{n}: {_shown([ours.get(n, _ABSENT)])} (sweep.json: {_shown([theirs.get(n, _ABSENT)])})"
                for n in sorted(set(ours) | set(theirs))
                if json.dumps(ours.get(n), sort_keys=True) != json.dumps(theirs.get(n), sort_keys=True)
                or (n in ours) != (n in theirs)]
        if diff:
            raise FPEError(f"{where}: the records were made with other settings than sweep.json's: "
                           + "; ".join(diff))
    seen = {}
    for r in records:
        k = r["key"]
        cell = tuple(k[f] for f in vary)
        if cell in seen:
            raise FPEError(f"{where}: runs {seen[cell]} and {r['run_id']} are both trial {k['trial']} of "
                           f"m={k['m']}, hidden={k['hidden']}, alpha={k['alpha']}")
        seen[cell] = r.get("run_id", "?")


class Cells:
    """Finished runs grouped by cell ``(m, hidden, alpha)``, trials sorted."""

    def __init__(self, records, trials_planned: int):
        self.planned = trials_planned
        self.by = {}
        for r in records:
            k = r["key"]
            self.by.setdefault((k["m"], k["hidden"], k["alpha"]), []).append(r)
        for v in self.by.values():
            v.sort(key=lambda r: r["key"]["trial"])

    def runs(self, m, h, a) -> list:
        return self.by.get((m, h, a), [])

    def values(self, m, h, a, variant, field, stage="after") -> np.ndarray:
        """One field per trial: ``variant`` in dense/clause/random (``stage`` split/after) or "parent"."""
        out = []
        for r in self.runs(m, h, a):
            src = r["parent"] if variant == "parent" else r["models"][variant][stage]
            out.append(src.get(field, math.nan))  # a missing field (cosine_abs at "split") is left out
        out = [x for x in out if x is not None and not math.isnan(x)]
        return np.asarray(out, dtype=float)

    def params(self, m, h, a, variant) -> float:
        """Parameters of the variant (non-zero weights + biases, from the run's ledger); nan if no run."""
        rs = self.runs(m, h, a)
        if not rs:
            return math.nan
        led = rs[0]["models"][variant]["ledger"]
        return float(led["weights"] + led["biases"] + led.get("layernorm", 0))

    def rel(self, m, h, a, split, field="test_acc") -> dict:
        """Relative improvement (or fold change for capacity/cosine) of ``split`` over dense."""
        return relative_improvement(self.values(m, h, a, split, field), self.values(m, h, a, "dense", field))

    def diff(self, m, h, a, split, field="test_acc") -> dict:
        """The difference ``split`` minus dense of a field's means, ± SE and Welch's p (:func:`difference`)."""
        return difference(self.values(m, h, a, split, field), self.values(m, h, a, "dense", field))

    def count(self, m, h, a) -> int:
        return len(self.runs(m, h, a))


# ---------------------------------------------------------------- formatting
def _paper(x):
    """A paper table entry as the paper prints it: mean to 4 significant digits, sd to 3 decimals."""
    mean, sd = x
    return f"{mean:.3f} ± {sd:.3f}" if mean < 10 else f"{mean:.2f} ± {sd:.3f}"


# ---------------------------------------------------------------- grids of the sweep
def _grid_points(meta, name):
    """The grid's feasible points ``(m, hidden, alpha)`` (points the sweep skips are left out)."""
    g = meta.get("grids", {}).get(name)
    k = meta["config"]["k"]
    return [tuple(p) for p in g["points"] if p[0] // k >= p[2]] if g else []


def _fixed(meta, name):
    """What a 1-D grid holds fixed, in words: "8 clauses" (fig3a) or "8 neurons" (fig3b, tables)."""
    pts = _grid_points(meta, name)
    if not pts:
        return "?"
    if name == "fig3a":
        return f"{pts[0][0] // meta['config']['k']} clauses"
    return f"{pts[0][1]} neurons"


def _panels(meta):
    """The 1-D panels: (grid, x label, x of a point)."""
    k = meta["config"]["k"]
    return [("fig3a", f"hidden neurons ({_fixed(meta, 'fig3a')})", lambda p: p[1]),
            ("fig3b", f"clauses ({_fixed(meta, 'fig3b')})", lambda p: p[0] // k)]


def _axis_values(points, idx):
    return sorted({p[idx] for p in points})


# ---------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ratio_pt(r) -> dict:
    """A ``relative_improvement`` dict as a plotted point ``{"y", "se", "sig"}``."""
    return {"y": r["ratio"], "se": r["se"], "sig": r["sig"]}


def _diff_pt(d, scale=1.0) -> dict:
    """A :func:`difference` dict as a plotted point, times ``scale`` (100: percentage points)."""
    return {"y": scale * d["diff"], "se": scale * d["se"], "sig": d["sig"]}


def _line_panel(ax, xs, pts, label, color, ls, marker, star):
    """Points ``{"y", "se", "sig"}`` with SE error bars; ``*`` above significant ones (only where ``star``)."""
    ok = [not math.isnan(p["y"]) for p in pts]
    x = [x for x, o in zip(xs, ok) if o]
    y = [p["y"] for p, o in zip(pts, ok) if o]
    e = [0.0 if math.isnan(p["se"]) else p["se"] for p, o in zip(pts, ok) if o]
    if not x:
        ax.plot([], [], color=color, ls=ls, marker=marker, label=label + " (no runs)")
        return
    ax.errorbar(x, y, yerr=e, color=color, ls=ls, marker=marker, ms=4, capsize=3, label=label)
    ax.margins(y=0.1)  # head room for the * marks
    if star:
        for xi, p in zip(xs, pts):
            if p["sig"] and not math.isnan(p["y"]):
                ax.annotate("*", (xi, p["y"] + (p["se"] if not math.isnan(p["se"]) else 0)),
                            textcoords="offset points", xytext=(0, 2), ha="center", color=color, fontsize=12)


def _xgrid(ax, xs):
    """Ticks at the grid's x values and limits over the whole grid (also where no run finished yet)."""
    xs = sorted(set(xs))
    if not xs:
        return
    pad = 0.05 * (xs[-1] - xs[0] or 1)
    ax.set_xticks(xs)
    ax.set_xlim(xs[0] - pad, xs[-1] + pad)


def _missing_note(ax, xs, counts, planned):
    miss = [str(x) for x, c in zip(xs, counts) if c < planned]
    if miss:
        ax.text(0.01, 0.01, f"incomplete (< {planned} trials): {', '.join(miss)}", transform=ax.transAxes,
                fontsize=7, color="grey", va="bottom")


def _baseline_handle(text):
    from matplotlib.lines import Line2D

    return Line2D([], [], color="k", ls="--", lw=0.8, label=text)


def _legend(ax, extra=(), **kw):
    """The axes' legend with ``extra`` handles (reference lines) after its own."""
    h, _ = ax.get_legend_handles_labels()
    ax.legend(handles=list(h) + list(extra), fontsize=8, **kw)


def _stat_lines(cells, star_note=True, bars="ratios: delta method; differences: sqrt(SE_FPE² + SE_dense²)") -> list:
    """The footnote every Boolean figure carries: which statistic, the error bars, the marks."""
    lines = [f"Points: mean over the finished trials of a cell ({cells.planned} planned; cells with fewer are listed "
             f"as incomplete). Error bars: ± 1 standard error ({bars})."]
    if star_note:
        lines.append("* Welch two-sided p < 0.05, FPE against dense (marked for α = 4 only, to keep the marks apart). "
                     "Line style: dotted α = 2, solid α = 4; colour: the split.")
    return lines


def _finish(fig, plt, path, lines, height):
    """Footnote ``lines`` at the bottom of a ``height``-inch figure, lay out, save, close."""
    fig.text(0.01, 0.004, "\n".join(lines), ha="left", va="bottom", fontsize=7.5, color="0.25")
    fig.tight_layout(rect=(0, (0.16 * len(lines) + 0.08) / height, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def fig3ab(cells, meta, path):
    """Figure 3a/b: relative improvement (top) and accuracy difference to dense (bottom) vs hidden / clauses."""
    plt = _plt()
    height = 8.2
    fig, axes = plt.subplots(2, 2, figsize=(11, height), sharey="row")
    for col, (name, xlabel, xof) in enumerate(_panels(meta)):
        pts = _grid_points(meta, name)
        ax_r, ax_d = axes[0, col], axes[1, col]
        for ax in (ax_r, ax_d):
            _xgrid(ax, [xof(p) for p in pts])
        for a in sorted({p[2] for p in pts}):
            ps = sorted([p for p in pts if p[2] == a], key=xof)
            xs = [xof(p) for p in ps]
            for s in SPLITS:
                style = (f"{s}-split, α={a}", SPLIT_COLORS[s], ALPHA_STYLES.get(a, "--"), ALPHA_MARKERS.get(a, "^"))
                _line_panel(ax_r, xs, [_ratio_pt(cells.rel(p[0], p[1], a, s)) for p in ps], *style, star=(a == 4))
                _line_panel(ax_d, xs, [_diff_pt(cells.diff(p[0], p[1], a, s), 100.0) for p in ps], *style,
                            star=(a == 4))
        xs_all = sorted({xof(p) for p in pts})
        _missing_note(ax_r, xs_all, [min(cells.count(*p) for p in pts if xof(p) == x) for x in xs_all], cells.planned)
        ax_r.axhline(1.0, color="k", ls="--", lw=0.8)
        ax_d.axhline(0.0, color="k", ls="--", lw=0.8)
        ax_r.set_title(f"({'ab'[col]}) relative improvement, {xlabel}")
        ax_d.set_title(f"({'ab'[col]}) test accuracy difference FPE − dense")
        ax_d.set_xlabel(xlabel)
        for ax in (ax_r, ax_d):
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("FPE acc / dense acc")
    axes[1, 0].set_ylabel("FPE acc − dense acc (percentage points)")
    _legend(axes[0, 1], [_baseline_handle("dense baseline (ratio 1)")], loc="best")
    _legend(axes[1, 1], [_baseline_handle("dense baseline (difference 0)")], loc="best")
    fig.suptitle("Figure 3a/b: FPE against the dense baseline, both after phase 2", fontsize=10)
    notes = _stat_lines(cells) + [
        "Bottom row instead of the paper's accuracy per parameter: dense and FPE models have the same non-zero "
        "weights (FPE: (α − 1) × hidden more biases), so that panel repeats the accuracies."]
    return _finish(fig, plt, path, notes, height)


def fig3c(cells, meta, path):
    """Figure 3c: heat maps of the relative improvement in % ((R - 1) x 100), splits x alphas.

    Cells that cannot exist (fewer clauses than alpha) are hatched and labelled "not
    possible"; possible cells without a finished run are grey and labelled "not yet run".
    """
    from matplotlib.patches import Patch, Rectangle

    plt = _plt()
    k = meta["config"]["k"]
    pts = _grid_points(meta, "fig3c")
    alphas = sorted({p[2] for p in pts})
    hs = _axis_values(pts, 1)
    cs = sorted({p[0] // k for p in pts})
    height = 9.0
    fig, axes = plt.subplots(2, len(alphas), figsize=(5.2 * max(len(alphas), 1), height), squeeze=False)
    vals = {}
    for s in SPLITS:
        for a in alphas:
            for h in hs:
                for c in cs:
                    vals[s, a, h, c] = cells.rel(c * k, h, a, s)
    finite = [100 * (v["ratio"] - 1) for v in vals.values() if not math.isnan(v["ratio"])]
    lim = max([abs(x) for x in finite] + [1.0])
    hatch = dict(facecolor="white", hatch="///", edgecolor="0.65", lw=0)
    shown = set()  # which of "impossible" and "not run" the maps show, for the legend
    for i, s in enumerate(SPLITS):
        for j, a in enumerate(alphas):
            ax = axes[i, j]
            Z = np.full((len(hs), len(cs)), np.nan)
            for hi, h in enumerate(hs):
                for ci, c in enumerate(cs):
                    r = vals[s, a, h, c]
                    Z[hi, ci] = 100 * (r["ratio"] - 1) if not math.isnan(r["ratio"]) else np.nan
            cmap = plt.get_cmap("RdBu_r").with_extremes(bad="lightgrey")
            im = ax.imshow(np.ma.masked_invalid(Z), cmap=cmap, vmin=-lim, vmax=lim, origin="lower", aspect="auto")
            for hi, h in enumerate(hs):
                for ci, c in enumerate(cs):
                    r = vals[s, a, h, c]
                    n = cells.count(c * k, h, a)
                    if feasible(c * k, k, a) is not None:
                        ax.add_patch(Rectangle((ci - 0.5, hi - 0.5), 1, 1, **hatch))
                        txt = f"not possible\n(C={c} < α)"
                        shown.add("impossible")
                    elif math.isnan(r["ratio"]):
                        txt = "not yet run"
                        shown.add("not run")
                    else:
                        txt = f"{Z[hi, ci]:+.1f}{'*' if r['sig'] else ''}" + ("" if n == cells.planned else f"\nn={n}")
                    ax.text(ci, hi, txt, ha="center", va="center", fontsize=8,
                            color="k" if math.isnan(Z[hi, ci]) or abs(Z[hi, ci]) < 0.6 * lim else "w")
            ax.set_xticks(range(len(cs)), [str(c) for c in cs])
            ax.set_yticks(range(len(hs)), [str(h) for h in hs])
            ax.set_xlabel("clauses")
            ax.set_ylabel("hidden neurons")
            ax.set_title(f"{s}-split, α={a}")
            fig.colorbar(im, ax=ax, fraction=0.046, label="relative improvement, %")
    keys = {"not run": Patch(facecolor="lightgrey", label="not yet run: no finished trial"),
            "impossible": Patch(**hatch, label="not possible: fewer clauses C than α (a child would get no input)")}
    if shown:
        fig.legend(handles=[keys[x] for x in keys if x in shown], loc="lower center", ncol=2, fontsize=8,
                   frameon=False, bbox_to_anchor=(0.5, 0.5 / height))
    fig.suptitle("Figure 3c: (FPE acc / dense acc − 1) × 100, after phase 2", fontsize=10)
    notes = [f"Cell: mean over the finished trials of the cell ({cells.planned} planned; 'n=k': only k finished). "
             "* Welch two-sided p < 0.05, FPE against dense."]
    fig.text(0.01, 0.004, "\n".join(notes), ha="left", va="bottom", fontsize=7.5, color="0.25")
    fig.tight_layout(rect=(0, 0.85 / height, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def fig4ab(cells, meta, path):
    """Figure 4a/b: capacity fold change, signed-cosine difference and |cosine| fold change vs hidden / clauses.

    The signed mean cosine is drawn as the difference FPE - dense (module docstring): its
    fold change, a ratio of two means near zero, is ill-defined.
    """
    plt = _plt()
    height = 3.77 * len(METRICS)
    fig, axes = plt.subplots(len(METRICS), 2, figsize=(11, height), sharey="row")
    for col, (name, xlabel, xof) in enumerate(_panels(meta)):
        pts = _grid_points(meta, name)
        for row, f in enumerate(METRICS):
            ax = axes[row, col]
            _xgrid(ax, [xof(p) for p in pts])
            for a in sorted({p[2] for p in pts}):
                ps = sorted([p for p in pts if p[2] == a], key=xof)
                xs = [xof(p) for p in ps]
                for s in SPLITS:
                    if f in DIFFERENCE_METRICS:
                        values = [_diff_pt(cells.diff(p[0], p[1], a, s, f)) for p in ps]
                    else:
                        values = [_ratio_pt(cells.rel(p[0], p[1], a, s, f)) for p in ps]
                    _line_panel(ax, xs, values, f"{s}-split, α={a}", SPLIT_COLORS[s], ALPHA_STYLES.get(a, "--"),
                                ALPHA_MARKERS.get(a, "^"), star=(a == 4))
            ax.axhline(0.0 if f in DIFFERENCE_METRICS else 1.0, color="k", ls="--", lw=1.0)
            ax.grid(alpha=0.3)
            what = "difference FPE − dense" if f in DIFFERENCE_METRICS else "fold change FPE / dense"
            ax.set_title(f"({'ab'[col]}) {METRIC_LABEL[f]}: {what}", fontsize=10)
            if row == len(METRICS) - 1:
                ax.set_xlabel(xlabel)
    for row, f in enumerate(METRICS):
        axes[row, 0].set_ylabel(METRIC_AXIS[f])
    _legend(axes[0, 0], [_baseline_handle("dense baseline (fold change 1, difference 0)")], loc="upper right")
    fig.suptitle("Figure 4a/b: interference metrics after phase 2, FPE against the dense baseline", fontsize=10)
    notes = _stat_lines(cells) + [
        "Signed cosine: difference, not fold change; both means are near 0, so their ratio swings in sign and size "
        "(the tables still list it as 'cos FC')."]
    return _finish(fig, plt, path, notes, height)


def fig4c_fits(cells, meta) -> dict:
    """Figure 4c data: per (split, alpha) the points (fold change, relative improvement) and the fits.

    A fit over fewer than ``MIN_FIT_POINTS`` finite points is not made: its slope,
    intercept and R^2 are NaN and ``too_few_points`` is true.
    """
    pts = _grid_points(meta, "fig3a")
    out = {}
    for f in METRICS:
        for s in SPLITS:
            for a in sorted({p[2] for p in pts}):
                ps = sorted([p for p in pts if p[2] == a], key=lambda p: p[1])
                x = [cells.rel(p[0], p[1], a, s, f)["ratio"] for p in ps]
                y = [cells.rel(p[0], p[1], a, s)["ratio"] for p in ps]
                fit = linfit(x, y)
                fit["too_few_points"] = fit["n"] < MIN_FIT_POINTS
                if fit["too_few_points"]:
                    fit.update(slope=math.nan, intercept=math.nan, r2=math.nan)
                out[f, s, a] = {"hidden": [p[1] for p in ps], "x": x, "y": y, "fit": fit}
    return out


def fig4c(fits, meta, path):
    """Figure 4c: relative improvement vs capacity (top) and cosine (bottom) fold change, with LSQ lines and R^2."""
    from matplotlib.lines import Line2D

    plt = _plt()
    height = 4.0 * len(METRICS)
    fig, axes = plt.subplots(len(METRICS), 1, figsize=(7, height))
    for row, f in enumerate(METRICS):
        ax = axes[row]
        handles = []
        for (g, s, a), d in fits.items():
            if g != f:
                continue
            x, y = np.asarray(d["x"], float), np.asarray(d["y"], float)
            ok = np.isfinite(x) & np.isfinite(y)
            color, ls, marker = SPLIT_COLORS[s], ALPHA_STYLES.get(a, "--"), ALPHA_MARKERS.get(a, "^")
            ax.scatter(x[ok], y[ok], color=color, marker=marker, s=22)
            fit = d["fit"]
            if fit["too_few_points"]:
                lab = f"{s}-split, α={a}: too few points for a fit (n={fit['n']} < {MIN_FIT_POINTS})"
                handles.append(Line2D([], [], color=color, ls="", marker=marker, label=lab))
                continue
            lab = f"{s}-split, α={a}: R²={num(fit['r2'], 2)} (n={fit['n']})"
            if not math.isnan(fit["slope"]):
                xx = np.linspace(x[ok].min(), x[ok].max(), 10)
                ax.plot(xx, fit["slope"] * xx + fit["intercept"], color=color, ls=ls)
            handles.append(Line2D([], [], color=color, ls=ls, marker=marker, label=lab))
        ax.set_xlabel(f"{METRIC_LABEL[f]} fold change (FPE / dense)")
        ax.set_ylabel("relative improvement (FPE acc / dense acc)")
        if f == "cosine":
            ax.set_title("signed cosine: its fold change is ill-defined near 0 (see fig4ab.png); "
                         "drawn as the paper's Figure 4c", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(handles=handles, fontsize=8)
    fig.suptitle(f"Figure 4c: relative improvement against fold change over hidden sizes ({_fixed(meta, 'fig3a')})",
                 fontsize=10)
    notes = ["Points: one per hidden size, the cell means over its finished trials (FPE / dense, after phase 2); "
             "marker o α = 2, s α = 4.",
             f"Lines: least squares over those points (dotted α = 2, solid α = 4); none with fewer than "
             f"{MIN_FIT_POINTS} points."]
    return _finish(fig, plt, path, notes, height)


def fig_accuracy(cells, meta, path):
    """Absolute test accuracy (mean ± SE) of dense, clause and random along the 3a, 3b and table grids."""
    plt = _plt()
    cfg = meta["config"]
    height = 5.2
    fig, axes = plt.subplots(1, 3, figsize=(15, height), sharey=True)
    panels = _panels(meta) + [("tables", f"literals ({_fixed(meta, 'tables')})", lambda p: p[0])]
    titles = {"fig3a": "Figure 3a grid", "fig3b": "Figure 3b grid", "tables": "Tables A1/A2 grid"}
    for ax, (name, xlabel, xof) in zip(axes, panels):
        pts = _grid_points(meta, name) + (_grid_points(meta, "tables-alpha4") if name == "tables" else [])
        _xgrid(ax, [xof(p) for p in pts])
        alphas = sorted({p[2] for p in pts})
        for a in alphas:
            ps = sorted([p for p in pts if p[2] == a], key=xof)
            xs = [xof(p) for p in ps]
            for v in (VARIANTS if a == alphas[0] else SPLITS):
                st = []
                for p in ps:
                    s = mean_sd_se(cells.values(p[0], p[1], a, v, "test_acc"))
                    st.append({"y": s["mean"], "se": s["se"], "sig": False})
                lab = (f"dense ({cfg['dense_epochs'] + cfg['fpe_epochs']} epochs)" if v == "dense"
                       else f"{v}-split, α={a}")
                _line_panel(ax, xs, st, lab, SPLIT_COLORS[v], "-" if v == "dense" else ALPHA_STYLES.get(a, "--"),
                            "D" if v == "dense" else ALPHA_MARKERS.get(a, "^"), False)
        ax.set_xlabel(xlabel)
        ax.set_title(titles[name])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[2].legend(fontsize=8)
    fig.suptitle("Absolute test accuracy after phase 2", fontsize=10)
    notes = _stat_lines(cells, star_note=False, bars="of the mean over trials") + [
        "Line style: dotted α = 2, solid α = 4 (dense: black, the same model at both α); colour: the model."]
    return _finish(fig, plt, path, notes, height)


# ---------------------------------------------------------------- markdown
def _tables_a1_a2(cells, meta):
    lines = []
    pts = _grid_points(meta, "tables") + _grid_points(meta, "tables-alpha4")
    for field, title, paper, better in (
            ("capacity", "Table A1: total feature capacity", PAPER_TABLE_A1, "higher"),
            ("cosine_bias_abs", "Table A2: mean neuron |cosine| of [W1 | b1]", PAPER_TABLE_A2, "lower"),
            ("cosine", "Table A2, signed variant: mean neuron cosine of W1", PAPER_TABLE_A2, "lower"),
            ("cosine_abs", "Table A2, unsigned variant: mean neuron |cosine| of W1", PAPER_TABLE_A2, "lower")):
        for a in sorted({p[2] for p in pts}):
            ms = sorted(p[0] for p in pts if p[2] == a)
            h = pts[0][1]
            rows = []
            for m in ms:
                n = cells.count(m, h, a)
                ours = [mean_pm(mean_sd_se(cells.values(m, h, a, v, field))) for v in VARIANTS]
                pap = [_paper(x) for x in paper[m]] if m in paper else ["—"] * 3
                rows.append([f"{m}{count_note(n, cells.planned)}"] + [f"{o} \\| {p}" for o, p in zip(ours, pap)])
            lines.append(f"### {title} ({better} = less superposition), α = {a}, {h} neurons\n")
            lines.append("Each cell: **ours** (mean ± sd over trials, after phase 2) \\| paper.\n")
            lines.append(table(["# literals", "Dense", "Clause-split", "Random-split"], rows))
            lines.append("")
    return lines


def _accuracy_table(cells, meta, pts, label_of, title):
    rows = []
    for p in pts:
        m, h, a = p
        n = cells.count(m, h, a)
        par = mean_sd_se(cells.values(m, h, a, "parent", "test_acc"))
        accs = [mean_sd_se(cells.values(m, h, a, v, "test_acc")) for v in VARIANTS]
        rc, rr = cells.rel(m, h, a, "clause"), cells.rel(m, h, a, "random")
        folds = [cells.rel(m, h, a, s, f) for f in METRICS for s in SPLITS]  # the columns' order
        rows.append([label_of(p), str(a), f"{n}/{cells.planned}", mean_pm(par), *[mean_pm(s) for s in accs],
                     ratio_cell(rc), p_value(rc["p"]), ratio_cell(rr), p_value(rr["p"]),
                     *[ratio_cell(x, 2) for x in folds]])
    e1, e2 = meta["config"]["dense_epochs"], meta["config"]["fpe_epochs"]
    head = ["point", "α", "trials", f"dense parent ({e1} ep.)", f"dense ({e1 + e2} ep.)", "clause", "random",
            "RI clause", "p", "RI random", "p", "cap FC clause", "cap FC random", "cos FC clause", "cos FC random",
            "\\|cos\\| FC clause", "\\|cos\\| FC random", "\\|cos\\|+b FC clause", "\\|cos\\|+b FC random"]
    return [f"### {title}\n", table(head, rows), ""]


def markdown(cells, meta, fits, n_records) -> str:
    cfg = meta["config"]
    k = cfg["k"]
    L = ["# Boolean sweep report (Sec. 3.2, Figures 3 and 4, Tables A1/A2)", "",
         f"Generated by `fpe report` from {n_records} finished runs in `runs.jsonl`. Settings: "
         f"k = {k}, {cfg['dense_epochs']} dense + {cfg['fpe_epochs']} phase-2 epochs, {cfg['n_samples']} samples "
         f"(test fraction {cfg['test_fraction']}), seed {cfg['seed']}, {cells.planned} trials planned per cell, "
         f"warm-up '{cfg['train']['warmup']}' over {cfg['train']['warmup_epochs']} epochs, "
         f"lr {cfg['train']['lr']}, batch {cfg['train']['batch_size']}, λ1 {cfg['train']['l1']}, λ2 {cfg['train']['l2']}.",
         "",
         "Statistics (see `fpe_ref/experiments/stats.py`): RI = relative improvement = mean FPE test accuracy / mean dense "
         "test accuracy ± 1 SE (delta method); `*` = Welch t-test p < 0.05 (two-sided); FC = fold change of "
         "capacity / mean cosine (signed, as fpe_ref.metrics computes it) / mean |cosine| (unsigned), "
         "FPE over dense, after phase 2. Accuracies are mean ± sd over trials. "
         "`—` = no finished run; `n=3/5` = 3 of 5 planned trials finished; `n/a` = a point that cannot exist "
         "(fewer clauses than α).", ""]
    L.append("## Progress\n")
    rows = []
    for name, g in meta.get("grids", {}).items():
        pts = _grid_points(meta, name)
        done = sum(min(cells.count(*p), cells.planned) for p in pts)
        full = sum(cells.count(*p) >= cells.planned for p in pts)
        rows.append([name, g["paper"], f"{done}/{len(pts) * cells.planned}", f"{full}/{len(pts)}"])
    L += [table(["grid", "paper", "runs finished", "cells complete"], rows), ""]
    L.append("## Tables A1 / A2\n")
    L.append("The paper does not say at which α its tables were made, nor how its cosine is defined. "
             "`fpe study choices` chose, on its choosing seeds (`results/choices/README.md`), the readings that "
             "reproduce the most rows: Table A1 is the capacity of `W1 1_S` (`fpe_ref.metrics.capacity`) **at "
             "α = 4**, and Table A2 the mean **|cosine| of the rows of [W1 | b1]** "
             "(`fpe_ref.metrics.mean_cosine(W1, absolute=True, b1=b1)`). Both α and the two other cosines are "
             "printed too.\n")
    L += _tables_a1_a2(cells, meta)
    L.append("## Absolute accuracies, relative improvement and fold changes\n")
    L.append("`cos FC` is the paper's fold change of the *signed* mean cosine, FPE mean over dense mean. Both means "
             "are close to 0 (Table A2), so this ratio swings in sign and size from cell to cell and its ± SE is "
             "often larger than the ratio: read it as ill-defined. `fig4ab.png` draws the difference FPE − dense "
             "of the signed mean cosine instead (± SE, in `summary.json` as `cosine_difference`); "
             "`|cos| FC`, the fold change of the unsigned mean, is well defined.\n")
    L += _accuracy_table(cells, meta, _grid_points(meta, "tables") + _grid_points(meta, "tables-alpha4"),
                         lambda p: f"m={p[0]}", f"Tables A1/A2 grid ({_fixed(meta, 'tables')}; by literals)")
    L += _accuracy_table(cells, meta, sorted(_grid_points(meta, "fig3a"), key=lambda p: (p[2], p[1])),
                         lambda p: f"h={p[1]}", f"Figure 3a / 4a grid ({_fixed(meta, 'fig3a')}; by hidden neurons)")
    L += _accuracy_table(cells, meta, sorted(_grid_points(meta, "fig3b"), key=lambda p: (p[2], p[0])),
                         lambda p: f"C={p[0] // k}", f"Figure 3b / 4b grid ({_fixed(meta, 'fig3b')}; by clauses)")
    L.append("## Figure 3c: relative improvement, % ((RI − 1) × 100)\n")
    L.append("`—` = not yet run; `n/a` = not possible (fewer clauses C than α: a clause split would leave a "
             "child without inputs).\n")
    pts = _grid_points(meta, "fig3c")
    hs, cs = _axis_values(pts, 1), sorted({p[0] // k for p in pts})
    for s in SPLITS:
        for a in sorted({p[2] for p in pts}):
            rows = []
            for h in hs:
                row = [str(h)]
                for c in cs:
                    r = cells.rel(c * k, h, a, s)
                    n = cells.count(c * k, h, a)
                    if feasible(c * k, k, a) is not None:
                        row.append("n/a")
                    else:
                        row.append("—" if math.isnan(r["ratio"]) else
                                   f"{100 * (r['ratio'] - 1):+.1f}{'*' if r['sig'] else ''}"
                                   f"{count_note(n, cells.planned)}")
                rows.append(row)
            L += [f"**{s}-split, α = {a}** (rows: hidden neurons; columns: clauses)\n",
                  table(["h \\ C"] + [str(c) for c in cs], rows), ""]
    L.append(f"## Figure 4c: least-squares fits of RI on fold change (varying neurons, {_fixed(meta, 'fig3a')})\n")
    L.append(f"One point per hidden size (cell means). A fit needs at least {MIN_FIT_POINTS} points (two always "
             "give R² = 1): with fewer, no line is drawn and the row says \"too few points\". The `cosine` rows "
             "regress on the signed-cosine fold change, ill-defined near 0 (see above).\n")
    rows = []
    for (f, s, a), d in fits.items():
        fit = d["fit"]
        r2 = "too few points" if fit["too_few_points"] else num(fit["r2"])
        rows.append([f, s, str(a), num(fit["slope"]), num(fit["intercept"]), r2, str(fit["n"])])
    L += [table(["fold change of", "split", "α", "slope", "intercept", "R²", "points"], rows), ""]
    L.append("Figures: `fig3ab.png`, `fig3c.png`, `fig4ab.png`, `fig4c.png`, `fig_accuracy.png`.")
    return "\n".join(L) + "\n"


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return _jsonable(x.item())
    return x


def summary(cells, meta, fits) -> dict:
    """Every cell's statistics (machine-readable ``summary.json``)."""
    out = {"trials_planned": cells.planned, "cells": [], "fig4c": []}
    for (m, h, a), runs in sorted(cells.by.items()):
        c = {"m": m, "hidden": h, "alpha": a, "clauses": m // meta["config"]["k"], "trials": len(runs)}
        c["parent"] = {f: mean_sd_se(cells.values(m, h, a, "parent", f)) for f in ("test_acc",) + METRICS}
        for v in VARIANTS:
            c[v] = {f: mean_sd_se(cells.values(m, h, a, v, f)) for f in ("test_acc",) + METRICS}
            c[v]["params"] = cells.params(m, h, a, v)
        for s in SPLITS:
            c[f"{s}_vs_dense"] = {f: {kk: vv for kk, vv in cells.rel(m, h, a, s, f).items() if kk not in ("a", "b")}
                                  for f in ("test_acc",) + METRICS}
            c[f"{s}_vs_dense"].update({f"{f}_difference": cells.diff(m, h, a, s, f)
                                       for f in ("test_acc",) + DIFFERENCE_METRICS})
        out["cells"].append(c)
    for (f, s, a), d in fits.items():
        out["fig4c"].append({"fold_change_of": f, "split": s, "alpha": a, **d})
    return _jsonable(out)


def report(sweep_dir, out_dir=None) -> list:
    """Write report.md, summary.json and the five PNGs for a Boolean sweep; return the paths."""
    records, meta = load_sweep(sweep_dir)
    out_dir = out_dir or sweep_dir
    os.makedirs(out_dir, exist_ok=True)
    cells = Cells(records, int(meta["config"]["trials"]))
    fits = fig4c_fits(cells, meta)
    paths = [fig3ab(cells, meta, os.path.join(out_dir, "fig3ab.png")),
             fig3c(cells, meta, os.path.join(out_dir, "fig3c.png")),
             fig4ab(cells, meta, os.path.join(out_dir, "fig4ab.png")),
             fig4c(fits, meta, os.path.join(out_dir, "fig4c.png")),
             fig_accuracy(cells, meta, os.path.join(out_dir, "fig_accuracy.png"))]
    md = os.path.join(out_dir, "report.md")
    with open(md, "w") as f:
        f.write(markdown(cells, meta, fits, len(records)))
    js = os.path.join(out_dir, "summary.json")
    from fpe_ref.experiments.outputs import provenance

    # the runs' own provenance is the sweep's (provenance.json, sweep.json); this is the report's
    with open(js, "w") as f:
        json.dump({**summary(cells, meta, fits), "generated_by": provenance()}, f, indent=1)
    return [md, js] + paths
