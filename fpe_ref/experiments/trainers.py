"""The one registry of trainers: what a user chooses -> the function that trains, and the name runs record.

Alg. A3 has one reference implementation, :func:`fpe_ref.train.train` (NumPy). The compiled
trainer of :mod:`fpe_ref.fast.trainer` evaluates the same formulas with sums in another
order, so its runs equal the reference's to rounding, not bit for bit. Each experiment's run
key therefore names the trainer *and its numerics version* (``"numba-v2"``): a run computed by
one trainer is never reused as if another had computed it, and a change to a trainer's
numerics gets a new name. The names differ between experiments because each experiment's
stored runs were made at different points of the code's history; the names are part of
the committed run keys and never change.

``--trainer`` (one option, :mod:`fpe_ref.commands.options`) takes ``auto``, ``numpy`` or
``numba``. ``auto`` is the trainer each experiment's committed results were computed with
(:data:`AUTO_CHOICE`): numba for the DNF experiments, whose many small models it trains side
by side, and numpy for the vision experiments, some of whose models (LayerNorm, depth,
rewiring) only the reference trains. A trainer that cannot train a model says so before any
work starts; nothing falls back silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from fpe_ref.errors import FPEError

AUTO = "auto"
EXPERIMENTS = ("case_study", "boolean", "vision")


def _train_numpy(models, X, y, cfg, rngs, *, X_test=None, y_test=None, optimizers=None, on_epoch=None):
    """The reference loop, one model after the other."""
    from fpe_ref.train import train

    optimizers = [None] * len(models) if optimizers is None else list(optimizers)
    return [train(m, X, y, cfg, r, X_test=X_test, y_test=y_test, optimizer=o, on_epoch=on_epoch)
            for m, r, o in zip(models, rngs, optimizers)]


def _train_numba(models, X, y, cfg, rngs, *, X_test=None, y_test=None, optimizers=None, on_epoch=None):
    """The fused compiled step, every model of the call trained side by side."""
    from fpe_ref.fast.trainer import train_batched

    return train_batched(models, X, y, cfg, rngs, X_test=X_test, y_test=y_test, optimizers=optimizers,
                         on_epoch=on_epoch, backend="numba")


def _numpy_unsupported(model, cfg, optimizer=None):
    return None


def _numba_unsupported(model, cfg, optimizer=None):
    from fpe_ref.fast.trainer import numba_unsupported

    return numba_unsupported(model, cfg, optimizer)


@dataclass(frozen=True)
class Trainer:
    """One way of running Alg. A3 on a list of models."""

    name: str  # what --trainer takes
    summary: str  # one line for --help and logs
    train_many: Callable  # (models, X, y, cfg, rngs, *, X_test, y_test, optimizers, on_epoch) -> [(opt, History)]
    unsupported: Callable  # (model, cfg, optimizer) -> None, or why this trainer cannot train the model
    run_keys: Mapping[str, str]  # experiment -> the trainer's name in that experiment's run keys

    def check(self, model, cfg, optimizer=None) -> None:
        """One-line ``FPEError`` when this trainer cannot train ``model`` (before any work)."""
        why = self.unsupported(model, cfg, optimizer)
        if why is not None:
            raise FPEError(f"the {self.name} trainer cannot train this model: {why}")

    def train(self, model, X, y, cfg, rng, *, X_test=None, y_test=None, optimizer=None, on_epoch=None):
        """One model: ``(optimizer, History)``, as :func:`fpe_ref.train.train` returns."""
        self.check(model, cfg, optimizer)
        return self.train_many([model], X, y, cfg, [rng], X_test=X_test, y_test=y_test, optimizers=[optimizer],
                               on_epoch=on_epoch)[0]


TRAINERS = {
    "numpy": Trainer("numpy", "the NumPy reference loop (fpe_ref.train.train), one model at a time",
                     _train_numpy, _numpy_unsupported,
                     {"case_study": "numpy", "boolean": "numpy-v2", "vision": "numpy-reference"}),
    "numba": Trainer("numba", "the fused compiled step (fpe_ref.fast), models trained side by side; "
                     "equal to numpy to rounding; one-hidden-layer MLPs without LayerNorm, plain Adam",
                     _train_numba, _numba_unsupported,
                     {"case_study": "numba", "boolean": "numba-v2", "vision": "numba-v1"}),
}
CHOICES = (AUTO,) + tuple(TRAINERS)
AUTO_CHOICE = {"case_study": "numba", "boolean": "numba", "vision": "numpy"}  # what "auto" means per experiment

HELP = ("Which implementation of Alg. A3 trains. numpy: the reference loop, one model at a time. "
        "numba: the fused compiled step, the models of a run side by side (equal to numpy to rounding; "
        "one-hidden-layer MLPs without LayerNorm). auto: numba for the DNF experiments, numpy for the "
        "vision experiments (what the committed results used). Runs record the trainer in their keys.")


def get(name: str, experiment: str) -> Trainer:
    """The trainer ``name`` (``auto`` resolved for ``experiment``); a one-line error for unknown names."""
    if experiment not in EXPERIMENTS:
        raise FPEError(f"unknown experiment {experiment!r}; one of {', '.join(EXPERIMENTS)}")
    if name == AUTO:
        name = AUTO_CHOICE[experiment]
    if name not in TRAINERS:
        raise FPEError(f"unknown trainer {name!r}; choose from {', '.join(CHOICES)}")
    return TRAINERS[name]


def key_name(name: str, experiment: str) -> str:
    """The name runs of ``experiment`` trained by ``name`` carry in their keys (``numba`` -> ``numba-v2``)."""
    return get(name, experiment).run_keys[experiment]


def from_key(recorded: str, experiment: str) -> Trainer:
    """The trainer whose runs of ``experiment`` carry ``recorded`` in their keys."""
    for t in TRAINERS.values():
        if t.run_keys.get(experiment) == recorded:
            return t
    known = ", ".join(t.run_keys[experiment] for t in TRAINERS.values())
    raise FPEError(f"unknown trainer {recorded!r} in a {experiment} run key; this fpe-ref trains with {known}")
