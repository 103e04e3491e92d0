"""Algorithm A3: minibatch training with Adam and the penalties, trials, and model selection.

Paper: A.3.1 (Adam, lr 1e-3, batch 500, N = W = 1000 epochs, lambda_1 = 1e-7 on W1,
lambda_2 = 1e-5 on all parameters, T = 5 trials) and Alg. A3.

The warm-up ratio
-----------------
Alg. A3 line 8 computes ``r = min(1, e / W)`` once per epoch ``e = 1..N`` and never says what
it multiplies (the comment on that line is lost in the paper's text). ``TrainConfig.warmup``
chooses the interpretation:

``"none"`` (default)
    ``r`` is computed and unused, as the pseudocode literally reads.
``"lr"``
    linear learning-rate warm-up: the epoch's learning rate is ``r * lr``. This is the usual
    meaning of "warm-up" in a training loop. With the paper's N = W the rate rises over
    the whole phase, and every call of ``train`` (each phase of an experiment) starts a
    new ramp, so the model after an FPE split starts again with small steps.
``"penalty"``
    the penalties ramp in: ``r * lambda_1``, ``r * lambda_2``, ``r * lambda_orth``.

The default is chosen by the study ``fpe study choices`` on seeds used only for choosing
(``results/choices/README.md``): on the paper's Sec. 3.1 numbers no reading reproduced more
than ``"none"``, so the most literal reading is the default.

``W`` (``TrainConfig.warmup_epochs``) defaults to the phase's own ``N`` (``epochs``), the
paper's ``N = W``; so a phase of 200 epochs warms up over 200, never over a default 1000 it
would not reach (its learning rate would stay below ``lr`` the whole phase). An explicit
``warmup_epochs`` is kept as given, in every phase.

Divergence
----------
:func:`divergence` reads a phase's :class:`History` and returns a one-line warning when the
run cannot be trusted (final loss not finite, loss rose over the phase, or final training
accuracy at the majority-class rate); :func:`train` emits it as an
:class:`~fpe_ref.errors.FPEWarning`.

Selection
---------
A3 keeps the trial with the best *test* accuracy (lines 21-24). That choice looks at the
test set, so "best of T" is an optimistic number; ``TrialSummary`` also reports the mean and
the sample standard deviation (ddof = 1) over trials, which do not.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from fpe_ref.errors import FPEError, FPEWarning, check_int
from fpe_ref.rng import as_rng
from fpe_ref.layers import LOSSES
from fpe_ref.mlp import MLP
from fpe_ref.optim import Adam, Penalties, penalty_loss_and_grads, schedule

WARMUPS = ("lr", "penalty", "none")
RISE_TOLERANCE = 0.05  # divergence(): a final loss above (1 + this) times the first epoch's has risen
CHANCE_MARGIN = 0.01  # divergence(): a final training accuracy within this of the majority rate is chance


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training phase (A.3.1 defaults)."""

    epochs: int = 1000  # N: epochs in this phase
    warmup_epochs: int | None = None  # W: r = min(1, e / W); None: W = N, this phase's own epochs
    warmup: str = "none"  # what r scales: "none", "lr" or "penalty" (module docstring)
    batch_size: int = 500  # B
    lr: float = 1e-3  # eta
    betas: tuple = (0.9, 0.999)  # Adam's (beta1, beta2), PyTorch defaults
    eps: float = 1e-8  # Adam's eps, PyTorch default
    l1: float = 1e-7  # lambda_1 on W1
    l2: float = 1e-5  # lambda_2 on all parameters (sum of squares)
    orth: float = 0.0  # lambda_orth on ||W1 W1^T - I||_F^2
    eval_every: int = 1  # test accuracy every this many epochs (and at the last)

    def __post_init__(self):
        if self.warmup not in WARMUPS:
            raise FPEError(f"warmup must be one of {WARMUPS}, got {self.warmup!r}")
        for name in ("epochs", "warmup_epochs", "batch_size", "eval_every"):
            if name == "warmup_epochs" and self.warmup_epochs is None:
                continue  # resolved per phase by optim.schedule
            check_int(name, getattr(self, name), 0 if name == "epochs" else 1,
                      what="an integer >= 0" if name == "epochs" else "a positive integer")
        for name in ("lr", "l1", "l2", "orth", "eps"):
            v = getattr(self, name)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not np.isfinite(v) or v < 0:
                raise FPEError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.eps == 0:
            raise FPEError("eps must be > 0 (Adam divides by sqrt(v) + eps, and v is 0 at a masked weight), got 0")
        b = self.betas
        if not isinstance(b, (tuple, list)) or len(b) != 2 or any(
                isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real) or not 0 <= x < 1 for x in b):
            raise FPEError(f"betas must be two numbers in [0, 1) (Adam's beta1, beta2), got {b!r}")

    @property
    def penalties(self) -> Penalties:
        return Penalties(self.l1, self.l2, self.orth)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class History:
    """Per-epoch record of one training phase."""

    loss: list = field(default_factory=list)  # mean training loss over the epoch's batches (data + penalties)
    train_acc: list = field(default_factory=list)  # accuracy over the epoch's batches, as they were trained
    test_epoch: list = field(default_factory=list)  # epochs at which test accuracy was measured
    test_acc: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: list(map(float, v)) if k != "test_epoch" else list(map(int, v)) for k, v in asdict(self).items()}


