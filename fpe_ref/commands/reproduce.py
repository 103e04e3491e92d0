"""``fpe reproduce``: the paper's experiments, one command each.

``case-study`` (Sec. 3.1) builds a :class:`fpe_ref.experiments.case_study.CaseStudyConfig` and
calls :func:`~fpe_ref.experiments.case_study.run_case_study`. The vision commands
(``fashion-mnist | embeddings | pretrain-timing | alpha | two-four | rewiring``, Sec. 3.3,
3.4 and A.7) each build a :class:`fpe_ref.experiments.vision.VisionConfig`, run (or resume)
the sweep with :func:`~fpe_ref.experiments.vision.run_vision_sweep` and write tables and
figures with :mod:`fpe_ref.experiments.vision_report`. Every vision output directory holds
``runs.jsonl`` (one line per finished hidden-size x trial), ``sweep.json`` (the resolved
config), ``tables.md``, ``summary.json`` and the figures; rerunning a command resumes.
"""

from __future__ import annotations

import json
import os

import click
import numpy as np

from fpe_ref.commands import options as opt
from fpe_ref.errors import FPEError, check_int
from fpe_ref.experiments import trainers


@click.group()
def reproduce():
    """Reproduce the paper's experiments on CPU, each into a fresh folder under runs/ (or --out)."""


# ---------------------------------------------------------------- the vision commands' options
split_options = opt.compose(opt.alpha, opt.gram_clusters, opt.gram_linkage)
run_options = opt.compose(opt.jobs(note="default: every core; even 1 runs in a worker process with one BLAS "
                                         "thread, so the records are bitwise equal for every --jobs"), opt.val_fraction, opt.dtype("float32"), opt.seed,
                          opt.trainer)


def data_options(note):
    """--data, --data-dir, --n-classes; ``note`` says what the command does without --data."""
    return opt.compose(opt.data(note), opt.data_dir, opt.n_classes)


# ---------------------------------------------------------------- case study (Sec. 3.1)
@reproduce.command("case-study", short_help="Sec. 3.1: dense vs clause-split vs random-split FPE on the DNF.")
@opt.quick("fewer epochs, trials and samples; runs in seconds")
@opt.trials(note="default 5; --quick: 3")
@opt.dense_epochs(note="default 1000; --quick: 150")
@opt.fpe_epochs(note="default 1000; --quick: 150")
@opt.n_samples(note="default 10000; --quick: 4000")
@opt.test_fraction
@opt.alpha
@opt.hidden(8)
@click.option("--literals", "m", type=int, default=32, show_default=True, help="Literals m (clauses C = m / k).")
@click.option("--k", type=int, default=4, show_default=True, help="Literals per clause.")
@click.option("--carry-optimizer", is_flag=True,
              help="Carry Adam's moments through the split child by child (default: a fresh Adam for all three models).")
@opt.seed
@opt.train_options
@opt.trainer_with_alias("--backend")
@opt.jobs(note="default: every core, one trial per worker at a time; each trial is stored as its worker "
               "finishes it")
@opt.out(note="default: a fresh git-ignored runs/case-study/<hash of the options>/ (of the checkout, when run "
              "inside it), which the same command resumes")
