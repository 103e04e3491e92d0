"""Sparse masked linear layers: storage and the compiled kernels of one training step.

Paper: Sec. 2.3 and Alg. A1. FPE turns ``W1 (h, d)`` into ``W1' (alpha h, d)`` with a mask
``M1`` that keeps exactly ``h d`` weights (each child holds ``~d / alpha`` of its parent's
inputs), and re-sparsifies ``W2' (C, alpha h)`` the same way. A masked-dense product
``x (W' * M)^T`` pays for all ``alpha h d`` entries; the kernels here pay only for the stored
ones, so an expanded layer costs what its non-zeros cost.

This is the only module of fpe-ref that imports numba.

Storage: CSR plus a transposed index (why)
------------------------------------------
A step needs three products of the masked weight ``W (out, in)`` (``S`` = stored positions):

* forward, ``Y[n, r] = b[r] + sum_{(r,c) in S} X[n, c] W[r, c]``: row ``r``'s entries;
* input gradient, ``dX[n, c] = sum_{(r,c) in S} dY[n, r] W[r, c]``: column ``c``'s entries;
* weight gradient (SDDMM), ``dW[r, c] = sum_n dY[n, r] X[n, c]`` for ``(r, c)`` in ``S``:
  any order,

so we store CSR (rows of ``W``: ``indptr``, ``indices`` sorted within a row, ``data``) and,
once per mask, the CSC *index* of the same entries (``colptr``, ``rowind``, and ``perm``:
CSC entry ``q`` is ``data[perm[q]]``). The values live once, in CSR order, so Adam is one
flat loop over ``nnz`` and nothing is copied between the two views; the mask is fixed while a
model trains, so the transposed index is built once. Each product then writes disjoint
outputs per row (forward, SDDMM) or per column (input gradient), which is what makes the
parallel loops deterministic (below).

Contiguity comes from the batch, not from the mask: activations are kept *feature-major*
(``XT (in, n)``), so every stored weight touches one contiguous length-``n`` row of ``XT`` and
the inner loops are unit-stride and vectorise. Runs of consecutive column indices do not pay
for FPE masks: a random split at ``1 / alpha`` density has expected run length
``1 / (1 - 1 / alpha)`` (1.33 at ``alpha = 4``), so a blocked/run-length format would mostly
store runs of one. (Clause or 2:4 splits have longer runs; the kernels don't rely on either.)

Per-sample index lists (a list of arrays per row) were the other candidate: no better for
the forward pass, no column access for ``dX``, and not a flat array for Adam.

Kernels
-------
Each kernel is a plain Python function (``_*_py``), compiled at module level (``_*_nb``),
and has a NumPy twin (``*_numpy``) that vectorises over rows instead of looping. The public
wrappers take ``impl="numba" | "python" | "numpy"``.

=========================  =============================  ===============================
wrapper                    math                           loop (compiled)
=========================  =============================  ===============================
``linear_forward_t``       ``YT = W XT + b``              ``prange`` over blocks of rows,
                                                          tiled over inputs for L2
``linear_input_grad_t``    ``dXT = W^T dYT``              ``prange`` over columns of ``W``
``linear_weight_grad_t``   ``dW[p] = <dYT[r], XT[c]>``    ``prange`` over columns of ``W``
                                                          (``out < in``) or rows
``adam_update``            Adam + L1/L2, in place         flat loop, serial (sparse data
                                                          or any dense parameter)
=========================  =============================  ===============================

Fused training (last section): :func:`_fused_step_py` is one whole Alg. A3 step of a
one-hidden-layer net on this storage (gather, forward, loss, backward, penalties, Adam) and
``model_epochs_serial`` / ``model_epochs_parallel`` run epochs of it for one model of a stack
(serial products, one model per thread; or parallel products); :mod:`fpe_ref.fast.trainer` drives
them.

``sparse_linear_forward`` / ``sparse_linear_backward`` are the batch-major ``(n, in)`` pair
in the style of :mod:`fpe_ref.layers`. Keep activations feature-major (or, equivalently,
batch-major in Fortran order, whose ``.T`` is C-contiguous) and no transpose is ever copied;
``sparse_linear_forward`` returns ``YT.T``, which is exactly such an array.

Rounding and reproducibility
----------------------------
* Forward and input gradient add each row's (column's) entries to the output one at a time
  in storage order, ``y = (((b + w0 x0) + w1 x1) + w2 x2) + ...`` (no FMA contraction, no
  reassociation). The plain function, the compiled kernel and the NumPy twin therefore give
  the *same bits*, in float64 and float32.
* The weight gradient is a dot product over the batch; it is compiled with
  ``fastmath={"reassoc", "contract"}`` so it vectorises (without it, it runs ~5x slower). Its
  summation order is then the SIMD lane order chosen by LLVM: it agrees with the plain
  function to rounding (``~ eps * sum_n |dY X|``), and it is bitwise identical from run to
  run and for any number of threads on one machine (each entry is summed by one thread),
  but not necessarily across CPUs with different vector widths.
* Adam is elementwise, in exactly the evaluation order of :class:`fpe_ref.optim.Adam`
  (PyTorch's), with the scalar coefficients computed in float64 and cast to the parameter
  dtype, as NumPy and PyTorch do. Compiled, plain and NumPy agree bit for bit.
* ``parallel=True`` is used only where outputs are independent (rows / columns / entries):
  no reduction is ever split across threads, so results do not depend on the thread count.

Speed
-----
On the 2-core AMD EPYC (Zen 3, AVX2) development machines, float32, ``n = 500``,
``in = 512``, ``out = 128`` at 25% density (``alpha = 4``, nnz = 16384), one core (CPU time,
best of 400): forward 0.51 ms, input gradient 0.48 ms, weight gradient 0.46 ms (32-35
GFLOP/s counting stored weights only) against 0.75-0.80 ms for each masked-dense BLAS
product (~86 GFLOP/s counting the zeros) and 0.22 ms for the dense parent (``out = 32``);
with 2 threads the three kernels take 0.24-0.27 ms (62-67 GFLOP/s). Adam on 16384 entries:
0.012 ms (NumPy: 0.08 ms). Each stored weight costs one load of a length-``n`` row per
multiply-add, where BLAS reuses every load from registers, so the kernels reach ~45% of
BLAS's rate per useful flop. The parallel kernels wait for their slowest thread: when
processes already fill the cores (sweeps), call :func:`set_num_threads` with 1.
"""

from __future__ import annotations

import types
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from fpe_ref.errors import FPEError

__all__ = [
    "SparseLinear",
    "from_dense",
    "to_dense",
    "to_mask",
    "linear_forward_t",
    "linear_input_grad_t",
    "linear_weight_grad_t",
    "sparse_linear_forward",
    "sparse_linear_backward",
    "adam_update",
    "penalty_grad",
    "forward_numpy",
    "input_grad_numpy",
    "weight_grad_numpy",
    "adam_numpy",
    "IMPLS",
    "set_num_threads",
    "get_num_threads",
    "max_threads",
    "numba_info",
]

IMPLS = ("numba", "python", "numpy")


