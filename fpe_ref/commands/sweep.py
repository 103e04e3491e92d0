"""``fpe sweep boolean`` and ``fpe report``: the Sec. 3.2 grids and their figures and tables.

Thin, as every command: each builds a config and calls :mod:`fpe_ref.experiments.boolean` or
:mod:`fpe_ref.experiments.boolean_report`.
"""

from __future__ import annotations

import os

import click

from fpe_ref.commands import options as opt
from fpe_ref.errors import FPEError
from fpe_ref.experiments import trainers


@click.group(short_help="Grids of runs for Sec. 3.2: resumable, parallel, local or on Dask.")
def sweep():
    """Grids of runs (Sec. 3.2): resumable, parallel, on this machine or a Dask cluster.

    Every finished run is appended at once to <out>/runs.jsonl; rerunning the same
    command skips finished runs, so a killed sweep resumes where it stopped.
    """


@sweep.command("boolean", short_help="Sec. 3.2: Figures 3-4 and Tables A1/A2 grids (resumable, parallel, Dask).")
@click.option("--grid", "grids", multiple=True,
              type=click.Choice(["all", "tables", "fig3a", "fig3b", "tables-alpha4", "fig3c"]),
              help="Which grids to run, in this order (repeatable). Default: all, in the order "
                   "tables, fig3a, fig3b, tables-alpha4, fig3c. tables: Tables A1/A2 (8 neurons, "
                   "12..128 literals, alpha 2); tables-alpha4: the same at alpha 4 (24..128 literals); "
                   "fig3a: 8 clauses, hidden 4..16; fig3b: 8 neurons, clauses 4..32; fig3c: hidden "
                   "{4,8,12,16} x clauses {4,8,16,24,32}; fig3a, fig3b and fig3c at alpha 2 and 4.")
@opt.quick("tiny grids, 4 + 4 epochs, 400 samples, 2 trials; seconds")
@opt.trials(note="per grid point and alpha; default 5; --quick: 2")
@opt.dense_epochs(note="default 1000")
@opt.fpe_epochs(note="default 1000")
@opt.n_samples(note="default 10000; --quick: 400")
@opt.test_fraction
@opt.jobs(note="default: every core, os.cpu_count(); local executor only")
@opt.executor
@opt.scheduler
@opt.trainer
@opt.dry_run("runs per grid")
@click.option("--reuse-from", "reuse_from", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A sweep directory (repeatable) whose finished runs with exactly this run's key are copied "
                   "here instead of computed (e.g. results/boolean); each record is validated first and an "
                   "invalid one is computed. By default every run is computed.")
@opt.out(note="default: a fresh git-ignored runs/boolean/<hash of the options>/ (of the checkout, when run "
              "inside it), which the same command resumes")
