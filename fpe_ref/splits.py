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
gram     (Sec. 3.3) the groups are clusters of the rows of the trained ``G = W^T W``
         (``gram_groups``), then as ``groups``.
2:4      (A.7, alpha = 2) every block of 4 consecutive inputs gives 2 to each child.
explicit the caller's own ``(h * alpha, d)`` masks, validated to be a partition per parent.

A child that would receive no inputs is an error, never a silent empty neuron. Sizes ``h``,
``d``, ``alpha`` and group indices go through :func:`~fpe_ref.errors.check_int` (group
indices through :func:`~fpe_ref.errors.check_indices`): ``8.5`` or an index ``0.5`` is
refused, never truncated.
"""

from __future__ import annotations

import numpy as np

from fpe_ref.errors import FPEError, check_indices, check_int
from fpe_ref.rng import as_rng


def _check_hd(h, d) -> tuple[int, int]:
    """The number of parents ``h`` and of inputs ``d``, as Python ints >= 1."""
    return check_int("h", h, 1, what="a positive integer"), check_int("d", d, 1, what="a positive integer")


def check_groups(groups, d: int) -> list:
    """Feature groups as a list of int64 index arrays over ``range(d)``: non-empty and disjoint.

    Each index must be an integer in ``[0, d)`` (:func:`~fpe_ref.errors.check_indices`).
    """
    if isinstance(groups, (str, bytes)) or not hasattr(groups, "__iter__"):
        raise FPEError(f"groups must be a list of index arrays, got {groups!r}")
    out, seen = [], np.zeros(d, dtype=bool)
    for g, idx in enumerate(groups):
        idx = check_indices(f"group {g}", idx, d)
        if idx.size == 0:
            raise FPEError(f"group {g} of the split is empty")
        if np.any(seen[idx]) or np.unique(idx).size != idx.size:
            raise FPEError(f"group {g} overlaps another group: groups must be disjoint")
        seen[idx] = True
        out.append(idx)
    return out


def check_alpha(alpha, fan_in: int) -> int:
    """Validate an expansion factor: an integer >= 2 and <= the fan-in. Returns it as int."""
    alpha = check_int("alpha", alpha, 2, integral_float=True)
    if alpha > fan_in:
        raise FPEError(f"alpha={alpha} is larger than the fan-in d={fan_in}: a child would get no inputs")
    return alpha


def random_child_of(h: int, d: int, alpha: int, rng) -> np.ndarray:
    """Balanced random partitions of ``d`` inputs into ``alpha`` children, for ``h`` parents at once.

    Returns ``child_of``, shape ``(h, d)``: ``child_of[i, x]`` = the child of parent ``i`` that
    receives input ``x``. Per parent, the inputs are put in a uniformly random order and dealt
    round-robin to the children, whose order is itself random; so child ``j`` gets
    ``d // alpha`` inputs, plus one for the ``d % alpha`` children that come first in that
    random order (no child index is systematically larger).
    """
    rng = as_rng(rng)  # an int seed or a Generator
    h, d = _check_hd(h, d)
    alpha = check_alpha(alpha, d)
    order = rng.permuted(np.tile(np.arange(d), (h, 1)), axis=1)  # (h, d): random input order per parent
    ranks = rng.permuted(np.tile(np.arange(alpha), (h, 1)), axis=1)  # (h, alpha): random child order
    child_of = np.empty((h, d), dtype=np.int64)
    np.put_along_axis(child_of, order, ranks[:, np.arange(d) % alpha], axis=1)
    return child_of


def random_partition(d: int, alpha: int, rng) -> np.ndarray:
    """One parent's balanced random partition: ``child_of`` (d,) (see ``random_child_of``)."""
    rng = as_rng(rng)  # an int seed or a Generator
    return random_child_of(1, d, alpha, rng)[0]


def random_split(h: int, d: int, alpha: int, rng) -> np.ndarray:
    """Balanced random split of ``h`` parents: boolean masks ``(h * alpha, d)``.

    Paper: Sec. 3.1 "random splitting (layer weights are randomly assigned to a subneuron)";
    Sec. 2.5/A.5 analyse the same construction with degree ``d / alpha``. Vectorised over
    parents (theory/'s Monte Carlo calls it for 10^4+ parents).
    """
    rng = as_rng(rng)  # an int seed or a Generator
    h, d = _check_hd(h, d)
    alpha = check_alpha(alpha, d)
    child_of = random_child_of(h, d, alpha, rng)  # (h, d)
    return (child_of[:, None, :] == np.arange(alpha)[None, :, None]).reshape(h * alpha, d)


