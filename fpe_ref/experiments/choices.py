"""The study of the paper's silent choices: which reading of each gives which number.

Paper: Sec. 3.1 (the case study), Sec. 3.2 (Figures 3a/3b), A.6 (Tables A1/A2), Alg. A1 and
Alg. A3, A.3.1. ``fpe study choices`` runs it; :mod:`fpe_ref.experiments.choices_report`
turns its records into the side-by-side table and the figure.

Readings
--------
Each reading is one named way of filling a gap the paper leaves, changed one at a time from
the project's default (``lr-restart``). :data:`READINGS` lists them; "beyond the paper" marks
the ones the paper does not allow (they answer "what would help", not "what did the paper do").

=====================  ===============  ==============================================================
choice                 reading          what it does
=====================  ===============  ==============================================================
what ``r`` scales,     ``lr-restart``   ``r = min(1, e / W)`` scales the learning rate; each phase
restarted at the                        starts its own ramp, so the split restarts it (the default)
split?                 ``lr-continue``  the same ramp, counted over the whole run: it is complete
                                        at the split, so phase 2 trains at the full rate
                       ``penalty-restart``  ``r`` scales the penalties; ramp restarted at the split
                       ``penalty-continue`` ``r`` scales the penalties, phase 2 at full penalties
                       ``none``         ``r`` is computed and unused (the most literal reading)
optimizer at the split ``carry-optimizer``  Adam's moments carried child by child (default: fresh)
phase-2 length         ``long-phase2``  3000 epochs after the split instead of the paper's 1000
                                        (beyond the paper)
children's biases      ``bias-divide``  each child gets ``b / alpha`` instead of ``b`` (beyond the
                                        paper: a remedy for the random split's fall at the split)
data-set size          ``n-40000``      40,000 samples instead of 10,000 (the paper gives none)
=====================  ===============  ==============================================================

"Counted over the whole run" needs no new mechanism: with ``W`` = the dense phase's ``N1``,
``r = min(1, (N1 + e) / W) = 1`` for every phase-2 epoch ``e``, which is exactly what
``warmup="none"`` computes for that phase (tested).

Pairing
-------
A unit of work is one (cell, seed, trial, phase-1 group): the dense parent is trained once,
and every reading whose phase 1 is the same (the *group*: what ``r`` scales and the data-set
size) starts phase 2 from that very parent. Readings of other groups share the data, the
initialisation and every shuffle and split stream (the streams of
:mod:`fpe_ref.experiments.case_study`), so every comparison between readings is paired
trial by trial. The default reading of a trial equals ``case_study.run_trial`` of the same
seed and trial (tested), so the study extends the committed case study rather than
re-implementing it.

Where each reading runs: every reading at every cell, except ``long-phase2`` (only at the
Sec. 3.1 cell, where the clause split's gap to the paper is measured; it triples phase 2)
and ``n-40000`` (only at the cells of Tables A1/A2, whose dense models it is about).

Seeds
-----
Two disjoint sets: the *choosing* seeds (default 1, 2, 3) decide the defaults by the rule in
:mod:`fpe_ref.experiments.choices_report`; the *reporting* seeds (4, 5, 6) are never looked
at for choosing and give the numbers the table reports. Readings that cannot become a
default (beyond the paper, or the data-set size) run on the reporting seeds only. Seed 0 (the
committed results) and seeds 11 and 23 (looked at before the study existed) are in neither.

Per model the record holds test accuracy, capacity and cosine at the split and after
phase 2, every definition of the Tables A1/A2 metrics (:func:`metric_readings`) after
phase 2, a 21-point test-accuracy curve, and for each split model the measurements of
:func:`split_analysis` (why the random split falls at the split).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from fpe_ref.data.dnf import DEFAULT_K, DEFAULT_TEST_FRACTION, check_test_split
from fpe_ref.errors import FPEError, check_positive_ints
from fpe_ref.experiments import trainers
from fpe_ref.experiments.boolean import _slim_history, feasible
from fpe_ref.experiments.case_study import CaseStudyConfig, make_data
from fpe_ref.experiments.outputs import open_output
from fpe_ref.experiments.runs import open_sweep_dir, run_sweep
from fpe_ref.expand import carry_optimizer, expand
from fpe_ref.metrics import capacity_of, check_weights, feature_vectors, interference, mean_cosine
from fpe_ref.mlp import MLP
from fpe_ref.rng import stream
from fpe_ref.train import TrainConfig, chance_accuracy, divergence

KIND = "choices"
VARIANTS = ("dense", "clause", "random")
SPLIT_VARIANTS = ("clause", "random")
ON, OFF = 3.25, 0.25  # the A.2.1 encoding's mean values of a 1 (U[3, 3.5)) and a 0 (U[0, 0.5))


@dataclass(frozen=True)
class Reading:
    """One reading of one silent choice, as a change from the default."""

    name: str
    choice: str  # the choice it answers
    what: str  # one line: what it does
    warmup: str = "lr"  # what r scales, in both phases
    restart: bool = True  # the ramp restarts at the split (False: phase 2 at r = 1)
    carry: bool = False  # carry Adam's moments through the split
    long: bool = False  # phase 2 of StudyConfig.long_epochs instead of fpe_epochs
    bias: str = "copy"  # the children's bias rule (expand's ``bias``)
    large_data: bool = False  # StudyConfig.large_n samples instead of n_samples
    beyond: bool = False  # beyond what the paper allows
    choosable: bool = True  # run on the choosing seeds (a candidate default)
    only: str | None = None  # run only at the cells that feed this paper element

    @property
    def group(self) -> str:
        """The phase-1 group: readings of one group share the trained dense parent."""
        return self.warmup + ("-large" if self.large_data else "")


DEFAULT = "lr-restart"
READINGS = {r.name: r for r in (
    Reading("lr-restart", "warm-up", "r scales the learning rate, ramp restarted at the split (default)"),
    Reading("lr-continue", "warm-up", "r scales the learning rate, one ramp over the run: full rate after the split",
            restart=False),
    Reading("penalty-restart", "warm-up", "r scales the penalties, ramp restarted at the split", warmup="penalty"),
    Reading("penalty-continue", "warm-up", "r scales the penalties, one ramp over the run", warmup="penalty",
            restart=False),
    Reading("none", "warm-up", "r is computed and unused (the literal pseudocode)", warmup="none"),
    Reading("carry-optimizer", "optimizer", "Adam's moments carried through the split (default: a fresh Adam)",
            carry=True),
    Reading("long-phase2", "phase-2 length", "3000 epochs after the split instead of 1000", long=True, beyond=True,
            choosable=False, only="Sec. 3.1"),
    Reading("bias-divide", "children's bias", "each child gets b / alpha instead of its parent's b", bias="divide",
            beyond=True, choosable=False),
    Reading("n-40000", "data-set size", "40,000 samples instead of 10,000", large_data=True, choosable=False,
            only="Tables A1/A2"),
)}
LITERAL = {"warm-up": "none", "optimizer": "lr-restart"}  # the most literal reading of each choosable choice
CHOICES = tuple(dict.fromkeys(r.choice for r in READINGS.values()))


@dataclass(frozen=True)
class Cell:
    """One (m, hidden, alpha) point and the paper elements it feeds."""

    m: int
    hidden: int
    alpha: int
    feeds: tuple  # e.g. ("Sec. 3.1", "Figure 3a", "Tables A1/A2")

    @property
    def name(self) -> str:
        return f"m{self.m}-h{self.hidden}-a{self.alpha}"


def make_cells(k: int = DEFAULT_K, quick: bool = False) -> tuple:
    """The study's cells, in work order: the case study, the tables' literals, Figures 3a/3b."""
    if quick:
        spec = [(3 * k, 4, 2, ("Sec. 3.1", "Tables A1/A2")), (3 * k, 6, 2, ("Figure 3a",))]
    else:
        spec = [(32, 8, 2, ("Sec. 3.1", "Figure 3a", "Figure 3b", "Tables A1/A2")),
                (12, 8, 2, ("Tables A1/A2",)), (128, 8, 2, ("Figure 3b", "Tables A1/A2")),
                (32, 8, 4, ("Figure 3a", "Figure 3b", "Tables A1/A2")), (128, 8, 4, ("Figure 3b", "Tables A1/A2"))]
        spec += [(32, h, a, ("Figure 3a",)) for a in (2, 4) for h in (4, 12, 16)]
        spec += [(64, 8, a, ("Figure 3b",)) for a in (2, 4)]
    return tuple(Cell(m, h, a, feeds) for m, h, a, feeds in spec)


@dataclass(frozen=True)
class StudyConfig:
    """Everything the study's runs depend on besides their cell, seed, trial and group."""

    k: int = DEFAULT_K
    trials: int = 5  # per seed
    choose_seeds: tuple = (1, 2, 3)
    report_seeds: tuple = (4, 5, 6)
    dense_epochs: int = 1000
    fpe_epochs: int = 1000
    long_epochs: int = 3000  # phase 2 of the long-phase2 reading
    n_samples: int = 10000
    large_n: int = 40000  # the n-40000 reading
    test_fraction: float = DEFAULT_TEST_FRACTION
    # A.3.1's settings; every reading sets the warm-up and the epochs of each phase itself, so the
    # "lr" stored here is never what trains (it keeps the run keys of the study as they were made)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(warmup="lr"))
    trainer: str = trainers.key_name(trainers.AUTO, "boolean")

    def __post_init__(self):
        check_positive_ints(self, ("k", "trials", "dense_epochs", "fpe_epochs", "long_epochs", "n_samples", "large_n"))
        for name in ("choose_seeds", "report_seeds"):
            seeds = getattr(self, name)
            if not seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
                raise FPEError(f"{name} must be non-empty integers >= 0, got {seeds!r}")
            if len(set(seeds)) != len(seeds):
                raise FPEError(f"{name} repeats a seed: {list(seeds)}")
        if self.train.warmup_epochs is not None:  # the -continue readings rely on W = the dense phase's N
            raise FPEError(f"the study sets each phase's warm-up itself: train.warmup_epochs must be unset, "
                           f"got {self.train.warmup_epochs}")
        both = set(self.choose_seeds) & set(self.report_seeds)
        if both:
            raise FPEError(f"a seed cannot both choose and report: {sorted(both)} is in both sets")
        check_test_split(self.n_samples, self.test_fraction)
        check_test_split(self.large_n, self.test_fraction)
        if not trainers.is_known_key(self.trainer, "boolean"):
            raise FPEError(f"unknown trainer {self.trainer!r}; choose from {', '.join(trainers.key_names('boolean'))}")

    def signature(self) -> dict:
        d = asdict(self)
        d.pop("trials")
        d["choose_seeds"], d["report_seeds"] = list(self.choose_seeds), list(self.report_seeds)
        d["train"] = dict(d["train"], betas=list(d["train"]["betas"]))
        return d


