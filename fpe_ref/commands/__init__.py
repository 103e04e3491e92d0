"""The ``fpe`` command: a thin click group; every command builds a config and calls fpe_ref / theory.

Bad input raises ``fpe_ref.errors.FPEError``; ``main`` prints it as one line and exits 2.
"""

from __future__ import annotations

import os
import sys

import click

from fpe_ref.errors import FPEError


@click.group()
@click.version_option(package_name="fpe-ref")
def fpe():
    """fpe-ref: Fixed Parameter Expansion (Kong, Subramanian et al., 2025), reference implementation.

    Split every hidden neuron of a trained dense MLP into alpha children with disjoint
    inputs, duplicate the outgoing weights, prune the smallest weights back to the parent's
    non-zero count, and keep training. Wider, sparser, same budget.
    """


# ---------------------------------------------------------------- shared options
def seed_option(f):
    return click.option("--seed", type=int, default=0, show_default=True,
                        help="The one seed every random stream (data, init, shuffling, splits) derives from.")(f)


def out_option(default):
    return click.option("--out", "out_dir", type=click.Path(file_okay=False), default=default, show_default=True,
                        help="Directory for the results (same layout as results/).")


def train_options(f):
    """Alg. A3 / A.3.1 hyper-parameters, shared by every command that trains."""
    opts = [
        click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate eta (A.3.1)."),
        click.option("--batch-size", type=int, default=500, show_default=True, help="Batch size B (A.3.1)."),
        click.option("--l1", type=float, default=1e-7, show_default=True, help="lambda_1: L1 penalty on W1 (A.3.1)."),
        click.option("--l2", type=float, default=1e-5, show_default=True,
                     help="lambda_2: sum-of-squares penalty on all parameters (A.3.1)."),
        click.option("--orth", type=float, default=0.0, show_default=True,
                     help="lambda_orth: ||W1 W1^T - I||_F^2 penalty (Alg. A3 line 17; 0 in the paper's runs)."),
        click.option("--warmup", type=click.Choice(["lr", "penalty", "none"]), default="lr", show_default=True,
                     help="What Alg. A3's ratio r = min(1, e/W) scales: the learning rate, the penalties, or nothing."),
        click.option("--warmup-epochs", type=int, default=None,
                     help="W in r = min(1, e/W) (default 1000; with --quick, the quick run's dense epochs)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def backend_option(default="numba"):
    return click.option("--backend", type=click.Choice(["numba", "numpy"]), default=default, show_default=True,
                        help="numba: the fused compiled step, the models of a run trained side by side "
                             "(equal to numpy to rounding); numpy: the reference loop, one model at a time.")


def _given(value, default):
    """``value`` unless the option was not given (``None``); an explicit 0 stays 0 and is checked later."""
    return default if value is None else value


def _train_config(lr, batch_size, l1, l2, orth, warmup, warmup_epochs, epochs=1):
    from fpe_ref.train import TrainConfig

    return TrainConfig(epochs=epochs, warmup_epochs=warmup_epochs, warmup=warmup, batch_size=batch_size,
                       lr=lr, l1=l1, l2=l2, orth=orth)


# ---------------------------------------------------------------- fpe reproduce
@fpe.group()
def reproduce():
    """Reproduce the paper's experiments on CPU; results go to results/ (or --out)."""


@reproduce.command("case-study", short_help="Sec. 3.1: dense vs clause-split vs random-split FPE on the DNF.")
@click.option("--quick", is_flag=True, help="A small version (fewer epochs, trials and samples) that runs in seconds.")
@click.option("--trials", type=int, default=None, help="Trials T (default 5; --quick: 3).")
@click.option("--dense-epochs", type=int, default=None, help="Dense pre-training epochs (default 1000; --quick: 150).")
@click.option("--fpe-epochs", type=int, default=None,
              help="Epochs after the split, for all three models (default 1000; --quick: 150).")
@click.option("--n-samples", type=int, default=None,
              help="Data set size, train + test (default 10000; --quick: 4000). The paper does not state it.")
@click.option("--test-fraction", type=float, default=0.2, show_default=True,
              help="Share of the samples held out for testing. The paper does not state it.")
@click.option("--alpha", type=int, default=2, show_default=True, help="Expansion factor alpha.")
@click.option("--hidden", type=int, default=8, show_default=True, help="Neurons h of the dense parent.")
@click.option("--literals", "m", type=int, default=32, show_default=True, help="Literals m (clauses C = m / k).")
@click.option("--k", type=int, default=4, show_default=True, help="Literals per clause.")
@click.option("--carry-optimizer", is_flag=True,
              help="Carry Adam's moments through the split child by child (default: a fresh Adam for all three models).")
@seed_option
@train_options
@backend_option()
@out_option("results/case_study")
def case_study_cmd(quick, trials, dense_epochs, fpe_epochs, n_samples, test_fraction, alpha, hidden, m, k,
                   carry_optimizer, seed, lr, batch_size, l1, l2, orth, warmup, warmup_epochs, backend, out_dir):
    """Sec. 3.1: dense vs clause-split vs random-split FPE on the 8-clause, 4-literal DNF.

    A dense [m, h, 1] MLP trains --dense-epochs; it is then split with alpha (clause and
    random splits) and all three models train --fpe-epochs more. Prints the parameter
    ledger, a table of test accuracy (mean +- std over trials, and Alg. A3's best-of-T,
    which is selected on the test set), capacity, cosine and counts; writes summary.json,
    trials.jsonl, the trained models and the Figure 2 / A1 heat maps. Rerunning with the
    same options resumes: finished trials are not run again.
    """
    from fpe_ref.experiments.case_study import VARIANTS, CaseStudyConfig, run_case_study

    q = quick
    if warmup_epochs is None:
        warmup_epochs = 150 if q else 1000
    cfg = CaseStudyConfig(
        m=m, k=k, hidden=hidden, alpha=alpha,
        dense_epochs=_given(dense_epochs, 150 if q else 1000), fpe_epochs=_given(fpe_epochs, 150 if q else 1000),
        trials=_given(trials, 3 if q else 5), n_samples=_given(n_samples, 4000 if q else 10000),
        test_fraction=test_fraction, seed=seed, carry_optimizer=carry_optimizer,
        train=_train_config(lr, batch_size, l1, l2, orth, warmup, warmup_epochs))
    total = cfg.trials * (cfg.dense_epochs + len(VARIANTS) * cfg.fpe_epochs)
    click.echo(f"case study: m={cfg.m} k={cfg.k} h={cfg.hidden} alpha={cfg.alpha} trials={cfg.trials} "
               f"epochs={cfg.dense_epochs}+{cfg.fpe_epochs} n={cfg.n_samples} seed={cfg.seed} backend={backend} -> {out_dir}")
    with click.progressbar(length=total, label="training", show_eta=True, show_pos=True) as bar:
        summary, groups = run_case_study(cfg, out_dir, on_epoch=lambda e, h: bar.update(1),
                                         log=lambda s: click.echo("\n" + s), backend=backend)
    _case_study_outputs(cfg, summary, groups, out_dir)


def _case_study_outputs(cfg, summary, groups, out_dir):
    from fpe_ref.experiments import figures as plots
    from fpe_ref.experiments.case_study import VARIANTS, load_finished
    from fpe_ref.mlp import MLP

    rows = [("model", "test acc mean +- std", "best of T*", "capacity", "cosine", "non-zero W", "biases")]
    for v in VARIANTS:
        s = summary["models"][v]
        rows.append((v, f"{100 * s['acc_mean']:.1f} +- {100 * s['acc_std']:.1f} %", f"{100 * s['acc_best']:.1f} %",
                     f"{s['capacity']:.3f}", f"{s['cosine']:.3f}", str(s["nonzero_weights"]), str(s["biases"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))
    click.echo(f"* best of {summary['n_trials']} trials, selected on the test set as Alg. A3 does (optimistic); "
               "capacity and cosine are means over trials after training.")
    p = summary["parent"]
    click.echo(f"dense parent after phase 1: acc {100 * p['acc_mean']:.1f} %, capacity {p['capacity']:.3f}, cosine {p['cosine']:.3f}")
    for v in VARIANTS[1:]:
        s = summary["models"][v]
        click.echo(f"{v}: capacity {p['capacity']:.3f} (dense) -> {s['capacity_at_split']:.3f} (at split) -> "
                   f"{s['capacity']:.3f} (trained); cosine {p['cosine']:.3f} -> {s['cosine_at_split']:.3f} -> {s['cosine']:.3f}")
    models = {v: MLP.load(os.path.join(out_dir, "models", f"trial{summary['models'][v]['best_trial']}_{v}.npz"))
              for v in VARIANTS}
    plots.gram_and_weights({v: models[v] for v in ("dense", "clause")}, groups, cfg.alpha,
                           os.path.join(out_dir, "fig2_dense_clause.png"), "Figure 2: dense and clause-split FPE (best trial)")
    plots.gram_and_weights({"random": models["random"]}, groups, cfg.alpha,
                           os.path.join(out_dir, "figA1_random.png"), "Figure A1: random-split FPE (best trial)")
    done = load_finished(out_dir, cfg)
    records = [done[t] for t in sorted(done)]
    plots.training_curves(records, VARIANTS, os.path.join(out_dir, "training_curves.png"), cfg.dense_epochs)
    click.echo(f"wrote {out_dir}/summary.json, trials.jsonl, models/, fig2_dense_clause.png, figA1_random.png, training_curves.png")


# ---------------------------------------------------------------- fpe bench
@fpe.command("bench")
@click.option("--quick", is_flag=True,
              help="Fewer repetitions and a 100 + 100-epoch case study (several minutes on 2 shared cores, "
                   "most of it the PyTorch loop; add --no-torch to skip it). Writes to results/bench-quick.")
@click.option("--threads", type=int, default=0, show_default=True,
              help="Threads for numba, BLAS (through threadpoolctl, when installed) and PyTorch; 0: every core.")
@click.option("--dtype", "dtypes", type=click.Choice(["float32", "float64"]), multiple=True,
              help="Only these dtypes (repeatable; default both).")
@click.option("--no-torch", is_flag=True, help="Skip PyTorch even when it is installed.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Directory for bench.json (default results/bench; --quick: results/bench-quick, so a quick "
                   "run never replaces the committed full one).")
def bench_cmd(quick, threads, dtypes, no_torch, out_dir):
    """ms per training step: dense parent vs FPE (alpha 2, 4, 8) masked-dense NumPy vs sparse numba.

    Boolean [32, 8, 1] and [128, 16, 1], embedding-like [512, h, 100] (h = 8, 32, 128) and
    FashionMNIST-like [784, 64, 10], batch 500, float32 and float64: median ms per step over
    timed epochs (min, max), the ratio to the dense parent measured in the same run, and the
    same model in PyTorch when it is installed (extra `bench`). Then the Sec. 3.1 case study
    (5 trials x 3 variants, 1000 + 1000 epochs) end to end: NumPy and numba one model at a time,
    numba batched, and PyTorch. Records the load average and thread counts: on a shared
    machine the numbers are indicative.
    """
    from fpe_ref.experiments.bench import BenchConfig, run_bench, table

    kw = {"threads": threads, "torch": not no_torch}
    if dtypes:
        kw["dtypes"] = tuple(dtypes)
    cfg = BenchConfig.make(quick=quick, **kw)
    out_dir = out_dir or ("results/bench-quick" if quick else "results/bench")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load >= (os.cpu_count() or 1):
        click.echo(f"warning: load average {load:.1f} >= {os.cpu_count()} cores: other jobs share the CPU, so the "
                   "timings below are indicative only (consider --threads 1)", err=True)
    rec = run_bench(cfg, out_dir, log=click.echo)
    env = rec["environment_before"]
    click.echo("")
    click.echo(table(rec["steps"]))
    cs = rec["case_study"]
    click.echo(f"\ncase study ({cs['trials']} trials x (1 + 3) runs x {cs['epochs_per_phase']} epochs, {cs['steps']} steps):")
    for name, w in cs["wall_s"].items():
        click.echo(f"  {name:<28} {w:8.1f} s   (max |acc - numpy| {cs['max_acc_difference_vs_numpy'][name]:.4f})")
    click.echo("\ntargets:")
    for k, t in rec["targets"].items():
        click.echo(f"  {k:<32} {t['value']:.4g} (target {t['target']}): {'met' if t['met'] else 'not met' if t['met'] is False else 'n/a'}")
    click.echo(f"\nload average before {env['load_average']}, after {rec['environment_after']['load_average']}; "
               f"threads {env['threads']} (numba {env['numba_threads']}, torch {env['torch'] and env['torch']['threads']}); "
               f"BLAS {env['blas']}")
    click.echo(f"wrote {out_dir}/bench.json")


def _register_subcommands():
    """Attach command groups that live next to the code they drive."""
    try:
        from fpe_ref.theory.commands import theory
    except ImportError:  # theory/ not present yet
        return
    fpe.add_command(theory)


_register_subcommands()


def _register_sweeps():
    """``fpe sweep`` and ``fpe report`` live in fpe_ref/sweep_cli.py, built with the shared options above."""
    from fpe_ref.commands.sweep import commands

    for cmd in commands(seed_option, train_options, _train_config):
        fpe.add_command(cmd)


_register_sweeps()


def _register_vision():
    """``fpe reproduce fashion-mnist | embeddings | pretrain-timing | alpha | two-four | rewiring`` (fpe_ref/vision_cli.py)."""
    from fpe_ref.commands.vision import commands

    for cmd in commands():
        reproduce.add_command(cmd)


_register_vision()


def _register_golden():
    """``fpe golden export|check`` lives in fpe_ref/golden_cli.py (the parity harness, docs/golden.md)."""
    from fpe_ref.commands.golden import golden

    fpe.add_command(golden)


_register_golden()


def main():
    try:
        rv = fpe.main(standalone_mode=False)
    except FPEError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # an output path that cannot be created or written, a full disk, ...
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        click.echo(f"Error: cannot read or write a file{where}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)  # standalone_mode=False returns ctx.exit codes


if __name__ == "__main__":
    main()
