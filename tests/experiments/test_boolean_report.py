"""Tests for ``fpe report`` (fpe_ref.experiments.boolean_report) on a partly finished quick sweep."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fpe_ref.experiments import boolean as bs
from fpe_ref.experiments import boolean_report as rp
from fpe_ref.experiments.runs import RunStore

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
    """results/boolean/numpy-v1/ holds runs of the legacy "numpy-reference" trainer: reports read them."""
    from pathlib import Path

    d = Path(__file__).resolve().parents[2] / "results" / "boolean" / "numpy-v1"
    if not (d / "runs.jsonl").exists():
        pytest.skip(f"{d} absent")
    records, meta = rp.load_sweep(d)
    assert records and {r["key"]["trainer"] for r in records} == {"numpy-reference"}
    assert meta["config"]["trainer"] == "numpy-reference"
    cells = rp.Cells(records, int(meta["config"]["trials"]))
    assert rp.markdown(cells, meta, rp.fig4c_fits(cells, meta), len(records)).startswith("# Boolean sweep report")