@opt.seed
@opt.train_options
def boolean_cmd(grids, quick, trials, dense_epochs, fpe_epochs, n_samples, test_fraction, jobs, executor_kind,
                scheduler, trainer, dry_run, reuse_from, out_dir, seed, lr, batch_size, l1, l2, orth, warmup,
                warmup_epochs):
    """Sec. 3.2: dense vs clause-split vs random-split FPE over neurons, clauses and alpha.

    Each run is one trial of the Sec. 3.1 workflow (fpe_ref.experiments.case_study.run_trial) at one
    grid point and alpha. Runs are identified by their full settings, so grids that share
    a point compute it once; finished runs of another sweep directory are copied only with
    --reuse-from. Ends with this run beside the committed reference results/boolean
    (cells in both). Then: fpe report <out>.
    """
    from fpe_ref.experiments import boolean as bs
    from fpe_ref.experiments.progress import Progress
    from fpe_ref.experiments.runs import RunStore, dask_executor, local_executor

    names = list(grids) or ["all"]
    if "all" in names:
        names = list(bs.DEFAULT_ORDER)
    names = list(dict.fromkeys(names))
    base = bs.QUICK if quick else {}
    if warmup_epochs is None:  # W = the dense phase's N, as A.3.1's N = W = 1000
        warmup_epochs = max(1, dense_epochs if dense_epochs is not None else base.get("dense_epochs", 1000))

    def given(value, name, default):  # an explicit 0 stays 0 and is refused by SweepConfig
        return base.get(name, default) if value is None else value

    cfg = bs.SweepConfig(
        trials=given(trials, "trials", 5), dense_epochs=given(dense_epochs, "dense_epochs", 1000),
        fpe_epochs=given(fpe_epochs, "fpe_epochs", 1000), n_samples=given(n_samples, "n_samples", 10000),
        test_fraction=test_fraction, seed=seed, trainer=trainers.key_name(trainer, "boolean"),
        train=opt.train_config(lr, batch_size, l1, l2, orth, warmup, warmup_epochs))
    from fpe_ref.experiments.outputs import resolve_out

    out_dir = resolve_out(out_dir, "boolean", {"kind": bs.KIND, "quick": bool(quick), **cfg.signature()}, quick)
    lookup = [RunStore(os.path.join(d, "runs.jsonl")) for d in reuse_from]
    if dry_run:
        _print_plan(bs, cfg, names, quick, out_dir, lookup)
        return
    if jobs is not None and jobs < 1:
        raise FPEError(f"--jobs must be a positive integer, got {jobs}")
    if jobs is not None and executor_kind == "dask":
        raise FPEError("--jobs is for the local executor; a Dask cluster's workers set the parallelism")
    jobs = jobs or os.cpu_count() or 1
    client = None
    if executor_kind == "dask":
        executor, client = dask_executor(scheduler)
    elif scheduler:
        raise FPEError("--scheduler is only used with --executor dask")
    else:
        executor = local_executor(jobs) if jobs > 1 else None
    click.echo(f"sweep boolean: grids {', '.join(names)}; trainer {cfg.trainer}; trials {cfg.trials}; epochs "
               f"{cfg.dense_epochs}+{cfg.fpe_epochs}; n={cfg.n_samples}; seed {cfg.seed}; "
               f"{'dask ' + scheduler if client else f'{jobs} local job(s)'} -> {out_dir}/runs.jsonl")
    progress = Progress(label="boolean", unit="runs")
    try:
        res = bs.run_boolean_sweep(cfg, out_dir, names, quick=quick, executor=executor, progress=progress,
                                   log=progress.print, lookup=lookup)
    finally:
        if executor is not None and client is None:
            executor.shutdown(wait=True, cancel_futures=True)
        if client is not None:
            client.close()
    click.echo(f"done: {res.total} runs ({res.already} already finished, {res.reused} copied with --reuse-from, "
               f"{res.ran} run now) in {RunStore(os.path.join(out_dir, 'runs.jsonl')).path}.")
    from fpe_ref.experiments.compare import boolean_comparison

    click.echo(boolean_comparison(list(res.records.values()), out_dir))
    click.echo(f"Next: fpe report {out_dir}")


@click.command("report", short_help="A sweep's runs.jsonl -> Figures 3/4, Tables A1/A2 (Markdown, PNG).")
@click.argument("sweep_dir", metavar="SWEEP")
@opt.out(note="default: the sweep directory itself; for a committed reference under results/, "
              "runs/report/<name>/")
def report(sweep_dir, out_dir):
    """runs.jsonl of SWEEP -> figures (PNG) and Markdown tables.

    SWEEP is a sweep directory (runs/boolean/<hash>, results/boolean) or the name of a
    committed one (boolean).
    Relative improvement = mean FPE accuracy / mean dense accuracy, +- one standard error
    (delta method), * where Welch's t-test gives p < 0.05; capacity and cosine fold change
    (Figure 4a, b), least-squares fits with R^2 (Figure 4c), Tables A1/A2 (mean +- std)
    beside the paper's, and absolute accuracies. Partially finished grids are reported
    with their missing cells marked.
    """
    from fpe_ref.experiments import boolean_report as rp

    from fpe_ref.experiments.outputs import report_dirs

    path, out_dir = report_dirs(sweep_dir, out_dir, click.echo)
    written = rp.report(path, out_dir)
    for p in written:
        click.echo(f"wrote {p}")


def _print_plan(bs, cfg, names, quick, out_dir, lookup):
    from fpe_ref.experiments.runs import RunStore, run_id

    store = RunStore(os.path.join(out_dir, "runs.jsonl"))
    done = set(store.load())
    others = set()
    for s in lookup:
        others |= set(s.load(check="skip"))
    seen = set()
    click.echo(f"plan for {out_dir} (trials {cfg.trials}, epochs {cfg.dense_epochs}+{cfg.fpe_epochs}):")
    for name in names:
        keys = bs.plan(cfg, [name], quick, log=lambda s: click.echo("  " + s))
        ids = [run_id(k) for k in keys]
        new = [i for i in ids if i not in seen]
        seen |= set(ids)
        click.echo(f"  {name:14s} {len(ids):4d} runs, {len(new):4d} not in an earlier grid, "
                   f"{sum(i in done for i in ids):4d} finished, {sum(i in others and i not in done for i in ids):4d} "
                   f"in --reuse-from")
    click.echo(f"  total distinct runs {len(seen)}, finished {len(seen & done)}, left {len(seen - done - others)}")
