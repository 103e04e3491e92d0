"""The shared options of the ``fpe`` commands: one spelling, one default and one help each.

Every option that more than one command takes is defined here and only here (rasterio's
``rio/options.py`` does the same). An entry is either a click decorator, used as it is
(``@options.seed``), or, where commands need different defaults, a small factory that takes
the command's default and keeps the spelling and the help (``@options.out("results/x")``).
A factory's ``note`` (the paper's value, or a default that depends on ``--quick`` or on the
data) is appended to the one help text.

The Alg. A3 hyper-parameters keep the paper's symbols (A.3.1): learning rate eta, batch size
B, penalties lambda_1, lambda_2, lambda_orth, warm-up W.
"""

from __future__ import annotations

import click

from fpe_ref.errors import FPEError
from fpe_ref.experiments import trainers

DTYPES = ("float32", "float64")


def compose(*decorators):
    """One decorator applying ``decorators``; they appear in ``--help`` in the order given."""
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


def _help(text: str, note: str | None) -> str:
    """``text``, with ``note`` in parentheses before its final full stop."""
    return text if note is None else f"{text[:-1]} ({note})."


def _factory(*decls, help: str, **attrs):
    """An option whose default is the command's: ``factory(default=None, note=None)``.

    A given ``default`` is shown in ``--help``; ``note`` names the paper's value, or describes
    the default that ``None`` stands for (resolved by the command).
    """
    def make(default=None, note: str | None = None):
        return click.option(*decls, **_default(default), help=_help(help, note), **attrs)
    return make


def _default(default, unset: bool = False) -> dict:
    """click's default arguments: a given default is shown in --help; ``None`` stays the default,
    except where ``unset`` (a multiple or required option), which then has none (``()``)."""
    if default is None:
        return {} if unset else {"default": None}
    return {"default": default, "show_default": True}


def given(value, default):
    """``value``, or ``default`` where the option was not given (``None``); an explicit 0 stays 0."""
    return default if value is None else value


# ---------------------------------------------------------------- every command
seed = click.option(
    "--seed", type=int, default=0, show_default=True,
    help="The one seed every random stream (data, validation split, initialisation, shuffling, splits, "
         "simulations) derives from, each through a stream of its own.")

out = _factory(
    "--out", "out_dir", type=click.Path(file_okay=False),
    help="Directory for the outputs, in the layout of results/; the committed reference results/ is written "
         "only when --out names it.")

jobs = _factory(
    "--jobs", type=int,
    help="Worker processes; 1 runs in this process. The results do not depend on it.")


def dry_run(what: str):
    """``--dry-run``: print the plan (``what`` says its units), how much of it is finished, and exit."""
    return click.option("--dry-run", is_flag=True, help=f"Print the plan ({what}: finished, left) and exit.")


def quick(what: str):
    """``--quick``: a small version of the command; ``what`` says what it shrinks."""
    return click.option("--quick", is_flag=True,
                        help=f"A small version for a first look and for tests: {what}. Options given "
                             "explicitly still apply.")


_ALIAS = "fpe_ref.commands.options.trainer_alias"  # ctx.meta key: (alias flag, value) of a given alias


def _remember_alias(ctx, param, value):
    if value is not None:
        ctx.meta[_ALIAS] = (param.opts[0], value)


def _apply_alias(ctx, param, value):
    """--trainer's value, or the value of its hidden alias when that was given."""
    spelled = ctx.meta.pop(_ALIAS, None)
    if spelled is None:
        return value
    flag, choice = spelled
    if value not in (trainers.AUTO, choice):
        raise FPEError(f"{flag} {choice} contradicts --trainer {value}: give one of them")
    return choice


# The choice stays "auto" | "numpy" | "numba" here; each command resolves it for its
# experiment with trainers.get / trainers.key_name.
trainer = click.option(
    "--trainer", type=click.Choice(trainers.CHOICES), default=trainers.AUTO, show_default=True,
    help=trainers.HELP, callback=_apply_alias)


def trainer_with_alias(alias: str):
    """:data:`trainer` plus ``alias``, a hidden second spelling of ``--trainer`` (``--backend``).

    The alias is eager, so click reads it before ``--trainer`` wherever it stands on the
    command line, and ``--trainer``'s callback takes its value. Both may be given only when
    they agree.
    """
    return compose(trainer, click.option(alias, type=click.Choice(trainers.CHOICES), default=None, hidden=True,
                                         is_eager=True, expose_value=False, callback=_remember_alias,
                                         help="Another spelling of --trainer."))


# ---------------------------------------------------------------- Alg. A3 (A.3.1)
lr = click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate eta (A.3.1).")
batch_size = click.option("--batch-size", type=int, default=500, show_default=True, help="Batch size B (A.3.1).")
l1 = click.option("--l1", type=float, default=1e-7, show_default=True, help="lambda_1: L1 penalty on W1 (A.3.1).")
l2 = click.option("--l2", type=float, default=1e-5, show_default=True,
                  help="lambda_2: sum-of-squares penalty on all parameters (A.3.1).")
orth = click.option("--orth", type=float, default=0.0, show_default=True,
                    help="lambda_orth: ||W1 W1^T - I||_F^2 penalty (Alg. A3 line 17; 0 in the paper's runs).")