def group_partition(groups, d: int, alpha: int, rng) -> np.ndarray:
    """One parent's partition that keeps every group of inputs on one child.

    ``groups`` is a list of index arrays (e.g. the clauses); inputs in no group are treated
    as singleton groups. Returns ``child_of``, shape ``(d,)``.
    """
    rng = as_rng(rng)  # an int seed or a Generator
    _, d = _check_hd(1, d)
    alpha = check_alpha(alpha, d)
    groups = check_groups(groups, d)
    group_id = np.full(d, -1, dtype=np.int64)
    for g, idx in enumerate(groups):
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


def group_split(h: int, d: int, alpha: int, groups, rng) -> np.ndarray:
    """Group-preserving split of ``h`` parents (clause split, Gram-cluster split): ``(h * alpha, d)``.

    Paper: Sec. 3.1 "clause splitting (all weights from a given clause are assigned to the
    same subneuron)". Each parent draws its own assignment of groups to children.
    """
    rng = as_rng(rng)  # an int seed or a Generator
    h, d = _check_hd(h, d)
    alpha = check_alpha(alpha, d)
    groups = check_groups(groups, d)
    masks = np.zeros((h * alpha, d), dtype=bool)
    for i in range(h):
        child_of = group_partition(groups, d, alpha, rng)
        masks[i * alpha + child_of, np.arange(d)] = True
    return masks


def check_partition(masks, h: int, d: int, alpha: int) -> np.ndarray:
    """Validate explicit split masks: shape ``(h * alpha, d)``, 0/1, a partition per parent."""
    h, d = _check_hd(h, d)
    alpha = check_alpha(alpha, d)
    try:
        masks = np.asarray(masks)
    except (ValueError, TypeError):
        raise FPEError(f"explicit split masks must be an array (h*alpha, d) = ({h * alpha}, {d}), "
                       f"got a ragged {type(masks).__name__}") from None
    if masks.dtype.kind not in "biuf":
        raise FPEError(f"explicit split masks must be 0/1 (or boolean), got dtype {masks.dtype}")
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


# ---------------------------------------------------------------- Gram-cluster split (Sec. 3.3)
GRAM_LINKAGES = ("ward", "average", "complete")