QUICK = dict(trials=2, choose_seeds=(1,), report_seeds=(2,), dense_epochs=4, fpe_epochs=4, long_epochs=8,
             n_samples=400, large_n=800)


def quick_config(**overrides) -> StudyConfig:
    q = dict(QUICK)
    q.update(overrides)
    return StudyConfig(**q)


def seed_role(cfg: StudyConfig, seed: int) -> str:
    return "choose" if seed in cfg.choose_seeds else "report"


def readings_for(role: str) -> tuple:
    """The readings run on a seed of ``role`` ("choose" or "report"), in table order."""
    return tuple(r for r in READINGS.values() if role == "report" or r.choosable)


def groups_for(role: str, cell: Cell) -> dict:
    """``{group: [reading names]}`` of one seed role and cell (a reading with ``only`` at its cells alone)."""
    out = {}
    for r in readings_for(role):
        if r.only is not None and r.only not in cell.feeds:
            continue
        out.setdefault(r.group, []).append(r.name)
    return out


def plan(cfg: StudyConfig, quick: bool = False, log=None) -> list:
    """Every run key in work order: cell by cell; within a cell the choosing seeds first."""
    keys = []
    for cell in make_cells(cfg.k, quick):
        why = feasible(cell.m, cfg.k, cell.alpha)
        if why is not None:
            if log is not None:
                log(f"skipping {cell.name}: {why}")
            continue
        for seed in (*cfg.choose_seeds, *cfg.report_seeds):
            role = seed_role(cfg, seed)
            for t in range(cfg.trials):
                for group, names in groups_for(role, cell).items():
                    keys.append({"m": cell.m, "hidden": cell.hidden, "alpha": cell.alpha, "seed": int(seed),
                                 "role": role, "trial": t, "group": group, "readings": list(names),
                                 **cfg.signature()})
    return keys


