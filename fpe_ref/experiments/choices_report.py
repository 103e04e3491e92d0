"""The report of ``fpe study choices``: side-by-side tables, decisions, the random split, power.

Reads a study folder (:mod:`fpe_ref.experiments.choices`) and writes ``report.md``,
``summary.json`` and ``fig_choices.png`` into the output folder. A study that is still
running gives a report of what has finished, with its counts.

Statistics, never mixed in one comparison (every table says which it shows):

* **mean ± SE** over every trial of a cell and seed set (n = seeds x trials);
* **A3's best of T**: per seed, the trial with the best *test* accuracy (Alg. A3 lines
  21-24), then mean ± SE of those bests over the seeds (n = seeds). This is the statistic
  the paper's Sec. 3.1 numbers are, so the like-for-like comparison with them;
* **paired differences** (a reading against the default, random against dense): the mean of
  the per-trial differences ± its SE, with the two-sided paired t-test's p, and the smallest
  true difference the cell could detect with 80 % power at p < 0.05,
  ``MDE = (t_{0.975, n-1} + t_{0.80, n-1}) SE``.

A paper number is *within 2 SE* when ``|ours - paper| <= 2 SE(ours)``. Figures 3a/3b give
their values only as plotted points, not in the text, so their rows show ours and the
paper's qualitative claim (FPE above dense, clause above random).

The decision rule (fixed before the study ran; applied to the choosing seeds only)
------------------------------------------------------------------------------------
For each choice that can become a default (what ``r`` scales and whether it restarts; the
optimizer at the split) and for the Tables A1/A2 metric definitions:

1. Count the paper numbers each reading reproduces within 2 SE: Sec. 3.1's three accuracies
   by A3's best of 5 (SE over the choosing seeds, floored at 0.5 points so that three equal
   bests do not make the test infinitely strict) for the training choices; the Tables
   A1/A2 rows at 12, 32 and 128 literals by mean ± SE for the metric definitions (as a
   share of the rows a definition has: alpha 4 has no 12-literal cell).
2. The readings that reproduce the most are the top set. If the most literal reading
   (:data:`fpe_ref.experiments.choices.LITERAL`; for the metrics, the definitions of
   :mod:`fpe_ref.metrics` at alpha 2) is in it, the study cannot tell it from the others on
   the paper's own numbers, and it is the default.
3. Otherwise, if the current default is in the top set, it stays (a tie is no reason to
   change); otherwise the top reading with the smallest sum of ``|ours - paper|`` is the
   default.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict

import numpy as np

from fpe_ref.errors import FPEError
from fpe_ref.experiments import choices as ch
from fpe_ref.experiments.compare import PAPER_CASE_STUDY
from fpe_ref.experiments.boolean import feasible
from fpe_ref.experiments.boolean_report import PAPER_TABLE_A1, PAPER_TABLE_A2
from fpe_ref.experiments.outputs import provenance, read_json, write_json_atomic
from fpe_ref.experiments.runs import RunStore
from fpe_ref.experiments.stats import mean_sd_se, relative_improvement

CASE = (32, 8, 2)  # the Sec. 3.1 cell of the full study (report() takes the study's own)
COSINES = tuple(d for d in ch.COSINE_READINGS if d != "activations-abs")  # equal to "activations" (ReLU >= 0)
TABLE_LITERALS = (12, 32, 128)
SE_FLOOR = 0.005  # best-of-5 SE floor in the decision rule (0.5 points)
METRIC_LITERAL = {"capacity": "weights", "cosine": "weights"}
K = ch.StudyConfig().k  # literals per clause of the study's cells


# ---------------------------------------------------------------- statistics
def paired(a, b) -> dict:
    """Mean of ``a - b`` (same trials, same order) ± SE, paired t-test p, and the 80 %-power MDE."""
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    s = mean_sd_se(d)
    n = s["n"]
    if n < 2 or not np.isfinite(s["se"]):
        return {"diff": s["mean"], "se": s["se"], "p": math.nan, "n": n, "mde": math.nan}
    p = float(stats.ttest_1samp(d, 0.0).pvalue) if s["se"] > 0 else (1.0 if s["mean"] == 0 else 0.0)
    mde = float((stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.80, n - 1)) * s["se"])
    return {"diff": s["mean"], "se": s["se"], "p": p, "n": n, "mde": mde}


def best_of(values_by_seed: dict) -> dict:
    """A3's best of T per seed, then mean ± SE over the seeds."""
    bests = [max(v) for v in values_by_seed.values() if v]
    return {**mean_sd_se(bests), "bests": bests}


