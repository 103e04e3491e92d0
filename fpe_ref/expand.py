"""Algorithm A1: Fixed Parameter Expansion by neuron splitting, duplication and re-sparsification.

Paper: Sec. 2.3 and Alg. A1. For the hidden layer ``l`` with weights ``W_l`` (h, d) and the
next layer ``W_{l+1}`` (C, h), and an integer ``alpha >= 2``:

1. Split (Alg. A1 steps 2-5): parent ``i`` becomes children ``i*alpha .. i*alpha + alpha-1``
   (grouped row order). Their input masks ``m^(i_j)`` partition the parent's inputs
   (``sum_j m^(i_j) = 1_d``); child ``j`` gets ``m^(i_j) * W_l[i, :]`` and the parent's bias
   (and LayerNorm gain/shift, when the layer has them).
2. Duplicate: every column ``i`` of ``W_{l+1}`` is copied to the alpha child columns, so
   ``W_{l+1}'`` has ``alpha`` times the non-zeros. ``b_{l+1}`` is unchanged. (Optional
   ablation ``out_scale="divide"``: the copies are scaled by ``1 / alpha``, as Net2Net does.)
3. Re-sparsify (steps 7-8): the ``(alpha - 1) * nnz(W_{l+1})`` excess weights are pruned
   by one global ranking of ``|w|`` over the non-zeros of ``W_l'`` and ``W_{l+1}'``
   together, until the weight count equals the parent's *exactly*.

Decisions the paper leaves open (each tested):

* **Ties.** Duplicated columns have exactly equal magnitudes. Ties in ``|w|`` are broken by
  a random key drawn from the expansion's ``rng`` (``np.lexsort((key, |w|))``), so the
  result depends on the seed only, never on memory order, and no child is favoured.
* **What counts.** The budget counts *weights* (mask-on entries of ``W_l`` and ``W_{l+1}``),
  as Alg. A1's ``Delta = (alpha - 1) h C`` does. Biases are not pruned: ``b_l`` grows by
  ``(alpha - 1) h``. Both counts are in the ledgers of ``ExpandResult``.
* **Optimizer state.** By default the expanded model starts a fresh Adam (``optimizer=None``;
  Alg. A3 instantiates a new optimizer per model). ``carry_optimizer(...)`` maps a trained
  optimizer's moments child by child (rows copied then masked; columns duplicated; pruned
  positions zeroed; the step count kept).
* **Empty children.** A split that gives a child no inputs is an error. Pruning may still
  remove all of a child's input or output weights; such children are listed in
  ``ExpandResult.dead_children`` (and printed), not silently hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpe_ref import splits
from fpe_ref.errors import FPEError, check_int, check_memory
from fpe_ref.mlp import MLP, Ledger
from fpe_ref.optim import Adam

SPLITS = ("random", "clause", "gram", "two-four")
CANDIDATE_BYTES = 48  # memory per prune candidate: its position (2 int64), |w|, tie key, sort order


@dataclass
class ExpandResult:
    """The expanded model and everything needed to audit the expansion."""

    model: MLP
    alpha: int
    layer: int
    split_masks: np.ndarray  # (h * alpha, d) bool, the partition before pruning
    parent_of: np.ndarray  # (h * alpha,) parent index of each child row
    pruned: dict  # weight name -> (k, 2) int array of pruned (row, col) in the expanded matrix
    ledger_parent: Ledger
    ledger_child: Ledger
    dead_children: np.ndarray  # child rows left with no input or no output weight

    def report(self) -> str:
        pr = ", ".join(f"{k}: {len(v)}" for k, v in self.pruned.items())
        lines = [
            f"FPE layer {self.layer}, alpha={self.alpha}: pruned {pr}",
            f"  parent  : {self.ledger_parent.line()}",
            f"  expanded: {self.ledger_child.line()}",
        ]
        if self.dead_children.size:
            lines.append(f"  warning: {self.dead_children.size} children lost all input or output weights: {self.dead_children.tolist()}")
        return "\n".join(lines)


def split_masks_for(split, h, d, alpha, rng, groups=None):
    """The ``(h * alpha, d)`` partition for ``split`` (one of ``SPLITS``) or an explicit array.

    "clause" and "gram" are both group splits; "gram" takes the clusters of the trained
    layer's Gram matrix, ``groups=splits.gram_groups(W)`` (Sec. 3.3). "two-four" is the
    A.7 2:4 structured split (alpha = 2, d divisible by 4).
    """
    if isinstance(split, str):
        if split == "random":
            return splits.random_split(h, d, alpha, rng)
        if split in ("clause", "gram"):
            if groups is None:
                what = "clause groups" if split == "clause" else "Gram clusters, splits.gram_groups(W)"
                raise FPEError(f"split={split!r} needs the {what} (groups=...)")
            return splits.group_split(h, d, alpha, groups, rng)
        if split == "two-four":
            return splits.two_four_split(h, d, alpha, rng)
        raise FPEError(f"split must be one of {SPLITS} or an explicit mask array, got {split!r}")
    return splits.check_partition(split, h, d, alpha)


def expand(model: MLP, alpha, split="random", rng=None, *, groups=None, layer: int = 1,
           out_scale: str = "duplicate", bias: str = "copy", tie_key=None) -> ExpandResult:
    """Expand hidden layer ``layer`` of ``model`` by ``alpha`` (Alg. A1). Returns a new model.

    Parameters
    ----------
    model : MLP
        The trained parent; not modified.
    alpha : int >= 2, at most the layer's fan-in.
    split : "random", "clause", "gram", "two-four", or an explicit ``(h * alpha, d)`` 0/1 partition.
    rng : numpy Generator (or int seed), drives the split and the tie-breaking; may be None
        only when both the split masks and ``tie_key`` are given explicitly.
    groups : list of index arrays (the clauses), for ``split="clause"`` (and Gram clusters).
    layer : the hidden layer to expand (1-based; never the output layer).
    out_scale : "duplicate" (the paper) or "divide" (copies scaled by 1/alpha; ablation only).
    bias : "copy" (the paper: every child gets its parent's bias) or "divide" (each child gets
        ``b / alpha``, so the children's biases sum to the parent's; beyond the paper, an
        ablation of the study ``fpe study choices``). LayerNorm gain/shift are copied either way.
    tie_key : optional float array, one entry per prune candidate (the mask-on entries of
        ``W_l'`` then of ``W_{l+1}'``, each in row-major order), used as the secondary sort
        key instead of ``rng.random``. Lets another implementation (golden bundles)
        reproduce the pruning exactly without our random generator.

    Notes
    -----
    "Non-zero" means *stored* (mask-on), here and in the ledger: the budget is the number of
    mask-on weights of the parent, and a stored weight whose value happens to be exactly 0.0
    counts as one and is a prune candidate like any other (with ``|w| = 0`` it goes first).
    Trained weights are almost never exactly zero; a hand-built parent with exact zeros can
    therefore leave the child with more non-zero *values* than the parent, never more
    stored weights.
    """
    from fpe_ref.rng import as_rng

    if not isinstance(model, MLP):
        raise FPEError(f"model must be an fpe_ref.MLP, got {type(model).__name__}")
    explicit = not isinstance(split, str)
    if rng is None and not (explicit and tie_key is not None):
        raise FPEError("expand needs a seed or numpy Generator (rng=...) for its split and tie-breaking")
    rng = as_rng(rng) if rng is not None else None
    what = f"a hidden layer in [1, {model.n_layers - 1}]"
    layer = check_int("layer", layer, 1, what=what)
    if layer >= model.n_layers:
        raise FPEError(f"layer must be {what}, got {layer}")
    if out_scale not in ("duplicate", "divide"):
        raise FPEError(f"out_scale must be 'duplicate' or 'divide', got {out_scale!r}")
    if bias not in ("copy", "divide"):
        raise FPEError(f"bias must be 'copy' or 'divide', got {bias!r}")
    nW, nb, nN = f"W{layer}", f"b{layer}", f"W{layer + 1}"
    W, Wn = model.params[nW], model.params[nN]
    h, d = W.shape
    alpha = splits.check_alpha(alpha, d)
    ledger_parent = model.ledger()
    M_old = model.masks.get(nW, np.ones_like(W, dtype=bool))
    Mn_old = model.masks.get(nN, np.ones_like(Wn, dtype=bool))
    C = Wn.shape[0]
    candidates = int(M_old.sum()) + alpha * int(Mn_old.sum())
    check_memory(h * alpha * d * (W.dtype.itemsize + 2) + C * h * alpha * (Wn.dtype.itemsize + 1)
                 + CANDIDATE_BYTES * candidates, f"expanding layer {layer} ({h} x {d}) by alpha={alpha}")

    # 1. split: children take disjoint parts of the parent's inputs (and of its mask)
    S = split_masks_for(split, h, d, alpha, rng, groups)  # (h*alpha, d)
    parent_of = np.repeat(np.arange(h), alpha)  # (h*alpha,)
    M1 = S & M_old[parent_of]
    empty = np.flatnonzero(~M1.any(axis=1))
    if empty.size:
        raise FPEError(f"the split leaves child {empty[0]} (parent {parent_of[empty[0]]}) with no inputs: "
                       "its parent's inputs are already masked there")
    W1 = W[parent_of] * M1  # (h*alpha, d)

    # 2. duplicate every outgoing column for each child
    W2 = Wn[:, parent_of].copy()  # (C, h*alpha)
    if out_scale == "divide":
        W2 /= alpha
    M2 = Mn_old[:, parent_of].copy()

    # 3. re-sparsify: one global ranking of |w| over both matrices, random key for ties
    budget = int(M_old.sum() + Mn_old.sum())
    excess = int(M1.sum() + M2.sum()) - budget  # = (alpha - 1) * nnz(W_{l+1})
    pos1, pos2 = np.argwhere(M1), np.argwhere(M2)  # (n1, 2), (n2, 2) row-major order
    mags = np.concatenate([np.abs(W1[M1]), np.abs(W2[M2])])  # same row-major order as argwhere
    if excess > mags.size:  # cannot happen for a split of the parent's own mask; kept as a guard
        raise FPEError(f"cannot meet the budget of {budget} weights: only {mags.size} can be pruned")
    if tie_key is None:
        key = rng.random(mags.size)
    else:
        key = np.asarray(tie_key, dtype=np.float64)
        if key.shape != mags.shape:
            raise FPEError(f"tie_key has shape {key.shape}, expected ({mags.size},): one per prune candidate")
    order = np.lexsort((key, mags))[:excess]  # smallest |w| first, ties by the random key
    in1 = order[order < len(pos1)]
    in2 = order[order >= len(pos1)] - len(pos1)
    pruned = {nW: pos1[in1], nN: pos2[in2]}
    M1[pos1[in1, 0], pos1[in1, 1]] = False
    M2[pos2[in2, 0], pos2[in2, 1]] = False
    W1[~M1] = 0.0
    W2[~M2] = 0.0

    params = {}
    for k, v in model.params.items():
        if k == nW:
            params[k] = W1
        elif k == nN:
            params[k] = W2
        elif k == nb:
            params[k] = v[parent_of] / alpha if bias == "divide" else v[parent_of].copy()
        elif k in (f"ln{layer}.gamma", f"ln{layer}.beta"):
            params[k] = v[parent_of].copy()
        else:
            params[k] = v.copy()
    masks = {k: v.copy() for k, v in model.masks.items()}
    masks[nW], masks[nN] = M1, M2
    child = MLP(params, masks, model.layer_norm)
    ledger_child = child.ledger()
    if ledger_child.weights != ledger_parent.weights:  # the defining invariant of FPE
        raise AssertionError(f"FPE weight count changed: {ledger_parent.weights} -> {ledger_child.weights}")
    dead = np.flatnonzero(~M1.any(axis=1) | ~M2.any(axis=0))
    return ExpandResult(child, alpha, int(layer), S, parent_of, pruned, ledger_parent, ledger_child, dead)


def carry_optimizer(opt: Adam, result: ExpandResult, parent: MLP) -> Adam:
    """Map a parent's Adam state onto the expanded model, child by child.

    Rows of the split layer (and its bias / LayerNorm moments) are copied from the parent,
    columns of the next layer duplicated, and every masked or pruned position set to 0, so
    masked moments stay zero. The step count ``t`` is kept (bias correction continues).
    With ``out_scale="divide"`` the carried moments of the next layer are not rescaled.
    """
    layer = result.layer
    nW, nb, nN = f"W{layer}", f"b{layer}", f"W{layer + 1}"
    P = result.parent_of
    new = Adam(result.model.params, opt.lr, opt.betas, opt.eps)
    new.t = opt.t
    for state_old, state_new in ((opt.m, new.m), (opt.v, new.v)):
        for k in parent.params:
            if k == nW:
                state_new[k] = state_old[k][P] * result.model.masks[nW]
            elif k == nN:
                state_new[k] = state_old[k][:, P] * result.model.masks[nN]
            elif k in (nb, f"ln{layer}.gamma", f"ln{layer}.beta"):
                state_new[k] = state_old[k][P].copy()
            else:
                state_new[k] = state_old[k].copy()
    return new
