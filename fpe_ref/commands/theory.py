"""``fpe theory``: the click group for the Sec. 2.5 / A.5 theory checks (thin: build a config, call fpe_ref.theory)."""

from __future__ import annotations

import os
import time

import click

from fpe_ref.commands import options as opt
from fpe_ref.errors import check_int

REFERENCE = os.path.join("results", "theory")  # the committed reference, written only when --out names it


@click.group(short_help="Sec. 2.5 / A.5: clause coverage and the collision ratio, checked numerically.")
def theory():
    """Sec. 2.5 / A.5: clause coverage and the alpha^-(2k-1) collision ratio, checked numerically.

    Model (a) is the paper's: alpha*r neurons, each sees d = m/alpha literals chosen uniformly
    and independently. Model (b) is what fpe-ref builds: r parents, each split at random into
    alpha disjoint children (fpe_ref.splits.random_split).
    """



@theory.command()
@opt.quick("a small grid and budgets, a few seconds; for tests and CI")
@opt.seed
@opt.jobs(2)
@opt.out(note="default: a fresh git-ignored runs/theory/<hash of the options>/, shared by check and plot; "
              "the committed reference: results/theory")
def check(quick, seed, jobs, out_dir):
    """Compare every closed form with its simulation over the grid; exit 1 if any check fails.

    Grid: k in {2,3,4}, alpha in {2,4,8}, two m per k, r in {8, r_50, r_req}, plus the paper's
    settings (Sec. 3.1 case study, Fig. 3a/3b, Table A1). A check passes when the closed form
    lies in its Bonferroni-adjusted interval (family-wise 99.9%); point-wise 99.9% misses are
    reported with the number expected by chance. Writes OUT/check.json and OUT/check.txt.
    """
    from fpe_ref.theory.check import CheckConfig, format_report, run_check, write_report  # scipy.stats: import only when run

    from fpe_ref.experiments.outputs import open_output, resolve_out

    config = (CheckConfig.quick_config if quick else CheckConfig)(seed=check_int("seed", seed, 0), jobs=jobs)
    folder = {"command": "theory", "quick": bool(quick), "seed": seed}  # check and plot share a folder
    out_dir = resolve_out(out_dir, "theory", folder, quick)
    click.echo(f"theory check -> {out_dir}")
    t0 = time.perf_counter()
    with open_output(out_dir, folder):
        report = run_check(config, echo=click.echo)
        text = format_report(report)
        click.echo(text)
        write_report(report, os.path.join(out_dir, "check.json"))
        with open(os.path.join(out_dir, "check.txt"), "w") as fh:
            fh.write(text + "\n")
    click.echo(f"wrote {os.path.join(out_dir, 'check.json')} and check.txt ({time.perf_counter() - t0:.1f} s in all)")
    if report["n_failed"]:
        raise click.ClickException(f"{report['n_failed']} of {report['n_checks']} theory checks failed")


@theory.command()
@opt.quick("fewer panels and simulations, seconds; for tests")
@opt.seed
@opt.jobs(2)
@opt.out(note="default: a fresh git-ignored runs/theory/<hash of the options>/, shared by check and plot; "
              "the committed reference: results/theory")
def plot(quick, seed, jobs, out_dir):
    """Draw coverage against r and the collision ratio against alpha (k = 2, 3, 4) into OUT/*.png."""
    from fpe_ref.experiments.outputs import open_output, resolve_out
    from fpe_ref.theory.plot import run_plot

    folder = {"command": "theory", "quick": bool(quick), "seed": seed}
    out_dir = resolve_out(out_dir, "theory", folder, quick)
    t0 = time.perf_counter()
    with open_output(out_dir, folder):
        paths = run_plot(out_dir, seed=check_int("seed", seed, 0), jobs=jobs, quick=quick, echo=click.echo)
    for p in paths:
        click.echo(f"wrote {p}")
    click.echo(f"{time.perf_counter() - t0:.1f} s")
