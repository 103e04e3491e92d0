"""Tests for the statistics of the reports (fpe_ref.experiments.stats), by hand: mean / SD / SE,
the delta-method SE of a relative improvement, Welch's test, the least-squares fit, and the
documented edge cases.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fpe_ref.experiments import stats as st


def test_ratio_delta_method_and_welch_by_hand():
    dense = [0.8, 0.7, 0.9]  # mean 0.8, sd 0.1
    fpe = [0.9, 0.95, 1.0]  # mean 0.95, sd 0.05
    r = st.relative_improvement(fpe, dense)
    assert r["ratio"] == pytest.approx(0.95 / 0.8)  # 1.1875
    # SE = R sqrt((0.05^2/3)/0.95^2 + (0.1^2/3)/0.8^2) = 1.1875 * sqrt(0.00092336 + 0.00520833)
    assert r["se"] == pytest.approx(1.1875 * math.sqrt(0.000923361 + 0.005208333), rel=1e-6)
    assert r["se"] == pytest.approx(0.092987, abs=1e-6)
    # Welch: t = 0.15 / sqrt(0.05^2/3 + 0.1^2/3) = 2.32379; df = (a+b)^2 / (a^2/2 + b^2/2) = 2.94118
    a, b = 0.05 ** 2 / 3, 0.1 ** 2 / 3
    t = 0.15 / math.sqrt(a + b)
    df = (a + b) ** 2 / (a ** 2 / 2 + b ** 2 / 2)
    assert t == pytest.approx(2.32379, abs=1e-5) and df == pytest.approx(2.94118, abs=1e-5)
    from scipy import stats

    assert r["p"] == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9)
    assert 0.05 < r["p"] < 0.2 and r["sig"] is False  # 3 trials each: not significant


def test_ratio_marks_a_clear_difference_and_handles_degenerate_cells():
    r = st.relative_improvement([0.99, 0.98, 1.0, 0.99], [0.7, 0.72, 0.69, 0.71])
    assert r["sig"] and r["p"] < 1e-4
    one = st.relative_improvement([0.9], [0.8])
    assert one["ratio"] == pytest.approx(1.125) and math.isnan(one["se"]) and math.isnan(one["p"]) and not one["sig"]
    flat = st.relative_improvement([1.0, 1.0], [1.0, 1.0])
    assert flat["ratio"] == 1.0 and flat["se"] == 0.0 and math.isnan(flat["p"])
    empty = st.relative_improvement([], [0.8, 0.9])
    assert math.isnan(empty["ratio"]) and empty["n_a"] == 0


def test_mean_sd_se_by_hand():
    s = st.mean_sd_se([1.0, 2.0, 4.0])  # mean 7/3; sd^2 = ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 7/3
    assert s["mean"] == pytest.approx(7 / 3) and s["sd"] == pytest.approx(math.sqrt(7 / 3))
    assert s["se"] == pytest.approx(math.sqrt(7 / 3) / math.sqrt(3)) and s["n"] == 3


def test_linfit_by_hand():
    exact = st.linfit([1, 2, 3], [3, 5, 7])
    assert exact["slope"] == pytest.approx(2) and exact["intercept"] == pytest.approx(1) and exact["r2"] == pytest.approx(1)
    # x = 0,1,2,3; y = 0,2,1,3: slope = cov/var = 1.5/1.5... by hand: xbar 1.5, ybar 1.5,
    # Sxy = 2.25+(-0.25)(0.5)... = 4, Sxx = 5 -> slope 0.8, intercept 0.3; SSres = 1.8, SStot = 5 -> R^2 = 0.64
    f = st.linfit([0, 1, 2, 3], [0, 2, 1, 3])
    assert (f["slope"], f["intercept"], f["r2"]) == pytest.approx((0.8, 0.3, 0.64))
    assert math.isnan(st.linfit([1, 1], [2, 3])["slope"]) and st.linfit([1, np.nan, 2], [1, 2, 3])["n"] == 2


def test_relative_improvement_hand_example():
    r = st.relative_improvement([0.6, 0.8], [0.4, 0.6])
    ri, se, p = r["ratio"], r["se"], r["p"]
    assert ri == pytest.approx(1.4)
    # se_f = se_d = std(ddof=1)/sqrt(2) = 0.1 -> se = 1.4 * sqrt((0.1/0.7)^2 + (0.1/0.5)^2)
    assert se == pytest.approx(1.4 * np.sqrt((0.1 / 0.7) ** 2 + 0.2 ** 2))
    assert p == pytest.approx(0.2929, abs=1e-4)  # Welch: t = 0.2 / sqrt(0.02) = 1.414, df = 2


FINITE = "finite"


@pytest.mark.parametrize("a, b, ratio, se, p", [
    ([0.5, 0.6], [0.0, 0.0], math.nan, math.nan, FINITE),  # zero dense accuracy: no ratio; Welch still runs
    ([0.5, 0.6], [math.nan, 0.5], math.nan, math.nan, math.nan),  # NaN dense accuracy
    ([0.9], [0.8], 1.125, math.nan, math.nan),  # n < 2: no SE, no test
    ([0.9, 0.8], [0.8], 0.85 / 0.8, math.nan, math.nan),  # n < 2 on one side
    ([0.0, 0.0], [0.5, 0.7], 0.0, math.nan, FINITE),  # mean(a) = 0: a ratio but no relative SE
    ([], [0.5, 0.7], math.nan, math.nan, math.nan),  # no values
])
def test_relative_improvement_edge_cases(a, b, ratio, se, p):
    r = st.relative_improvement(a, b)
    for name, want in (("ratio", ratio), ("se", se), ("p", p)):
        if want == FINITE:
            assert math.isfinite(r[name]), name
        elif math.isnan(want):
            assert math.isnan(r[name]), name
        else:
            assert r[name] == pytest.approx(want), name
    if math.isnan(r["p"]):
        assert r["sig"] is False


def test_relative_improvement_negative_means_by_hand():
    r = st.relative_improvement([-0.2, -0.4], [-0.1, -0.3])  # means -0.3, -0.2; se of each 0.1
    assert r["ratio"] == pytest.approx(1.5)
    assert r["se"] == pytest.approx(1.5 * math.sqrt((0.1 / 0.3) ** 2 + (0.1 / 0.2) ** 2))


def test_welch_p_is_nan_where_undefined():
    assert math.isnan(st.welch_p([1.0], [1.0, 2.0]))
    assert math.isnan(st.welch_p([1.0, 1.0], [2.0, 2.0]))
    assert 0 < st.welch_p([1.0, 1.0], [2.0, 2.5]) < 1  # variance on one side suffices


def test_mean_sd_se_of_one_and_no_values():
    one, none = st.mean_sd_se([0.5]), st.mean_sd_se([])
    assert one["mean"] == 0.5 and math.isnan(one["sd"]) and math.isnan(one["se"]) and one["n"] == 1
    assert math.isnan(none["mean"]) and none["n"] == 0