def case_study_cmd(quick, trials, dense_epochs, fpe_epochs, n_samples, test_fraction, alpha, hidden, m, k,
                   carry_optimizer, seed, lr, batch_size, l1, l2, orth, warmup, warmup_epochs, trainer, jobs,
                   out_dir):
    """Sec. 3.1: dense vs clause-split vs random-split FPE on the 8-clause, 4-literal DNF.

    A dense [m, h, 1] MLP trains --dense-epochs; it is then split with alpha (clause and
    random splits) and all three models train --fpe-epochs more. Prints the parameter
    ledger, a table of test accuracy (mean +- std over trials, and Alg. A3's best-of-T,
    which is selected on the test set), capacity, cosine and counts; writes summary.json,
    trials.jsonl, the trained models and the Figure 2 / A1 heat maps. Rerunning with the
    same options resumes: finished trials are not run again.
    """
    from fpe_ref.experiments.case_study import VARIANTS, CaseStudyConfig, folder_config, load_finished, run_case_study
    from fpe_ref.experiments.outputs import resolve_out
    from fpe_ref.experiments.progress import Progress
    from fpe_ref.experiments.runs import local_executor

    backend = trainers.get(trainer, "case_study").name
    q = quick
    if warmup_epochs is None:  # W = the dense phase's N, as A.3.1's N = W = 1000
        warmup_epochs = max(1, opt.given(dense_epochs, 150 if q else 1000))  # a bad N is refused as N
    cfg = CaseStudyConfig(
        m=m, k=k, hidden=hidden, alpha=alpha,
        dense_epochs=opt.given(dense_epochs, 150 if q else 1000), fpe_epochs=opt.given(fpe_epochs, 150 if q else 1000),
        trials=opt.given(trials, 3 if q else 5), n_samples=opt.given(n_samples, 4000 if q else 10000),
        test_fraction=test_fraction, seed=seed, carry_optimizer=carry_optimizer,
        train=opt.train_config(lr, batch_size, l1, l2, orth, warmup, warmup_epochs))
    folder = {k: v for k, v in folder_config(cfg, backend).items() if k != "trials"}
    out_dir = resolve_out(out_dir, "case-study", folder, quick=quick)
    total = cfg.trials * (cfg.dense_epochs + len(VARIANTS) * cfg.fpe_epochs)
    click.echo(f"case study: m={cfg.m} k={cfg.k} h={cfg.hidden} alpha={cfg.alpha} trials={cfg.trials} "
               f"epochs={cfg.dense_epochs}+{cfg.fpe_epochs} n={cfg.n_samples} seed={cfg.seed} trainer={backend} -> {out_dir}")
    finished = len(load_finished(out_dir, cfg, backend)) if os.path.isdir(out_dir) else 0
    per_trial = cfg.dense_epochs + len(VARIANTS) * cfg.fpe_epochs
    jobs = min(check_int("--jobs", jobs, 1) if jobs is not None else os.cpu_count() or 1, cfg.trials - finished)
    bar = Progress(total, label="case study", unit="model-epochs", done=finished * per_trial)

    def stored(rec):
        if jobs > 1:  # workers report whole trials
            bar.update(per_trial)
        bar.print(f"trial {rec['trial']} stored in {out_dir}/trials.jsonl: test accuracy "
                  + ", ".join(f"{v} {100 * rec['models'][v]['after']['test_acc']:.1f} %" for v in VARIANTS))

    executor = local_executor(jobs) if jobs > 1 else None
    try:
        with bar:
            summary, groups = run_case_study(cfg, out_dir, on_epoch=None if executor else lambda e, h: bar.update(1),
                                             log=bar.print, trainer=backend, on_trial=stored, executor=executor)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    _case_study_outputs(cfg, summary, groups, out_dir, backend)
    _case_study_comparison(cfg, summary, backend, out_dir)


def _case_study_comparison(cfg, summary, backend, out_dir):
    """This run beside the committed results/case_study and the paper's Sec. 3.1 numbers."""
    from fpe_ref.experiments.case_study import VARIANTS, load_finished, other_options
    from fpe_ref.experiments.compare import PAPER_CASE_STUDY, comparison_text
    from fpe_ref.experiments.outputs import reference_dir

    ref_dir = reference_dir("case_study")
    if ref_dir is not None and os.path.realpath(ref_dir) == os.path.realpath(out_dir):
        click.echo("this run wrote the committed reference itself: nothing to compare it with")
        return
    ref, note = None, ""
    if ref_dir is not None:
        diff = other_options(ref_dir, cfg, backend)
        done = {} if diff else load_finished(ref_dir, cfg, backend)
        if diff:
            note = f", made with other options ({'; '.join(diff)}): not compared"
        ref = {v: [done[t]["models"][v]["after"]["test_acc"] for t in sorted(done)] for v in VARIANTS} if done else None
    paper = (cfg.m, cfg.k, cfg.hidden, cfg.alpha, cfg.dense_epochs, cfg.fpe_epochs) == (32, 4, 8, 2, 1000, 1000)
    items = [(v, summary["models"][v]["accs"], None if ref is None else ref[v],
              PAPER_CASE_STUDY[v] if paper else None) for v in VARIANTS]
    click.echo(comparison_text(items, ref_dir, note))


def _case_study_outputs(cfg, summary, groups, out_dir, backend):
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
    done = load_finished(out_dir, cfg, backend)
    records = [done[t] for t in sorted(done)]
    plots.training_curves(records, VARIANTS, os.path.join(out_dir, "training_curves.png"), cfg.dense_epochs)
    click.echo(f"wrote {out_dir}/summary.json, trials.jsonl, models/, fig2_dense_clause.png, figA1_random.png, training_curves.png")


# ---------------------------------------------------------------- vision (Sec. 3.3, 3.4, A.7)
def _train(lr, batch_size, l1, l2):
    from fpe_ref.experiments.vision import vision_train_config

    return vision_train_config(lr=lr, batch_size=batch_size, l1=l1, l2=l2)


