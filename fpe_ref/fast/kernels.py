"""Sparse masked linear layers: storage, the three products and Adam, compiled and as twins.

Paper: Sec. 2.3 and Alg. A1. FPE turns ``W1 (h, d)`` into ``W1' (alpha h, d)`` with a mask
``M1`` that keeps exactly ``h d`` weights (each child holds ``~d / alpha`` of its parent's
inputs), and re-sparsifies ``W2' (C, alpha h)`` the same way. A masked-dense product
``x (W' * M)^T`` pays for all ``alpha h d`` entries; the kernels here pay only for the stored
ones, so an expanded layer costs what its non-zeros cost.

This module holds one layer's pieces: the storage, the three products and Adam. The fused
training step built from them is :mod:`fpe_ref.fast.fused`; the thread limits are
:mod:`fpe_ref.fast.threads` (:func:`set_num_threads`, :func:`get_num_threads`,
:func:`max_threads` and :func:`numba_info` are importable from here too).

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

from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from fpe_ref.errors import FPEError
from fpe_ref.fast.threads import get_num_threads, max_threads, numba_info, set_num_threads

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