warmup = click.option("--warmup", type=click.Choice(["none", "lr", "penalty"]), default="none", show_default=True,
                      help="What Alg. A3's ratio r = min(1, e/W) scales: nothing (the pseudocode as written; chosen by "
                           "fpe study choices), the learning rate, or the penalties.")
warmup_epochs = click.option("--warmup-epochs", type=int, default=None,
                             help="W in r = min(1, e/W), the same W in both phases (default: the dense phase's epochs, as "
                                  "A.3.1's N = W = 1000).")

optimizer_options = compose(lr, batch_size, l1, l2)  # the vision commands: no warm-up, no lambda_orth
train_options = compose(lr, batch_size, l1, l2, orth, warmup, warmup_epochs)  # every Alg. A3 option


def train_config(lr, batch_size, l1, l2, orth, warmup, warmup_epochs, epochs=1):
    """The values of :data:`train_options` as a :class:`fpe_ref.train.TrainConfig`."""
    from fpe_ref.train import TrainConfig

    return TrainConfig(epochs=epochs, warmup_epochs=warmup_epochs, warmup=warmup, batch_size=batch_size,
                       lr=lr, l1=l1, l2=l2, orth=orth)


# ---------------------------------------------------------------- the experiments
trials = _factory("--trials", type=int, help="Trials T: independent repetitions, each from streams of its own.")
dense_epochs = _factory("--dense-epochs", type=int, help="Dense pre-training epochs.")
fpe_epochs = _factory("--fpe-epochs", type=int, help="Epochs after the split, for all three models.")
n_samples = _factory("--n-samples", type=int, help="Data set size, train + test; not stated by the paper.")
test_fraction = click.option("--test-fraction", type=float, default=0.2, show_default=True,
                             help="Share of the samples held out for testing. The paper does not state it.")
alpha = click.option("--alpha", type=int, default=2, show_default=True, help="Expansion factor alpha.")


def hidden(default: int | None = None, note: str | None = None, *, multiple: bool = False):
    """``--hidden``: one width h, or (``multiple``) a repeatable list of them, one sweep point each."""
    notes = "; ".join(n for n in ("repeatable" if multiple else None, note) if n) or None
    return click.option("--hidden", type=int, multiple=multiple, **_default(default, unset=multiple),
                        help=_help("Neurons h per hidden layer of the dense parent, before expansion.", notes))


pretrain_epochs = _factory("--pretrain-epochs", type=int, help="Dense pre-training epochs before FPE.")
post_epochs = _factory("--post-epochs", type=int, help="Epochs after the split, for every model.")
baselines = click.option("--baselines/--no-baselines", default=True, show_default=True,
                         help="Also train the dense-from-scratch and sparse-mask-from-scratch baselines.")
gram_clusters = click.option("--gram-clusters", type=int, default=16, show_default=True,
                             help="Gram split (Sec. 3.3): clusters of the rows of G = W1^T W1 (scipy hierarchical).")
gram_linkage = click.option("--gram-linkage", type=click.Choice(["ward", "average", "complete"]), default="ward",
                            show_default=True, help="Gram split: linkage (Ward gives clusters of comparable size).")
val_fraction = click.option("--val-fraction", type=float, default=0.1, show_default=True,
                            help="Share of the training set held out (not trained on) for the validation-selected "
                                 "column; 0 trains on all of it, as the paper.")


def dtype(default: str | None = "float32", note: str | None = None, *, multiple: bool = False):
    """``--dtype``: float32 or float64; ``multiple`` makes it repeatable (parameter ``dtypes``)."""
    return click.option("--dtype", "dtypes" if multiple else "dtype", type=click.Choice(DTYPES), multiple=multiple,
                        **_default(None if multiple else default, unset=multiple),
                        help=_help("Floating-point precision of data, parameters and arithmetic.", note))


def data(note: str | None = None, *, required: bool = False):
    """``--data FILE``: an embedding file; ``note`` says what the command does without it."""
    return click.option("--data", "data_file", type=click.Path(exists=True), required=required,
                        **_default(None, unset=required),
                        help="Embedding file: .npz with X_train, y_train, X_test, y_test, or a directory of .npy "
                             "(docs/embeddings.md); CLIP ViT-B/16 features of CIFAR-100, ImageNet-100 or "
                             "ImageNet-1k in the paper." + ("" if note is None else f" {note}"))


data_dir = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                        help="FashionMNIST IDX directory (default /usr/share/datasets/fashion-mnist, Debian package "
                             "dataset-fashion-mnist).")
n_classes = click.option("--n-classes", type=int, default=None,
                         help="Embeddings: number of classes K (default: inferred from the labels).")

# ---------------------------------------------------------------- where runs execute
executor = click.option("--executor", "executor_kind", type=click.Choice(["local", "dask"]), default="local",
                        show_default=True, help="local: a process pool on this machine; dask: a Dask cluster "
                                                "(Client.get_executor(); needs pip install 'fpe-ref[dask]').")
scheduler = click.option("--scheduler", default=None, help="Address of the Dask scheduler, e.g. tcp://10.0.0.1:8786.")