def _dataset(data_file, data_dir, n_classes):
    if data_file and data_dir:
        raise FPEError("give either --data (embeddings) or --data-dir (FashionMNIST), not both")
    if data_file:
        return dict(dataset="embeddings", data_path=os.path.abspath(data_file), n_classes=n_classes)
    if n_classes is not None:
        raise FPEError("--n-classes applies to --data (embeddings) only")
    # absolute, so that ./x and x, or another working directory, name the same sweep
    return dict(dataset="fashion-mnist", data_path=os.path.abspath(data_dir) if data_dir else None, n_classes=None)


def _hidden(hidden, default):
    hs = list(hidden) or list(default)
    if any(h < 1 for h in hs):
        raise FPEError(f"--hidden must be positive, got {hs}")
    return sorted(dict.fromkeys(hs))


def _command_line() -> str:
    from fpe_ref.experiments.outputs import command_line

    return command_line()


def _class_names(cfg):
    if cfg.dataset == "fashion-mnist":
        from fpe_ref.data.fashion_mnist import FASHION_MNIST_CLASSES

        return FASHION_MNIST_CLASSES
    return None


def _trainer_key(choice: str) -> str:
    """--trainer (``auto`` is numpy here) -> the name vision runs carry in their keys ("numpy-reference")."""
    return trainers.key_name(choice, "vision")


def _post_epochs(post_epochs, pretrain_epochs):
    """--post-epochs, defaulting to --pretrain-epochs (which may not then be 0)."""
    if post_epochs is not None:
        return post_epochs
    if pretrain_epochs == 0:
        raise FPEError("--pretrain-epochs 0 needs an explicit --post-epochs (it defaults to the pre-training epochs)")
    return pretrain_epochs


def vision_out(out_dir, command: str, cfgs, quick: bool = False) -> str:
    """The folder of a vision command: ``--out``, or ``runs/<command>/<hash of the configs>``."""
    from fpe_ref.experiments.outputs import resolve_out

    return resolve_out(out_dir, command, {"command": command, "sweeps": [c.signature() for c in cfgs]}, quick)


def run_sweep_cmd(cfg, hiddens, out_dir, jobs, label):
    """Run/resume one sweep with the progress display; returns the finished records of ``hiddens``."""
    from fpe_ref.experiments.progress import Progress
    from fpe_ref.experiments.runs import local_executor
    from fpe_ref.experiments.vision import load_records, run_vision_sweep

    if jobs is not None and jobs < 1:
        raise FPEError(f"--jobs must be >= 1, got {jobs}")
    jobs = jobs or os.cpu_count() or 1
    n_runs = cfg.trials * len(hiddens)
    click.echo(f"{label}: hidden {hiddens}, {cfg.trials} trials, epochs {cfg.pretrain_epochs}+{cfg.post_epochs}, "
               f"variants {', '.join(cfg.variants)}; {n_runs} runs on {jobs} job(s) -> {out_dir}/runs.jsonl")
    # always worker processes, --jobs 1 included: every run then computes with one BLAS thread, and
    # the records are bitwise the same for every --jobs (BLAS results depend on its thread count)
    executor = local_executor(min(jobs, n_runs))
    try:
        progress = Progress(label=label, unit="runs")
        run_vision_sweep(cfg, hiddens, out_dir, meta={"command": _command_line()}, executor=executor,
                         progress=progress, log=progress.print)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    recs = [r for r in load_records(out_dir, cfg) if r["key"]["hidden"] in hiddens]
    return recs