# ---------------------------------------------------------------- metrics
def clause_input(m: int, groups) -> np.ndarray:
    """``(F, m)``: the encoded input with clause ``i``'s literals on and every other literal off."""
    X = np.full((len(groups), m), OFF)
    for i, idx in enumerate(groups):
        X[i, np.asarray(idx)] = ON
    return X


def _hidden(model: MLP, X) -> np.ndarray:
    W1, b1 = model.params["W1"], model.params["b1"]
    return np.maximum(np.asarray(X, dtype=np.float64) @ W1.T.astype(np.float64) + b1.astype(np.float64), 0.0)


CAPACITY_READINGS = ("weights", "weights+bias", "clause-activations", "data-activations")
COSINE_READINGS = ("weights", "weights-abs", "weights+bias", "weights+bias-abs", "activations", "activations-abs")


def metric_readings(model: MLP, groups, X_test, y_clauses=None) -> dict:
    """Every definition of Tables A1/A2's metrics tried, for one model.

    Capacity ``sum_i C_i`` with feature vectors ``v_i`` (h,):

    - ``weights``: ``W1 1_{S_i}`` (:func:`fpe_ref.metrics.capacity`, the project's definition);
    - ``weights+bias``: ``W1 1_{S_i} + b1``;
    - ``clause-activations``: ``relu(W1 x_i + b1)`` with ``x_i`` the encoded input whose only
      true literals are clause ``i``'s (3.25 on, 0.25 off: the encoding's means);
    - ``data-activations``: the mean of ``relu(W1 x + b1)`` over the test inputs that satisfy
      clause ``i`` (``y_clauses[:, i]``), the paper's "activations of the model".

    Mean cosine over pairs of neurons, signed and absolute (``-abs``), of the rows of ``W1``
    (``weights``), of ``[W1 | b1]`` (``weights+bias``) and of the neurons' activation vectors
    over the test inputs (``activations``; ReLU outputs are >= 0, so ``activations-abs``
    always equals it: it is recorded, and the report leaves it out).
    """
    W1 = check_weights(model.params["W1"]).astype(np.float64)
    b1 = np.asarray(model.params["b1"], dtype=np.float64)
    V = feature_vectors(W1, groups)
    caps = {"weights": capacity_of(V)[1], "weights+bias": capacity_of(V + b1[:, None])[1],
            "clause-activations": capacity_of(_hidden(model, clause_input(W1.shape[1], groups)).T)[1]}
    H = _hidden(model, X_test)  # (n, h)
    if y_clauses is not None:
        cols = [H[y_clauses[:, i]].mean(axis=0) if y_clauses[:, i].any() else np.zeros(H.shape[1])
                for i in range(len(groups))]
        caps["data-activations"] = capacity_of(np.stack(cols, axis=1))[1]
    Wb = np.concatenate([W1, b1[:, None]], axis=1)
    cos = {"weights": mean_cosine(W1), "weights-abs": mean_cosine(W1, absolute=True),
           "weights+bias": mean_cosine(Wb), "weights+bias-abs": mean_cosine(Wb, absolute=True),
           "activations": mean_cosine(H.T), "activations-abs": mean_cosine(H.T, absolute=True)}
    return {"capacity": caps, "cosine": cos}


