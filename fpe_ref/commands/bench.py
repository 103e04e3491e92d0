"""``fpe bench``: milliseconds per training step and the case study end to end, per implementation.

Thin: builds a :class:`fpe_ref.experiments.bench.BenchConfig`, calls
:func:`~fpe_ref.experiments.bench.run_bench` and prints its tables.
"""

from __future__ import annotations

import os
import time

import click

from fpe_ref.commands import options as opt


@click.command("bench")
@opt.quick("[32, 8, 1], [512, 32, 100] and [784, 64, 10] only, float32, alpha 2 and 8, fewer repetitions, and a "
           "20 + 20-epoch case study of 2 trials without the PyTorch one-model-at-a-time way (25-35 s on 2 cores "
           "at load average 1.3-2.7, up to 2 min while other jobs keep both cores busy, the PyTorch rows "
           "slowing most; 15 s with --no-torch); never written under results/")
@click.option("--threads", type=int, default=0, show_default=True,
              help="Threads for numba, BLAS (through threadpoolctl, when installed) and PyTorch; 0: every core.")
@opt.dtype(multiple=True, note="repeatable; default both")
@click.option("--no-torch", is_flag=True, help="Skip PyTorch even when it is installed.")
@opt.out(note="default: a new runs/bench/<date-time>/ for every run; the committed reference: results/bench")
def bench_cmd(quick, threads, dtypes, no_torch, out_dir):
    """ms per training step: dense parent vs FPE (alpha 2, 4, 8) masked-dense NumPy vs sparse numba.

    Boolean [32, 8, 1] and [128, 16, 1], embedding-like [512, h, 100] (h = 8, 32, 128) and
    FashionMNIST-like [784, 64, 10], batch 500, float32 and float64: median ms per step over
    timed epochs (min, max), the ratio to the dense parent measured in the same run, and the
    same model in PyTorch when it is installed (extra `bench`), and each row's physical
    limit on this machine (max of FLOPs over the matmul peak and bytes over the memory
    bandwidth, both measured in the same run) with the fraction of it reached. Then the Sec. 3.1 case study
    (5 trials x 3 variants, 1000 + 1000 epochs) end to end: NumPy and numba one model at a time,
    numba batched, numba with the trials in 2 worker processes, and the PyTorch peers (one
    model at a time, all models of a phase batched with bmm, and batched under torch.compile);
    every way is checked to reach NumPy's accuracies before it counts, and the fastest PyTorch
    peer is named with its ratio to our fastest way. Records the load average and thread
    counts: on a shared machine the numbers are indicative.
    """
    from fpe_ref.experiments.bench import BenchConfig, case_study_lines, run_bench, table

    kw = {"threads": threads, "torch": not no_torch}
    if dtypes:
        kw["dtypes"] = tuple(dtypes)
    cfg = BenchConfig.make(quick=quick, **kw)
    from fpe_ref.experiments.outputs import open_output, resolve_out, runs_dir

    # every benchmark is a new measurement: a folder of its own, named by when it started
    out_dir = resolve_out(out_dir or os.path.join(runs_dir(), "bench", time.strftime("%Y%m%d-%H%M%S")), "bench", {},
                          quick)
    click.echo(f"bench -> {out_dir}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load >= (os.cpu_count() or 1):
        click.echo(f"warning: load average {load:.1f} >= {os.cpu_count()} cores: other jobs share the CPU, so the "
                   "timings below are indicative only (consider --threads 1)", err=True)
    from dataclasses import asdict

    with open_output(out_dir, {"command": "bench", **asdict(cfg)}, replace=True):
        rec = run_bench(cfg, out_dir, log=click.echo)
    env = rec["environment_before"]
    from fpe_ref.experiments.bench import peaks_line

    click.echo("")
    click.echo(peaks_line(rec["machine_peaks"]))
    click.echo(table(rec["steps"]))
    cs = rec["case_study"]
    click.echo(f"\ncase study ({cs['trials']} trials x (1 + 3) runs x {cs['epochs_per_phase']} epochs, {cs['steps']} steps):")
    for line in case_study_lines(cs):
        click.echo(line)
    click.echo("\ntargets:")
    for k, t in rec["targets"].items():
        click.echo(f"  {k:<44} {t['value']:.4g} (target {t['target']}): {'met' if t['met'] else 'not met' if t['met'] is False else 'n/a'}")
    click.echo(f"\nload average before {env['load_average']}, after {rec['environment_after']['load_average']}; "
               f"threads {env['threads']} (numba {env['numba_threads']}, torch {env['torch'] and env['torch']['threads']}); "
               f"BLAS {env['blas']}")
    click.echo(f"wrote {out_dir}/bench.json")