def settings_block(cfg, hiddens, extra="", schedule=None) -> str:
    tr = cfg.train
    src = cfg.data_path or ("/usr/share/datasets/fashion-mnist" if cfg.dataset == "fashion-mnist" else "")
    lines = [
        f"Command: `{_command_line()}`",
        "",
        f"* data: {cfg.dataset} ({src}); validation: {100 * cfg.val_fraction:.0f}% of the training set, not trained on",
        f"* network: {cfg.layers} weight layers ({cfg.layers - 1} hidden), LayerNorm before ReLU: {cfg.use_layer_norm}; "
        f"neurons (pre-expansion): {hiddens}",
        schedule or (f"* schedule: {cfg.pretrain_epochs} epochs dense pre-training, then {cfg.post_epochs} epochs for "
                     f"every model (fresh Adam); scratch baselines train {cfg.pretrain_epochs + cfg.post_epochs} "
                     "epochs in one phase"),
        f"* alpha = {cfg.alpha}; variants: {', '.join(cfg.variants)}; trials: {cfg.trials}; seed {cfg.seed}",
        f"* optimiser: Adam lr {tr.lr}, betas {tuple(tr.betas)}, batch {tr.batch_size}; penalties lambda_1 = {tr.l1} "
        f"(W1), lambda_2 = {tr.l2} (all); warm-up: {tr.warmup}; dtype {cfg.dtype}",
    ]
    if any(v.startswith("gram") for v in cfg.variants):
        lines.append(f"* Gram split: {cfg.gram_clusters} clusters, {cfg.gram_linkage} linkage on the rows of "
                     "G = W1^T W1 of the trained parent")
    if any(v.startswith("rewire") for v in cfg.variants):
        lines.append(f"* rewiring: every {cfg.rewire_every} steps, fraction {cfg.rewire_fraction} of masked weights, "
                     f"{cfg.rewire_decay} decay, events stop after {100 * cfg.rewire_end:.0f}% of the post-split steps")
    if extra:
        lines.append(extra)
    if any(v.endswith("scratch") for v in cfg.variants):
        lines.append("* `†` baselines beyond the paper: dense from scratch = the parent's architecture (same non-zero "
                     "count) trained pre+post epochs without the restart; sparse mask from scratch = the random "
                     "split's exact post-split mask, freshly initialised, trained pre+post epochs (no dense "
                     "pre-training).")
    return "\n".join(lines) + "\n"


def report_sweep(cfg, records, hiddens, out_dir, title, figure_name, reference=None):
    """summary.json, tables.md and the Figure-5-style figure of one sweep; echo the main tables."""
    from fpe_ref.experiments import vision_report as vr

    if not records:
        raise FPEError(f"no finished runs in {out_dir}")
    summary = vr.checked_summary(records, cfg.variants, os.path.join(out_dir, "runs.jsonl"))
    C = len(records[0]["parent"]["per_class_test_acc"])
    text = vr.tables(summary, cfg.variants, C, _class_names(cfg))
    head = f"# {title}\n\n" + settings_block(cfg, hiddens) + "\n"
    vr.write(os.path.join(out_dir, "tables.md"), head + text)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump({"config": cfg.signature(), "trials": cfg.trials, "summary": {str(h): s for h, s in summary.items()}},
                  f, indent=2)
    fig = vr.figure_hidden_sweep(summary, cfg.variants, os.path.join(out_dir, figure_name), title)
    click.echo(text.split("\n### Model selection")[0])
    click.echo(f"wrote {out_dir}/tables.md, summary.json, {os.path.basename(fig)}")
    if reference:
        from fpe_ref.experiments.compare import vision_comparison

        click.echo(vision_comparison(records, out_dir, reference))
    return summary


def _vision_config(**settings):
    from fpe_ref.experiments.vision import VisionConfig

    return VisionConfig(**settings)


@reproduce.command("fashion-mnist")
@opt.hidden(multiple=True, note="default 4 8 16 32; Figure 5a's range is not stated")
@opt.trials(note="default 5, Figure 5: five; --quick: 2")
@opt.pretrain_epochs(note="default 20, Figure 5a's caption; --quick: 1")
@opt.post_epochs(note="default 20, not stated by the paper; --quick: 1")
@opt.baselines
@opt.quick("hidden 4 8, 2 trials, 1+1 epochs")
@opt.out(note="default: a fresh git-ignored runs/fashion-mnist/<hash of the options>/, which the same command "
              "resumes; the committed reference: results/fashion_mnist")