def gram_groups(W, n_clusters: int = 16, linkage: str = "ward") -> list:
    """Feature groups for the Gram-cluster split: cluster the rows of ``G = W^T W``.

    Paper: Sec. 3.3 "We then compute the feature Gram matrix of W1 ... cluster the rows of
    the Gram matrix, and treat the clusters as groups of features that should remain
    together, as is in the case of clauses." ``W`` is the trained dense ``(h, d)`` weight
    matrix of the layer about to be split; row ``x`` of ``G`` (d, d) is
    ``g_x = W^T w_x`` with ``w_x = W[:, x]``, so two inputs land in one cluster when they
    overlap the other inputs in the same way (for clause-structured data, the literals of
    one clause have equal rows: the Boolean case this imitates).

    Choices the paper leaves open (ours):

    * **Clustering**: agglomerative, ``scipy.cluster.hierarchy.linkage(G, method=linkage)``
      on the Euclidean distance between rows of ``G``, cut with
      ``fcluster(..., n_clusters, criterion="maxclust")``. Ward is the default because it
      merges by least variance increase and so gives clusters of comparable size; average
      and complete linkage on 784 pixels leave one giant cluster (the weakly used border
      pixels) plus singletons, and a giant group cannot be balanced over children.
      Deterministic: no random generator.
    * **Number of clusters**: 16 by default (at least ``alpha`` are needed; capped at ``d``).
      With ``alpha = 2`` this gives each child about 8 clusters, enough to balance the
      input counts through ``group_partition``'s largest-first assignment, and few
      enough that clusters are real groups (about 49 pixels each on FashionMNIST).
    * **Balancing (a deviation)**: the paper "balance[s] the number of clusters that go to
      each subneuron". ``group_partition`` balances the number of *inputs* first and the
      number of clusters only among children with equal input counts: with clusters of
      unequal size, equal cluster counts could give one child most of the inputs (and the
      re-sparsified budget). Pass your own partition to ``expand`` for the paper's rule.

    Returns a list of index arrays (sorted inputs, clusters ordered by their smallest input)
    that partition ``range(d)``; pass it as ``groups=`` with ``split="gram"``.
    """
    from scipy.cluster import hierarchy

    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.size == 0:
        raise FPEError(f"gram_groups needs a 2-D weight matrix (h, d), got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise FPEError("gram_groups: the weight matrix contains NaN or inf")
    if linkage not in GRAM_LINKAGES:
        raise FPEError(f"linkage must be one of {GRAM_LINKAGES}, got {linkage!r}")
    n_clusters = check_int("n_clusters", n_clusters, 1, what="a positive integer")
    d = W.shape[1]
    k = min(int(n_clusters), d)
    if k == d:
        return [np.array([x]) for x in range(d)]
    G = W.T @ W  # (d, d)
    Z = hierarchy.linkage(G, method=linkage, metric="euclidean")
    labels = hierarchy.fcluster(Z, t=k, criterion="maxclust")  # (d,) in 1..k
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    return sorted(groups, key=lambda g: int(g[0]))


def gram_split(W, alpha: int, rng, n_clusters: int = 16, linkage: str = "ward") -> np.ndarray:
    """Gram-cluster split of the ``h`` parents of ``W`` (h, d): ``(h * alpha, d)`` masks.

    ``group_split`` over ``gram_groups(W, n_clusters, linkage)``: every cluster stays on one
    child; each parent draws its own balanced assignment of clusters to children.
    """
    rng = as_rng(rng)  # an int seed or a Generator
    W = np.asarray(W)
    if W.ndim != 2:
        raise FPEError(f"gram_split needs a 2-D weight matrix (h, d), got shape {W.shape}")
    h, d = W.shape
    alpha = check_alpha(alpha, d)
    return group_split(h, d, alpha, gram_groups(W, n_clusters, linkage), rng)


# ---------------------------------------------------------------- 2:4 structured split (A.7)
def two_four_split(h: int, d: int, alpha: int, rng) -> np.ndarray:
    """2:4 structured split (A.7): ``(h * 2, d)`` masks in which every block of 4 is 2 + 2.

    Paper: A.7 "For an expansion factor of alpha=2, each group of four consecutive weights
    in the original dense neuron is randomly assigned such that two weights connect to one
    sub-neuron and the other two connect to the second." So for every parent ``i`` and
    every block ``[4b, 4b+4)`` of inputs, two inputs drawn uniformly (one of the
    ``C(4, 2) = 6`` pairs) go to child 0 and the other two to child 1: each child row has
    exactly 2 of every 4 consecutive entries on, the pattern sparse tensor cores accept.

    Only ``alpha = 2`` exists (the paper defines no other), and ``d`` must be a multiple of
    4 (784 and 512 are); anything else is an error rather than a silently different tail.
    Re-sparsification can only remove further weights, so after ``expand`` each block of a
    child row holds *at most* 2 non-zeros (still valid 2:4).
    """
    rng = as_rng(rng)  # an int seed or a Generator
    h, d = _check_hd(h, d)
    if check_alpha(alpha, d) != 2:
        raise FPEError(f"the 2:4 split is defined for alpha=2 only, got alpha={alpha}")
    if d % 4:
        raise FPEError(f"the 2:4 split needs a fan-in divisible by 4, got d={d}")
    n_blocks = d // 4
    # rank of each of the 4 positions under a random key; the two lowest go to child 0
    ranks = np.argsort(np.argsort(rng.random((h, n_blocks, 4)), axis=2), axis=2)  # (h, d/4, 4)
    to_child0 = (ranks < 2).reshape(h, d)  # (h, d)
    masks = np.empty((h * 2, d), dtype=bool)
    masks[0::2] = to_child0
    masks[1::2] = ~to_child0
    return masks


def is_two_four(M) -> bool:
    """True when every row of ``M`` has at most 2 non-zeros in each block of 4 consecutive columns."""
    M = np.asarray(M) != 0
    if M.ndim != 2 or M.shape[1] % 4:
        return False
    return bool(np.all(M.reshape(M.shape[0], -1, 4).sum(axis=2) <= 2))