def within(ours: float, se: float, paper: float, floor: float = 0.0) -> bool:
    se = max(se, floor) if np.isfinite(se) else floor
    return bool(np.isfinite(ours) and abs(ours - paper) <= 2 * se)


def case_cell(meta: dict) -> tuple:
    """The study's Sec. 3.1 cell ``(m, hidden, alpha)``: the first of its cells that feeds Sec. 3.1."""
    for c in meta.get("cells", []):
        if "Sec. 3.1" in c.get("feeds", ()):
            return (c["m"], c["hidden"], c["alpha"])
    return CASE


# ---------------------------------------------------------------- loading
def load(study_dir) -> tuple:
    """``(sweep.json, [records])`` of a study folder; one-line errors for what is not one."""
    meta_path = os.path.join(study_dir, "sweep.json")
    if not os.path.exists(meta_path):
        raise FPEError(f"{study_dir} is not a study folder (no sweep.json); run fpe study choices --out {study_dir}")
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("kind") != ch.KIND:
        raise FPEError(f"{meta_path} is not a choices study (kind {meta.get('kind') if isinstance(meta, dict) else meta!r})")
    return meta, list(RunStore(os.path.join(study_dir, "runs.jsonl")).load(check="strict").values())


def tidy(records) -> dict:
    """``{(cell, role, reading, variant): {"seed_trial": [...], "after": [...], "split": [...], ...}}``.

    Lists are ordered by (seed, trial), so two entries of one cell and role pair up trial by
    trial wherever both have the trial.
    """
    rows = defaultdict(lambda: defaultdict(list))
    for rec in sorted(records, key=lambda r: (r["key"]["seed"], r["key"]["trial"])):
        k = rec["key"]
        cell = (k["m"], k["hidden"], k["alpha"])
        for rname, rr in rec["readings"].items():
            for v, mod in rr["models"].items():
                e = rows[(cell, k["role"], rname, v)]
                e["seed_trial"].append((k["seed"], k["trial"]))
                e["after"].append(mod["after"]["test_acc"])
                e["split"].append(mod["split"]["test_acc"])
                e["metrics"].append(mod["metrics"])
                if v in rr.get("split_analysis", {}):
                    e["analysis"].append(rr["split_analysis"][v])
            e = rows[(cell, k["role"], rname, "parent")]
            e["seed_trial"].append((k["seed"], k["trial"]))
            e["after"].append(rec["parent"]["test_acc"])
            e["metrics"].append(rec["parent"]["metrics"])
    return rows


def _aligned(a: dict, b: dict, field: str = "after") -> tuple:
    """The values of ``field`` of the trials both entries have, in the same order."""
    ib = {st: i for i, st in enumerate(b["seed_trial"])}
    pairs = [(a[field][i], b[field][ib[st]]) for i, st in enumerate(a["seed_trial"]) if st in ib]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _by_seed(e: dict, field: str = "after") -> dict:
    out = defaultdict(list)
    for (seed, _), x in zip(e["seed_trial"], e[field]):
        out[seed].append(x)
    return out


def accuracy_stats(e: dict) -> dict:
    return {"mean": mean_sd_se(e["after"]), "best": best_of(_by_seed(e)), "split": mean_sd_se(e["split"])}


# ---------------------------------------------------------------- formatting
def pct(x) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def pm(s: dict, scale: float = 100.0, digits: int = 1) -> str:
    if not s or s.get("n", 0) == 0 or not np.isfinite(s["mean"]):
        return "–"
    se = f" ± {scale * s['se']:.{digits}f}" if np.isfinite(s.get("se", math.nan)) else ""
    return f"{scale * s['mean']:.{digits}f}{se}"


def _mark(ok: bool) -> str:
    return " ✓" if ok else ""


# ---------------------------------------------------------------- decisions
def choose(scores: dict, literal: str, current: str) -> tuple:
    """Steps 2-3 of the rule: ``(top set, chosen)`` from ``{reading: {"reproduced", "distance"}}``."""
    best = max(s["reproduced"] for s in scores.values())
    top = [n for n, s in scores.items() if s["reproduced"] == best]
    if literal in top:
        return top, literal
    if current in top:
        return top, current
    return top, min(top, key=lambda n: scores[n]["distance"])