def check_data(X, y, model, name="training"):
    """Shapes, finiteness and labels of ``(X, y)`` against ``model``; one-line errors.

    Returns ``(X, y)`` as ndarrays (lists converted, nothing cast): :meth:`MLP.check_inputs`
    on ``X`` (``(n, d)``, finite) and :meth:`MLP.check_labels` on ``y`` (``(n,)``, class
    indices).
    """
    if not isinstance(model, MLP):
        raise FPEError(f"model must be an fpe_ref.MLP, got {type(model).__name__}")
    X = model.check_inputs(X, f"{name} inputs")
    if X.shape[0] == 0:
        raise FPEError(f"{name} inputs have no samples (shape {X.shape})")
    y = model.check_labels(y, X.shape[0], f"{name} labels")
    return X, y


def warmup_warning(cfg: TrainConfig) -> str | None:
    """A one-line warning when an explicit warm-up ``W`` is longer than the phase, else None.

    With ``W > N`` the ramp never completes: under ``warmup="lr"`` the last epoch trains at
    ``(N / W) lr`` (``"penalty"``: at ``N / W`` of the penalties). Leave ``warmup_epochs``
    unset for ``W = N``.
    """
    W, N = cfg.warmup_epochs, cfg.epochs
    if cfg.warmup == "none" or W is None or not 0 < N < W:
        return None
    share = f"{N / W:.0%}"
    what = f"the learning rate reaches only {share} of lr" if cfg.warmup == "lr" else \
        f"the penalties reach only {share} of their lambdas"
    return (f"warmup_epochs={W} is longer than the phase's epochs={N}: {what} "
            "(leave warmup_epochs unset to warm up over the phase)")


def chance_accuracy(y) -> float:
    """The majority-class rate of the labels ``y``: the accuracy of always predicting the commonest."""
    _, counts = np.unique(np.asarray(y), return_counts=True)
    return float(counts.max() / counts.sum()) if counts.size else 0.0


def divergence(history, chance) -> str | None:
    """A one-line warning when a training phase cannot be trusted, else None.

    Parameters
    ----------
    history : History (or its ``to_dict()``)
        The phase's per-epoch ``loss`` and ``train_acc``.
    chance : float or array of labels
        The majority-class rate, or the training labels it is computed from
        (:func:`chance_accuracy`).

    The checks, in order: the final training loss is NaN or inf; the loss rose over the
    phase (final > ``(1 + RISE_TOLERANCE)`` times the first epoch's); the final training
    accuracy is at most ``CHANCE_MARGIN`` above the majority-class rate. Each usually means
    a learning rate far too large (or, for chance, too small or too few epochs). An empty
    history (``epochs=0``) gives None.
    """
    get = history.get if isinstance(history, dict) else lambda k: getattr(history, k)
    loss, acc = list(get("loss")), list(get("train_acc"))
    if not loss:
        return None
    if np.ndim(chance) > 0:
        chance = chance_accuracy(chance)
    chance = float(chance)
    last = float(loss[-1])
    if not np.isfinite(last):
        return (f"training diverged: the final training loss is {last} after {len(loss)} epochs "
                "(lower the learning rate?)")
    if len(loss) > 1 and last > (1 + RISE_TOLERANCE) * float(loss[0]):
        return (f"training diverged: the training loss rose from {float(loss[0]):.4g} to {last:.4g} over "
                f"{len(loss)} epochs (lower the learning rate?)")
    if acc and float(acc[-1]) <= chance + CHANCE_MARGIN:
        return (f"training stayed at chance: final training accuracy {float(acc[-1]):.4f} is not above the "
                f"majority-class rate {chance:.4f} by more than {CHANCE_MARGIN} after {len(loss)} epochs "
                "(learning rate too large or too small, or too few epochs?)")
    return None