def clauses_true(X, groups) -> np.ndarray:
    """``(n, F)`` bool: which clauses each encoded input satisfies (a literal is true above 1.5)."""
    bits = np.asarray(X) > 1.5
    return np.stack([bits[:, np.asarray(idx)].all(axis=1) for idx in groups], axis=1)


def split_analysis(parent: MLP, child: MLP, res, groups, X_test, y_test) -> dict:
    """Why a split model's accuracy moves at the split, before any training (per trial).

    - ``clauses_whole``: clauses whose every literal reaches one child (after pruning), so
      that some child can still compute the clause; ``clauses_whole_parent`` the same for
      the parent (a parent whose weights to a literal were all pruned no longer covers it).
    - ``silent_units`` / ``silent_units_parent``: hidden units never active (``relu = 0``)
      on any test input; ``silent_units_split_mask`` counts only children cut to no inputs.
    - ``logit_shift``: mean over the test set of the split model's output logit minus the
      parent's; ``bias_logit_excess``: the same difference for an all-zero input,
      ``sum_j W2_j relu(b_j)`` of the children minus the parent's: what the copied biases
      alone add (the encoded inputs are never zero, so it is a measure of the biases' share,
      not an exact term of ``logit_shift``).
    - ``positive_rate`` / ``positive_rate_parent`` / ``label_positive_rate``: the share of
      test inputs predicted (or labelled) positive.
    """
    W1c = child.params["W1"].astype(np.float64)
    M1 = child.masks.get("W1", W1c != 0)
    whole = sum(bool(np.any(M1[:, np.asarray(idx)].all(axis=1))) for idx in groups)
    Mp = parent.masks.get("W1", np.ones_like(parent.params["W1"], dtype=bool))
    whole_p = sum(bool(np.any(Mp[:, np.asarray(idx)].all(axis=1))) for idx in groups)
    Hc, Hp = _hidden(child, X_test), _hidden(parent, X_test)
    lc = np.asarray(child.forward(X_test)[0], dtype=np.float64).ravel()
    lp = np.asarray(parent.forward(X_test)[0], dtype=np.float64).ravel()
    W2c, W2p = child.params["W2"].astype(np.float64), parent.params["W2"].astype(np.float64)
    bc, bp = child.params["b1"].astype(np.float64), parent.params["b1"].astype(np.float64)
    return {"clauses_whole": int(whole), "clauses_whole_parent": int(whole_p), "clauses": len(groups),
            "silent_units": int((Hc.max(axis=0) <= 0).sum()), "silent_units_parent": int((Hp.max(axis=0) <= 0).sum()),
            "units": int(Hc.shape[1]), "units_parent": int(Hp.shape[1]),
            "silent_units_split_mask": int((~M1.any(axis=1)).sum()),
            "logit_shift": float(np.mean(lc - lp)),
            "bias_logit_excess": float((W2c @ np.maximum(bc, 0)).sum() - (W2p @ np.maximum(bp, 0)).sum()),
            "positive_rate": float(np.mean(lc > 0)), "positive_rate_parent": float(np.mean(lp > 0)),
            "label_positive_rate": float(np.mean(np.asarray(y_test) > 0.5)),
            "dead_children": len(res.dead_children)}