@data_options("Not used here: fashion-mnist reads --data-dir.")
@split_options
@opt.optimizer_options
@run_options
def fashion_mnist(hidden, trials, pretrain_epochs, post_epochs, baselines, quick, out_dir, data_file, data_dir,
                  n_classes, alpha, gram_clusters, gram_linkage, lr, batch_size, l1, l2, jobs, val_fraction,
                  dtype, seed, trainer):
    """Figure 5a: FashionMNIST, dense vs random-split vs Gram-split FPE over the hidden size.

    Raw flattened pixels scaled to [0, 1] (784 inputs, 10 classes, softmax
    cross-entropy). Per hidden size and trial: a dense [784, h, 10] MLP pre-trains
    --pretrain-epochs; it is split (alpha, random and Gram-cluster splits; the Gram
    split clusters the rows of W1^T W1 of the trained parent) and every model trains
    --post-epochs more; the beyond-the-paper baselines train from scratch.
    Tables: absolute and relative test accuracy, accuracy per parameter, selection on
    the test set vs on a validation split, per-class accuracy. Resumable.
    """
    if data_file:
        raise FPEError("fashion-mnist reads IDX files: use --data-dir, or `fpe reproduce embeddings --data FILE`")
    if n_classes is not None:
        raise FPEError("--n-classes applies to embeddings only")
    q = {"trials": 2, "pretrain_epochs": 1, "post_epochs": 1} if quick else {}
    trials = trials if trials is not None else q.get("trials", 5)
    pretrain_epochs = pretrain_epochs if pretrain_epochs is not None else q.get("pretrain_epochs", 20)
    post_epochs = post_epochs if post_epochs is not None else q.get("post_epochs", 20)
    if quick:
        hidden = hidden or (4, 8)
    variants = ("dense", "random", "gram") + (("dense-scratch", "sparse-scratch") if baselines else ())
    cfg = _vision_config(dataset="fashion-mnist", data_path=os.path.abspath(data_dir) if data_dir else None,
                       alpha=alpha, pretrain_epochs=pretrain_epochs, post_epochs=post_epochs, variants=variants,
                       trials=trials, val_fraction=val_fraction, gram_clusters=gram_clusters,
                       gram_linkage=gram_linkage, dtype=dtype, seed=seed, trainer=_trainer_key(trainer),
                       train=_train(lr, batch_size, l1, l2))
    hs = _hidden(hidden, (4, 8, 16, 32))
    out_dir = vision_out(out_dir, "fashion-mnist", [cfg], quick)
    recs = run_sweep_cmd(cfg, hs, out_dir, jobs, "fashion-mnist")
    report_sweep(cfg, recs, hs, out_dir, "Figure 5a: FashionMNIST, FPE vs dense (alpha = %d)" % alpha,
                 "fig5a_fashion_mnist.png", reference="fashion_mnist")

@reproduce.command("embeddings")
@opt.data(required=True)
@opt.n_classes
@click.option("--layers", type=click.Choice(["2", "5", "7", "9"]), default="2", show_default=True,
              help="Weight layers: 2 = one hidden layer (Figure 5b-d); 5, 7, 9 = A.7's deep MLPs with LayerNorm "
                   "and alternating expansion of hidden layers 1, 3, ... (Tables A3/A4).")
@opt.hidden(multiple=True, note="default 8 16 32 64 for 2 layers; 4 8 12 16 (Table A3) for deep nets")
@opt.trials(5, note="paper: 5 for Figure 5b-c, 10 for 5d and Table A4, 30 for Table A3")
@opt.pretrain_epochs(25, note="Figure 5b-d's caption: 25")
@opt.post_epochs(25, note="not stated by the paper")
@click.option("--gram/--no-gram", default=None,
              help="Include the Gram split (default: on for 2 layers; the deep tables are random-split only).")
@opt.baselines
@opt.out(note="default: a fresh git-ignored runs/embeddings-<file stem>-L<layers>/<hash of the options>/, "
              "which the same command resumes; committed references: results/embeddings/<file stem>-L<layers>")
@split_options
@opt.optimizer_options
@run_options
def embeddings(data_file, n_classes, layers, hidden, trials, pretrain_epochs, post_epochs, gram, baselines,
               out_dir, alpha, gram_clusters, gram_linkage, lr, batch_size, l1, l2, jobs, val_fraction, dtype,
               seed, trainer):
    """Figure 5b-d and Tables A3/A4: FPE on precomputed (CLIP) embeddings, single-layer or deep.

    Same workflow as fashion-mnist on the embedding file's train/test split. With
    --layers 5/7/9 the MLP has LayerNorm before each ReLU and hidden layers 1, 3, ...
    are split (A.7: the layer after each split layer only widens its inputs and is
    re-sparsified; the classification head is never split); the weight count is held
    exactly. No embedding files ship with fpe-ref: produce them (docs/embeddings.md).
    """
    L = int(layers)
    gram = (L == 2) if gram is None else gram
    variants = ("dense", "random") + (("gram",) if gram else ()) + \
               (("dense-scratch", "sparse-scratch") if baselines else ())
    cfg = _vision_config(dataset="embeddings", data_path=os.path.abspath(data_file), n_classes=n_classes, layers=L,
                       alpha=alpha, pretrain_epochs=pretrain_epochs, post_epochs=post_epochs, variants=variants,
                       trials=trials, val_fraction=val_fraction, gram_clusters=gram_clusters,
                       gram_linkage=gram_linkage, dtype=dtype, seed=seed,
                       trainer=_trainer_key(trainer), train=_train(lr, batch_size, l1, l2))
    hs = _hidden(hidden, (8, 16, 32, 64) if L == 2 else (4, 8, 12, 16))
    stem = os.path.splitext(os.path.basename(os.path.normpath(data_file)))[0]
    out_dir = vision_out(out_dir, f"embeddings-{stem}-L{L}", [cfg])
    recs = run_sweep_cmd(cfg, hs, out_dir, jobs, "embeddings")
    what = "Figure 5b-d" if L == 2 else "Tables A3/A4"
    report_sweep(cfg, recs, hs, out_dir, f"{what}: {stem}, {L} layers, FPE vs dense (alpha = {alpha})",
                 "fig5_embeddings.png" if L == 2 else "tableA3_deep.png", reference=f"embeddings/{stem}-L{L}")

