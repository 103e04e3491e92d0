"""Interference metrics: Gram matrix, feature capacity, mean cosine similarity.

Paper: Sec. 3.1 (Gram matrix ``G = W1^T W1``), Sec. 3.2 "Direct evidence of feature
disentanglement" (capacity after Scherlis et al. 2022; mean cosine similarity of neurons).

Feature vectors (our choice, stated because the paper's "W are the activations of the model
(which in our Boolean setting is the same as the weight matrix)" is ambiguous): the feature
of clause ``i`` is the hidden pre-activation response to that clause alone,

    v_i = W1 1_{S_i}   (h,)   = the sum of W1's columns over the clause's literals,

without the bias. Capacity of feature ``i``:

    C_i = (v_i . v_i)^2 / sum_j (v_i . v_j)^2      (j over all features, including i)

so ``0 <= C_i <= 1`` and ``sum_i C_i <= rank <= min(h, #clauses)`` — which matches the
ranges of the paper's Table A1 (e.g. 2.74 of a possible 3 for 12 literals). A feature with
``v_i = 0`` gets ``C_i = 0`` (it is represented by nothing).

Mean cosine similarity: the average of ``cos(w_a, w_b)`` (or of ``|cos(w_a, w_b)|``) over
pairs ``a < b`` of distinct rows of ``W1`` (the neurons' input weight vectors). Rows that are
entirely zero (a child pruned away) are skipped, never divided by zero.

Every function takes ``W1`` as a 2-D array of finite numbers (``check_weights``): NaN or inf
would turn capacity and cosine into 0 or NaN that look like results. Group indices are
integers in ``[0, d)`` (:func:`fpe_ref.errors.check_indices`), never truncated floats.
"""

from __future__ import annotations

import numpy as np

from fpe_ref.errors import FPEError, check_indices


def check_weights(W1, name: str = "W1") -> np.ndarray:
    """``W1`` as a 2-D ndarray ``(h, d)`` of finite numbers, or a one-line FPEError naming it."""
    try:
        W = np.asarray(W1)
    except (ValueError, TypeError):
        raise FPEError(f"{name} must be a 2-D array (h, d) of numbers, got a ragged {type(W1).__name__}") from None
    if W.dtype.kind not in "biuf":
        raise FPEError(f"{name} must be a 2-D array (h, d) of numbers, got dtype {W.dtype}")
    if W.ndim != 2:
        raise FPEError(f"{name} must be a 2-D array (h, d), got shape {W.shape}")
    finite = np.isfinite(W)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise FPEError(f"{name} contains {W[r, c]} at row {r}, column {c}: metrics of non-finite weights are undefined")
    return W if W.dtype.kind == "f" else W.astype(np.float64)  # integer weights: the metrics divide


def gram(W1):
    """``G = W1^T W1`` (d, d): input-feature overlaps through the first layer (Sec. 3.1)."""
    W1 = check_weights(W1)
    return W1.T @ W1


def feature_vectors(W1, groups):
    """``V[:, i] = W1 1_{S_i}``: the hidden response to feature (clause) ``i`` alone. (h, F)."""
    W1 = check_weights(W1)
    h, d = W1.shape
    if isinstance(groups, (str, bytes)) or not hasattr(groups, "__len__"):
        raise FPEError(f"groups must be a list of index arrays (one per feature), got {groups!r}")
    V = np.zeros((h, len(groups)), dtype=W1.dtype)
    for i, idx in enumerate(groups):
        idx = check_indices(f"feature group {i}", idx, d)
        if idx.size == 0:
            raise FPEError(f"feature group {i} is empty")
        V[:, i] = W1[:, idx].sum(axis=1)
    return V


def capacity_of(V):
    """Per-feature capacities ``C_i`` (F,) and their sum for the feature vectors ``V[:, i]`` (h, F)."""
    D = V.T @ V  # (F, F): v_i . v_j
    num = np.diag(D) ** 2
    den = np.sum(D * D, axis=1)
    C = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return C, float(C.sum())


def capacity(W1, groups):
    """Per-feature capacities ``C_i`` (F,) and their sum (Scherlis et al. 2022; paper Sec. 3.2)."""
    return capacity_of(feature_vectors(W1, groups))


def _check_bias(b1, h: int) -> np.ndarray:
    """``b1`` as a float ``(h,)`` array of finite numbers, or a one-line FPEError naming it."""
    try:
        b = np.asarray(b1)
    except (ValueError, TypeError):
        raise FPEError(f"b1 must be a 1-D array of {h} numbers, got a ragged {type(b1).__name__}") from None
    if b.dtype.kind not in "biuf" or b.shape != (h,):
        raise FPEError(f"b1 must be a 1-D array of {h} numbers (one bias per row of W1), "
                       f"got shape {b.shape} of dtype {b.dtype}")
    bad = np.flatnonzero(~np.isfinite(b))
    if bad.size:
        raise FPEError(f"b1 contains {b[bad[0]]} at index {bad[0]}: metrics of non-finite biases are undefined")
    return b.astype(np.float64)


def mean_cosine(W1, absolute: bool = False, b1=None):
    """Mean cosine similarity over pairs of distinct non-zero rows of ``W1`` (Sec. 3.2).

    ``absolute=False`` (the default) averages the signed ``cos(w_a, w_b)``, so positive and
    negative pairs cancel; ``absolute=True`` averages ``|cos(w_a, w_b)|``. With ``b1`` (shape
    ``(h,)``) each neuron's row is ``[w_a | b_a]``, its input weights and its bias.
    NaN when fewer than two rows are non-zero.

    The paper does not say which of these its Table A2 averages. ``fpe study choices``
    (``results/choices``) chose, on its choosing seeds, ``absolute=True`` with ``b1``: the
    reading that reproduces the most Table A2 rows. The Boolean sweep records that reading
    (``cosine_bias_abs``) beside the signed (``cosine``) and unsigned (``cosine_abs``) cosine
    of ``W1`` alone.
    """
    W1 = check_weights(W1)
    if b1 is not None:
        W1 = np.concatenate([W1, _check_bias(b1, W1.shape[0])[:, None]], axis=1)
    norms = np.linalg.norm(W1, axis=1)
    keep = norms > 0
    U = W1[keep] / norms[keep, None]
    n = U.shape[0]
    if n < 2:
        return float("nan")
    S = U @ U.T
    if absolute:
        S = np.abs(S)
    iu = np.triu_indices(n, k=1)
    return float(S[iu].mean())


def interference(W1, groups) -> dict:
    """Capacity (per feature and total) and mean cosine of one first-layer matrix."""
    per, total = capacity(W1, groups)
    return {"capacity": total, "capacity_per_feature": per.tolist(), "cosine": mean_cosine(W1)}