# ---------------------------------------------------------------- one run
@functools.lru_cache(maxsize=4)
def _data(m, k, seed, n_samples, test_fraction):
    tr, te, groups = make_data(CaseStudyConfig(m=m, k=k, seed=seed, n_samples=n_samples,
                                               test_fraction=test_fraction))
    return tr, te, groups, clauses_true(te.X, groups)


def phase_configs(key: dict, reading: Reading) -> tuple:
    """``(phase-1 TrainConfig, phase-2 TrainConfig)`` of ``reading`` under ``key``'s settings."""
    tr = dict(key["train"])
    tr["betas"] = tuple(tr["betas"])
    base = replace(TrainConfig(**tr), warmup=reading.warmup)
    p1 = replace(base, epochs=key["dense_epochs"])
    p2 = replace(base, epochs=key["long_epochs"] if reading.long else key["fpe_epochs"])
    if not reading.restart:  # r = min(1, (N1 + e) / N1) = 1 throughout phase 2 (module docstring)
        p2 = replace(p2, warmup="none")
    return p1, p2


def _state(model, te, groups) -> dict:
    return {"test_acc": model.accuracy(te.X, te.y), **{k: v for k, v in interference(model.params["W1"], groups).items()
                                                        if k != "capacity_per_feature"}}


def choices_run(key: dict) -> dict:
    """One unit of the study: a dense parent and every reading of its group (module docstring)."""
    names = list(key["readings"])
    readings = [READINGS[n] for n in names]
    if len({r.group for r in readings}) != 1:
        raise FPEError(f"the readings {names} do not share a phase 1")
    why = feasible(key["m"], key["k"], key["alpha"])
    if why is not None:
        raise FPEError(why)
    trainer = trainers.from_key(key["trainer"], "boolean")
    seed, t, alpha = key["seed"], key["trial"], key["alpha"]
    n = key["large_n"] if readings[0].large_data else key["n_samples"]
    tr, te, groups, yc = _data(key["m"], key["k"], seed, n, key["test_fraction"])
    chance = chance_accuracy(tr.y)
    p1, _ = phase_configs(key, readings[0])
    parent = MLP.init([key["m"], key["hidden"], 1], stream(seed, "init", t))
    (opt1, hist1), = trainer.train_many([parent], tr.X, tr.y, p1, [stream(seed, "shuffle", t, "dense-phase1")],
                                        X_test=te.X, y_test=te.y)
    out = {"parent": {**_state(parent, te, groups), "metrics": metric_readings(parent, groups, te.X, yc),
                      "history": _slim_history(hist1.to_dict())}, "readings": {}}
    warnings = [f"parent: {w}" for w in [divergence(hist1, chance)] if w]
    dense_of = {}  # phase-2 treatment of the dense model -> its result, shared by readings that agree on it
    for r in readings:
        _, p2 = phase_configs(key, r)
        jobs, rec = [], {"models": {}, "split_analysis": {}}
        dense_id = (p2, r.carry)
        for v in VARIANTS:
            if v == "dense":
                if dense_id in dense_of:
                    continue
                model, opt2 = parent.copy(), copy.deepcopy(opt1) if r.carry else None
            else:
                report = expand(parent, alpha, v, stream(seed, "split", t, v), groups=groups, bias=r.bias)
                model = report.model
                opt2 = carry_optimizer(opt1, report, parent) if r.carry else None
                rec["split_analysis"][v] = split_analysis(parent, model, report, groups, te.X, te.y)
            rec["models"][v] = {"split": _state(model, te, groups)}
            jobs.append((v, model, opt2))
        trained = trainer.train_many([j[1] for j in jobs], tr.X, tr.y, p2, [stream(seed, "shuffle", t, j[0]) for j in jobs],
                                     X_test=te.X, y_test=te.y, optimizers=[j[2] for j in jobs])
        for (v, model, _), (_, hist2) in zip(jobs, trained):
            w = divergence(hist2, chance)
            if w:
                warnings.append(f"{r.name} {v}: {w}")
            rec["models"][v].update({"after": _state(model, te, groups),
                                     "metrics": metric_readings(model, groups, te.X, yc),
                                     "history": _slim_history(hist2.to_dict())})
        if dense_id in dense_of:  # the same dense training as an earlier reading's: its result, named
            first, dense = dense_of[dense_id]
            rec["models"]["dense"] = dict(dense, shared_with=first)
        else:
            dense_of[dense_id] = (r.name, rec["models"]["dense"])
        rec["models"] = {v: rec["models"][v] for v in VARIANTS}
        out["readings"][r.name] = rec
    if warnings:
        out["warnings"] = warnings
    return out


def open_store(out_dir, cfg: StudyConfig, quick: bool):
    meta = {"kind": KIND, "quick": bool(quick), "config": asdict(cfg),
            "readings": {r.name: asdict(r) for r in READINGS.values()},
            "cells": [asdict(c) | {"name": c.name} for c in make_cells(cfg.k, quick)]}
    return open_sweep_dir(out_dir, meta, cfg.signature(), same=("kind", "quick"))


def run_study(cfg: StudyConfig, out_dir, *, quick=False, executor=None, progress=None, log=None, run_fn=None):
    """Plan, open the store, run what is missing (``fpe study choices``)."""
    keys = plan(cfg, quick, log)
    with open_output(out_dir, {"kind": KIND, "quick": bool(quick), **cfg.signature()}):
        store = open_store(out_dir, cfg, quick)
        return run_sweep(keys, run_fn or choices_run, store, kind=KIND, executor=executor, progress=progress, log=log)