@reproduce.command("two-four")
@opt.hidden(multiple=True, note="Table A5: 8")
@opt.trials(10, note="Table A5: ten")
@opt.pretrain_epochs(note="default 20 on FashionMNIST, 25 on embeddings")
@opt.post_epochs(note="default: the pre-training epochs")
@opt.out(note="default: a fresh git-ignored runs/two-four-<data>/<hash of the options>/, which the same command "
              "resumes; the committed reference: results/two_four_<data>")
@data_options("Without it: FashionMNIST (the paper's Table A5 uses CIFAR-100 CLIP embeddings).")
@opt.optimizer_options
@run_options
def two_four(hidden, trials, pretrain_epochs, post_epochs, out_dir, data_file, data_dir, n_classes, lr,
             batch_size, l1, l2, jobs, val_fraction, dtype, seed, trainer):
    """Table A5: 2:4 structured-sparsity FPE vs random-split FPE vs dense (alpha = 2).

    The 2:4 split gives, in every block of four consecutive inputs of a parent, two to
    each child (each child row is exactly 2:4 before re-sparsification and at most 2
    of 4 after). Needs an input dimension divisible by 4 (784 and 512 are).
    """
    ds = _dataset(data_file, data_dir, n_classes)
    pe = pretrain_epochs if pretrain_epochs is not None else (20 if ds["dataset"] == "fashion-mnist" else 25)
    cfg = _vision_config(**ds, alpha=2, pretrain_epochs=pe, post_epochs=_post_epochs(post_epochs, pe),
                       variants=("dense", "two-four", "random"), trials=trials, val_fraction=val_fraction,
                       dtype=dtype, seed=seed, trainer=_trainer_key(trainer), train=_train(lr, batch_size, l1, l2))
    hs = _hidden(hidden, (8,))
    out_dir = vision_out(out_dir, f"two-four-{_data_tag(ds)}", [cfg])
    recs = run_sweep_cmd(cfg, hs, out_dir, jobs, "two-four")
    report_sweep(cfg, recs, hs, out_dir, f"Table A5: 2:4 vs random FPE ({_data_tag(ds)})", "tableA5_two_four.png",
                 reference=f"two_four_{_data_tag(ds)}")

@reproduce.command("rewiring")
@opt.hidden(multiple=True, note="A.7: 4 8 16")
@opt.trials(5, note="A.7: ten")
@opt.pretrain_epochs(note="default 20 on FashionMNIST, 25 on embeddings")
@opt.post_epochs(note="default: the pre-training epochs")
@click.option("--every", type=int, default=100, show_default=True,
              help="Optimizer steps between rewiring events (K).")
@click.option("--fraction", type=float, default=0.3, show_default=True,
              help="Share of the masked weights unmasked (at zero) per event; as many smallest-|w| active "
                   "weights are pruned, per matrix.")
@click.option("--decay", type=click.Choice(["constant", "cosine"]), default="cosine", show_default=True,
              help="Fraction schedule: constant, or RigL's cosine decay to 0 at the end point.")
@click.option("--end", type=float, default=0.75, show_default=True,
              help="Events stop after this share of the post-split steps (RigL: 0.75).")
@opt.out(note="default: a fresh git-ignored runs/rewiring-<data>/<hash of the options>/, which the same command "
              "resumes; the committed reference: results/rewiring_<data>")
