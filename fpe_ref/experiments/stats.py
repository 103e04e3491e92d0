"""The statistics of the reports: mean / SD / SE, Welch's test, relative improvement, line fits.

Paper: Sec. 3.2 (Figure 3: relative improvement, "FPE test accuracy / dense test accuracy";
Figure 4: fold changes and their regressions), Sec. 3.3 / 3.4 (Figures 5 and 6d), A.6 / A.7
(Tables A1-A5). The paper names its quantities but not its estimators; these are ours:

* mean, sample standard deviation (``ddof=1``) and standard error ``SE = sd / sqrt(n)``;
* the relative improvement (or fold change) ``R = mean(a) / mean(b)`` of FPE values ``a``
  over dense values ``b``, with the delta-method standard error of a ratio of two
  independent means::

      SE(R) = |R| * sqrt( SE(a)^2 / mean(a)^2 + SE(b)^2 / mean(b)^2 )

  The trials are in fact paired (FPE model t grows out of dense parent t) and the two
  accuracies of a trial are positively correlated, so this independent-sample error is the
  conservative one; it matches the unpaired test below;
* significance: Welch's two-sided t-test (``scipy.stats.ttest_ind(a, b, equal_var=False)``),
  marked where ``p < SIG_LEVEL``;
* line fits: ordinary least squares with ``R^2 = 1 - SS_res / SS_tot``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

SIG_LEVEL = 0.05  # the paper's "*": Welch p < 0.05


def mean_sd_se(x) -> dict:
    """Mean, sample sd (``ddof=1``), standard error of the mean and n of ``x``.

    Returns ``{"mean", "sd", "se", "n"}``; ``sd`` and ``se`` are NaN for ``n < 2``, and every
    value but ``n`` is NaN for ``n = 0``.
    """
    x = np.asarray(x, dtype=float)
    n = int(x.size)
    if n == 0:
        return {"mean": math.nan, "sd": math.nan, "se": math.nan, "n": 0}
    sd = float(np.std(x, ddof=1)) if n > 1 else math.nan
    return {"mean": float(np.mean(x)), "sd": sd, "se": sd / math.sqrt(n) if n > 1 else math.nan, "n": n}


def welch_p(a, b) -> float:
    """Two-sided Welch t-test p-value of ``a`` against ``b``.

    NaN when the test is undefined: fewer than two values on either side, or zero variance on
    both. Near-identical samples make scipy warn about precision; the p-value it returns is
    still defined and is kept (the warning is silenced).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return math.nan
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def relative_improvement(a, b) -> dict:
    """``R = mean(a) / mean(b)`` with its delta-method SE and Welch's p (module docstring).

    The relative improvement of FPE test accuracies ``a`` over dense ones ``b`` (Sec. 3.2),
    or the fold change of any other metric (capacity, mean cosine: Figure 4a/b).

    Returns
    -------
    dict
        ``{"ratio", "se", "p", "sig", "n_a", "n_b", "a": mean_sd_se(a), "b": mean_sd_se(b)}``;
        ``sig`` is ``p < SIG_LEVEL`` (False where ``p`` is NaN).

    Edge cases
    ----------
    * ``ratio`` is NaN when either side is empty, when ``mean(b) == 0`` (a dense accuracy of
      zero) or when ``mean(b)`` is NaN; a negative ``mean(b)`` (a signed cosine) gives a
      negative ratio, and ``SE`` uses ``|R|``.
    * ``se`` is NaN when either side has fewer than two values (``n < 2``: no standard error
      of its mean) or when ``mean(a) == 0``.
    * ``p`` is NaN as :func:`welch_p` says (``n < 2`` on either side, or zero variance on both).
    """
    sa, sb = mean_sd_se(a), mean_sd_se(b)
    if sa["n"] == 0 or sb["n"] == 0 or sb["mean"] == 0:
        r = se = math.nan
    else:
        r = sa["mean"] / sb["mean"]
        if sa["n"] > 1 and sb["n"] > 1 and sa["mean"] != 0:
            se = abs(r) * math.sqrt((sa["se"] / sa["mean"]) ** 2 + (sb["se"] / sb["mean"]) ** 2)
        else:
            se = math.nan
    p = welch_p(a, b)
    return {"ratio": r, "se": se, "p": p, "sig": bool(p < SIG_LEVEL) if not math.isnan(p) else False,
            "n_a": sa["n"], "n_b": sb["n"], "a": sa, "b": sb}


def linfit(x, y) -> dict:
    """Least squares ``y = slope * x + intercept`` and ``R^2 = 1 - SS_res / SS_tot``.

    Pairs where ``x`` or ``y`` is not finite are left out. ``slope``, ``intercept`` and
    ``r2`` are NaN with fewer than two points or a constant ``x``; ``r2`` alone is NaN for a
    constant ``y`` (``SS_tot = 0``). Returns ``{"slope", "intercept", "r2", "n"}``.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < 2 or np.ptp(x) == 0:
        return {"slope": math.nan, "intercept": math.nan, "r2": math.nan, "n": n}
    slope, intercept = np.polyfit(x, y, 1)
    ss_res = float(np.sum((y - (slope * x + intercept)) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2, "n": n}


def difference(a, b) -> dict:
    """``D = mean(a) - mean(b)`` with ``SE = sqrt(SE(a)^2 + SE(b)^2)``, ``z = D / SE`` and Welch's p.

    Two independent sets of values: FPE against dense accuracies of one cell (Figures 3 and
    4's difference panels), or a run against the committed reference (``compare``). Returns
    ``{"diff", "se", "z", "p", "sig", "n_a", "n_b"}``: ``diff`` is NaN when either side is
    empty; ``se`` and ``z`` are NaN when either side has fewer than two values, and ``z`` is 0
    where ``D`` and ``SE`` are both 0 (identical constant samples); ``p`` as :func:`welch_p`.
    """
    sa, sb = mean_sd_se(a), mean_sd_se(b)
    d = sa["mean"] - sb["mean"] if sa["n"] and sb["n"] else math.nan
    se = math.hypot(sa["se"], sb["se"]) if sa["n"] > 1 and sb["n"] > 1 else math.nan
    if math.isnan(se) or math.isnan(d):
        z = math.nan
    elif se == 0:
        z = 0.0 if d == 0 else math.copysign(math.inf, d)
    else:
        z = d / se
    p = welch_p(a, b)
    return {"diff": d, "se": se, "z": z, "p": p, "sig": bool(p < SIG_LEVEL) if not math.isnan(p) else False,
            "n_a": sa["n"], "n_b": sb["n"]}
