"""Dynamic rewiring of FPE masks (A.7, "Compatibility with Advanced and Structured Sparsity").

Paper: A.7 "Inspired by RigL (Evci et al., 2020) ... After the initial FPE split, we
periodically update the sparsity mask by randomly unmasking a fraction of weights and, to
maintain a fixed parameter count, re-pruning an equal number of the lowest-magnitude
weights." The paper gives no schedule, fraction or scope; the choices below are ours.

One rewiring event, for each masked weight matrix ``W`` with mask ``M`` separately:

1. ``k = min(round(f * #masked), #active)`` with ``f = schedule.fraction(t)``: the
   fraction is of the currently *masked* positions (our reading of "randomly unmasking a
   fraction of weights"), capped so that no more can be pruned than exist.
2. Prune: the ``k`` active weights with the smallest ``|w|`` (ties broken by a random key,
   as in ``expand``), chosen among the weights active *before* this event, so newly grown
   weights (which are exactly 0) are never pruned in the event that grew them.
3. Grow: ``k`` positions drawn uniformly without replacement from those masked *before*
   this event (so a weight pruned now is not regrown now), set active with value 0.0.
4. Adam: the first and second moments of pruned and of grown positions are set to 0, so a
   grown weight starts from zero value and zero moments (RigL's choice); Adam's step
   count ``t`` is shared and keeps running.

The count is held **per matrix**: ``M.sum()`` of every masked ``W`` is the same after an
event as before, so the total (``Ledger.weights``) is held too. Per matrix rather than
pooled over ``W1``/``W2`` because ``W2`` has only ``C alpha h`` entries and would
otherwise lose or gain weights to ``W1`` by magnitude scale alone.

Schedule (``RewireSchedule``): an event after every ``every`` optimizer steps, while
``t <= end`` (``end = None``: until training stops); ``fraction(t)`` is constant, or
RigL's cosine decay ``f0 / 2 (1 + cos(pi t / end))``.

Where it runs: ``train()`` has no per-step hook, so rewiring is done by an optimizer,
``RewiringAdam``, which is ``Adam`` plus an event after every ``every``-th step (the
same structure as RigL's reference code, which wraps the optimizer). Pass it as
``train(..., optimizer=RewiringAdam(...))``: no other change to the training loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fpe_ref.errors import FPEError, check_int
from fpe_ref.rng import as_rng
from fpe_ref.optim import Adam

DECAYS = ("constant", "cosine")


@dataclass(frozen=True)
class RewireSchedule:
    """When and how much to rewire (our choices; the paper tuned these and does not say how)."""

    every: int = 100  # K: optimizer steps between events (about one FashionMNIST epoch at B = 500)
    fraction: float = 0.1  # f0: share of the masked positions unmasked per event
    decay: str = "constant"  # "constant" or "cosine" (RigL: f0/2 (1 + cos(pi t / end)))
    end: int | None = None  # last step at which an event may happen; None = no end (needed for "cosine")

    def __post_init__(self):
        check_int("rewire every", self.every, 1, what="a positive number of steps")
        if not (isinstance(self.fraction, (int, float, np.floating)) and 0.0 <= self.fraction <= 1.0):
            raise FPEError(f"rewire fraction must be in [0, 1], got {self.fraction!r}")
        if self.decay not in DECAYS:
            raise FPEError(f"rewire decay must be one of {DECAYS}, got {self.decay!r}")
        if self.end is not None:
            check_int("rewire end", self.end, 1, what="a positive step count or None")
        if self.decay == "cosine" and self.end is None:
            raise FPEError("the cosine rewiring schedule needs an end step (end=...)")

    def is_event(self, t: int) -> bool:
        """Whether optimizer step ``t`` (1-based) is followed by a rewiring event."""
        return t % self.every == 0 and (self.end is None or t <= self.end)

    def fraction_at(self, t: int) -> float:
        """The unmasking fraction at step ``t`` (0 after ``end``)."""
        if self.end is not None and t > self.end:
            return 0.0
        if self.decay == "constant":
            return float(self.fraction)
        return float(self.fraction) * 0.5 * (1.0 + np.cos(np.pi * t / self.end))

    def to_dict(self) -> dict:
        return asdict(self)


def rewire_matrix(W, M, frac: float, rng, moments=()):
    """One rewiring event on one matrix, in place. Returns ``(pruned, grown)`` flat indices.

    ``W`` (out, in) and its boolean mask ``M`` are modified in place (``W[~M] == 0`` holds
    before and after); every array in ``moments`` (Adam's ``m`` and ``v`` of ``W``) is zeroed
    at the pruned and grown positions. The mask-on count is unchanged.
    """
    rng = as_rng(rng)  # an int seed or a Generator
    if not (W.flags.c_contiguous and M.flags.c_contiguous and M.dtype == bool and W.shape == M.shape):
        raise FPEError("rewire_matrix needs C-contiguous weight and boolean mask arrays of one shape")
    Mf, Wf = M.reshape(-1), W.reshape(-1)  # views, so the edits below land in M and W
    active = np.flatnonzero(Mf)
    masked = np.flatnonzero(~Mf)
    k = min(int(round(frac * masked.size)), active.size)
    if k == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    key = rng.random(active.size)
    prune = active[np.lexsort((key, np.abs(Wf[active])))[:k]]  # smallest |w|, ties at random
    grow = rng.choice(masked, size=k, replace=False)
    Mf[prune] = False
    Mf[grow] = True
    Wf[prune] = 0.0
    Wf[grow] = 0.0  # already 0 by the mask invariant; explicit: grown weights start at zero
    for mom in moments:
        if not mom.flags.c_contiguous:
            raise FPEError("rewire_matrix needs C-contiguous moment arrays")
        mf = mom.reshape(-1)
        mf[prune] = 0.0
        mf[grow] = 0.0
    return prune, grow


class RewiringAdam(Adam):
    """``Adam`` that rewires the masks after every ``schedule.every``-th step (module docstring).

    Parameters
    ----------
    params : dict, the model's parameters (as ``Adam``).
    schedule : RewireSchedule
    rng : numpy Generator for the growth draws and prune tie-breaks.
    names : weight names to rewire; default: every masked weight at each event.
    lr, betas, eps : as ``Adam``.

    ``log`` collects one dict per event and matrix: step, name, fraction, k, count.
    """

    def __init__(self, params: dict, schedule: RewireSchedule, rng, names=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        rng = as_rng(rng)  # an int seed or a Generator
        super().__init__(params, lr, betas, eps)
        if not isinstance(schedule, RewireSchedule):
            raise FPEError(f"schedule must be a RewireSchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.rng = rng
        self.names = None if names is None else tuple(names)
        self.log = []

    @classmethod
    def from_adam(cls, opt: Adam, schedule: RewireSchedule, rng, names=None) -> "RewiringAdam":
        """Continue from an existing Adam state (moments and step count copied)."""
        rng = as_rng(rng)  # an int seed or a Generator
        new = cls(opt.m, schedule, rng, names, opt.lr, opt.betas, opt.eps)
        new.t = opt.t
        new.m = {k: v.copy() for k, v in opt.m.items()}
        new.v = {k: v.copy() for k, v in opt.v.items()}
        return new

    def step(self, params: dict, grads: dict, masks: dict, lr=None):
        super().step(params, grads, masks, lr=lr)
        if self.schedule.is_event(self.t):
            self.rewire(params, masks)

    def rewire(self, params: dict, masks: dict):
        """One event at the current step on every (selected) masked matrix; masks change in place."""
        frac = self.schedule.fraction_at(self.t)
        names = self.names if self.names is not None else tuple(masks)
        for name in names:
            if name not in masks:
                raise FPEError(f"cannot rewire {name!r}: it has no mask")
            M = masks[name]
            before = int(M.sum())
            pruned, _ = rewire_matrix(params[name], M, frac, self.rng, (self.m[name], self.v[name]))
            after = int(M.sum())
            if after != before:  # the defining invariant
                raise AssertionError(f"rewiring changed the count of {name}: {before} -> {after}")
            self.log.append({"step": int(self.t), "name": name, "fraction": frac, "k": int(pruned.size), "count": after})