@data_options("Without it: FashionMNIST (the paper's rewiring runs use CIFAR-100 CLIP embeddings).")
@opt.alpha
@opt.optimizer_options
@run_options
def rewiring(hidden, trials, pretrain_epochs, post_epochs, every, fraction, decay, end, out_dir, data_file,
             data_dir, n_classes, alpha, lr, batch_size, l1, l2, jobs, val_fraction, dtype, seed, trainer):
    """A.7 dynamic rewiring: one-shot random FPE vs random FPE + rewiring vs dense.

    After the split, every --every optimizer steps each masked matrix unmasks a random
    --fraction of its masked positions (new weights start at 0 with zero Adam moments)
    and prunes as many of its smallest-|w| previously active weights: the non-zero
    count of every matrix stays exactly constant. The paper's hyper-parameters for this
    are not given ("optimal rewiring hyperparameters"); ours are the defaults below.
    """
    ds = _dataset(data_file, data_dir, n_classes)
    pe = pretrain_epochs if pretrain_epochs is not None else (20 if ds["dataset"] == "fashion-mnist" else 25)
    cfg = _vision_config(**ds, alpha=alpha, pretrain_epochs=pe, post_epochs=_post_epochs(post_epochs, pe),
                       variants=("dense", "random", "rewire"), trials=trials, val_fraction=val_fraction,
                       rewire_every=every, rewire_fraction=fraction, rewire_decay=decay, rewire_end=end,
                       dtype=dtype, seed=seed, trainer=_trainer_key(trainer), train=_train(lr, batch_size, l1, l2))
    hs = _hidden(hidden, (4, 8, 16))
    out_dir = vision_out(out_dir, f"rewiring-{_data_tag(ds)}", [cfg])
    recs = run_sweep_cmd(cfg, hs, out_dir, jobs, "rewiring")
    report_sweep(cfg, recs, hs, out_dir, f"A.7 rewiring: one-shot vs rewired random FPE ({_data_tag(ds)})",
                 "rewiring.png", reference=f"rewiring_{_data_tag(ds)}")

@reproduce.command("alpha")
@click.option("--alphas", type=int, multiple=True, help="Expansion factors (Figure 6d: 2 4 8).")
@opt.hidden(multiple=True, note="default 4 8 16 32")
@opt.trials(5, note="Figure 6d: five")
@opt.pretrain_epochs(note="default 20 on FashionMNIST, 25 on embeddings")
@opt.post_epochs(note="default: the pre-training epochs")
@opt.out(note="default: a fresh git-ignored runs/alpha-<data>/<hash of the options>/, which the same command "
              "resumes; the committed reference: results/alpha_<data>")
@data_options("Without it: FashionMNIST (the paper's Figure 6d uses CIFAR-100 CLIP embeddings).")
@opt.optimizer_options
@run_options
def alpha_cmd(alphas, hidden, trials, pretrain_epochs, post_epochs, out_dir, data_file, data_dir, n_classes, lr,
              batch_size, l1, l2, jobs, val_fraction, dtype, seed, trainer):
    """Figure 6d: relative improvement of random-split FPE vs neurons for alpha in {2, 4, 8}.

    Every alpha splits the same trained parent of a (hidden, trial), so the comparison
    across alpha is paired. Also reports the mean cosine of W1's rows (Figure 6c).
    """
    ds = _dataset(data_file, data_dir, n_classes)
    pe = pretrain_epochs if pretrain_epochs is not None else (20 if ds["dataset"] == "fashion-mnist" else 25)
    al = sorted(dict.fromkeys(alphas or (2, 4, 8)))
    cfg = _vision_config(**ds, alpha=al[0], pretrain_epochs=pe, post_epochs=_post_epochs(post_epochs, pe),
                       variants=("dense",) + tuple(f"random@{a}" for a in al), trials=trials,
                       val_fraction=val_fraction, dtype=dtype, seed=seed,
                       trainer=_trainer_key(trainer), train=_train(lr, batch_size, l1, l2))
    hs = _hidden(hidden, (4, 8, 16, 32))
    out_dir = vision_out(out_dir, f"alpha-{_data_tag(ds)}", [cfg])
    recs = run_sweep_cmd(cfg, hs, out_dir, jobs, "alpha")
    report_sweep(cfg, recs, hs, out_dir, f"Figure 6d: random-split FPE by alpha ({_data_tag(ds)})",
                 "fig6d_alpha.png", reference=f"alpha_{_data_tag(ds)}")

@reproduce.command("pretrain-timing")
@opt.hidden(8, note="Figure 6b: 8")
@click.option("--split-at", type=int, multiple=True,
              help="Pre-training epochs before the split (repeatable). Default 1 5 10 20 30.")
@click.option("--total-epochs", type=int, default=40, show_default=True,
              help="Pre-training + post-split epochs, the same for every split time.")
@opt.trials(5, note="Figure 6b: five")
@opt.out(note="default: a fresh git-ignored runs/pretrain-timing-<data>/<hash of the options>/, which the "
              "same command resumes; one sub-folder per split time; the committed reference: "
              "results/pretrain_timing_<data>")
