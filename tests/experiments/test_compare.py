"""A run beside the committed reference and the paper: the numbers of the comparison table."""

from __future__ import annotations

import math

from fpe_ref.experiments.compare import PAPER_CASE_STUDY, cell_rows, cells_text, comparison_text
from fpe_ref.experiments.stats import difference


def test_difference_by_hand():
    d = difference([0.9, 0.94], [0.9, 0.92])  # SEs 0.02 and 0.01
    assert math.isclose(d["diff"], 0.01) and math.isclose(d["se"], math.sqrt(0.02 ** 2 + 0.01 ** 2))
    assert math.isclose(d["z"], 0.01 / math.sqrt(5e-4))
    assert difference([0.5, 0.5], [0.5, 0.5])["z"] == 0.0
    assert math.isnan(difference([0.5], [0.5, 0.6])["z"])


def test_case_study_row_shows_both_statistics_apart():
    text = comparison_text([("clause", [0.9, 0.94], [0.9, 0.92], PAPER_CASE_STUDY["clause"])], "ref")
    row = next(line for line in text.splitlines() if line.startswith("| clause"))
    # mean 92.0 ± 2.0 against 91.0 ± 1.0: (92 - 91) / sqrt(2^2 + 1^2) = 0.45 SE; best 94.0 vs the paper's 99.4
    assert row == "| clause | 92.0 ± 2.0 (n=2) | 91.0 ± 1.0 (n=2) | +0.45 | 94.0 | 92.0 | 99.4 | -5.4 |"
    far = comparison_text([("dense", [0.5, 0.52], [0.9, 0.92], None)], "ref")
    assert "| -28.28 ! |" in far and far.splitlines()[-2].endswith("| — | — |")  # -40 / sqrt(1 + 1)


def _rec(trial, seed, acc):
    return {"key": {"m": 12, "hidden": 8, "seed": seed, "trial": trial}, "models": {"dense": acc}}


def test_cells_match_only_where_every_option_but_the_trial_agrees(tmp_path):
    run = [_rec(0, 0, 0.8), _rec(1, 0, 0.9)]
    ref = [_rec(0, 0, 0.8), _rec(1, 0, 0.9), _rec(0, 5, 0.1)]  # seed 5 is another cell
    rows = cell_rows(run, ref, lambda k: f"m={k['m']}", lambda r: r["models"])
    assert [(c, m, a, b, z) for c, m, a, b, z in rows] == [("m=12", "dense", [0.8, 0.9], [0.8, 0.9], 0.0)]
    text = cells_text(rows, "ref", str(tmp_path / "c.md"))
    assert "1 of 1 (cell, model) pairs compared; largest |Δ| 0.00 SE; 0 beyond 2 SE" in text
    assert (tmp_path / "c.md").read_text().count("| m=12 | dense |") == 1
    none = cells_text(cell_rows(run, [_rec(0, 5, 0.1)], str, lambda r: r["models"]), "ref")
    assert "nothing compared" in none
