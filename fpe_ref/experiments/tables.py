"""Markdown tables and the number formats of the reports (``boolean_report``, ``vision_report``).

Every function returns a string; a missing value (``None`` or NaN) prints as a dash, "—" in
the Boolean report and "-" in the vision tables (each as its committed results print it).
"""

from __future__ import annotations

import math

from fpe_ref.experiments.stats import SIG_LEVEL


def table(header, rows) -> str:
    """A GitHub Markdown table: ``header`` (strings), ``rows`` (lists, each cell through ``str``)."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x, nd=3) -> str:
    """``x`` to ``nd`` decimals; "—" when missing."""
    return "—" if _missing(x) else f"{x:.{nd}f}"


def mean_pm(s, nd=3, key="sd") -> str:
    """``mean ± s[key]`` of a :func:`fpe_ref.experiments.stats.mean_sd_se` dict.

    ``"0.500 (n=1)"`` for a single value, "—" for none.
    """
    if s["n"] == 0:
        return "—"
    if s["n"] == 1:
        return f"{s['mean']:.{nd}f} (n=1)"
    return f"{s['mean']:.{nd}f} ± {s[key]:.{nd}f}"


def p_value(p) -> str:
    """A p-value: 3 decimals, or "<0.001"; "—" when missing."""
    if _missing(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def ratio_cell(r, nd=3) -> str:
    """A :func:`fpe_ref.experiments.stats.relative_improvement` dict: ``R ± SE``, ``*`` if significant.

    The ``± SE`` is left out where the SE is NaN (fewer than two trials); "—" where ``R`` is.
    """
    if math.isnan(r["ratio"]):
        return "—"
    se = f" ± {r['se']:.{nd}f}" if not math.isnan(r["se"]) else ""
    return f"{r['ratio']:.{nd}f}{se}{'*' if r['sig'] else ''}"


def count_note(count, planned) -> str:
    """``" (n=3/5)"`` when a cell has fewer (or more) finished trials than planned, else ""."""
    return "" if count == planned else f" (n={count}/{planned})"


def pct(x, se=None, nd=1) -> str:
    """A share as a percentage, ``100 x`` (``± 100 se`` when ``se`` is given and not NaN); "-" when missing."""
    if _missing(x):
        return "-"
    s = f"{100 * x:.{nd}f}"
    if se is not None and not math.isnan(se):
        s += f" ± {100 * se:.{nd}f}"
    return s


def ri_pct(ri, se, p, nd=1) -> str:
    """A relative improvement as ``(RI − 1)`` in percent, signed, ``± 100 SE``, ``*`` where Welch p < 0.05.

    The ``± SE`` is left out where the SE is NaN (a single trial); a NaN ``p`` gives no mark.
    """
    star = "*" if p < SIG_LEVEL else ""
    err = "" if math.isnan(se) else f" ± {100 * se:.{nd}f}"
    return f"{100 * (ri - 1):+.{nd}f}{err}{star}"
