"""``fpe study``: studies of the paper's silent choices (:mod:`fpe_ref.experiments.choices`)."""

from __future__ import annotations

import os

import click

from fpe_ref.commands import options as opt
from fpe_ref.errors import FPEError


@click.group(short_help="Which reading of the paper's silent choices gives which number.")
def study():
    """Studies of the choices the paper leaves open: every reading, paired trial by trial."""


@study.command("choices", short_help="Warm-up, optimizer, phase-2 length, biases, data size, metric definitions.")
@opt.quick("two tiny cells, 4 + 4 epochs, 400 samples, 2 trials of one choosing and one reporting seed; seconds")
@opt.trials(note="per seed; default 5 (3 seeds x 5 = 15 trials per cell and seed set); --quick: 2")
@click.option("--choose-seed", "choose_seeds", type=int, multiple=True,
              help="A seed whose trials choose the defaults (repeatable). Default: 1, 2, 3.")
@click.option("--report-seed", "report_seeds", type=int, multiple=True,
              help="A seed whose trials give the reported numbers and are never used for choosing "
                   "(repeatable). Default: 4, 5, 6.")
@opt.jobs(note="default: every core, os.cpu_count()")
@opt.dry_run("units per cell and seed set")
@opt.out(note="default: a fresh git-ignored runs/choices/<hash of the options>/, which the same command resumes")
def choices_cmd(quick, trials, choose_seeds, report_seeds, jobs, dry_run, out_dir):
    """Which reading of each choice the paper leaves open gives which number.

    Readings (each changed alone from the default lr-restart): what Alg. A3's warm-up
    ratio r = min(1, e/W) scales (learning rate, penalties, nothing) and whether it
    restarts at the split; a carried optimizer; 3000 epochs after the split (beyond the
    paper); children's biases b/alpha (beyond the paper); 40,000 samples. Tables A1/A2's
    capacity and cosine are computed under every definition tried, and at alpha 2 and 4.

    Cells: the Sec. 3.1 case study (32 literals, 8 neurons, alpha 2); Figure 3a's 4, 8, 12,
    16 neurons at 8 clauses and Figure 3b's 8, 16, 32 clauses at 8 neurons, alpha 2 and 4;
    Tables A1/A2 at 12, 32 and 128 literals. Each unit trains one dense parent and every
    reading that shares its phase 1, so readings are compared on the same parent.

    Every finished unit is appended to <out>/runs.jsonl at once: a killed study resumes
    where it stopped. At the end (and with `fpe study report <out>` at any time) the
    report is written: README-ready tables, the figure, the chosen defaults.
    """
    from fpe_ref.experiments import choices as ch
    from fpe_ref.experiments.outputs import resolve_out
    from fpe_ref.experiments.progress import Progress
    from fpe_ref.experiments.runs import RunStore, local_executor, run_id

    base = dict(ch.QUICK) if quick else {}
    kw = {k: v for k, v in base.items()}
    if trials is not None:
        kw["trials"] = trials
    if choose_seeds:
        kw["choose_seeds"] = tuple(choose_seeds)
    if report_seeds:
        kw["report_seeds"] = tuple(report_seeds)
    cfg = ch.StudyConfig(**kw)
    out_dir = resolve_out(out_dir, "choices", {"kind": ch.KIND, "quick": bool(quick), **cfg.signature()}, quick)
    if dry_run:
        keys = ch.plan(cfg, quick, log=click.echo)
        done = set(RunStore(os.path.join(out_dir, "runs.jsonl")).load())
        click.echo(f"plan for {out_dir}: {len(keys)} units, {sum(run_id(k) in done for k in keys)} finished")
        for cell in ch.make_cells(cfg.k, quick):
            for role in ("choose", "report"):
                ks = [k for k in keys if (k["m"], k["hidden"], k["alpha"]) == (cell.m, cell.hidden, cell.alpha)
                      and k["role"] == role]
                if ks:
                    click.echo(f"  {cell.name:14s} {role:6s} {len(ks):4d} units, "
                               f"{sum(run_id(k) in done for k in ks):4d} finished")
        return
    if jobs is not None and jobs < 1:
        raise FPEError(f"--jobs must be a positive integer, got {jobs}")
    jobs = jobs or os.cpu_count() or 1
    executor = local_executor(jobs) if jobs > 1 else None
    click.echo(f"study choices: {len(ch.make_cells(cfg.k, quick))} cells, {len(ch.READINGS)} readings, "
               f"choosing seeds {list(cfg.choose_seeds)}, reporting seeds {list(cfg.report_seeds)}, "
               f"{cfg.trials} trials each; {jobs} local job(s) -> {out_dir}/runs.jsonl")
    progress = Progress(label="choices", unit="units")
    try:
        res = ch.run_study(cfg, out_dir, quick=quick, executor=executor, progress=progress, log=progress.print)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    click.echo(f"done: {res.total} units ({res.already} already finished, {res.ran} run now).")
    _report(out_dir, out_dir)


@study.command("report", short_help="A study folder's runs.jsonl -> tables, figure, chosen defaults.")
@click.argument("study_dir", metavar="STUDY")
@opt.out(note="default: STUDY itself; for the committed results/choices, runs/report/choices/")
def report_cmd(study_dir, out_dir):
    """The report of a (possibly unfinished) study folder: tables, figure, decisions."""
    from fpe_ref.experiments.outputs import report_dirs

    path, out_dir = report_dirs(study_dir, out_dir, click.echo)
    _report(path, out_dir)


def _report(study_dir, out_dir):
    from fpe_ref.experiments import choices_report

    for p in choices_report.report(study_dir, out_dir):
        click.echo(f"wrote {p}")