def decide_training(rows, role="choose", case=CASE) -> dict:
    """The rule of the module docstring for the training choices, on ``role``'s seeds."""
    out = {}
    for choice in ("warm-up", "optimizer"):
        names = [r.name for r in ch.READINGS.values() if r.choosable and (r.choice == choice or r.name == ch.DEFAULT)]
        scores = {}
        for name in names:
            n_ok, dist, cells = 0, 0.0, {}
            for v, paper in PAPER_CASE_STUDY.items():
                e = rows.get((case, role, name, v))
                if not e:
                    break
                b = best_of(_by_seed(e))
                ok = within(b["mean"], b["se"], paper / 100, SE_FLOOR)
                n_ok += ok
                dist += abs(100 * b["mean"] - paper)
                cells[v] = {"best": b["mean"], "se": b["se"], "within": ok}
            else:
                scores[name] = {"reproduced": n_ok, "distance": dist, "cells": cells}
        if not scores:
            continue
        lit = ch.LITERAL[choice]
        top, chosen = choose(scores, lit, ch.DEFAULT)
        out[choice] = {"scores": scores, "top": top, "literal": lit, "chosen": chosen,
                       "changes_default": chosen != ch.DEFAULT}
    return out


def table_metric(rows, cell, role, reading, v, metric, definition) -> dict:
    e = rows.get((cell, role, reading, v))
    if not e:
        return mean_sd_se([])
    vals = [m[metric].get(definition, math.nan) for m in e["metrics"]]
    return mean_sd_se([x for x in vals if x is not None and np.isfinite(x)])


