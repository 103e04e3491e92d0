"""The Boolean sweeps of Sec. 3.2: Figure 3a/b/c, Figure 4 and Tables A1/A2 as grids of runs.

Paper: Sec. 3.2 ("We repeat the previous workflow while varying the number of neurons and
clauses ... expansion factor alpha = {2, 4}"), Figures 3 and 4, A.6 Tables A1/A2, A.3.1.

One run = one grid point ``(m, hidden)`` x one ``alpha`` x one trial, computed by
``fpe_ref.experiments.case_study.run_trial`` (Sec. 3.1's workflow: dense parent, clause and random
split, all three trained on). ``boolean_run`` is the *only* place that trains; the key's
``trainer`` names the implementation (:mod:`fpe_ref.experiments.trainers`), so the runs of
each trainer, and of each version of its numerics, get their own keys.

The grids (the paper gives ranges, not steps; the steps are our choice)
-----------------------------------------------------------------------
``tables``         Tables A1/A2: 8 neurons; 12, 24, 32, 40, 60, 80, 100, 128 literals
                   (3 ... 32 clauses of k = 4); alpha = 2. The paper does not say which alpha
                   the tables use; with alpha = 4 a clause split of 12 literals (3 clauses)
                   would leave a child without inputs, so alpha = 2 is the only value for
                   which the table's first row exists.
``fig3a``          Figure 3a / 4a / 4c: 8 clauses (m = 32); hidden 4, 6, ..., 16; alpha 2 and 4.
``fig3b``          Figure 3b / 4b: 8 neurons; clauses 4, 8, ..., 32 (m = 16 ... 128); alpha 2 and 4.
``tables-alpha4``  Tables A1/A2 again with alpha = 4 (12 literals skipped: 3 clauses < alpha).
``fig3c``          Figure 3c heat maps: hidden {4, 8, 12, 16} x clauses {4, 8, 16, 24, 32};
                   alpha 2 and 4.

``DEFAULT_ORDER`` runs them in that order, so the most informative results finish first;
within a grid the runs go trial by trial (every cell gets trial 0, then trial 1, ...), so a
partially finished grid covers all its cells. Grids overlap (e.g. m = 32, h = 8 is in four
of them); a run is identified by its full key, so it is computed once.

Pairing. Streams depend on ``seed`` and the trial only (``stream(seed, "init", t)`` etc.),
so for a given ``(m, hidden, trial)`` the dense parent and the dense baseline are identical
at alpha 2 and 4: the alpha comparison is paired. We still train the parent once per alpha
(each run is exactly one ``run_trial``), which costs 2 of every 8 phase-units in a grid
point with both alphas, in exchange for not re-implementing ``run_trial``.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

from fpe_ref.experiments.case_study import CaseStudyConfig, make_data, run_trial
from fpe_ref.data.dnf import DEFAULT_K, DEFAULT_N_SAMPLES, DEFAULT_TEST_FRACTION, check_test_split
from fpe_ref.errors import FPEError, check_positive_ints
from fpe_ref.experiments import trainers
from fpe_ref.experiments.outputs import open_output
from fpe_ref.experiments.runs import ARRAYS_FIELD, RunStore, open_sweep_dir, run_sweep
from fpe_ref.metrics import mean_cosine
from fpe_ref.train import TrainConfig

KIND = "boolean"
TRAINER = trainers.key_name(trainers.AUTO, KIND)  # the default run-key trainer: "numba-v2"

# The paper's grids (steps chosen by us where the paper only gives a range).
TABLE_LITERALS = (12, 24, 32, 40, 60, 80, 100, 128)
FIG3A_HIDDEN = (4, 6, 8, 10, 12, 14, 16)
FIG3B_CLAUSES = (4, 8, 12, 16, 20, 24, 28, 32)
FIG3C_HIDDEN = (4, 8, 12, 16)
FIG3C_CLAUSES = (4, 8, 16, 24, 32)
ALPHAS = (2, 4)

DEFAULT_ORDER = ("tables", "fig3a", "fig3b", "tables-alpha4", "fig3c")


@dataclass(frozen=True)
class Grid:
    """One named grid: its points ``(m, hidden, alpha)`` and the paper element it reproduces."""

    name: str
    paper: str  # the figure/table it feeds
    points: tuple  # ((m, hidden, alpha), ...)
    axis: str  # "literals", "hidden", "clauses" or "hidden x clauses": what varies


def make_grids(k: int = DEFAULT_K, quick: bool = False) -> dict:
    """``{name: Grid}``: the paper's grids, or tiny ones with the same structure (``quick``)."""
    if quick:
        lits, hid3a, cl3b, hid3c, cl3c, h0, c0 = (12, 16), (4, 6), (3, 4), (4, 6), (3, 4), 4, 4
    else:
        lits, hid3a, cl3b, hid3c, cl3c, h0, c0 = (TABLE_LITERALS, FIG3A_HIDDEN, FIG3B_CLAUSES, FIG3C_HIDDEN,
                                                  FIG3C_CLAUSES, 8, 8)
    grids = [
        Grid("tables", "Tables A1/A2 (alpha 2)", tuple((m, h0, 2) for m in lits), "literals"),
        Grid("fig3a", "Figures 3a, 4a, 4c", tuple((c0 * k, h, a) for a in ALPHAS for h in hid3a), "hidden"),
        Grid("fig3b", "Figures 3b, 4b", tuple((c * k, h0, a) for a in ALPHAS for c in cl3b), "clauses"),
        Grid("tables-alpha4", "Tables A1/A2 (alpha 4)",
             tuple((m, h0, 4) for m in lits if m // k >= 4), "literals"),
        Grid("fig3c", "Figure 3c", tuple((c * k, h, a) for a in ALPHAS for h in hid3c for c in cl3c),
             "hidden x clauses"),
    ]
    return {g.name: g for g in grids}


@dataclass(frozen=True)
class SweepConfig:
    """Everything a Boolean run depends on except its grid point, alpha and trial."""

    k: int = DEFAULT_K  # literals per clause
    trials: int = 5  # T (Figures 3/4, Tables A1/A2: "five trials")
    dense_epochs: int = 1000  # phase 1 (Sec. 3.1)
    fpe_epochs: int = 1000  # phase 2, all three models (Sec. 3.1)
    n_samples: int = DEFAULT_N_SAMPLES  # train + test rows (not stated by the paper)
    test_fraction: float = DEFAULT_TEST_FRACTION  # (not stated by the paper)
    seed: int = 0  # the one seed all streams derive from
    carry_optimizer: bool = False  # fresh Adam after the split (Alg. A3 instantiates one per model)
    out_scale: str = "duplicate"  # Alg. A1
    train: TrainConfig = field(default_factory=TrainConfig)  # A.3.1; epochs set per phase
    trainer: str = TRAINER  # which implementation trains: its run-key name (trainers.key_names("boolean"))

    def __post_init__(self):
        if not trainers.is_known_key(self.trainer, KIND):
            raise FPEError(f"unknown trainer {self.trainer!r}; choose from {', '.join(trainers.key_names(KIND))}")
        check_positive_ints(self, ("k", "trials", "dense_epochs", "fpe_epochs", "n_samples"))
        check_positive_ints(self, ("seed",), minimum=0)
        check_test_split(self.n_samples, self.test_fraction)  # before any run (and before sweep.json)
        if self.trainer in trainers.key_names(KIND):  # legacy names are refused by boolean_run
            # every run's models are [m, h, 1] without LayerNorm, so one stand-in checks them all
            trainers.from_key(self.trainer, KIND).check_sizes([2 * self.k, 2, 1], self.train,
                                                              what="the sweep's [m, hidden, 1] MLPs")

    def signature(self) -> dict:
        """The config minus ``trials`` (more trials extend a sweep; anything else makes a new one)."""
        d = asdict(self)
        d.pop("trials")
        return d


QUICK = dict(trials=2, dense_epochs=4, fpe_epochs=4, n_samples=400)  # --quick: smoke tests in seconds


def key_for(cfg: SweepConfig, m: int, hidden: int, alpha: int, trial: int) -> dict:
    """The run's key: its grid point, alpha, trial and every setting it depends on."""
    sig = cfg.signature()
    sig["train"] = dict(sig["train"], betas=list(sig["train"]["betas"]))
    return {"m": int(m), "hidden": int(hidden), "alpha": int(alpha), "trial": int(trial), **sig}


def case_config(key: dict) -> CaseStudyConfig:
    """The ``CaseStudyConfig`` of one run (``trials`` is 1: the run is the key's trial)."""
    tr = dict(key["train"])
    tr["betas"] = tuple(tr["betas"])
    return CaseStudyConfig(m=key["m"], k=key["k"], hidden=key["hidden"], alpha=key["alpha"],
                           dense_epochs=key["dense_epochs"], fpe_epochs=key["fpe_epochs"], trials=1,
                           n_samples=key["n_samples"], test_fraction=key["test_fraction"], seed=key["seed"],
                           carry_optimizer=key["carry_optimizer"], out_scale=key["out_scale"],
                           train=TrainConfig(**tr))


def feasible(m: int, k: int, alpha: int) -> str | None:
    """``None`` if the point can run, else why not (a clause split needs C = m/k >= alpha)."""
    if m % k:
        return f"m={m} is not divisible by k={k}"
    if m // k < alpha:
        return f"{m // k} clauses < alpha={alpha}: a clause split would leave a child without inputs"
    return None


def plan(cfg: SweepConfig, grid_names=DEFAULT_ORDER, quick: bool = False, log=None) -> list:
    """The keys of the chosen grids in work order (grid by grid, trial by trial); infeasible points skipped."""
    grids = make_grids(cfg.k, quick)
    unknown = [g for g in grid_names if g not in grids]
    if unknown:
        raise FPEError(f"unknown grid {unknown[0]!r}; choose from {', '.join(grids)}")
    keys = []
    for name in grid_names:
        g = grids[name]
        for t in range(cfg.trials):
            for m, h, a in g.points:
                why = feasible(m, cfg.k, a)
                if why is not None:
                    if t == 0 and log is not None:
                        log(f"{name}: skipping m={m} h={h} alpha={a}: {why}")
                    continue
                keys.append(key_for(cfg, m, h, a, t))
    return keys


@functools.lru_cache(maxsize=4)
def _data(m, k, seed, n_samples, test_fraction):
    """The data set of a run (shared by all trials, hidden sizes and alphas of one m); cached per worker."""
    cfg = CaseStudyConfig(m=m, k=k, seed=seed, n_samples=n_samples, test_fraction=test_fraction)
    return make_data(cfg)


def _slim_history(h: dict, n_points: int = 21) -> dict:
    """Every ``len/n_points``-th evaluation (always the last): test accuracy and training loss."""
    ep, acc = h.get("test_epoch", []), h.get("test_acc", [])
    if not ep:
        return {"epoch": [], "test_acc": [], "loss": []}
    step = max(1, -(-len(ep) // (n_points - 1)))
    idx = sorted(set(range(0, len(ep), step)) | {len(ep) - 1})
    loss = h.get("loss", [])
    return {"epoch": [ep[i] for i in idx], "test_acc": [acc[i] for i in idx],
            "loss": [loss[ep[i] - 1] for i in idx if ep[i] - 1 < len(loss)]}


def slim_record(rec: dict) -> dict:
    """``run_trial``'s record without the per-epoch histories (subsampled to 21 points)."""
    out = {"parent": {k: v for k, v in rec["parent"].items() if k != "history"}, "models": {}}
    if rec.get("warnings"):
        out["warnings"] = list(rec["warnings"])
    out["parent"]["history"] = _slim_history(rec["parent"]["history"])
    for v, r in rec["models"].items():
        out["models"][v] = {k: x for k, x in r.items() if k != "history"}
        out["models"][v]["history"] = _slim_history(r["history"])
    return out


def boolean_run(key: dict) -> dict:
    """One run: ``case_study.run_trial`` at the key's point, alpha and trial; the slim record.

    This is the per-run function the sweep runner ships to the workers, and the one place
    where training happens. The key's ``trainer`` is a run-key name of
    :mod:`fpe_ref.experiments.trainers` (``trainers.from_key``; a legacy name is refused):
    a new trainer, or a change of the numerics of an existing one, gets a new name, so that
    a store never mixes two realisations under one key. Besides ``run_trial``'s metrics it
    records two more readings of the mean cosine (:func:`extra_cosines`, after training) and returns the four
    trained models' parameters and masks (``parent``, ``dense``, ``clause``, ``random``),
    which the runner saves to ``arrays/<run_id>.npz`` so that any metric can be recomputed.
    """
    trainer = trainers.from_key(key.get("trainer"), KIND)
    why = feasible(key["m"], key["k"], key["alpha"])
    if why is not None:
        raise FPEError(why)
    cfg = case_config(key)
    tr, te, groups = _data(cfg.m, cfg.k, cfg.seed, cfg.n_samples, cfg.test_fraction)
    rec, models, parent = run_trial(cfg, key["trial"], tr, te, groups, trainer=trainer.name)
    out = slim_record(rec)
    out["parent"].update(extra_cosines(parent))
    arrays = _arrays("parent", parent)
    for v, model in models.items():
        out["models"][v]["after"].update(extra_cosines(model))
        arrays.update(_arrays(v, model))
    out[ARRAYS_FIELD] = arrays
    return out


def extra_cosines(model) -> dict:
    """The mean cosines a record holds besides ``run_trial``'s signed ``cosine`` of ``W1``.

    ``cosine_abs``: the unsigned mean cosine of the rows of ``W1``; ``cosine_bias_abs``: the
    unsigned mean cosine of the rows of ``[W1 | b1]``, the reading of the paper's Table A2 that
    ``fpe study choices`` chose (:func:`fpe_ref.metrics.mean_cosine`).
    """
    W1, b1 = model.params["W1"], model.params["b1"]
    return {"cosine_abs": mean_cosine(W1, absolute=True), "cosine_bias_abs": mean_cosine(W1, absolute=True, b1=b1)}


def _arrays(prefix, model) -> dict:
    """A model's parameters and masks as ``{"<prefix>/<name>": array}`` (saved beside runs.jsonl)."""
    out = {f"{prefix}/{k}": v for k, v in model.params.items()}
    out.update({f"{prefix}/mask:{k}": v for k, v in model.masks.items()})
    return out


def quick_config(**overrides) -> SweepConfig:
    """The ``--quick`` config: tiny epochs and data, 2 trials, warm-up over the tiny phase."""
    q = dict(QUICK)
    q.update(overrides)
    tr = q.pop("train", TrainConfig(warmup_epochs=QUICK["dense_epochs"]))
    return SweepConfig(train=tr, **q)


def open_store(out_dir, cfg: SweepConfig, quick: bool) -> RunStore:
    """The sweep directory's store; writes ``sweep.json`` (the resolved config) or checks it.

    One directory holds one config (``cfg.signature()``; only ``trials`` may change), so that
    ``fpe report`` never mixes runs of different settings.
    """
    meta = {"kind": KIND, "quick": bool(quick), "config": asdict(cfg),
            "grids": {g.name: {"paper": g.paper, "axis": g.axis, "points": [list(p) for p in g.points]}
                      for g in make_grids(cfg.k, quick).values()}}
    return open_sweep_dir(out_dir, meta, cfg.signature(), same=("kind", "quick"))


def run_boolean_sweep(cfg: SweepConfig, out_dir, grid_names=DEFAULT_ORDER, *, quick=False, executor=None,
                      window=None, progress=None, lookup=(), log=None, run_fn=None):
    """Plan the grids, open the store and run what is missing (``fpe sweep boolean``).

    The folder is locked while the sweep writes, and records its provenance
    (:func:`fpe_ref.experiments.outputs.open_output`). ``lookup``: stores whose finished runs
    with the same key are copied instead of run (``--reuse-from``; each record validated);
    ``run_fn`` (default ``boolean_run``) exists for tests that simulate a crash.
    """
    keys = plan(cfg, grid_names, quick, log)
    with open_output(out_dir, {"kind": KIND, "quick": bool(quick), **cfg.signature()}):
        store = open_store(out_dir, cfg, quick)
        return run_sweep(keys, run_fn or boolean_run, store, kind=KIND, executor=executor, window=window,
                         progress=progress, lookup=lookup, log=log)