@data_options("Without it: FashionMNIST (the paper's Figure 6b uses CIFAR-100 CLIP embeddings).")
@opt.alpha
@opt.optimizer_options
@run_options
def pretrain_timing(hidden, split_at, total_epochs, trials, out_dir, data_file, data_dir, n_classes, alpha, lr,
                    batch_size, l1, l2, jobs, val_fraction, dtype, seed, trainer):
    """Figure 6b: training curves of dense and random-split FPE for several split times.

    For each split epoch P the dense parent trains P epochs, then the dense baseline
    (fresh Adam) and the random-split model train total - P more. Curves: mean test
    accuracy per epoch +- s.e.m.; table: final accuracy per split time.
    """
    from fpe_ref.experiments.outputs import open_output

    ds = _dataset(data_file, data_dir, n_classes)
    splits_at = sorted(dict.fromkeys(split_at or (1, 5, 10, 20, 30)))
    if any(p < 0 or p >= total_epochs for p in splits_at):
        raise FPEError(f"--split-at values must be in [0, --total-epochs), got {splits_at}")
    cfgs = [_vision_config(**ds, alpha=alpha, pretrain_epochs=p, post_epochs=total_epochs - p,
                           variants=("dense", "random"), trials=trials, val_fraction=val_fraction, dtype=dtype,
                           seed=seed, trainer=_trainer_key(trainer), train=_train(lr, batch_size, l1, l2))
            for p in splits_at]
    out_dir = vision_out(out_dir, f"pretrain-timing-{_data_tag(ds)}", cfgs)
    with open_output(out_dir, {"command": "pretrain-timing", "sweeps": [c.signature() for c in cfgs]}):
        _pretrain_timing(out_dir, ds, cfgs, splits_at, hidden, total_epochs, alpha, trials, jobs)


def _pretrain_timing(out_dir, ds, cfgs, splits_at, hidden, total_epochs, alpha, trials, jobs):
    """The sub-sweeps of ``fpe reproduce pretrain-timing``, one per split time, then its table and figure."""
    from fpe_ref.experiments import tables
    from fpe_ref.experiments import vision_report as vr
    from fpe_ref.experiments.compare import vision_comparison

    curves, rows = {}, []
    for p, cfg in zip(splits_at, cfgs):
        sub = os.path.join(out_dir, f"split_at_{p}")
        recs = run_sweep_cmd(cfg, [hidden], sub, jobs, f"split at {p}")
        click.echo(f"split at {p}: " + vision_comparison(recs, sub, f"pretrain_timing_{_data_tag(ds)}/split_at_{p}"))
        s = vr.checked_summary(recs, cfg.variants, os.path.join(sub, "runs.jsonl"))[hidden]
        rows.append([p, tables.pct(s["parent"]["acc_mean"], s["parent"]["acc_sem"]),
                     tables.pct(s["dense"]["acc_mean"], s["dense"]["acc_sem"]),
                     tables.pct(s["random"]["acc_mean"], s["random"]["acc_sem"]), vr.ri_cell(s["random"])])
        for v in cfg.variants:
            full = []
            for r in recs:
                c0, c1 = r["parent"]["curve"], r["models"][v]["curve"]
                full.append(c0["test_acc"] + c1["test_acc"])
            ep = list(range(1, total_epochs + 1))
            A = np.asarray(full)
            sem = A.std(0, ddof=1) / np.sqrt(len(A)) if len(A) > 1 else np.zeros(A.shape[1])
            curves[f"{v}, split at {p}"] = (ep, A.mean(0), sem, p, p)
    table = tables.table(["split at epoch", "dense parent at split (%)", f"dense after {total_epochs} (%)",
                       f"random FPE after {total_epochs} (%)", "(RI − 1) %"], rows)
    title = f"Figure 6b: split timing, {hidden} neurons, alpha {alpha} ({_data_tag(ds)})"
    vr.write(os.path.join(out_dir, "tables.md"),
             f"# {title}\n\n" + settings_block(
                 cfgs[-1], [hidden], schedule=f"* schedule: the dense parent trains P epochs, P in {splits_at}; "
                 f"then the dense baseline (fresh Adam) and the random split train {total_epochs} - P more") +
             "\n" + table + "\n")
    vr.figure_curves(curves, os.path.join(out_dir, "fig6b_pretrain_timing.png"), title,
                     zoom_from=min(10, total_epochs - 1), trials=trials)
    click.echo(table)
    click.echo(f"wrote {out_dir}/tables.md, fig6b_pretrain_timing.png")


def _data_tag(ds) -> str:
    if ds["dataset"] == "fashion-mnist":
        return "fashion_mnist"
    return os.path.splitext(os.path.basename(os.path.normpath(ds["data_path"])))[0]