# ----------------------------------------------------------------------------- storage
class SparseLinear(NamedTuple):
    """A masked weight ``W (out, in)`` holding only its stored (mask = True) entries.

    Fields
    ------
    shape : (out, in)
        Shape of the dense weight, ``torch.nn.Linear.weight`` convention.
    indptr : (out + 1,) int64
        CSR row pointers: row ``r``'s entries are ``indptr[r]:indptr[r + 1]``.
    indices : (nnz,) int64
        Column of each entry, increasing within a row.
    data : (nnz,) float32 or float64
        The weights, in CSR order. Updated in place by :func:`adam_update`.
    colptr : (in + 1,) int64
        CSC column pointers over the same entries.
    rowind : (nnz,) int64
        Row of each CSC entry, increasing within a column.
    perm : (nnz,) int64
        CSC entry ``q`` is ``data[perm[q]]``.

    A stored weight may be 0.0 (it is a trainable parameter); a masked one is not stored at
    all, so it is exactly 0.0 in :func:`to_dense` whatever the kernels do. Use
    ``S._replace(data=...)`` for the same mask with other values.
    """

    shape: tuple
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    colptr: np.ndarray
    rowind: np.ndarray
    perm: np.ndarray

    @property
    def nnz(self) -> int:
        return int(self.data.shape[0])

    @property
    def dtype(self):
        return self.data.dtype


def from_dense(W, mask, dtype=None) -> SparseLinear:
    """Store ``W`` at the positions where ``mask`` is True (row-major order).

    Parameters
    ----------
    W : (out, in) array
        Dense weights; values at masked positions are ignored.
    mask : (out, in) bool (or 0/1) array
        Which weights exist. Empty rows (a neuron with no inputs), a single input and
        ``mask.sum() == 0`` are all allowed.
    dtype : float32 or float64, optional
        Storage dtype; default ``W``'s dtype if it is float32/float64, else float64.
    """
    W = np.asarray(W)
    mask = np.asarray(mask)
    if W.ndim != 2:
        raise FPEError(f"W must be 2-D (out, in), got shape {W.shape}")
    if mask.shape != W.shape:
        raise FPEError(f"mask has shape {mask.shape}, W has shape {W.shape}: they must match")
    if mask.dtype != bool:
        if not np.all((mask == 0) | (mask == 1)):
            raise FPEError("mask must be boolean (or 0/1)")
        mask = mask.astype(bool)
    if dtype is None:
        dtype = W.dtype if W.dtype in (np.float32, np.float64) else np.float64
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise FPEError(f"storage dtype must be float32 or float64, got {dtype}")
    out, fan_in = W.shape
    rows, cols = np.nonzero(mask)  # row-major: sorted by row, then column
    indptr = np.zeros(out + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=out), out=indptr[1:])
    data = np.ascontiguousarray(W[rows, cols], dtype=dtype)
    # transposed index: entries sorted by (column, row); stable sort keeps rows increasing
    perm = np.argsort(cols, kind="stable").astype(np.int64)
    colptr = np.zeros(fan_in + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=fan_in), out=colptr[1:])
    return SparseLinear(
        (int(out), int(fan_in)),
        indptr,
        cols.astype(np.int64),
        data,
        colptr,
        rows[perm].astype(np.int64),
        perm,
    )


def _rows_of(S: SparseLinear) -> np.ndarray:
    """Row of each CSR entry, ``(nnz,)``."""
    return np.repeat(np.arange(S.shape[0], dtype=np.int64), np.diff(S.indptr))


def to_dense(S: SparseLinear, data=None) -> np.ndarray:
    """Dense ``W (out, in)``: the stored values, exact 0.0 everywhere else.

    ``data`` (optional, ``(nnz,)``) replaces ``S.data``, e.g. to densify a gradient.
    """
    data = S.data if data is None else np.asarray(data)
    W = np.zeros(S.shape, dtype=data.dtype)
    W[_rows_of(S), S.indices] = data
    return W


def to_mask(S: SparseLinear) -> np.ndarray:
    """The boolean mask ``(out, in)`` of stored positions."""
    M = np.zeros(S.shape, dtype=bool)
    M[_rows_of(S), S.indices] = True
    return M


# ----------------------------------------------------------------------------- kernels
# Each kernel writes its output in place. Arrays: C-contiguous, one float dtype throughout.
# Loops over a row's entries are unrolled by 4 so each pass over a length-n output row does
# 4 multiply-adds per load/store of the output (the loads of XT rows dominate either way);
# the sums keep the one-entry-at-a-time order, so unrolling changes no bits.


