"""Split masks: how a parent neuron's inputs are partitioned among its alpha children.

Paper: Sec. 2.3 and Alg. A1, steps 3-5. Every parent ``i`` gets ``alpha`` disjoint binary masks
``m^(i_1) .. m^(i_alpha)`` over its ``d`` inputs with ``sum_j m^(i_j) = 1_d``.

All functions return a boolean array ``M`` of shape ``(h * alpha, d)`` in the *grouped* row
order used throughout fpe-ref: child ``j`` of parent ``i`` is row ``i * alpha + j``
(the paper's "n_{alpha i : alpha (i+1)}", Sec. 2.3; Alg. A1's "row i*h+j" is a typo for this).

Splits
------
random   balanced: each child gets ``d // alpha`` inputs, the first ``d % alpha`` children
         (in a random order) get one more. Independently drawn for every parent.
groups   (clause, Gram-cluster): all inputs of a group go to the same child. Groups are
         visited in a random order, largest first (stable), and each goes to the child
         with the fewest inputs so far (ties: fewest groups, then lowest index). For equal
         group sizes (clauses) this is a round-robin, so groups are balanced over children.
explicit the caller's own ``(h * alpha, d)`` masks, validated to be a partition per parent.

A child that would receive no inputs is an error, never a silent empty neuron.
"""

from __future__ import annotations

import numpy as np

from .errors import FPEError


def check_alpha(alpha, fan_in: int) -> int:
    """Validate an expansion factor: an integer >= 2 and <= the fan-in. Returns it as int."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, np.integer)):
        if isinstance(alpha, float) and alpha.is_integer():
            alpha = int(alpha)
        else:
            raise FPEError(f"alpha must be an integer >= 2, got {alpha!r}")
    alpha = int(alpha)
    if alpha < 2:
        raise FPEError(f"alpha must be an integer >= 2, got {alpha}")
    if alpha > fan_in:
        raise FPEError(f"alpha={alpha} is larger than the fan-in d={fan_in}: a child would get no inputs")
    return alpha


def random_partition(d: int, alpha: int, rng: np.random.Generator) -> np.ndarray:
    """One parent's balanced random partition of ``d`` inputs into ``alpha`` children.

    Returns ``child_of``, shape ``(d,)``, ``child_of[x]`` = the child that receives input x.
    Child ``j`` gets ``d // alpha + (rank_j < d % alpha)`` inputs, where the ranks of the
    children are a random permutation (so no child index is systematically larger).
    """
    alpha = check_alpha(alpha, d)
    order = rng.permutation(d)  # inputs in random order
    ranks = rng.permutation(alpha)  # which child takes the 1st, 2nd, ... slot of each round
    child_of = np.empty(d, dtype=np.int64)
    child_of[order] = ranks[np.arange(d) % alpha]
    return child_of


def random_split(h: int, d: int, alpha: int, rng: np.random.Generator) -> np.ndarray:
    """Balanced random split of ``h`` parents: boolean masks ``(h * alpha, d)``.

    Paper: Sec. 3.1 "random splitting (layer weights are randomly assigned to a subneuron)";
    Sec. 2.5/A.5 analyse the same construction with degree ``d / alpha``.
    """
    alpha = check_alpha(alpha, d)
    masks = np.zeros((h * alpha, d), dtype=bool)
    for i in range(h):
        child_of = random_partition(d, alpha, rng)
        masks[i * alpha + child_of, np.arange(d)] = True
    return masks


def group_partition(groups, d: int, alpha: int, rng: np.random.Generator) -> np.ndarray:
    """One parent's partition that keeps every group of inputs on one child.

    ``groups`` is a list of index arrays (e.g. the clauses); inputs in no group are treated
    as singleton groups. Returns ``child_of``, shape ``(d,)``.
    """
    alpha = check_alpha(alpha, d)
    group_id = np.full(d, -1, dtype=np.int64)
    for g, idx in enumerate(groups):
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            raise FPEError(f"group {g} of the split is empty")
        if idx.min() < 0 or idx.max() >= d:
            raise FPEError(f"group {g} has an input index outside [0, {d})")
        if np.any(group_id[idx] >= 0):
            raise FPEError(f"group {g} overlaps another group: groups must be disjoint")
        group_id[idx] = g
    n_groups = len(groups)
    loose = np.flatnonzero(group_id < 0)
    group_id[loose] = n_groups + np.arange(loose.size)
    n_groups += loose.size
    if n_groups < alpha:
        raise FPEError(f"a group split of {n_groups} groups into alpha={alpha} children leaves a child with no inputs")
    sizes = np.bincount(group_id, minlength=n_groups)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest first, random among equals
    load = np.zeros(alpha, dtype=np.int64)
    count = np.zeros(alpha, dtype=np.int64)
    child_of_group = np.empty(n_groups, dtype=np.int64)
    for g in order:
        j = np.lexsort((np.arange(alpha), count, load))[0]  # fewest inputs, fewest groups, lowest index
        child_of_group[g] = j
        load[j] += sizes[g]
        count[j] += 1
    return child_of_group[group_id]


def group_split(h: int, d: int, alpha: int, groups, rng: np.random.Generator) -> np.ndarray:
    """Group-preserving split of ``h`` parents (clause split, Gram-cluster split): ``(h * alpha, d)``.

    Paper: Sec. 3.1 "clause splitting (all weights from a given clause are assigned to the
    same subneuron)". Each parent draws its own assignment of groups to children.
    """
    masks = np.zeros((h * alpha, d), dtype=bool)
    for i in range(h):
        child_of = group_partition(groups, d, alpha, rng)
        masks[i * alpha + child_of, np.arange(d)] = True
    return masks


def check_partition(masks, h: int, d: int, alpha: int) -> np.ndarray:
    """Validate explicit split masks: shape ``(h * alpha, d)``, 0/1, a partition per parent."""
    masks = np.asarray(masks)
    if masks.shape != (h * alpha, d):
        raise FPEError(f"explicit split masks have shape {masks.shape}, expected (h*alpha, d) = ({h * alpha}, {d})")
    if masks.dtype != bool:
        if not np.all((masks == 0) | (masks == 1)):
            raise FPEError("explicit split masks must be 0/1 (or boolean)")
        masks = masks.astype(bool)
    cover = masks.reshape(h, alpha, d).sum(axis=1)  # (h, d): children that see each input
    bad = np.argwhere(cover != 1)
    if bad.size:
        i, x = bad[0]
        raise FPEError(f"explicit split masks are not a partition: parent {i}, input {x} is given to {cover[i, x]} children (must be exactly 1)")
    empty = np.flatnonzero(masks.sum(axis=1) == 0)
    if empty.size:
        raise FPEError(f"explicit split masks leave child row {empty[0]} with no inputs")
    return masks
