"""Tests for ``fpe report`` (fpe_ref.experiments.boolean_report) on a partly finished quick sweep."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest

from fpe_ref.errors import FPEError
from fpe_ref.experiments import boolean as bs
from fpe_ref.experiments import boolean_report as rp
from fpe_ref.experiments import stats
from fpe_ref.experiments.runs import RunStore, run_id

QUICK = bs.quick_config()
GRIDS = ("tables", "fig3a")  # quick: 4 + 8 keys, 8 distinct runs x 2 trials -> 12 runs


def sweep(out_dir, grids=GRIDS, **kw):
    kw.setdefault("lookup", [])
    kw.setdefault("log", lambda s: None)
    return bs.run_boolean_sweep(QUICK, out_dir, grids, quick=True, **kw)


def test_report_of_a_partial_grid_marks_missing_cells(tmp_path):
    out = tmp_path / "s"
    sweep(out, grids=("tables",))  # only the tables grid has runs
    written = rp.report(out)
    names = {os.path.basename(p) for p in written}
    assert names == {"report.md", "summary.json", "fig3ab.png", "fig3c.png", "fig4ab.png", "fig4c.png",
                     "fig_accuracy.png"}
    assert all(os.path.getsize(p) > 0 for p in written)
    md = (out / "report.md").read_text()
    assert "| tables | Tables A1/A2 (alpha 2) | 4/4 | 2/2 |" in md
    assert "| fig3a | Figures 3a, 4a, 4c | 2/8 | 1/4 |" in md  # (m=16, h=4, alpha=2) is shared with tables
    assert "| h=6 | 2 | 0/2 | — |" in md  # a missing Figure 3a cell
    assert "1.896 ± 0.377" in md  # the paper's Table A1 beside ours
    summ = json.loads((out / "summary.json").read_text())
    cell = next(c for c in summ["cells"] if c["m"] == 12 and c["alpha"] == 2)
    recs = [r for r in RunStore(out / "runs.jsonl").records() if r["key"]["m"] == 12]
    acc = [r["models"]["clause"]["after"]["test_acc"] for r in sorted(recs, key=lambda r: r["key"]["trial"])]
    den = [r["models"]["dense"]["after"]["test_acc"] for r in sorted(recs, key=lambda r: r["key"]["trial"])]
    assert cell["clause_vs_dense"]["test_acc"]["ratio"] == pytest.approx(np.mean(acc) / np.mean(den))


def test_legacy_store_still_loads_for_reports():
    """results/boolean_warmup_lr/numpy-v1/ holds runs of the legacy "numpy-reference" trainer: reports read them."""
    from pathlib import Path

    d = Path(__file__).resolve().parents[2] / "results" / "boolean_warmup_lr" / "numpy-v1"
    if not (d / "runs.jsonl").exists():
        pytest.skip(f"{d} absent")
    records, meta = rp.load_sweep(d)
    assert records and {r["key"]["trainer"] for r in records} == {"numpy-reference"}
    assert meta["config"]["trainer"] == "numpy-reference"
    cells = rp.Cells(records, int(meta["config"]["trials"]))
    assert rp.markdown(cells, meta, rp.fig4c_fits(cells, meta), len(records)).startswith("# Boolean sweep report")


# ---------------------------------------------------------------- figures and tables of a partial sweep
@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    """A quick sweep of the tables and Figure 3a grids (Figure 3c: some cells shared, some not run, some impossible)."""
    out = tmp_path_factory.mktemp("partial") / "s"
    sweep(out, grids=("tables", "fig3a"))
    records, meta = rp.load_sweep(out)
    return out, rp.Cells(records, int(meta["config"]["trials"])), meta


def legend_texts(fig):
    legends = fig.legends + [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def data_of(ax, label):
    """x and y of the error-bar series ``label`` in ``ax``."""
    c = next(c for c in ax.containers if c.get_label() == label)
    return np.asarray(c.lines[0].get_xdata(), float), np.asarray(c.lines[0].get_ydata(), float)


FIGURES = ("fig3ab", "fig3c", "fig4ab", "fig4c", "fig_accuracy")


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_has_a_legend_and_states_its_statistic(partial, closed, tmp_path, name):
    out, cells, meta = partial
    if name == "fig4c":
        rp.fig4c(rp.fig4c_fits(cells, meta), meta, tmp_path / "f.png")
    else:
        getattr(rp, name)(cells, meta, tmp_path / "f.png")
    (fig,) = closed
    assert legend_texts(fig), f"{name} has no legend"
    foot = " ".join(t.get_text() for t in fig.texts)
    assert "mean" in foot.lower() and "trials" in foot, foot
    if name != "fig_accuracy":
        assert "Welch" in foot or "least squares" in foot, foot


def test_fig3c_labels_impossible_cells_apart_from_cells_not_run(partial, closed, tmp_path):
    out, cells, meta = partial
    rp.fig3c(cells, meta, tmp_path / "f.png")
    (fig,) = closed
    maps = {ax.get_title(): [t.get_text() for t in ax.texts] for ax in fig.axes if ax.get_title()}
    # C = 3 clauses: alpha 4 cannot split them; alpha 2 with 6 neurons is possible but not in the grids run
    assert maps["clause-split, α=4"].count("not possible\n(C=3 < α)") == 2
    assert maps["clause-split, α=2"].count("not yet run") == 1
    assert not any("not possible" in t for t in maps["clause-split, α=2"])
    assert {"not yet run: no finished trial",
            "not possible: fewer clauses C than α (a child would get no input)"} <= set(legend_texts(fig))


def test_report_tables_mark_impossible_cells_and_refuse_fits_of_two_points(partial):
    out, cells, meta = partial
    fits = rp.fig4c_fits(cells, meta)
    md = rp.markdown(cells, meta, fits, 12)
    alpha2 = md.split("**clause-split, α = 2**")[1].split("**clause-split")[0]
    alpha4 = md.split("**clause-split, α = 4**")[1].split("**random-split")[0]
    assert "| 6 | — |" in alpha2 and "n/a" not in alpha2  # C = 3, 6 neurons: possible, not run
    assert [row.split(" | ")[1] for row in alpha4.splitlines() if row.startswith(("| 4 ", "| 6 "))] == ["n/a", "n/a"]
    assert all(d["fit"]["n"] == 2 and d["fit"]["too_few_points"] for d in fits.values())
    assert all(math.isnan(d["fit"]["r2"]) for d in fits.values())
    assert md.count("| — | — | too few points | 2 |") == len(fits)


def test_fig4c_draws_no_line_through_two_points(partial, closed, tmp_path):
    out, cells, meta = partial
    rp.fig4c(rp.fig4c_fits(cells, meta), meta, tmp_path / "f.png")
    (fig,) = closed
    assert all(not ax.get_lines() for ax in fig.axes)  # points only
    assert all("too few points for a fit (n=2 < 3)" in t for t in legend_texts(fig))


def test_fig4c_draws_a_line_through_three_points(closed, tmp_path, partial):
    out, cells, meta = partial
    x, y = [1.0, 2.0, 3.0], [1.0, 1.2, 1.5]
    fit = dict(rp.linfit(x, y), too_few_points=False)
    rp.fig4c({("capacity", "clause", 2): {"hidden": [4, 6, 8], "x": x, "y": y, "fit": fit}}, meta, tmp_path / "f.png")
    (fig,) = closed
    assert len(fig.axes[0].get_lines()) == 1
    assert legend_texts(fig) == [f"clause-split, α=2: R²={fit['r2']:.2f} (n=3)"]


def test_fig3ab_bottom_row_is_the_accuracy_difference_in_points(partial, closed, tmp_path):
    out, cells, meta = partial
    rp.fig3ab(cells, meta, tmp_path / "f.png")
    (fig,) = closed
    bottom = fig.axes[2]  # row 2, column (a): hidden neurons
    x, y = data_of(bottom, "clause-split, α=2")
    want = [100 * cells.diff(16, h, 2, "clause")["diff"] for h in x.astype(int)]
    np.testing.assert_allclose(y, want)
    assert "percentage points" in bottom.get_ylabel()


def test_fig4ab_draws_the_signed_cosine_as_a_difference(partial, closed, tmp_path):
    out, cells, meta = partial
    rp.fig4ab(cells, meta, tmp_path / "f.png")
    (fig,) = closed
    ax = fig.axes[2]  # row 2 (signed cosine), column (a)
    assert "difference FPE − dense" in ax.get_title()
    x, y = data_of(ax, "random-split, α=4")
    a = [cells.values(16, h, 4, "random", "cosine").mean() - cells.values(16, h, 4, "dense", "cosine").mean()
         for h in x.astype(int)]
    np.testing.assert_allclose(y, a)
    assert "fold change" in fig.axes[4].get_title()  # |cosine| keeps its fold change


def _table(md, title):
    """The data rows of the Markdown table under the heading ``title``, split at every ``|``."""
    part = md.split(f"### {title}", 1)[1].split("###", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in part.splitlines()
            if line.startswith("| ") and not line.startswith("| #")]


def test_table_a2_leads_with_the_unsigned_cosine_of_weights_and_bias(partial):
    out, cells, meta = partial
    md = rp.markdown(cells, meta, rp.fig4c_fits(cells, meta), 0)
    assert md.index("Table A2: mean neuron |cosine| of [W1 | b1]") < md.index("Table A2, signed variant")
    rows = _table(md, "Table A2: mean neuron |cosine| of [W1 | b1]")
    row = next(r for r in rows if r[0].startswith("12"))
    want = rp.mean_pm(stats.mean_sd_se(cells.values(12, 4, 2, "clause", "cosine_bias_abs")))
    assert row[3] == want + " \\" and want != "—"  # cells are "ours \| paper": clause's ours is the 4th piece


def test_runs_recorded_before_cosine_bias_abs_still_load_and_show_a_dash(partial):
    out, _, _ = partial
    records, meta = rp.load_sweep(out)
    for r in records:
        del r["parent"]["cosine_bias_abs"]
        for v in rp.VARIANTS:
            del r["models"][v]["after"]["cosine_bias_abs"]
    rp.check_records(records, meta, "old")
    cells = rp.Cells(records, int(meta["config"]["trials"]))
    md = rp.markdown(cells, meta, rp.fig4c_fits(cells, meta), len(records))
    rows = _table(md, "Table A2: mean neuron |cosine| of [W1 | b1]")
    assert rows and all(r[1].startswith("—") for r in rows)
    assert not all(r[1].startswith("—") for r in _table(md, "Table A2, unsigned variant"))


def test_difference_and_its_standard_error():
    d = stats.difference([1.0, 2.0, 3.0], [0.0, 0.0, 3.0])
    assert d["diff"] == pytest.approx(1.0)
    assert d["se"] == pytest.approx(math.sqrt(1.0 / 3 + 3.0 / 3))
    assert math.isnan(stats.difference([1.0], [0.0, 1.0])["se"])
    assert math.isnan(stats.difference([], [0.0])["diff"])


# ---------------------------------------------------------------- records the report refuses
def edited_copy(src, tmp_path, edit):
    """A copy of the sweep directory ``src`` whose records went through ``edit(records)``."""
    dst = tmp_path / "edited"
    dst.mkdir()
    shutil.copy(src / "sweep.json", dst / "sweep.json")
    recs = RunStore(src / "runs.jsonl").records()
    edit(recs)
    (dst / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return dst


def rekey(rec, **changes):
    rec["key"] = dict(rec["key"], **changes)
    rec["run_id"] = run_id(rec["key"])


def one_line_error(path):
    with pytest.raises(FPEError) as exc:
        rp.report(path, path / "out")
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_records_of_another_seed_are_refused_not_pooled(partial, tmp_path):
    d = edited_copy(partial[0], tmp_path, lambda recs: rekey(recs[0], seed=7))
    msg = one_line_error(d)
    assert "differ in more than m, hidden, alpha, trial: seed: 0, 7" in msg


def test_nested_settings_are_named_with_their_values(partial, tmp_path):
    def edit(recs):
        rekey(recs[0], train=dict(recs[0]["key"]["train"], lr=0.5))
        rekey(recs[1], dense_epochs=9)
    msg = one_line_error(edited_copy(partial[0], tmp_path, edit))
    assert "dense_epochs: 4, 9" in msg and "train.lr: 0.001, 0.5" in msg


def test_records_that_disagree_with_sweep_json_are_refused(partial, tmp_path):
    def edit(recs):
        for r in recs:
            rekey(r, seed=7)
    msg = one_line_error(edited_copy(partial[0], tmp_path, edit))
    assert "other settings than sweep.json's: seed: 7 (sweep.json: 0)" in msg


@pytest.mark.parametrize("path, value, message", [
    ("models.clause.after.test_acc", None, "has no field models.clause.after.test_acc"),
    ("models.clause.after.test_acc", "0.9", "models.clause.after.test_acc is '0.9', not an accuracy in [0, 1]"),
    ("parent.test_acc", 1.5, "parent.test_acc is 1.5, not an accuracy in [0, 1]"),
    ("models.random.after.capacity", "big", "models.random.after.capacity is 'big', not a number"),
    ("models.random.after.cosine_bias_abs", "x", "models.random.after.cosine_bias_abs is 'x', not a number"),
    ("parent.cosine_bias_abs", [0.1], "parent.cosine_bias_abs is [0.1], not a number"),
    ("models.dense.ledger.biases", -1, "models.dense.ledger.biases is -1, not a non-negative integer"),
    ("key.hidden", "4", "key.hidden is '4', not a non-negative integer"),
    ("key.seed", None, "has no field key.seed"),
])
def test_a_bad_field_is_one_line_naming_the_run_and_the_field(partial, tmp_path, path, value, message):
    rid = []

    def edit(recs):
        target = recs[3]
        rid.append(target["run_id"])
        *parents, last = path.split(".")
        for p in parents:
            target = target[p]
        if value is None:
            del target[last]
        else:
            target[last] = value
    msg = one_line_error(edited_copy(partial[0], tmp_path, edit))
    assert f"run {rid[0]}" in msg and message in msg, msg


def test_two_records_of_one_trial_are_refused(partial, tmp_path):
    def edit(recs):
        twin = json.loads(json.dumps(recs[0]))
        twin["run_id"] = "0123456789abcdef"
        recs.append(twin)
    msg = one_line_error(edited_copy(partial[0], tmp_path, edit))
    assert "0123456789abcdef" in msg and "both trial 0 of" in msg


def test_a_record_edited_after_it_was_written_is_refused(partial, tmp_path):
    def edit(recs):
        recs[0]["models"]["clause"]["after"]["test_acc"] = 0.999  # a valid accuracy, not the computed one

    msg = one_line_error(edited_copy(partial[0], tmp_path, edit))
    assert "do not match its digest" in msg
