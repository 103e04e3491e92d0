"""The Section 3.1 case study: dense vs clause-split vs random-split FPE on an 8-clause DNF.

Paper: Sec. 3.1, Figures 2 and A1. Per trial ``t``:

1. a dense ``[m, h, 1]`` MLP trains ``dense_epochs`` epochs (phase 1);
2. the trained parent is expanded by ``alpha`` with the clause split and with the random
   split (Alg. A1);
3. the three models (dense, clause, random) each train ``fpe_epochs`` more epochs
   (phase 2). The dense baseline therefore trains ``dense_epochs + fpe_epochs`` epochs in
   total, and all three get the identical phase-2 treatment (a new optimizer, unless
   ``carry_optimizer``; under ``warmup="lr"`` or ``"penalty"`` the ramp restarts), so the
   split is the only difference.

Metrics are taken at three points: the dense parent after phase 1 ("before"), each model at
the start of phase 2 ("split", after the arithmetic of the split and before any training),
and after phase 2 ("after"), so the trained effect is separated from the arithmetic one.

Randomness: one ``seed`` gives independent streams (``fpe_ref.rng.stream``) for the data,
each trial's initialisation, each phase's shuffling and each split. Every finished trial is
appended to ``trials.jsonl`` (and its models saved) at once; a rerun with the same config
skips finished trials, so an interrupted run loses nothing finished.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from fpe_ref.data.dnf import DEFAULT_N_SAMPLES, DEFAULT_TEST_FRACTION, check_test_split, generate_dnf, train_test_split
from fpe_ref.errors import FPEError, check_int, check_positive_ints
from fpe_ref.expand import carry_optimizer, expand
from fpe_ref.metrics import interference
from fpe_ref.mlp import MLP
from fpe_ref.rng import stream
from fpe_ref.splits import check_alpha
from fpe_ref.experiments import trainers
from fpe_ref.experiments.outputs import config_diff, open_output, write_json_atomic
from fpe_ref.experiments.runs import RunStore, content_problem, record_digest
from fpe_ref.train import TrainConfig, TrialSummary, chance_accuracy, divergence, warmup_warning

VARIANTS = ("dense", "clause", "random")


@dataclass(frozen=True)
class CaseStudyConfig:
    """Sec. 3.1 defaults: 8 clauses x 4 literals, 8 neurons, alpha 2, 1000 + 1000 epochs, 5 trials."""

    m: int = 32  # literals (C = m / k clauses)
    k: int = 4  # literals per clause
    hidden: int = 8  # h, neurons of the dense parent
    alpha: int = 2  # expansion factor
    dense_epochs: int = 1000  # phase 1 (dense pre-training)
    fpe_epochs: int = 1000  # phase 2 (after the split; the dense baseline continues)
    trials: int = 5  # T
    n_samples: int = DEFAULT_N_SAMPLES  # total data set size (not stated by the paper)
    test_fraction: float = DEFAULT_TEST_FRACTION  # test share (not stated by the paper)
    seed: int = 0  # the one seed all streams derive from
    carry_optimizer: bool = False  # carry Adam's moments through the split child by child
    out_scale: str = "duplicate"  # "duplicate" (paper) or "divide" (Net2Net-style ablation)
    train: TrainConfig = field(default_factory=TrainConfig)  # A.3.1; train.epochs is unused (set per phase)

    def __post_init__(self):
        check_positive_ints(self, ("m", "k", "hidden", "alpha", "dense_epochs", "fpe_epochs", "trials", "n_samples"))
        check_positive_ints(self, ("seed",), minimum=0)
        check_test_split(self.n_samples, self.test_fraction)

    def to_dict(self) -> dict:
        return asdict(self)


def make_data(cfg: CaseStudyConfig):
    data = generate_dnf(cfg.n_samples, cfg.m, cfg.k, stream(cfg.seed, "data"))
    tr, te = train_test_split(data, cfg.test_fraction, stream(cfg.seed, "data-split"))
    return tr, te, [np.asarray(c) for c in data.clauses]


def run_trial(cfg: CaseStudyConfig, t: int, tr, te, groups, on_epoch=None, trainer: str = "auto"):
    """One trial: returns (record dict, {variant: trained MLP}, dense parent after phase 1).

    ``trainer`` is a trainer of :mod:`fpe_ref.experiments.trainers` (``"numpy"``, ``"numba"``
    or ``"auto"``, which is numba here): ``"numba"`` trains the three phase-2 models side by side; the result
    equals the numpy reference to rounding (~1e-11 in float64).
    """
    return run_trials(cfg, [t], tr, te, groups, on_epoch, trainer)[0]


def run_trials(cfg: CaseStudyConfig, ts, tr, te, groups, on_epoch=None, trainer: str = "auto"):
    """The trials ``ts`` together: every parent's phase 1 in one batch, then every phase-2
    model (``len(ts)`` x dense / clause / random) in one batch.

    Each model keeps its own seeds (streams ``init``/``shuffle``/``split`` keyed by trial and
    variant), so a trial's record does not depend on which other trials ran beside it:
    ``run_trials(cfg, [0, 1, 2], ...)`` gives the records of ``run_trial`` for 0, 1 and 2.
    With ``carry_optimizer`` every split model starts from its parent's phase-1 Adam state
    (taken before the dense model continues that state in phase 2). ``trainer`` names the
    trainer (:func:`fpe_ref.experiments.trainers.get`); the record's ``"backend"`` field holds
    its resolved name (the field's name is part of the stored records). Returns a list of ``(record, {variant: model}, parent)`` in the order of ``ts``.
    """
    trainer = trainers.get(trainer, "case_study")
    h = cfg.hidden
    tcfg1 = replace(cfg.train, epochs=cfg.dense_epochs)
    tcfg2 = replace(cfg.train, epochs=cfg.fpe_epochs)
    ts = list(ts)
    parents = [MLP.init([cfg.m, h, 1], stream(cfg.seed, "init", t)) for t in ts]
    phase1 = trainer.train_many(parents, tr.X, tr.y, tcfg1,
                                [stream(cfg.seed, "shuffle", t, "dense-phase1") for t in ts],
                                X_test=te.X, y_test=te.y, on_epoch=on_epoch)
    chance = chance_accuracy(tr.y)
    out, jobs = [], []  # jobs: (trial index, variant, model, optimizer, rng)
    for k, (t, parent, (opt, hist1)) in enumerate(zip(ts, parents, phase1)):
        rec = {"trial": t, "parent": {"test_acc": parent.accuracy(te.X, te.y), **interference(parent.params["W1"], groups),
                                      "ledger": asdict(parent.ledger()), "history": hist1.to_dict()},
               "models": {}, "backend": trainer.name}
        _warn(rec, "parent (phase 1)", warmup_warning(tcfg1), divergence(hist1, chance))
        out.append((rec, {}, parent))
        carried = {}
        for v in VARIANTS:
            if v == "dense":
                continue
            res = expand(parent, cfg.alpha, v, stream(cfg.seed, "split", t, v), groups=groups, out_scale=cfg.out_scale)
            carried[v] = (res.model, res, carry_optimizer(opt, res, parent) if cfg.carry_optimizer else None)
        for v in VARIANTS:
            # the dense model simply continues (its optimizer too, with carry_optimizer)
            model, report, opt2 = (parent.copy(), None, opt if cfg.carry_optimizer else None) if v == "dense" else carried[v]
            rec["models"][v] = {"split": {"test_acc": model.accuracy(te.X, te.y), **interference(model.params["W1"], groups)}}
            jobs.append((k, v, model, report, opt2, stream(cfg.seed, "shuffle", t, v)))
    phase2 = trainer.train_many([j[2] for j in jobs], tr.X, tr.y, tcfg2, [j[5] for j in jobs], X_test=te.X,
                                y_test=te.y, optimizers=[j[4] for j in jobs], on_epoch=on_epoch)
    for (k, v, model, report, _, _), (_, hist2) in zip(jobs, phase2):
        rec, models, _ = out[k]
        _warn(rec, f"{v} (phase 2)", warmup_warning(tcfg2), divergence(hist2, chance))
        rec["models"][v].update({
            "after": {"test_acc": model.accuracy(te.X, te.y), **interference(model.params["W1"], groups)},
            "ledger": asdict(model.ledger()), "history": hist2.to_dict(),
            "expand_report": report.report() if report is not None else None,
            "dead_children": report.dead_children.tolist() if report is not None else [],
        })
        models[v] = model
    return out


def _warn(rec: dict, who: str, *warnings) -> None:
    """Add ``who: warning`` to ``rec["warnings"]`` for each warning that is not None (a record
    without warnings has no such field, so the records of sound runs are as they always were)."""
    for w in warnings:
        if w:
            rec.setdefault("warnings", []).append(f"{who}: {w}")


def _config_key(cfg: CaseStudyConfig) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def folder_config(cfg: CaseStudyConfig, trainer: str = "auto") -> dict:
    """What one case-study folder is made with: the config and the resolved trainer."""
    return {**json.loads(json.dumps(cfg.to_dict())), "trainer": trainers.get(trainer, "case_study").name}


# the fields summarize() and the figures read, per model ("parent" is the dense parent after phase 1)
_NUMBERS = ("test_acc", "capacity", "cosine")


def record_problem(rec) -> str | None:
    """Why ``rec`` is not a valid case-study trial record, or None.

    It must hold the trial, its config, every number the summary reads (test accuracy,
    capacity, cosine of the parent and of each model at the split and after training, the
    non-zero counts), accuracies in [0, 1], and, where it has one, a ``digest`` equal to
    :func:`fpe_ref.experiments.runs.record_digest` (records written before digests existed
    have none).
    """
    if not isinstance(rec, dict):
        return f"a line holds {type(rec).__name__}, not a trial record"
    try:
        check_int("trial", rec.get("trial"), 0)
        if not isinstance(json.loads(rec["config_key"]), dict):
            return "its config_key is not an object"
    except (KeyError, TypeError, ValueError, FPEError) as exc:
        return f"no trial number or config ({exc})"
    places = [("parent", rec.get("parent"))]
    models = rec.get("models")
    if not isinstance(models, dict):
        return "field 'models' is missing or not an object"
    for v in VARIANTS:
        m = models.get(v)
        if not isinstance(m, dict):
            return f"field models.{v} is missing"
        places += [(f"models.{v}.split", m.get("split")), (f"models.{v}.after", m.get("after"))]
        if not isinstance(m.get("ledger"), dict) or not isinstance(m["ledger"].get("weights"), int):
            return f"field models.{v}.ledger.weights is missing or not an integer"
    for where, part in places:
        for name in _NUMBERS:
            x = part.get(name) if isinstance(part, dict) else None
            if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x:
                return f"field {where}.{name} is missing or not a number ({x!r})"
    return content_problem(rec)


def _stored_config(rec: dict, path: str) -> dict:
    """The folder config a stored trial record was made with (its ``config_key`` and ``backend``)."""
    problem = record_problem(rec)
    if problem:
        raise FPEError(f"{path}: trial {rec.get('trial', '?') if isinstance(rec, dict) else '?'}: {problem}; "
                       "delete that line to run the trial again")
    config = json.loads(rec["config_key"])
    return {**config, "trainer": rec.get("backend"), "_trial": rec["trial"]}


def _stored(out_dir, cfg, trainer):
    """``[(trial, record, differing options)]`` of ``out_dir/trials.jsonl`` against ``cfg`` and ``trainer``."""
    want = folder_config(cfg, trainer)
    want.pop("trials")
    path = os.path.join(out_dir, "trials.jsonl")
    out = []
    for rec in RunStore(path).lines():
        have = _stored_config(rec, path)
        trial = have.pop("_trial")
        have.pop("trials", None)
        out.append((trial, rec, config_diff(have, want)))
    return out


def other_options(out_dir, cfg, trainer: str = "auto") -> list:
    """The options (``"seed: 0 -> 7"``) in which trials stored in ``out_dir`` differ from ``cfg``; [] if none."""
    return next((diff for _, _, diff in _stored(out_dir, cfg, trainer) if diff), [])


def load_finished(out_dir, cfg, trainer: str = "auto"):
    """Finished trial records of ``out_dir`` (resume), ``{trial: record}`` for the trials of ``cfg``.

    Every record must have been made with ``cfg`` and ``trainer`` (the number of trials aside:
    trial ``t``'s record does not depend on how many trials there are); otherwise the folder
    is refused with the options that differ, so that one folder never mixes two configurations.
    Cut lines are skipped (``RunStore.lines``).
    """
    diff = other_options(out_dir, cfg, trainer)
    if diff:
        raise FPEError(f"{out_dir} holds case-study trials made with other options ({'; '.join(diff)}); "
                       "rerun with those options to resume it, or choose another --out")
    done = {}
    for trial, rec, _ in _stored(out_dir, cfg, trainer):
        if trial < cfg.trials:
            done.setdefault(trial, rec)
    return done


def append_record(out_dir, rec):
    """Append one JSON line (``RunStore.append``: locked, fsync-ed, a cut last line terminated first)."""
    RunStore(os.path.join(out_dir, "trials.jsonl")).append(rec)


def summarize(cfg: CaseStudyConfig, records: list) -> dict:
    """The summary.json content: per model acc mean/std/best, metrics, counts, and the config."""
    records = sorted(records, key=lambda r: r["trial"])
    out = {"config": cfg.to_dict(), "n_trials": len(records),
           "selection_note": "acc_best is Alg. A3's best-of-T, selected on the TEST set (optimistic); "
                             "acc_mean/acc_std (ddof=1) are over all trials",
           "parent": {"acc_mean": float(np.mean([r["parent"]["test_acc"] for r in records])),
                      "capacity": float(np.mean([r["parent"]["capacity"] for r in records])),
                      "cosine": float(np.mean([r["parent"]["cosine"] for r in records]))},
           "models": {}}
    for v in VARIANTS:
        accs = [r["models"][v]["after"]["test_acc"] for r in records]
        s = TrialSummary(accs)
        led = records[0]["models"][v]["ledger"]
        out["models"][v] = {
            "acc_mean": s.mean, "acc_std": s.std, "acc_best": s.best, "best_trial": records[s.best_index]["trial"],
            "accs": accs,
            "capacity": float(np.mean([r["models"][v]["after"]["capacity"] for r in records])),
            "capacity_std": float(np.std([r["models"][v]["after"]["capacity"] for r in records], ddof=1)) if len(records) > 1 else 0.0,
            "cosine": float(np.mean([r["models"][v]["after"]["cosine"] for r in records])),
            "cosine_std": float(np.std([r["models"][v]["after"]["cosine"] for r in records], ddof=1)) if len(records) > 1 else 0.0,
            "capacity_at_split": float(np.mean([r["models"][v]["split"]["capacity"] for r in records])),
            "cosine_at_split": float(np.mean([r["models"][v]["split"]["cosine"] for r in records])),
            "nonzero_weights": int(led["weights"]), "biases": int(led["biases"]),
            "ledger": led,
        }
    return out


def _trial_job(cfg: CaseStudyConfig, t: int, trainer: str):
    """One trial in a worker process (module level, so that it pickles): ``run_trials(cfg, [t])``."""
    tr, te, groups = make_data(cfg)
    return run_trials(cfg, [t], tr, te, groups, None, trainer)[0]


def _trials_in_workers(cfg, todo, trainer, executor):
    """``(record, models, parent)`` of each trial of ``todo`` as its worker finishes it."""
    import concurrent.futures as cf

    futures = [executor.submit(_trial_job, cfg, t, trainer) for t in todo]
    try:
        for fut in cf.as_completed(futures):
            yield fut.result()
    finally:  # a failure, or the caller stopping: trials not yet started never start
        for fut in futures:
            fut.cancel()


def run_case_study(cfg: CaseStudyConfig, out_dir, on_epoch=None, log=print, trainer: str = "auto",
                   on_trial=None, executor=None):
    """Run (or resume) every trial, write trials.jsonl, models/ and summary.json; return the summary.

    Trials run one after the other, and each is stored the moment it finishes: its models are
    saved, then its line is appended to ``trials.jsonl``. A kill loses at most the trial in
    progress; the same call resumes with the trials not yet recorded. (A trial's record is the
    same whether it trains alone or beside others: :func:`run_trials`.) The folder is locked
    while the call writes, and a folder made with other options is refused
    (:mod:`fpe_ref.experiments.outputs`). A trainer that cannot train the config's models
    (numba with ``orth > 0``) is refused before any work. ``on_trial(record)`` is called after
    each stored trial.

    ``executor`` (a ``concurrent.futures.Executor``, e.g. ``runs.local_executor(2)``) trains the
    trials in worker processes, one trial per worker at a time, and stores each as its worker
    finishes it; the records are those of the serial run (each trial draws only from its own
    streams), stored in the order they finish. ``on_epoch`` is then not called.
    """
    trainers.get(trainer, "case_study").check_sizes([cfg.m, cfg.hidden, 1], cfg.train)
    if cfg.m % cfg.k:
        raise FPEError(f"m={cfg.m} literals is not divisible by k={cfg.k}")
    check_alpha(cfg.alpha, cfg.m)  # fail before training, not after phase 1
    if cfg.m // cfg.k < cfg.alpha:
        raise FPEError(f"the clause split needs at least alpha={cfg.alpha} clauses, m/k = {cfg.m // cfg.k}")
    with open_output(out_dir, folder_config(cfg, trainer), ignore=("trials",)):
        os.makedirs(os.path.join(out_dir, "models"), exist_ok=True)
        done = load_finished(out_dir, cfg, trainer)
        if done:
            log(f"resuming: {len(done)} finished trial(s) found in {out_dir}/trials.jsonl")
        tr, te, groups = make_data(cfg)
        shown = set()
        todo = [t for t in range(cfg.trials) if t not in done]
        if executor is None:
            finished = (run_trials(cfg, [t], tr, te, groups, on_epoch, trainer)[0] for t in todo)
        else:
            finished = _trials_in_workers(cfg, todo, trainers.get(trainer, "case_study").name, executor)
        for rec, models, parent in finished:
            t = rec["trial"]
            parent.save(os.path.join(out_dir, "models", f"trial{t}_parent.npz"))
            for v, model in models.items():
                model.save(os.path.join(out_dir, "models", f"trial{t}_{v}.npz"))
            rec["config_key"] = _config_key(cfg)
            rec["digest"] = record_digest(rec)
            append_record(out_dir, rec)  # after the models: a recorded trial has its models on disk
            done[t] = rec
            for v in VARIANTS[1:]:  # the two splits: parameter ledger, pruned counts, dead children
                report = rec["models"][v]["expand_report"]
                if report and (v, report) not in shown:  # the same ledger every trial: print it once
                    shown.add((v, report))
                    log(f"{v} split (trial {t}): {report}")
            for w in rec.get("warnings", []):
                log(f"warning, trial {t}: {w}")
            if on_trial is not None:
                on_trial(rec)
        summary = summarize(cfg, [done[t] for t in range(cfg.trials)])
        write_json_atomic(os.path.join(out_dir, "summary.json"), summary)
    return summary, groups
