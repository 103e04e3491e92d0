"""Tests for the Markdown tables and number formats of the reports (fpe_ref.experiments.tables)."""

from __future__ import annotations

import math

import pytest

from fpe_ref.experiments import tables as tb
from fpe_ref.experiments.stats import mean_sd_se, relative_improvement


def test_table_by_hand():
    assert tb.table(["a", "b"], [[1, "x"], [2.5, None]]) == "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 | None |"


@pytest.mark.parametrize("x, nd, out", [(0.12345, 3, "0.123"), (2, 1, "2.0"), (None, 3, "—"), (math.nan, 2, "—")])
def test_num(x, nd, out):
    assert tb.num(x, nd) == out


def test_mean_pm_by_count():
    assert tb.mean_pm(mean_sd_se([])) == "—"
    assert tb.mean_pm(mean_sd_se([0.5])) == "0.500 (n=1)"
    assert tb.mean_pm(mean_sd_se([1.0, 2.0, 3.0])) == "2.000 ± 1.000"
    assert tb.mean_pm(mean_sd_se([1.0, 2.0, 3.0]), nd=2, key="se") == "2.00 ± 0.58"


@pytest.mark.parametrize("p, out", [(0.0001, "<0.001"), (0.04567, "0.046"), (None, "—"), (math.nan, "—")])
def test_p_value(p, out):
    assert tb.p_value(p) == out


def test_ratio_cell():
    # R = 0.99 / 0.705 = 1.404; SE = R sqrt((0.00408/0.99)^2 + (0.00645/0.705)^2) = 0.014; Welch p < 0.05
    assert tb.ratio_cell(relative_improvement([0.99, 0.98, 1.0, 0.99], [0.7, 0.72, 0.69, 0.71])) == "1.404 ± 0.014*"
    assert tb.ratio_cell(relative_improvement([0.9], [0.8]), 2) == "1.12"  # one trial: no SE
    assert tb.ratio_cell(relative_improvement([], [0.8])) == "—"


def test_count_note():
    assert tb.count_note(5, 5) == "" and tb.count_note(3, 5) == " (n=3/5)"


@pytest.mark.parametrize("x, se, out", [(0.8042, 0.009, "80.4 ± 0.9"), (0.8042, None, "80.4"),
                                        (0.8042, math.nan, "80.4"), (None, 0.1, "-"), (math.nan, None, "-")])
def test_pct(x, se, out):
    assert tb.pct(x, se) == out


def test_ri_pct():
    assert tb.ri_pct(1.03, 0.012, 0.07) == "+3.0 ± 1.2"
    assert tb.ri_pct(0.997, 0.004, 0.01) == "-0.3 ± 0.4*"
    assert tb.ri_pct(1.01, math.nan, math.nan) == "+1.0"  # one trial: no SE, no test