def train_step(model, opt: Adam, Xb, yb, pen: Penalties, lr: float):
    """One batch of Alg. A3 (lines 10-19): forward, loss + penalties, backward, Adam step.

    Updates ``model.params`` and ``opt`` in place; returns ``(loss incl. penalties, logits)``
    where ``logits`` are from the forward pass before the step.
    """
    logits, caches = model.forward(Xb, check=False)  # the caller checked the data
    loss, dlogits = model.loss(logits, yb, check=False)
    grads = model.backward(dlogits, caches)
    pen_loss, pen_grads = penalty_loss_and_grads(model.params, model.masks, pen)
    for k in grads:
        grads[k] += pen_grads[k]
    opt.step(model.params, grads, model.masks, lr=lr)
    return loss + pen_loss, logits


def train_epoch(model, opt: Adam, X, y, order, batch_size: int, lr: float, pen: Penalties):
    """One epoch of Alg. A3 (lines 9-19): :func:`train_step` on consecutive batches of ``order``.

    ``order`` is this epoch's permutation of the ``n`` training samples; the last batch may
    be smaller (a DataLoader with ``drop_last=False``). Returns ``(mean loss incl. penalties
    over the epoch's samples, accuracy over the batches as they were trained)``.
    """
    predict = LOSSES[model.loss_name].predict
    n = order.shape[0]
    loss_sum = correct = 0.0
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        Xb, yb = X[idx], y[idx]
        loss, logits = train_step(model, opt, Xb, yb, pen, lr)
        loss_sum += loss * len(idx)
        correct += float(np.sum(predict(logits) == yb))
    return loss_sum / n, correct / n


def train(model, X, y, cfg: TrainConfig, rng, *, X_test=None, y_test=None, optimizer=None, on_epoch=None):
    """Train ``model`` in place for ``cfg.epochs`` epochs (one phase of Alg. A3): the reference loop.

    The compiled trainer (:mod:`fpe_ref.fast.trainer`) is tested equal to this loop to
    rounding; experiments choose between them in :mod:`fpe_ref.experiments.trainers`.

    Parameters
    ----------
    model : MLP
    X, y : training inputs ``(n, d)`` and labels ``(n,)``.
    cfg : TrainConfig
    rng : numpy Generator used only for the per-epoch shuffle (a DataLoader with shuffle=True,
        drop_last=False: the last batch may be smaller).
    X_test, y_test : optional test set, evaluated every ``cfg.eval_every`` epochs.
    optimizer : Adam, optional
        Continue from this optimizer state; a fresh ``Adam`` otherwise.
    on_epoch : callable(epoch, history), optional
        Called after each epoch (progress bars).

    Returns
    -------
    optimizer, history

    Warns
    -----
    FPEWarning
        Before training, when an explicit warm-up is longer than the phase
        (:func:`warmup_warning`); after it, when :func:`divergence` finds the phase
        untrustworthy (loss rose, or final training accuracy at chance). A loss that becomes
        NaN or inf stops training with an FPEError.
    """
    rng = as_rng(rng)  # an int seed or a Generator
    if not isinstance(cfg, TrainConfig):
        raise FPEError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    X, y = check_data(X, y, model)
    if X_test is not None or y_test is not None:
        X_test, y_test = check_data(X_test, y_test, model, "test")
    problem = warmup_warning(cfg)
    if problem is not None:
        warnings.warn(problem, FPEWarning, stacklevel=2)
    X = np.asarray(X, dtype=model.dtype)
    opt = optimizer or Adam(model.params, cfg.lr, cfg.betas, cfg.eps)
    hist = History()
    n = X.shape[0]
    for epoch in range(1, cfg.epochs + 1):
        lr, pen = schedule(cfg, epoch)  # Alg. A3 line 8: the warm-up ratio r
        loss, acc = train_epoch(model, opt, X, y, rng.permutation(n), cfg.batch_size, lr, pen)
        hist.loss.append(loss)
        hist.train_acc.append(acc)
        if X_test is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            hist.test_epoch.append(epoch)
            hist.test_acc.append(model.accuracy(X_test, y_test, check=False))
        if not np.isfinite(hist.loss[-1]):
            raise FPEError(f"training diverged: loss is {hist.loss[-1]} at epoch {epoch} (lower the learning rate?)")
        if on_epoch is not None:
            on_epoch(epoch, hist)
    problem = divergence(hist, y)
    if problem is not None:
        warnings.warn(problem, FPEWarning, stacklevel=2)
    return opt, hist


@dataclass
class TrialSummary:
    """Test accuracy over T trials: A3's best-of-T (selected on the test set) and mean +- std."""

    accs: list

    @property
    def best_index(self) -> int:
        return int(np.argmax(self.accs))  # first best, as A3's strict "acc > bestAcc"

    @property
    def best(self) -> float:
        return float(np.max(self.accs))

    @property
    def mean(self) -> float:
        return float(np.mean(self.accs))

    @property
    def std(self) -> float:
        return float(np.std(self.accs, ddof=1)) if len(self.accs) > 1 else 0.0
