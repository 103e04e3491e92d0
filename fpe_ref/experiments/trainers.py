"""The one registry of trainers: what a user chooses -> the function that trains, and the name runs record.

Alg. A3 has one reference implementation, :func:`fpe_ref.train.train` (NumPy). The compiled
trainer of :mod:`fpe_ref.fast.trainer` evaluates the same formulas with sums in another
order, so its runs equal the reference's to rounding, not bit for bit. Each experiment's run
key therefore names the trainer *and its numerics version* (``"numba-v2"``): a run computed by
one trainer is never reused as if another had computed it, and a change to a trainer's
numerics gets a new name. The names differ between experiments: each is the name its
experiment's stored runs carry, and a stored run key never changes.

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

    def check(self, model, cfg, optimizer=None, *, what: str = "this model") -> None:
        """One-line ``FPEError`` when this trainer cannot train ``model`` (before any work)."""
        why = self.unsupported(model, cfg, optimizer)
        if why is not None:
            raise FPEError(f"the {self.name} trainer cannot train {what}: {why}")

    def check_sizes(self, sizes, cfg, *, layer_norm=False, optimizer=None, what: str | None = None) -> None:
        """:meth:`check` for models of ``sizes`` before any exists (a sweep's configuration).

        A stand-in ``MLP.init(sizes, 0, layer_norm=layer_norm)`` is checked: what a trainer
        supports depends on the architecture, ``cfg`` and the optimizer's type, never on the
        weights. ``optimizer``: ``None`` (a fresh Adam) or ``params -> optimizer``, the kind
        of optimizer the runs will continue. ``what`` names the models in the error
        (default: their sizes).
        """
        from fpe_ref.mlp import MLP

        probe = MLP.init(sizes, 0, layer_norm=layer_norm)
        self.check(probe, cfg, None if optimizer is None else optimizer(probe.params),
                   what=what or f"models of sizes {list(sizes)}")

    def train(self, model, X, y, cfg, rng, *, X_test=None, y_test=None, optimizer=None, on_epoch=None):
        """One model: ``(optimizer, History)``, as :func:`fpe_ref.train.train` returns."""
        self.check(model, cfg, optimizer)
        return self.train_many([model], X, y, cfg, [rng], X_test=X_test, y_test=y_test, optimizers=[optimizer],
                               on_epoch=on_epoch)[0]


# The Boolean names' "-v2": the numerics since the vectorised random split (commit ca2b1d1), which draws
# other (identically distributed) masks from the same seed than the runs named in LEGACY.
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
# Names that stored runs carry but no trainer of this fpe-ref reproduces: experiment -> {name: what computed them}.
# "numpy-reference" names the Boolean runs of results/boolean/numpy-v1/, made before the vectorised random split
# (commit ca2b1d1) drew other, identically distributed, masks from the same seed. They load for reports only.
LEGACY = {"boolean": {"numpy-reference": "NumPy trainer before the vectorised random split (commit ca2b1d1)"}}

HELP = ("Which implementation of Alg. A3 trains. numpy: the reference loop, one model at a time. "
        "numba: the fused compiled step, the models of a run side by side (equal to numpy to rounding; "
        "one-hidden-layer MLPs without LayerNorm). auto: numba for the DNF experiments, numpy for the "
        "vision experiments (what the committed results used). Runs record the trainer in their keys.")


def _check_experiment(experiment: str) -> None:
    if experiment not in EXPERIMENTS:
        raise FPEError(f"unknown experiment {experiment!r}; one of {', '.join(EXPERIMENTS)}")


def get(name: str, experiment: str) -> Trainer:
    """The trainer ``name`` (``auto`` resolved for ``experiment``); a one-line error for unknown names."""
    _check_experiment(experiment)
    if name == AUTO:
        name = AUTO_CHOICE[experiment]
    if name not in TRAINERS:
        raise FPEError(f"unknown trainer {name!r}; choose from {', '.join(CHOICES)}")
    return TRAINERS[name]


def key_name(name: str, experiment: str) -> str:
    """The name runs of ``experiment`` trained by ``name`` carry in their keys (``numba`` -> ``numba-v2``)."""
    return get(name, experiment).run_keys[experiment]


def key_names(experiment: str) -> dict:
    """``{run-key name: trainer name}`` of ``experiment``, its ``auto`` trainer first.

    >>> key_names("boolean")
    {'numba-v2': 'numba', 'numpy-v2': 'numpy'}
    """
    _check_experiment(experiment)
    first = AUTO_CHOICE[experiment]
    order = [first] + [n for n in TRAINERS if n != first]
    return {TRAINERS[n].run_keys[experiment]: n for n in order}


def from_key(recorded: str, experiment: str) -> Trainer:
    """The trainer whose runs of ``experiment`` carry ``recorded`` in their keys.

    A one-line ``FPEError`` for a name no trainer carries: a legacy name (:data:`LEGACY`)
    says which code computed those runs; any other is unknown.
    """
    names = key_names(experiment)
    if recorded in names:
        return TRAINERS[names[recorded]]
    legacy = LEGACY.get(experiment, {})
    if recorded in legacy:
        raise FPEError(f"runs of trainer {recorded!r} ({legacy[recorded]}) cannot be reproduced by this "
                       f"fpe-ref; use one of {', '.join(names)}")
    raise FPEError(f"unknown trainer {recorded!r} in a {experiment} run key; this fpe-ref trains with "
                   f"{', '.join(names)}")


def is_known_key(recorded: str, experiment: str) -> bool:
    """Whether stored runs of ``experiment`` may carry ``recorded``: a trainer's key name or a legacy one."""
    return recorded in key_names(experiment) or recorded in LEGACY.get(experiment, {})