def decide_metrics(rows, role="choose", reading=ch.DEFAULT) -> dict:
    out = {}
    for metric, paper_tab, defs in (("capacity", PAPER_TABLE_A1, ch.CAPACITY_READINGS),
                                    ("cosine", PAPER_TABLE_A2, COSINES)):
        scores = {}
        for alpha in (2, 4):
            for d in defs:
                n_ok = n_rows = 0
                dist = 0.0
                for lit in TABLE_LITERALS:
                    for v, paper in zip(("dense", "clause", "random"), paper_tab.get(lit, ())):
                        s = table_metric(rows, (lit, 8, alpha), role, reading, v, metric, d)
                        if s["n"] == 0:
                            continue
                        n_rows += 1
                        pv = paper[0] if isinstance(paper, (tuple, list)) else paper
                        n_ok += within(s["mean"], s["se"], pv)
                        dist += abs(s["mean"] - pv)
                if n_rows:
                    scores[f"{d} @ alpha {alpha}"] = {"reproduced": n_ok, "rows": n_rows, "distance": dist}
        if not scores:
            continue
        expected = sum(3 for lit in TABLE_LITERALS for a in (2, 4) if lit // 4 >= a)  # rows of both alphas
        finished = max(s["rows"] for n, s in scores.items() if "alpha 2" in n) + \
            max([s["rows"] for n, s in scores.items() if "alpha 4" in n] or [0])
        lit = f"{METRIC_LITERAL[metric]} @ alpha 2"
        # alpha 4 has fewer rows (no 12-literal cell): compare shares of rows, and distance per row
        top, chosen = choose({n: {"reproduced": s["reproduced"] / s["rows"], "distance": s["distance"] / s["rows"]}
                              for n, s in scores.items()}, lit, lit)
        out[metric] = {"scores": scores, "top": top, "literal": lit, "chosen": chosen,
                       "rows_finished": finished, "rows_expected": expected}
    return out


# ---------------------------------------------------------------- the report
def _readings_present(rows, role) -> list:
    have = {k[2] for k in rows if k[1] == role}
    return [r for r in ch.READINGS if r in have]


def chosen_definitions(dec_m: dict) -> dict:
    """``{metric: (definition, alpha)}`` of the metric decisions (``decide_metrics``), e.g. ``("weights", 4)``."""
    out = {}
    for metric, d in dec_m.items():
        name, alpha = d["chosen"].split(" @ alpha ")
        out[metric] = (name, int(alpha))
    return out


def accuracy_table(rows, role, case=CASE, definitions=None) -> list:
    """Sec. 3.1, Tables A1/A2 and Figures 3a/3b rows x training readings (Markdown lines).

    ``definitions`` (:func:`chosen_definitions`) says under which capacity and cosine definition,
    and at which alpha, the Tables A1/A2 rows are computed; without it they are left out.
    """
    names = _readings_present(rows, role)
    if not names:
        return ["(no finished units yet)"]
    head = ["paper number", "paper", *[f"`{n}`" + (" †" if ch.READINGS[n].beyond else "") for n in names]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v, paper in PAPER_CASE_STUDY.items():
        best, mean = [], []
        for n in names:
            e = rows.get((case, role, n, v))
            if not e:
                best.append("–")
                mean.append("–")
                continue
            s = accuracy_stats(e)
            best.append(pm(s["best"]) + _mark(within(s["best"]["mean"], s["best"]["se"], paper / 100)))
            mean.append(pm(s["mean"]))  # a mean is never compared with the paper's best of 5
        lines.append(f"| Sec. 3.1 {v}, A3 best of 5 | {paper} | " + " | ".join(best) + " |")
        lines.append(f"| Sec. 3.1 {v}, mean | ({paper}, a best of 5) | " + " | ".join(mean) + " |")
    for lit in TABLE_LITERALS:  # the accuracy behind Tables A1/A2 (the paper gives none): is dense learning at all?
        for v in ("dense", "clause", "random"):
            cells = []
            for n in names:
                e = rows.get(((lit, 8, 2), role, n, v))
                cells.append(pm(mean_sd_se(e["after"])) if e else "–")
            lines.append(f"| Tables A1/A2 {lit} literals α2, {v} accuracy, mean | not given | " + " | ".join(cells) + " |")
    for metric, title, paper_tab in (("capacity", "Table A1", PAPER_TABLE_A1), ("cosine", "Table A2", PAPER_TABLE_A2)):
        if not definitions or metric not in definitions:
            continue
        d, a = definitions[metric]
        for lit in TABLE_LITERALS:
            no_cell = feasible(lit, K, a) is not None  # fewer clauses than alpha
            for v, (pv, psd) in zip(("dense", "clause", "random"), paper_tab[lit]):
                if no_cell:
                    cells = ["n/a"] * len(names)
                else:
                    cells = []
                    for n in names:
                        st = table_metric(rows, (lit, 8, a), role, n, v, metric, d)
                        cells.append(pm(st, 1.0, 3) + _mark(st["n"] > 0 and within(st["mean"], st["se"], pv))
                                     if st["n"] else "–")
                none = f": no α{a} cell, {lit // K} clauses" if no_cell else ""
                lines.append(f"| {title} {lit} literals, {v} (`{d}` α{a}{none}), mean | {pv:g} ± {psd:g} | "
                             + " | ".join(cells) + " |")
    fig_rows = [("Figure 3a", (32, h, a)) for a in (2, 4) for h in (4, 8, 12, 16)]
    fig_rows += [("Figure 3b", (4 * c, 8, a)) for a in (2, 4) for c in (8, 16, 32)]
    for fig, cell in fig_rows:
        for v in ("clause", "random"):
            cells = []
            for n in names:
                e, d = rows.get((cell, role, n, v)), rows.get((cell, role, n, "dense"))
                if not e or not d:
                    cells.append("–")
                    continue
                ri = relative_improvement(e["after"], d["after"])
                cells.append(f"{ri['ratio']:.3f} ± {ri['se']:.3f}" + ("*" if ri["sig"] else ""))
            what = f"h={cell[1]}" if fig == "Figure 3a" else f"{cell[0] // 4} clauses"
            lines.append(f"| {fig} {what}, alpha {cell[2]}, {v} RI | plotted: > 1 | " + " | ".join(cells) + " |")
    return lines


def tables_table(rows, role, reading=ch.DEFAULT) -> list:
    """Tables A1/A2 rows x metric definitions at alpha 2 and 4, mean ± SE (Markdown lines)."""
    out = []
    for metric, title, paper_tab, defs in (("capacity", "Table A1 (total feature capacity)", PAPER_TABLE_A1,
                                            ch.CAPACITY_READINGS),
                                           ("cosine", "Table A2 (mean neuron cosine)", PAPER_TABLE_A2,
                                            COSINES)):
        cols = [(d, a) for a in (2, 4) for d in defs]
        head = ["row", "paper", *[f"`{d}` α{a}" for d, a in cols]]
        out += [f"**{title}**, reading `{reading}`, mean ± SE:", "",
                "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for lit in TABLE_LITERALS:
            for v, paper in zip(("dense", "clause", "random"), paper_tab.get(lit, ())):
                pv, psd = (paper[0], paper[1]) if isinstance(paper, (tuple, list)) else (paper, None)
                cells = []
                for d, a in cols:
                    s = table_metric(rows, (lit, 8, a), role, reading, v, metric, d)
                    cells.append(pm(s, 1.0, 3) + _mark(s["n"] > 0 and within(s["mean"], s["se"], pv)))
                ptxt = f"{pv:g}" + (f" ± {psd:g}" if psd is not None else "")
                out.append(f"| {lit} literals, {v} | {ptxt} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def split_table(rows, role) -> list:
    """The random (and clause) split at the split: per cell, copy vs divide biases."""
    head = ["cell", "split", "bias rule", "n", "acc. at split", "acc. after", "clauses whole", "silent units",
            "logit shift", "of it, biases", "predicted positive"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cells = sorted({k[0] for k in rows if k[1] == role})
    for cell in cells:
        for v in ("random", "clause"):
            for name, rule in ((ch.DEFAULT, "copy b (paper)"), ("bias-divide", "b / alpha †")):
                e = rows.get((cell, role, name, v))
                if not e or not e["analysis"]:
                    continue
                an = e["analysis"]
                f = lambda k: mean_sd_se([a[k] for a in an])  # noqa: E731
                nc, nu = an[0]["clauses"], an[0]["units"]
                lines.append(
                    f"| m{cell[0]} h{cell[1]} α{cell[2]} | {v} | {rule} | {len(an)} | {pm(mean_sd_se(e['split']))} | "
                    f"{pm(mean_sd_se(e['after']))} | {pm(f('clauses_whole'), 1, 1)} / {nc} | "
                    f"{pm(f('silent_units'), 1, 1)} / {nu} | {pm(f('logit_shift'), 1, 2)} | "
                    f"{pm(f('bias_logit_excess'), 1, 2)} | {pm(f('positive_rate'))} % |")
    return lines


def split_trials(rows, role, cell=CASE) -> list:
    """Per trial at one cell: the random split's measurements at the split (paper's bias rule)."""
    e = rows.get((cell, role, ch.DEFAULT, "random"))
    p = rows.get((cell, role, ch.DEFAULT, "parent"))
    if not e or not e["analysis"]:
        return ["(not finished)"]
    lines = ["| seed | trial | parent acc. | acc. at split | clauses whole | silent units | logit shift | "
             "of it, biases | predicted positive | labels positive | acc. after |", "|" + "---|" * 11]
    pacc = dict(zip(p["seed_trial"], p["after"])) if p else {}
    for st, sp, af, an in zip(e["seed_trial"], e["split"], e["after"], e["analysis"]):
        lines.append(f"| {st[0]} | {st[1]} | {pct(pacc.get(st))} | {pct(sp)} | {an['clauses_whole']} / {an['clauses']} | "
                     f"{an['silent_units']} / {an['units']} | {an['logit_shift']:.2f} | {an['bias_logit_excess']:.2f} | "
                     f"{pct(an['positive_rate'])} % | {pct(an['label_positive_rate'])} % | {pct(af)} |")
    return lines


def bias_effect(rows, role) -> list:
    """Paired effect of the b / alpha remedy on the random split, at the split and after training."""
    lines = ["| cell | split | at the split: divide − copy | after: divide − copy | n |", "|---|---|---|---|---|"]
    for cell in sorted({k[0] for k in rows if k[1] == role}):
        for v in ("random", "clause"):
            a, b = rows.get((cell, role, "bias-divide", v)), rows.get((cell, role, ch.DEFAULT, v))
            if not a or not b:
                continue
            s = paired(*_aligned(a, b, "split"))
            t = paired(*_aligned(a, b, "after"))
            lines.append(f"| m{cell[0]} h{cell[1]} α{cell[2]} | {v} | {_pp(s)} | {_pp(t)} | {t['n']} |")
    return lines


def _pp(s: dict) -> str:
    if not np.isfinite(s["diff"]):
        return "–"
    p = f"p = {s['p']:.2g}" if np.isfinite(s["p"]) else "p –"
    return f"{100 * s['diff']:+.1f} ± {100 * s['se']:.1f} ({p})"


def power_table(rows) -> list:
    """Random split − dense, paired, per cell: reporting seeds, and both seed sets pooled."""
    lines = ["| cell | seeds | n | random − dense (points) | p (paired t) | MDE at 80 % power (points) |",
             "|---|---|---|---|---|---|"]
    for cell in sorted({k[0] for k in rows}):
        for label, roles in (("reporting", ("report",)), ("choosing + reporting", ("choose", "report"))):
            a, b = [], []
            for role in roles:
                r, d = rows.get((cell, role, ch.DEFAULT, "random")), rows.get((cell, role, ch.DEFAULT, "dense"))
                if r and d:
                    x, y = _aligned(r, d)
                    a += x
                    b += y
            if not a:
                continue
            s = paired(a, b)
            lines.append(f"| m{cell[0]} h{cell[1]} α{cell[2]} | {label} | {s['n']} | {100 * s['diff']:+.1f} ± "
                         f"{100 * s['se']:.1f} | {s['p']:.2g} | {100 * s['mde']:.1f} |")
    return lines


def reading_effects(rows, role, case=CASE) -> list:
    """Each reading against the default, paired, at the case study's cell."""
    lines = ["| reading | choice | dense | clause | random | n |", "|---|---|---|---|---|---|"]
    for name in _readings_present(rows, role):
        if name == ch.DEFAULT:
            continue
        cells = []
        n = 0
        for v in ch.VARIANTS:
            a, b = rows.get((case, role, name, v)), rows.get((case, role, ch.DEFAULT, v))
            if not a or not b:
                cells.append("–")
                continue
            s = paired(*_aligned(a, b))
            n = s["n"]
            cells.append(_pp(s))
        r = ch.READINGS[name]
        lines.append(f"| `{name}`{' †' if r.beyond else ''} | {r.choice} | " + " | ".join(cells) + f" | {n} |")
    return lines


def decisions_text(dec_t: dict, dec_m: dict) -> list:
    lines = []
    for choice, d in dec_t.items():
        sc = ", ".join(f"`{n}` {s['reproduced']}/3 (Σ|Δ| {s['distance']:.1f})" for n, s in d["scores"].items())
        lines.append(f"- **{choice}**: {sc}. Top: {', '.join(f'`{n}`' for n in d['top'])}; most literal `{d['literal']}`; "
                     f"**chosen `{d['chosen']}`**" + (" (a change of the default)" if d["changes_default"] else
                                                       " (the default stays)") + ".")
    for metric, d in dec_m.items():
        best = sorted(d["scores"].items(), key=lambda kv: (-kv[1]["reproduced"], kv[1]["distance"]))[:4]
        sc = ", ".join(f"`{n}` {s['reproduced']}/{s['rows']}" for n, s in best)
        change = (" (a change from the most literal reading; `fpe report`'s Tables A1/A2 name it as the chosen reading)"
                  if d["chosen"] != d["literal"] else " (the most literal reading stays)")
        verdict = (f"**chosen `{d['chosen']}`**{change}" if d["rows_finished"] >= d["rows_expected"] else
                   f"leading `{d['chosen']}`, provisional: {d['rows_finished']} of the {d['rows_expected']} table "
                   "rows have choosing trials so far")
        lines.append(f"- **{metric} definition** (best four): {sc}. Top: {', '.join(f'`{n}`' for n in d['top'])}; most literal "
                     f"`{d['literal']}`; {verdict}.")
    return lines or ["- (the choosing seeds have not finished the cells the rule reads)"]


def running_time(records) -> str:
    if not records:
        return "no units finished"
    busy = sum(r.get("elapsed_s", 0) for r in records)
    stamps = sorted(r["finished_at"] for r in records if "finished_at" in r)
    return (f"{len(records)} units, {busy / 3600:.2f} h of worker time (the sum of the units' own times); "
            f"first finished {stamps[0]}, last {stamps[-1]}")


def summary(rows) -> dict:
    out = {}
    for (cell, role, reading, v), e in rows.items():
        k = f"m{cell[0]}-h{cell[1]}-a{cell[2]}/{role}/{reading}/{v}"
        out[k] = {"after_mean": mean_sd_se(e["after"]), "after_best_of_5": best_of(_by_seed(e)),
                  "split_mean": mean_sd_se(e["split"]) if e["split"] else None}
    return out


def report(study_dir, out_dir) -> list:
    """Write ``report.md``, ``summary.json`` and ``fig_choices.png``; returns their paths."""
    meta, records = load(study_dir)
    rows = tidy(records)
    cfg = meta.get("config", {})
    os.makedirs(out_dir, exist_ok=True)
    plan_n = len(ch.plan(ch.StudyConfig(**{**cfg, "choose_seeds": tuple(cfg["choose_seeds"]),
                                          "report_seeds": tuple(cfg["report_seeds"]),
                                          "train": ch.TrainConfig(**{**cfg["train"],
                                                                     "betas": tuple(cfg["train"]["betas"])})}),
                         meta.get("quick", False)))
    case = case_cell(meta)
    dec_t, dec_m = decide_training(rows, case=case), decide_metrics(rows)
    defs = chosen_definitions(dec_m)
    md = [f"# Study of the paper's silent choices ({len(records)} of {plan_n} units finished)", "",
          f"Choosing seeds {cfg.get('choose_seeds')}, reporting seeds {cfg.get('report_seeds')}, "
          f"{cfg.get('trials')} trials per seed. Running time: {running_time(records)}.",
          "† beyond the paper. ✓: the paper's number is within 2 SE of ours. *: Welch p < 0.05.", "",
          "## Decisions (choosing seeds only; rule in fpe_ref/experiments/choices_report.py)", "",
          *decisions_text(dec_t, dec_m), "",
          "## Side by side (reporting seeds)", "",
          "Rows: the paper's numbers; columns: the readings. Sec. 3.1 rows show A3's best of 5 (mean ± SE over "
          "the seeds; the paper's statistic) and, below it, the mean ± SE over all trials (the paper's number is "
          "a best of 5, so that row is not like for like). Figure 3 rows: relative improvement mean(FPE) / "
          "mean(dense) ± SE (delta method). Tables A1/A2 rows: mean ± SE over the trials under the metric "
          "definitions the choosing seeds chose (the paper's ± is its sd over 5 trials).", "",
          *accuracy_table(rows, "report", case, defs), "",
          *tables_table(rows, "report"),
          "## Each reading against the default, paired (case-study cell, reporting seeds, points)", "",
          *reading_effects(rows, "report", case), "",
          "## The split itself (reporting seeds, mean ± SE over trials)", "",
          *split_table(rows, "report"), "",
          "Per trial, random split at the case-study cell (paper's bias rule; percentages):", "",
          *split_trials(rows, "report", case), "",
          "Paired effect of the children's bias b / alpha (points):", "", *bias_effect(rows, "report"), "",
          "## Power: random split − dense, paired, default reading", "", *power_table(rows), "",
          "## The same tables on the choosing seeds", "", *accuracy_table(rows, "choose", case, defs), "",
          *tables_table(rows, "choose")]
    written = []
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(md) + "\n")
    written.append(path)
    spath = os.path.join(out_dir, "summary.json")
    write_json_atomic(spath, {"generated_by": provenance(), "units": len(records), "planned": plan_n,
                              "decisions": {"training": dec_t, "metrics": dec_m}, "cells": summary(rows)})
    written.append(spath)
    fig = figure(rows, os.path.join(out_dir, "fig_choices.png"), case, defs)
    if fig:
        written.append(fig)
    return written


FIGURE_READINGS = (ch.DEFAULT, ch.LITERAL["warm-up"])  # panels (c), (d): the baseline and the chosen warm-up


def figure(rows, path, case=CASE, definitions=None) -> str | None:
    """(a) Sec. 3.1 accuracies per reading, mean ± SE and A3's best of 5, paper lines; (b) the random
    split's accuracy at the split and after, paper's bias rule against b / alpha, per cell; (c) the
    Figure 3a/3b points, relative improvement per cell; (d) the Tables A1/A2 rows under the
    chosen metric definitions, ours / paper. Panels (c) and (d) show :data:`FIGURE_READINGS`."""
    names = _readings_present(rows, "report")
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(15, 12.5), gridspec_kw={"width_ratios": [1.4, 1]})
    (ax, bx), (cx, dx) = axes
    colors = {"dense": "0.35", "clause": "tab:blue", "random": "tab:orange"}
    x = np.arange(len(names))
    for j, v in enumerate(ch.VARIANTS):
        off = (j - 1) * 0.25
        for i, n in enumerate(names):
            e = rows.get((case, "report", n, v))
            if not e:
                continue
            s = accuracy_stats(e)
            ax.errorbar(i + off, 100 * s["mean"]["mean"], yerr=100 * s["mean"]["se"], fmt="o", color=colors[v],
                        label=f"{v}: mean ± SE" if i == 0 else None)
            ax.errorbar(i + off, 100 * s["best"]["mean"], yerr=100 * s["best"]["se"], fmt="^", mfc="none",
                        color=colors[v], label=f"{v}: A3 best of 5 ± SE" if i == 0 else None)
        ax.axhline(PAPER_CASE_STUDY[v], color=colors[v], ls="--", lw=1, label=f"paper {v} ({PAPER_CASE_STUDY[v]})")
    ax.set_xticks(x, [n + (" †" if ch.READINGS[n].beyond else "") for n in names], rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("(a) Sec. 3.1 case study under each reading (reporting seeds)")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.3))  # below: the points stay visible
    cells = sorted({k[0] for k in rows if k[1] == "report" and k[2] == "bias-divide"})
    for j, (name, lab, c) in enumerate(((ch.DEFAULT, "copy b (paper)", "tab:orange"),
                                        ("bias-divide", "b / alpha †", "tab:green"))):
        for i, cell in enumerate(cells):
            e = rows.get((cell, "report", name, "random"))
            if not e:
                continue
            sp, af = mean_sd_se(e["split"]), mean_sd_se(e["after"])
            bx.errorbar(i + (j - 0.5) * 0.3, 100 * sp["mean"], yerr=100 * sp["se"], fmt="s", mfc="none", color=c,
                        label=f"{lab}: at the split" if i == 0 else None)
            bx.errorbar(i + (j - 0.5) * 0.3, 100 * af["mean"], yerr=100 * af["se"], fmt="o", color=c,
                        label=f"{lab}: after phase 2" if i == 0 else None)
    bx.set_xticks(range(len(cells)), [f"m{c[0]} h{c[1]} α{c[2]}" for c in cells], rotation=45, ha="right")
    bx.set_ylabel("random-split test accuracy (%)")
    bx.set_title("(b) random split: the children's bias rule")
    bx.legend(fontsize=7)
    _figure3_panel(cx, rows)
    _tables_panel(dx, rows, definitions or {})
    fig.text(0.01, 0.01, "Error bars: one SE (mean: over seeds x trials; best of 5: over seeds; relative "
             "improvement: delta method). Dashed: the paper's Sec. 3.1 numbers (A3 best of 5). † beyond the "
             "paper. All panels: reporting seeds.", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _figure3_panel(ax, rows) -> None:
    """(c): relative improvement of the clause and random splits at the Figure 3a/3b cells."""
    cells = [(32, h, a) for a in (2, 4) for h in (4, 8, 12, 16)] + [(4 * c, 8, a) for a in (2, 4) for c in (16, 32)]
    colors = {"clause": "tab:blue", "random": "tab:orange"}
    labelled = set()
    for j, name in enumerate(FIGURE_READINGS):
        for k, v in enumerate(("clause", "random")):
            off = (2 * j + k - 1.5) * 0.15
            for i, cell in enumerate(cells):
                e, d = rows.get((cell, "report", name, v)), rows.get((cell, "report", name, "dense"))
                if not e or not d:
                    continue
                ri = relative_improvement(e["after"], d["after"])
                ax.errorbar(i + off, ri["ratio"], yerr=ri["se"], fmt="o" if j == 0 else "D",
                            mfc=colors[v] if j == 0 else "none", color=colors[v],
                            label=None if (v, name) in labelled else f"{v}, `{name}`")
                labelled.add((v, name))
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.set_xticks(range(len(cells)), [f"3a h{c[1]} α{c[2]}" if c[0] == 32 else f"3b C{c[0] // 4} α{c[2]}"
                                      for c in cells], rotation=45, ha="right")
    ax.set_ylabel("relative improvement FPE / dense (mean ratio)")
    ax.set_title("(c) Figure 3a/3b points (the paper plots them > 1; 3b's 8 clauses is 3a's h8)")
    ax.legend(fontsize=7)


def _tables_panel(ax, rows, definitions: dict) -> None:
    """(d): the Tables A1/A2 rows, ours / paper under the chosen metric definitions."""
    colors = {"dense": "0.35", "clause": "tab:blue", "random": "tab:orange"}
    labels, i = [], 0
    for metric, title, paper_tab in (("capacity", "A1", PAPER_TABLE_A1), ("cosine", "A2", PAPER_TABLE_A2)):
        if metric not in definitions:
            continue
        d, a = definitions[metric]
        for lit in TABLE_LITERALS:
            if feasible(lit, K, a) is not None:
                continue
            for v, (pv, _) in zip(("dense", "clause", "random"), paper_tab[lit]):
                for j, name in enumerate(FIGURE_READINGS):
                    st = table_metric(rows, (lit, 8, a), "report", name, v, metric, d)
                    if st["n"]:
                        ax.errorbar(i + (j - 0.5) * 0.3, st["mean"] / pv, yerr=st["se"] / pv, fmt="o" if j == 0 else "D",
                                    color=colors[v], mfc=colors[v] if j == 0 else "none")
                labels.append(f"{title} m{lit} {v} ({d} α{a})")
                i += 1
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("ours / paper (mean ± SE over trials)")
    ax.set_title(f"(d) Tables A1/A2 under the chosen definitions; filled `{FIGURE_READINGS[0]}`, "
                 f"open `{FIGURE_READINGS[1]}`", fontsize=9)