def _forward_py(indptr, indices, data, b, XT, YT, row_block, col_block):
    """``YT[r, :] = b[r] + sum_p data[p] * XT[indices[p], :]`` over row ``r``'s entries.

    indptr (out+1,), indices (nnz,), data (nnz,), b (out,), XT (in, n); YT (out, n) written.

    Tiled for cache: a block of ``row_block`` rows (one ``prange`` iteration) walks the
    inputs in blocks of ``col_block``, so the ``XT`` rows of one input block (sized to stay in
    L2) serve every row of the row block before the next input block is read, instead of
    every row streaming random rows of ``XT`` from L3 (~1.2x faster at in=512, n=500). Within
    a row the entries are still added in storage order, so the tiling changes no bits.
    """
    n_out = YT.shape[0]
    fan_in, n = XT.shape
    for block in prange((n_out + row_block - 1) // row_block):
        r0 = block * row_block
        r1 = min(n_out, r0 + row_block)
        cursor = indptr[r0:r1].copy()  # next entry of each row of the block
        for r in range(r0, r1):
            y = YT[r]  # (n,)
            b_r = b[r]
            for j in range(n):
                y[j] = b_r
        for c_end in range(col_block, fan_in + col_block, col_block):
            for r in range(r0, r1):
                y = YT[r]
                p = cursor[r - r0]
                stop = p  # entries of row r with column < c_end (indices sorted in a row)
                while stop < indptr[r + 1] and indices[stop] < c_end:
                    stop += 1
                cursor[r - r0] = stop
                while p + 4 <= stop:
                    w0, w1, w2, w3 = data[p], data[p + 1], data[p + 2], data[p + 3]
                    x0, x1, x2, x3 = XT[indices[p]], XT[indices[p + 1]], XT[indices[p + 2]], XT[indices[p + 3]]
                    for j in range(n):
                        y[j] = (((y[j] + w0 * x0[j]) + w1 * x1[j]) + w2 * x2[j]) + w3 * x3[j]
                    p += 4
                while p < stop:
                    w = data[p]
                    x = XT[indices[p]]
                    for j in range(n):
                        y[j] = y[j] + w * x[j]
                    p += 1


def _input_grad_py(colptr, rowind, perm, data, dYT, dXT):
    """``dXT[c, :] = sum_q data[perm[q]] * dYT[rowind[q], :]`` over column ``c``'s entries.

    colptr (in+1,), rowind (nnz,), perm (nnz,), data (nnz,), dYT (out, n); dXT (in, n) written.
    """
    n = dYT.shape[1]
    zero = dXT.dtype.type(0)
    for c in prange(dXT.shape[0]):
        dx = dXT[c]  # (n,)
        for j in range(n):
            dx[j] = zero
        q = colptr[c]
        end = colptr[c + 1]
        while q + 4 <= end:
            w0, w1, w2, w3 = data[perm[q]], data[perm[q + 1]], data[perm[q + 2]], data[perm[q + 3]]
            g0, g1, g2, g3 = dYT[rowind[q]], dYT[rowind[q + 1]], dYT[rowind[q + 2]], dYT[rowind[q + 3]]
            for j in range(n):
                dx[j] = (((dx[j] + w0 * g0[j]) + w1 * g1[j]) + w2 * g2[j]) + w3 * g3[j]
            q += 4
        while q < end:
            w = data[perm[q]]
            g = dYT[rowind[q]]
            for j in range(n):
                dx[j] = dx[j] + w * g[j]
            q += 1


def _weight_grad_by_row_py(indptr, indices, XT, dYT, dW):
    """SDDMM in CSR order: ``dW[p] = sum_j dYT[r, j] * XT[indices[p], j]`` for row ``r``'s ``p``.

    The gradient of the loss with respect to each *stored* weight only (the dense
    ``dY^T X`` sampled at the mask). Reads each ``dYT`` row once and re-reads ``XT`` rows
    (one per entry). indptr (out+1,), indices (nnz,), XT (in, n), dYT (out, n); dW (nnz,)
    written.
    """
    n = XT.shape[1]
    zero = dW.dtype.type(0)
    for r in prange(dYT.shape[0]):
        g = dYT[r]  # (n,)
        p = indptr[r]
        end = indptr[r + 1]
        while p + 4 <= end:  # four dot products share each load of g
            x0, x1, x2, x3 = XT[indices[p]], XT[indices[p + 1]], XT[indices[p + 2]], XT[indices[p + 3]]
            s0 = zero
            s1 = zero
            s2 = zero
            s3 = zero
            for j in range(n):
                g_j = g[j]
                s0 += g_j * x0[j]
                s1 += g_j * x1[j]
                s2 += g_j * x2[j]
                s3 += g_j * x3[j]
            dW[p] = s0
            dW[p + 1] = s1
            dW[p + 2] = s2
            dW[p + 3] = s3
            p += 4
        while p < end:
            x = XT[indices[p]]
            s = zero
            for j in range(n):
                s += g[j] * x[j]
            dW[p] = s
            p += 1


def _weight_grad_by_col_py(colptr, rowind, perm, XT, dYT, dW):
    """SDDMM in CSC order: the same ``dW`` (CSR-ordered), column ``c``'s entries at a time.

    Reads each ``XT`` row once and re-reads ``dYT`` rows: the better order when
    ``out < in`` (the first FPE layer), as the re-read operand then stays in cache.
    colptr (in+1,), rowind (nnz,), perm (nnz,), XT (in, n), dYT (out, n); dW (nnz,) written.
    """
    n = XT.shape[1]
    zero = dW.dtype.type(0)
    for c in prange(XT.shape[0]):
        x = XT[c]  # (n,)
        q = colptr[c]
        end = colptr[c + 1]
        while q + 4 <= end:  # four dot products share each load of x
            g0, g1, g2, g3 = dYT[rowind[q]], dYT[rowind[q + 1]], dYT[rowind[q + 2]], dYT[rowind[q + 3]]
            s0 = zero
            s1 = zero
            s2 = zero
            s3 = zero
            for j in range(n):
                x_j = x[j]
                s0 += g0[j] * x_j
                s1 += g1[j] * x_j
                s2 += g2[j] * x_j
                s3 += g3[j] * x_j
            dW[perm[q]] = s0
            dW[perm[q + 1]] = s1
            dW[perm[q + 2]] = s2
            dW[perm[q + 3]] = s3
            q += 4
        while q < end:
            g = dYT[rowind[q]]
            s = zero
            for j in range(n):
                s += g[j] * x[j]
            dW[perm[q]] = s
            q += 1


def _adam_py(w, g, m, v, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, c2_sqrt, eps, l1, two_l2):
    """Adam with L1/L2 penalties on flat arrays, in place (:class:`fpe_ref.optim.Adam` order).

    For each entry, with ``step_size = lr / (1 - beta1^t)`` and ``c2_sqrt = sqrt(1 - beta2^t)``::

        g' = g + (l1 sign(w) + 2 l2 w)        penalties enter the gradient before Adam
        m  = beta1 m + (1 - beta1) g'
        v  = beta2 v + (1 - beta2) g'^2
        w  = w - step_size * m / (sqrt(v) / c2_sqrt + eps)

    which is ``w -= lr mhat / (sqrt(vhat) + eps)`` with ``mhat = m / (1 - beta1^t)``,
    ``vhat = v / (1 - beta2^t)``, evaluated as PyTorch does. ``sign(0) = 0`` (torch's
    ``abs`` backward). All scalars have the arrays' dtype.
    """
    for i in range(w.shape[0]):
        w_i = w[i]
        g_i = g[i] + (l1 * np.sign(w_i) + two_l2 * w_i)
        m_i = m[i] * beta1 + one_minus_beta1 * g_i
        v_i = v[i] * beta2 + one_minus_beta2 * (g_i * g_i)
        m[i] = m_i
        v[i] = v_i
        w[i] = w_i - step_size * (m_i / (np.sqrt(v_i) / c2_sqrt + eps))


# fastmath=False is explicit on purpose: numba compiles a callee that sets no fastmath with
# its *caller's* flags (and caches that), so a fused step compiled with reassociation would
# otherwise turn these bit-exact kernels into contracted ones.
_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)
_forward_nb = numba.njit(parallel=True, **_JIT)(_forward_py)
_input_grad_nb = numba.njit(parallel=True, **_JIT)(_input_grad_py)
# the SDDMM reduces over the batch: reassociation lets it vectorise (see module doc)
_SDDMM = {**_JIT, "parallel": True, "fastmath": {"reassoc", "contract"}}
_weight_grad_by_row_nb = numba.njit(**_SDDMM)(_weight_grad_by_row_py)
_weight_grad_by_col_nb = numba.njit(**_SDDMM)(_weight_grad_by_col_py)
# Adam: 0.011 ms per 16384 entries serially, no faster with prange: kept serial.
_adam_nb = numba.njit(**_JIT)(_adam_py)


def set_num_threads(n: int) -> None:
    """Threads of the parallel kernels (Numba's pool; default: one per core).

    Results never depend on it (no reduction is split across threads). When several
    processes already share the cores (a sweep), give each process 1 thread: a parallel loop
    waits for its slowest thread, and on an oversubscribed machine that is far slower than
    running serially.
    """
    numba.set_num_threads(int(n))


def get_num_threads() -> int:
    """Threads the parallel kernels use now."""
    return int(numba.get_num_threads())


def max_threads() -> int:
    """The most threads :func:`set_num_threads` accepts (numba's ``NUMBA_NUM_THREADS``)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def numba_info() -> dict:
    """Version, threading layer and thread count, for benchmark records."""
    return {"numba": numba.__version__, "numba_threading_layer": str(numba.config.THREADING_LAYER),
            "numba_threads": get_num_threads()}


# ----------------------------------------------------------------------------- NumPy twins
def forward_numpy(indptr, indices, data, b, XT) -> np.ndarray:
    """NumPy twin of the forward kernel: ``YT (out, n)``, the same bits.

    Step ``k`` adds the ``k``-th entry of every row that has one (vectorised over rows), so
    each row is summed in storage order exactly as the kernel does.
    """
    out = indptr.shape[0] - 1
    YT = np.empty((out, XT.shape[1]), dtype=XT.dtype)
    YT[...] = b[:, None]
    counts = np.diff(indptr)
    for k in range(int(counts.max(initial=0))):
        rows = np.flatnonzero(counts > k)
        p = indptr[rows] + k
        YT[rows] = YT[rows] + data[p][:, None] * XT[indices[p]]
    return YT


def input_grad_numpy(colptr, rowind, perm, data, dYT) -> np.ndarray:
    """NumPy twin of the input-gradient kernel: ``dXT (in, n)``, the same bits."""
    fan_in = colptr.shape[0] - 1
    dXT = np.zeros((fan_in, dYT.shape[1]), dtype=dYT.dtype)
    counts = np.diff(colptr)
    for k in range(int(counts.max(initial=0))):
        cols = np.flatnonzero(counts > k)
        q = colptr[cols] + k
        dXT[cols] = dXT[cols] + data[perm[q]][:, None] * dYT[rowind[q]]
    return dXT


def weight_grad_numpy(indptr, indices, XT, dYT, chunk: int = 4096) -> np.ndarray:
    """NumPy twin of the SDDMM kernel: ``dW (nnz,)`` (equal to rounding; see module doc)."""
    rows = np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))
    dW = np.empty(indices.shape[0], dtype=XT.dtype)
    for p0 in range(0, dW.shape[0], chunk):  # bounded (chunk, n) temporaries
        sl = slice(p0, p0 + chunk)
        dW[sl] = np.einsum("pj,pj->p", dYT[rows[sl]], XT[indices[sl]])
    return dW


def adam_numpy(w, g, m, v, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, c2_sqrt, eps, l1, two_l2):
    """NumPy twin of the Adam kernel (same arguments, in place, the same bits)."""
    g_ = g + (l1 * np.sign(w) + two_l2 * w)
    m *= beta1
    m += one_minus_beta1 * g_
    v *= beta2
    v += one_minus_beta2 * (g_ * g_)
    w -= step_size * (m / (np.sqrt(v) / c2_sqrt + eps))


# ----------------------------------------------------------------------------- wrappers
def _check_impl(impl):
    if impl not in IMPLS:
        raise FPEError(f"impl must be one of {IMPLS}, got {impl!r}")


def _operand(a, name, shape, dtype):
    """C-contiguous ``a`` with the given shape and dtype (a view when it already is one)."""
    a = np.asarray(a)
    if a.shape != shape:
        raise FPEError(f"{name} has shape {a.shape}, expected {shape}")
    if a.dtype != dtype:
        raise FPEError(f"{name} has dtype {a.dtype}, the weights are {dtype}: cast one of them")
    return np.ascontiguousarray(a)


def _out(out, name, shape, dtype):
    if out is None:
        return np.empty(shape, dtype=dtype)
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise FPEError(f"{name} must be a C-contiguous {dtype} array of shape {shape}")
    return out


_L2_TILE_BYTES = 256 * 1024  # XT rows of one input block: half of a core's L2 on the target machines


def _forward_tiles(n_out, XT):
    """(row_block, col_block) of the forward kernel: one row block per thread, and input
    blocks whose ``XT`` rows take ~``_L2_TILE_BYTES``. They affect speed only, never bits."""
    row_block = max(1, -(-n_out // get_num_threads()))
    col_block = max(16, _L2_TILE_BYTES // max(1, XT.shape[1] * XT.itemsize))
    return row_block, col_block


def linear_forward_t(S: SparseLinear, XT, b=None, out=None, impl: str = "numba") -> np.ndarray:
    """Feature-major forward: ``YT = W XT + b[:, None]``, ``XT (in, n)`` -> ``YT (out, n)``.

    Only stored weights are touched. ``b`` defaults to zeros; ``out`` is an optional
    C-contiguous ``(out, n)`` buffer.
    """
    _check_impl(impl)
    n_out, fan_in = S.shape
    XT = np.asarray(XT)
    if XT.ndim != 2:
        raise FPEError(f"XT must be 2-D (in, n), got shape {XT.shape}")
    XT = _operand(XT, "XT", (fan_in, XT.shape[1]), S.dtype)
    b = np.zeros(n_out, dtype=S.dtype) if b is None else _operand(b, "b", (n_out,), S.dtype)
    if impl == "numpy":
        YT = forward_numpy(S.indptr, S.indices, S.data, b, XT)
        if out is None:
            return YT
        out = _out(out, "out", YT.shape, S.dtype)
        out[...] = YT
        return out
    YT = _out(out, "out", (n_out, XT.shape[1]), S.dtype)
    kernel = _forward_nb if impl == "numba" else _forward_py
    kernel(S.indptr, S.indices, S.data, b, XT, YT, *_forward_tiles(n_out, XT))
    return YT


def linear_input_grad_t(S: SparseLinear, dYT, out=None, impl: str = "numba") -> np.ndarray:
    """Feature-major input gradient: ``dXT = W^T dYT``, ``dYT (out, n)`` -> ``dXT (in, n)``."""
    _check_impl(impl)
    n_out, fan_in = S.shape
    dYT = np.asarray(dYT)
    if dYT.ndim != 2:
        raise FPEError(f"dYT must be 2-D (out, n), got shape {dYT.shape}")
    dYT = _operand(dYT, "dYT", (n_out, dYT.shape[1]), S.dtype)
    if impl == "numpy":
        dXT = input_grad_numpy(S.colptr, S.rowind, S.perm, S.data, dYT)
        if out is None:
            return dXT
        out = _out(out, "out", dXT.shape, S.dtype)
        out[...] = dXT
        return out
    dXT = _out(out, "out", (fan_in, dYT.shape[1]), S.dtype)
    kernel = _input_grad_nb if impl == "numba" else _input_grad_py
    kernel(S.colptr, S.rowind, S.perm, S.data, dYT, dXT)
    return dXT


def linear_weight_grad_t(S: SparseLinear, XT, dYT, out=None, impl: str = "numba", order: str = "auto") -> np.ndarray:
    """Gradient at the stored weights only: ``dW[p] = (dYT XT^T)[row(p), col(p)]``, ``(nnz,)``.

    ``XT (in, n)`` is the layer's input, ``dYT (out, n)`` the gradient of its output; the
    result is aligned with ``S.data`` (``to_dense(S, dW)`` gives ``(dY^T X) * M``).
    ``order``: ``"row"`` (CSR) or ``"col"`` (CSC) loop; ``"auto"`` takes ``"col"`` when
    ``out < in`` so that the smaller of ``dYT``/``XT`` is the one re-read (about 1.3x faster at
    ``in = 512, out = 128``). Both give the same values; for impl="numpy" it is ignored.
    """
    _check_impl(impl)
    if order not in ("auto", "row", "col"):
        raise FPEError(f"order must be 'auto', 'row' or 'col', got {order!r}")
    n_out, fan_in = S.shape
    XT = np.asarray(XT)
    if XT.ndim != 2:
        raise FPEError(f"XT must be 2-D (in, n), got shape {XT.shape}")
    n = XT.shape[1]
    XT = _operand(XT, "XT", (fan_in, n), S.dtype)
    dYT = _operand(dYT, "dYT", (n_out, n), S.dtype)
    if impl == "numpy":
        dW = weight_grad_numpy(S.indptr, S.indices, XT, dYT)
        if out is None:
            return dW
        out = _out(out, "out", dW.shape, S.dtype)
        out[...] = dW
        return out
    dW = _out(out, "out", (S.nnz,), S.dtype)
    if order == "auto":
        order = "col" if n_out < fan_in else "row"
    if order == "row":
        kernel = _weight_grad_by_row_nb if impl == "numba" else _weight_grad_by_row_py
        kernel(S.indptr, S.indices, XT, dYT, dW)
    else:
        kernel = _weight_grad_by_col_nb if impl == "numba" else _weight_grad_by_col_py
        kernel(S.colptr, S.rowind, S.perm, XT, dYT, dW)
    return dW


def sparse_linear_forward(x, S: SparseLinear, b=None, impl: str = "numba"):
    """Batch-major masked linear layer: ``out = x W^T + b`` over the stored weights.

    ``x (n, in)`` -> ``out (n, out)``, returned as ``YT.T`` (Fortran-ordered), with the cache
    for :func:`sparse_linear_backward`. An F-ordered ``x`` (such as a previous layer's
    ``out``) costs no copy; a C-ordered one is transposed once.
    """
    XT = np.ascontiguousarray(np.asarray(x).T)  # (in, n)
    YT = linear_forward_t(S, XT, b, impl=impl)  # (out, n)
    return YT.T, (XT, S)


def sparse_linear_backward(dout, cache, need_dx: bool = True, impl: str = "numba"):
    """Gradients of :func:`sparse_linear_forward`: ``dx = dout W``, ``dW``, ``db = sum_n dout``.

    ``dW`` is ``(nnz,)``, aligned with ``S.data``: the masked gradient ``(dout^T x) * M`` at
    the stored positions (masked positions have no gradient because they are no parameter).
    ``dx`` is ``(n, in)`` (F-ordered), or None when ``need_dx`` is False (first layer).
    """
    XT, S = cache
    dYT = np.ascontiguousarray(np.asarray(dout).T)  # (out, n)
    dW = linear_weight_grad_t(S, XT, dYT, impl=impl)  # (nnz,)
    db = dYT.sum(axis=1)  # (out,)
    dx = linear_input_grad_t(S, dYT, impl=impl).T if need_dx else None  # (n, in)
    return dx, dW, db


def penalty_grad(w, l1: float = 0.0, l2: float = 0.0) -> np.ndarray:
    """Gradient of ``l1 sum|w| + l2 sum w^2``: ``l1 sign(w) + 2 l2 w`` (``sign(0) = 0``).

    The term :func:`adam_update` adds to the gradient (for reference and tests).
    """
    w = np.asarray(w)
    dt = w.dtype.type
    return dt(l1) * np.sign(w) + dt(2.0 * l2) * w


def adam_update(w, g, m, v, t: int, lr: float, beta1: float = 0.9, beta2: float = 0.999,
                eps: float = 1e-8, l1: float = 0.0, l2: float = 0.0, impl: str = "numba"):
    """One Adam step (PyTorch semantics) with L1/L2 penalties, in place on ``w``, ``m``, ``v``.

    Parameters
    ----------
    w, g, m, v : arrays of one shape and float dtype, C-contiguous
        Parameter, loss gradient, first and second moments. ``S.data`` of a
        :class:`SparseLinear` (stored values only: masked weights are not even stored) or any
        dense parameter (bias, dense layer); the update is elementwise either way.
    t : int
        Step number, starting at 1 (bias corrections ``1 - beta^t``).
    lr, beta1, beta2, eps : float
        As ``torch.optim.Adam``.
    l1, l2 : float
        Penalty coefficients of ``l1 sum|w| + l2 sum w^2``; 0 disables.

    The scalar coefficients (``lr / (1 - beta1^t)``, ``sqrt(1 - beta2^t)``, ``1 - beta``,
    ``2 l2``) are computed in float64 and cast to the parameter dtype, as
    :class:`fpe_ref.optim.Adam` under NumPy and ``torch.optim.Adam`` do.
    """
    _check_impl(impl)
    if isinstance(t, bool) or int(t) != t or t < 1:
        raise FPEError(f"Adam step t must be an integer >= 1, got {t!r}")
    arrays = [np.asarray(a) for a in (w, g, m, v)]
    w_, g_, m_, v_ = arrays
    if w_.dtype not in (np.float32, np.float64):
        raise FPEError(f"Adam needs float32 or float64 parameters, got {w_.dtype}")
    for name, a in zip("wgmv", arrays):
        if a.shape != w_.shape or a.dtype != w_.dtype:
            raise FPEError(f"adam_update: {name} has shape {a.shape} and dtype {a.dtype}, "
                           f"w has {w_.shape} and {w_.dtype}")
        if name != "g" and not a.flags.c_contiguous:
            raise FPEError(f"adam_update updates {name} in place: it must be C-contiguous")
    g_ = np.ascontiguousarray(g_)
    dt = w_.dtype.type
    t = int(t)
    coef = (
        dt(beta1),
        dt(beta2),
        dt(1.0 - beta1),
        dt(1.0 - beta2),
        dt(lr / (1.0 - beta1**t)),  # step_size
        dt((1.0 - beta2**t) ** 0.5),  # c2_sqrt
        dt(eps),
        dt(l1),
        dt(2.0 * l2),
    )
    flat = [a.reshape(-1) for a in (w_, g_, m_, v_)]  # views: all C-contiguous
    if impl == "numpy":
        adam_numpy(*flat, *coef)
    else:
        (_adam_nb if impl == "numba" else _adam_py)(*flat, *coef)


# ----------------------------------------------------------------------------- fused training
# One training step (and epoch) of a one-hidden-layer MLP ``[d, h, C]`` in one compiled call:
# gather the batch, forward, loss, backward, penalties and Adam, with both weight matrices in
# the CSR + CSC storage above (a dense layer is stored with a full mask). The same plain
# functions are compiled twice: serially (one model per thread, used when many small models
# train side by side) and with ``parallel=True`` (one large model, ``prange`` over rows /
# columns / samples inside each product). The composite
# functions (step, epochs) call their products through names ending in ``_x``; each compiled
# variant binds those names to the serial or the parallel products (:func:`_variant`), so
# nothing parallel is nested inside a parallel loop and neither variant compiles the other's
# products. Called as plain Python, the ``_x`` names are the serial compiled products.
#
# Numerics against fpe_ref.train.train_step (NumPy, float64): the same formulas in the same
# order where it is cheap (BCE / softmax, the penalty gradients, Adam bit for bit), sums in
# another order elsewhere (BLAS vs storage order, reassociated dot products), so a step
# agrees to rounding and whole runs to ~1e-12..1e-10 after 1000 steps (tests/test_batched.py).


def _gather_t_py(X, idx, XbT):
    """``XbT[:, i] = X[idx[i], :]``: the batch, transposed to feature-major. X (N, d); XbT (d, nb)."""
    nb = idx.shape[0]
    d = X.shape[1]
    for blk in prange((nb + 15) // 16):  # blocks of 16 samples: disjoint columns of XbT
        for i in range(blk * 16, min(nb, blk * 16 + 16)):
            x = X[idx[i]]
            for k in range(d):
                XbT[k, i] = x[k]


def _relu_py(AT, HT):
    """``HT = max(AT, 0)`` row by row. AT, HT (h, n)."""
    n = AT.shape[1]
    zero = AT.dtype.type(0)
    for r in prange(AT.shape[0]):
        a = AT[r]
        h = HT[r]
        for j in range(n):
            h[j] = a[j] if a[j] > zero else zero


def _relu_backward_rowsum_py(AT, dHT, db):
    """``dHT *= [AT > 0]`` in place and ``db[r] = sum_j dHT[r, j]`` (the hidden bias gradient)."""
    n = AT.shape[1]
    zero = AT.dtype.type(0)
    for r in prange(AT.shape[0]):
        a = AT[r]
        g = dHT[r]
        s = zero
        for j in range(n):
            v = g[j] if a[j] > zero else zero
            g[j] = v
            s += v
        db[r] = s


def _rowsum_py(YT, out):
    """``out[r] = sum_j YT[r, j]``."""
    n = YT.shape[1]
    for r in prange(YT.shape[0]):
        y = YT[r]
        s = YT.dtype.type(0)
        for j in range(n):
            s += y[j]
        out[r] = s


def _loss_py(ZT, yf, yi, idx, binary, dZT, lvec, cvec):
    """Per-sample loss, ``dL/dZ`` and correctness, as :mod:`fpe_ref.layers` computes them.

    ZT (C, nb) logits of the samples ``idx`` (labels ``yf`` as floats, ``yi`` as ints); writes
    dZT (C, nb) ``= dl/dz / nb`` (the batch mean), lvec (nb,) per-sample loss, cvec (nb,) 1.0
    where the prediction is right. Binary (C = 1): ``l = max(z, 0) - z y + log1p(exp(-|z|))``,
    ``dl/dz = sigmoid(z) - y`` with ``sigmoid`` in the stable two-branch form of
    ``layers.sigmoid`` (``e = exp(-|z|)`` serves both); prediction ``z > 0``. Otherwise softmax
    cross-entropy ``l = log sum exp(z - zmax) + zmax - z_y``; prediction: first argmax.
    """
    C, nb = ZT.shape
    one = ZT.dtype.type(1)
    zero = ZT.dtype.type(0)
    for i in prange(nb):
        if binary:
            z = ZT[0, i]
            y = yf[idx[i]]
            e = np.exp(-abs(z))
            lvec[i] = max(z, zero) - z * y + np.log1p(e)
            s = one / (one + e) if z >= zero else e / (one + e)
            dZT[0, i] = (s - y) / nb
            cvec[i] = 1.0 if (z > zero) == (yi[idx[i]] == 1) else 0.0
        else:
            zmax = ZT[0, i]
            best = 0
            for c in range(1, C):
                if ZT[c, i] > zmax:
                    zmax = ZT[c, i]
                    best = c
            s = zero
            for c in range(C):
                e = np.exp(ZT[c, i] - zmax)
                dZT[c, i] = e
                s += e
            lab = yi[idx[i]]
            lvec[i] = np.log(s) + zmax - ZT[lab, i]
            for c in range(C):
                dZT[c, i] = dZT[c, i] / s
            dZT[lab, i] = dZT[lab, i] - one
            for c in range(C):
                dZT[c, i] = dZT[c, i] / nb
            cvec[i] = 1.0 if best == lab else 0.0


_FM = {**_JIT, "fastmath": {"reassoc", "contract"}}


def _variant(fn, suffix, bindings=None):
    """A copy of the plain function ``fn`` under its own name, with some globals rebound.

    Numba's on-disk cache is keyed by the function's qualified name, line, bytecode and
    signature, *not* by the compile flags or the globals: compiling one function both
    serially and with ``parallel=True`` would make the two share cache entries (the "serial"
    kernel then loads the parallel machine code). Each compiled variant therefore gets its
    own copy and name; ``bindings`` replaces globals (the ``_x`` products) in the copy only.
    """
    g = fn.__globals__ if not bindings else {**fn.__globals__, **bindings}
    f = types.FunctionType(fn.__code__, g, f"{fn.__name__}_{suffix}", fn.__defaults__, fn.__closure__)
    f.__qualname__ = f"{fn.__qualname__}_{suffix}"
    f.__doc__ = fn.__doc__
    return f


_SERIAL = {  # the products, compiled serially (one model per thread)
    "_gather_t_x": numba.njit(**_JIT)(_variant(_gather_t_py, "serial")),
    "_relu_x": numba.njit(**_JIT)(_variant(_relu_py, "serial")),
    "_relu_backward_rowsum_x": numba.njit(**_FM)(_variant(_relu_backward_rowsum_py, "serial")),
    "_rowsum_x": numba.njit(**_FM)(_variant(_rowsum_py, "serial")),
    "_loss_x": numba.njit(**_JIT)(_variant(_loss_py, "serial")),
    "_forward_x": numba.njit(**_JIT)(_variant(_forward_py, "serial")),
    "_input_grad_x": numba.njit(**_JIT)(_variant(_input_grad_py, "serial")),
    "_weight_grad_by_row_x": numba.njit(**_FM)(_variant(_weight_grad_by_row_py, "serial")),
    "_weight_grad_by_col_x": numba.njit(**_FM)(_variant(_weight_grad_by_col_py, "serial")),
}
_PARALLEL = {  # the same products with parallel=True (one large model)
    "_gather_t_x": numba.njit(parallel=True, **_JIT)(_gather_t_py),
    "_relu_x": numba.njit(parallel=True, **_JIT)(_relu_py),
    "_relu_backward_rowsum_x": numba.njit(parallel=True, **_FM)(_relu_backward_rowsum_py),
    "_rowsum_x": numba.njit(parallel=True, **_FM)(_rowsum_py),
    "_loss_x": numba.njit(parallel=True, **_JIT)(_loss_py),
    "_forward_x": _forward_nb,
    "_input_grad_x": _input_grad_nb,
    "_weight_grad_by_row_x": _weight_grad_by_row_nb,
    "_weight_grad_by_col_x": _weight_grad_by_col_nb,
}
globals().update(_SERIAL)  # what the plain functions below call when run as Python


def _hidden_forward_py(X, idx, ip1, ix1, w1, b1, W1d, dense1, XbT, AT, HT, tiles):
    """Gather the batch ``idx`` of ``X`` into ``XbT (d, nb)``, ``AT = W1 XbT + b1``, ``HT = relu(AT)``.

    ``dense1``: multiply by the dense mirror ``W1d (h, d)`` (zeros where masked) with BLAS
    instead of the sparse kernel (a layer too dense for the sparse kernels to pay off).
    """
    _gather_t_x(X, idx, XbT)
    if dense1:
        AT[...] = np.dot(W1d, XbT)  # (h, nb)
        _bias_relu(AT, b1, HT)
    else:
        _forward_x(ip1, ix1, w1, b1, XbT, AT, tiles[0], tiles[1])
        _relu_x(AT, HT)


def _bias_relu_py(AT, b, HT):
    """``AT += b[:, None]`` (after the product, as NumPy's ``x W^T + b``) and ``HT = relu(AT)``;
    HT may be None-like (shape (0, 0)) to skip the ReLU."""
    n = AT.shape[1]
    zero = AT.dtype.type(0)
    relu = HT.shape[0] == AT.shape[0]
    for r in range(AT.shape[0]):
        b_r = b[r]
        for j in range(n):
            a = AT[r, j] + b_r
            AT[r, j] = a
            if relu:
                HT[r, j] = a if a > zero else zero


def _gather_entries_py(G, indptr, indices, out):
    """``out[p] = G[row(p), indices[p]]``: a dense gradient at the stored positions (CSR order)."""
    for r in range(indptr.shape[0] - 1):
        for p in range(indptr[r], indptr[r + 1]):
            out[p] = G[r, indices[p]]


def _scatter_entries_py(data, indptr, indices, W):
    """``W[row(p), indices[p]] = data[p]``: refresh a dense mirror after the update."""
    for r in range(indptr.shape[0] - 1):
        for p in range(indptr[r], indptr[r + 1]):
            W[r, indices[p]] = data[p]


_bias_relu = numba.njit(**_JIT)(_bias_relu_py)
_gather_entries = numba.njit(**_JIT)(_gather_entries_py)
_scatter_entries = numba.njit(**_JIT)(_scatter_entries_py)


def _fused_step_py(X, yf, yi, idx, binary,
                   ip1, ix1, cp1, ri1, pm1, w1, b1, ip2, ix2, cp2, ri2, pm2, w2, b2,
                   mw1, vw1, mb1, vb1, mw2, vw2, mb2, vb2,
                   gw1, gb1, gw2, gb2, XbT, AT, HT, ZT, dZT, dHT, lvec, cvec,
                   hyper, step_size, c2_sqrt, l1, l2, tiles, dense1, dense2, W1d, W2d):
    """One Alg. A3 step (lines 10-19) of ``z = W2 relu(W1 x + b1) + b2`` on the batch ``idx``.

    Parameters (``h`` hidden, ``C`` outputs, ``nb = len(idx)``)
    ----------
    X (N, d), yf (N,) float labels, yi (N,) int labels, idx (nb,) rows of this batch.
    binary : C == 1 (BCE-with-logits) or softmax cross-entropy.
    ip1, ix1, cp1, ri1, pm1, w1 : CSR + CSC index and values of ``W1 (h, d)``; b1 (h,).
    ip2, ix2, cp2, ri2, pm2, w2 : the same for ``W2 (C, h)``; b2 (C,).
    m*, v* : Adam moments of w1, b1, w2, b2 (same shapes), updated in place.
    g* : gradient buffers; XbT (d, nb), AT/HT/dHT (h, nb), ZT/dZT (C, nb), lvec/cvec (nb,): scratch.
    hyper : (8,) in the parameter dtype: beta1, beta2, 1 - beta1, 1 - beta2, eps, l1, 2 l2, 0.
    step_size, c2_sqrt : this step's ``lr / (1 - beta1^t)`` and ``sqrt(1 - beta2^t)`` (param dtype).
    l1, l2 : the penalty coefficients as float64, for the loss value.
    tiles : (4,) int64 forward tiles (row block, input block) of layer 1 and of layer 2.
    dense1, dense2, W1d (h, d), W2d (C, h) : a layer with ``dense`` set is multiplied as the
        dense mirror ``W*d`` (zeros where masked) with BLAS, its gradient taken densely and
        read at the stored positions, and the mirror refreshed after the update: for layers
        dense enough that BLAS on the zeros beats the sparse kernels. ``w*`` stays the
        parameter either way (unused mirrors may be ``(1, 1)``).

    Returns ``(mean data loss + penalties, number correct)`` from the forward pass before
    the update, as :func:`fpe_ref.train.train_step`. The penalty value and gradients use the
    parameters before the update: ``l1 sum|W1| + l2 sum_p ||p||^2`` and
    ``l1 sign(W1) + 2 l2 p``, which :func:`_adam_py` adds (L1 on W1 only). Masked weights are
    not stored, so they get no gradient, no moment and no update: they stay exactly 0.
    """
    h = b1.shape[0]
    d = X.shape[1]
    C = b2.shape[0]
    nb = idx.shape[0]
    nnz1 = ip1[h]
    nnz2 = ip2[C]
    _hidden_forward_x(X, idx, ip1, ix1, w1, b1, W1d, dense1, XbT, AT, HT, tiles)  # (h, nb)
    if dense2:
        ZT[...] = np.dot(W2d, HT)
        _bias_relu(ZT, b2, ZT[:0])
    else:
        _forward_x(ip2, ix2, w2, b2, HT, ZT, tiles[2], tiles[3])  # logits (C, nb)
    _loss_x(ZT, yf, yi, idx, binary, dZT, lvec, cvec)  # dZT = dL/dz (C, nb)
    _rowsum_x(dZT, gb2)
    if dense2:
        _gather_entries(np.dot(dZT, HT.T), ip2, ix2, gw2)  # (dZ H^T) at the stored positions
        dHT[...] = np.dot(W2d.T, dZT)
    else:
        if C < h:  # the SDDMM re-reads the smaller operand
            _weight_grad_by_col_x(cp2, ri2, pm2, HT, dZT, gw2)
        else:
            _weight_grad_by_row_x(ip2, ix2, HT, dZT, gw2)
        _input_grad_x(cp2, ri2, pm2, w2, dZT, dHT)  # dH = W2^T dZ (h, nb)
    _relu_backward_rowsum_x(AT, dHT, gb1)  # dA = dH [A > 0]; db1
    if dense1:
        _gather_entries(np.dot(dHT, XbT.T), ip1, ix1, gw1)
    elif h < d:
        _weight_grad_by_col_x(cp1, ri1, pm1, XbT, dHT, gw1)
    else:
        _weight_grad_by_row_x(ip1, ix1, XbT, dHT, gw1)
    loss = 0.0
    correct = 0.0
    for i in range(nb):
        loss += lvec[i]
        correct += cvec[i]
    # the penalties, from the parameters before the update (float64 sums)
    pen = 0.0
    if l1 != 0.0:
        s = 0.0
        for p in range(nnz1):
            s += abs(w1[p])
        pen += l1 * s
    if l2 != 0.0:
        s = 0.0
        for p in range(nnz1):
            s += w1[p] * w1[p]
        for p in range(h):
            s += b1[p] * b1[p]
        for p in range(nnz2):
            s += w2[p] * w2[p]
        for p in range(C):
            s += b2[p] * b2[p]
        pen += l2 * s
    b_1, b_2, omb1, omb2, eps, l1_, two_l2, zero = (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4],
                                                    hyper[5], hyper[6], hyper[7])
    _adam_nb(w1[:nnz1], gw1[:nnz1], mw1[:nnz1], vw1[:nnz1], b_1, b_2, omb1, omb2, step_size, c2_sqrt, eps, l1_, two_l2)
    _adam_nb(b1, gb1, mb1, vb1, b_1, b_2, omb1, omb2, step_size, c2_sqrt, eps, zero, two_l2)
    _adam_nb(w2[:nnz2], gw2[:nnz2], mw2[:nnz2], vw2[:nnz2], b_1, b_2, omb1, omb2, step_size, c2_sqrt, eps, zero, two_l2)
    _adam_nb(b2, gb2, mb2, vb2, b_1, b_2, omb1, omb2, step_size, c2_sqrt, eps, zero, two_l2)
    if dense1:
        _scatter_entries(w1, ip1, ix1, W1d)
    if dense2:
        _scatter_entries(w2, ip2, ix2, W2d)
    return loss / nb + pen, correct


def _test_correct_py(X, yi, idx_all, binary, ip1, ix1, w1, b1, ip2, ix2, w2, b2,
                     buf_x, buf_a, buf_h, buf_z, chunk, tiles, dense1, dense2, W1d, W2d):
    """Number of samples of ``(X, yi)`` one model classifies correctly (forward only, ``chunk`` at a time).

    ``idx_all = arange(len(X))``; buffers hold ``chunk`` columns of ``d``, ``h``, ``h``, ``C`` rows.
    Prediction as :meth:`fpe_ref.mlp.MLP.predict`: ``z > 0`` (C = 1) or the first argmax.
    """
    n, d = X.shape
    h = b1.shape[0]
    C = b2.shape[0]
    correct = 0
    for start in range(0, n, chunk):
        nb = min(n, start + chunk) - start
        HT = buf_h[:h * nb].reshape((h, nb))
        ZT = buf_z[:C * nb].reshape((C, nb))
        _hidden_forward_x(X, idx_all[start:start + nb], ip1, ix1, w1, b1, W1d, dense1,
                          buf_x[:d * nb].reshape((d, nb)), buf_a[:h * nb].reshape((h, nb)), HT, tiles)
        if dense2:
            ZT[...] = np.dot(W2d, HT)
            _bias_relu(ZT, b2, ZT[:0])
        else:
            _forward_x(ip2, ix2, w2, b2, HT, ZT, tiles[2], tiles[3])
        for i in range(nb):
            if binary:
                correct += 1 if (ZT[0, i] > 0) == (yi[start + i] == 1) else 0
            else:
                best = 0
                for c in range(1, C):
                    if ZT[c, i] > ZT[best, i]:
                        best = c
                correct += 1 if best == yi[start + i] else 0
    return correct


def _model_epochs_py(g, X, yf, yi, binary, orders, batch,
                     IP1, IX1, CP1, RI1, PM1, W1, B1, IP2, IX2, CP2, RI2, PM2, W2, B2,
                     MW1, VW1, MB1, VB1, MW2, VW2, MB2, VB2,
                     hyper, coefs, pens, pens64, evals, X_test, y_test, tiles,
                     loss_out, correct_out, test_out, dense1, dense2, W1D, W2D):
    """``E`` epochs of model ``g`` of a stack of ``G`` one-hidden-layer models of one shape.

    Arrays with a leading model axis ``G``: ``orders (G, E, N)`` (each model's permutation of
    the training set for each epoch, drawn in NumPy), the stacked CSR/CSC storage
    ``IP1 (G, h+1)``, ``IX1 (G, P1)``, ``CP1 (G, d+1)``, ``RI1``, ``PM1``, ``W1 (G, P1)``
    (padded to the largest nnz; model g uses ``[:IP1[g, h]]``), ``B1 (G, h)``, the same for
    layer 2, and the Adam moments. ``hyper (G, 5)``: beta1, beta2, 1 - beta1, 1 - beta2, eps
    (parameter dtype); ``coefs (G, E, steps, 2)``: each step's ``lr / (1 - beta1^t)`` and
    ``sqrt(1 - beta2^t)``; ``pens (E, 2)``: l1 and 2 l2 of each epoch (parameter dtype),
    ``pens64 (E, 2)``: l1 and l2 (float64, for the loss value); ``evals (E,)``: whether to
    count test-set hits after that epoch (``X_test (n_test, d)``, ``y_test``). ``dense1``,
    ``dense2``, ``W1D (G, h, d)``, ``W2D (G, C, h)``: layers multiplied densely (see
    :func:`_fused_step_py`; the mirrors must hold the current weights).

    Writes ``loss_out[g, e]`` (sum over batches of batch loss x batch size),
    ``correct_out[g, e]`` (training hits, before each step's update) and ``test_out[g, e]``,
    and touches no other model's arrays.
    """
    E = orders.shape[1]
    n = orders.shape[2]
    d = X.shape[1]
    h = B1.shape[1]
    C = B2.shape[1]
    steps = (n + batch - 1) // batch
    buf_x = np.empty(d * batch, dtype=W1.dtype)
    buf_a = np.empty(h * batch, dtype=W1.dtype)
    buf_h = np.empty(h * batch, dtype=W1.dtype)
    buf_dh = np.empty(h * batch, dtype=W1.dtype)
    buf_z = np.empty(C * batch, dtype=W1.dtype)
    buf_dz = np.empty(C * batch, dtype=W1.dtype)
    lvec = np.empty(batch, dtype=np.float64)
    cvec = np.empty(batch, dtype=np.float64)
    gw1 = np.empty(W1.shape[1], dtype=W1.dtype)
    gb1 = np.empty(h, dtype=W1.dtype)
    gw2 = np.empty(W2.shape[1], dtype=W1.dtype)
    gb2 = np.empty(C, dtype=W1.dtype)
    hyp = np.zeros(8, dtype=W1.dtype)
    for k in range(5):
        hyp[k] = hyper[g, k]
    idx_test = np.arange(X_test.shape[0])
    for e in range(E):
        hyp[5] = pens[e, 0]
        hyp[6] = pens[e, 1]
        loss_sum = 0.0
        correct = 0.0
        for s in range(steps):
            start = s * batch
            nb = min(n, start + batch) - start
            loss, corr = _fused_step_x(
                X, yf, yi, orders[g, e, start:start + nb], binary,
                IP1[g], IX1[g], CP1[g], RI1[g], PM1[g], W1[g], B1[g],
                IP2[g], IX2[g], CP2[g], RI2[g], PM2[g], W2[g], B2[g],
                MW1[g], VW1[g], MB1[g], VB1[g], MW2[g], VW2[g], MB2[g], VB2[g],
                gw1, gb1, gw2, gb2,
                buf_x[:d * nb].reshape((d, nb)), buf_a[:h * nb].reshape((h, nb)), buf_h[:h * nb].reshape((h, nb)),
                buf_z[:C * nb].reshape((C, nb)), buf_dz[:C * nb].reshape((C, nb)), buf_dh[:h * nb].reshape((h, nb)),
                lvec[:nb], cvec[:nb], hyp, coefs[g, e, s, 0], coefs[g, e, s, 1], pens64[e, 0], pens64[e, 1], tiles,
                dense1, dense2, W1D[g], W2D[g])
            loss_sum += loss * nb
            correct += corr
        loss_out[g, e] = loss_sum
        correct_out[g, e] = correct
        if evals[e]:
            test_out[g, e] = _test_correct_x(X_test, y_test, idx_test, binary, IP1[g], IX1[g], W1[g], B1[g],
                                             IP2[g], IX2[g], W2[g], B2[g], buf_x, buf_a, buf_h, buf_z, batch, tiles,
                                             dense1, dense2, W1D[g], W2D[g])


def _compile_composites(bindings, suffix):
    """Compile the composite functions against one set of products (serial or parallel)."""
    b = dict(bindings)
    b["_hidden_forward_x"] = numba.njit(**_JIT)(_variant(_hidden_forward_py, suffix, b))
    b["_fused_step_x"] = numba.njit(**_FM)(_variant(_fused_step_py, suffix, b))
    b["_test_correct_x"] = numba.njit(**_JIT)(_variant(_test_correct_py, suffix, b))
    b["_model_epochs_x"] = numba.njit(**_JIT)(_variant(_model_epochs_py, suffix, b))
    return b


_SERIAL = _compile_composites(_SERIAL, "serial")
_PARALLEL = _compile_composites(_PARALLEL, "parallel")
globals().update({k: v for k, v in _SERIAL.items() if k not in globals()})
# Many small models: one model per thread, serial products inside (fpe_ref.fast.trainer runs these
# from a pool of Python threads; the kernels release the GIL). A numba ``prange`` over the
# models would do the same but took ~20 s more to compile.
model_epochs_serial = _SERIAL["_model_epochs_x"]
# One large model: parallel products inside each step.
model_epochs_parallel = _PARALLEL["_model_epochs_x"]
