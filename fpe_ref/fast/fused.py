"""The fused training step: one whole Alg. A3 step of a one-hidden-layer MLP in one compiled call.

Paper: Alg. A3 lines 10-19 for ``z = W2 relu(W1 x + b1) + b2``: gather the batch, forward,
loss, backward, penalties and Adam, with both weight matrices in the CSR + CSC storage of
:mod:`fpe_ref.fast.kernels` (a dense layer is stored with a full mask). Masked weights are not
stored, so they get no gradient, no moment and no update: they stay exactly 0.
:mod:`fpe_ref.fast.trainer` drives the epoch loop of this module, one model per call.

Arguments
---------
The arrays travel as a few named tuples (numba compiles them as heterogeneous tuples):

==================  ==========================================================================
:class:`Layer`      one masked layer ``W (out, in)``: CSR + CSC index, values, bias
:class:`Moments`    Adam's first and second moments of a layer's values and bias
:class:`Mirrors`    which layers are multiplied densely, and their dense copies
:class:`Scratch`    the gradient buffers and activations of one step
:class:`Coefs`      the Adam and penalty coefficients of one step
:class:`Schedule`   those coefficients for every step of the epochs of one call
:class:`Totals`     what the epoch loop reports per epoch (loss, training and test hits)
==================  ==========================================================================

Two compiled variants
---------------------
The same plain functions are compiled twice: serially (:data:`model_epochs_serial`: one model
per thread, used when many small models train side by side) and with ``parallel=True``
(:data:`model_epochs_parallel`: one large model, ``prange`` over rows / columns / samples
inside each product). The composite functions (step, epoch loop) call their products through
the names ending in ``_x``. Those names are the serial compiled products, defined below at
module level, so the composites called as plain Python or compiled serially resolve them
statically; the parallel variant compiles copies of the composites in which
:func:`_variant` rebinds exactly those names to the parallel products. Nothing parallel is
nested inside a parallel loop, and neither variant compiles the other's products.

Numerics against :func:`fpe_ref.train.train_step` (NumPy, float64): the same formulas in the
same order where it is cheap (BCE / softmax, the penalty gradients, Adam bit for bit), sums in
another order elsewhere (BLAS vs storage order, reassociated dot products), so a step agrees
to rounding and whole runs to ~1e-12..1e-10 after 1000 steps (``tests/fast/test_trainer.py``).
"""

from __future__ import annotations

import types
from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from fpe_ref.fast.kernels import (
    _JIT,
    _adam_nb,
    _forward_nb,
    _forward_py,
    _input_grad_nb,
    _input_grad_py,
    _weight_grad_by_col_nb,
    _weight_grad_by_col_py,
    _weight_grad_by_row_nb,
    _weight_grad_by_row_py,
)

__all__ = ["Layer", "Moments", "Mirrors", "Scratch", "Coefs", "Schedule", "Totals",
           "model_epochs_serial", "model_epochs_parallel"]


# ----------------------------------------------------------------------------- arguments
class Layer(NamedTuple):
    """One masked layer ``W (out, in)`` in :class:`~fpe_ref.fast.kernels.SparseLinear`'s storage, with its bias.

    ``data`` may be longer than the layer's ``nnz = indptr[out]`` (models stacked with
    padding); only ``data[:nnz]`` is read and updated. :mod:`fpe_ref.fast.trainer` keeps the
    same tuple with a leading model axis ``G`` on every field.
    """

    indptr: np.ndarray  # (out + 1,) int64 CSR row pointers
    indices: np.ndarray  # (nnz,) int64 column of each entry
    colptr: np.ndarray  # (in + 1,) int64 CSC column pointers
    rowind: np.ndarray  # (nnz,) int64 row of each CSC entry
    perm: np.ndarray  # (nnz,) int64 CSC entry q is data[perm[q]]
    data: np.ndarray  # (nnz,) the weights, CSR order; updated in place
    bias: np.ndarray  # (out,) updated in place


class Moments(NamedTuple):
    """Adam's moments of one :class:`Layer`, aligned with its ``data`` and ``bias``; updated in place."""

    m: np.ndarray  # (nnz,) first moment of the weights
    v: np.ndarray  # (nnz,) second moment of the weights
    m_bias: np.ndarray  # (out,)
    v_bias: np.ndarray  # (out,)


class Mirrors(NamedTuple):
    """Layers multiplied as a dense copy with BLAS instead of with the sparse kernels.

    A layer with ``dense*`` set is multiplied as ``W*`` (zeros where masked), its gradient
    taken densely and read at the stored positions, and ``W*`` refreshed after the update:
    for layers dense enough that BLAS on the zeros beats the sparse kernels. The layer's
    ``data`` stays the parameter either way; an unused mirror may be ``(1, 1)``.
    """

    dense1: bool
    dense2: bool
    W1: np.ndarray  # (h, d), the current values of layer 1 (when dense1)
    W2: np.ndarray  # (C, h), the current values of layer 2 (when dense2)


class Scratch(NamedTuple):
    """Buffers of one step (``h`` hidden, ``C`` outputs, ``nb`` samples), overwritten."""

    gw1: np.ndarray  # (nnz1,) gradient at the stored weights of layer 1
    gb1: np.ndarray  # (h,)
    gw2: np.ndarray  # (nnz2,)
    gb2: np.ndarray  # (C,)
    XbT: np.ndarray  # (d, nb) the batch, feature-major
    AT: np.ndarray  # (h, nb) pre-activations
    HT: np.ndarray  # (h, nb) hidden activations
    ZT: np.ndarray  # (C, nb) logits
    dZT: np.ndarray  # (C, nb)
    dHT: np.ndarray  # (h, nb)
    lvec: np.ndarray  # (nb,) float64 per-sample loss
    cvec: np.ndarray  # (nb,) float64 1.0 where the prediction is right


class Coefs(NamedTuple):
    """The coefficients of one step."""

    hyper: np.ndarray  # (8,) parameter dtype: beta1, beta2, 1 - beta1, 1 - beta2, eps, l1, 2 l2, 0
    step_size: float  # lr / (1 - beta1^t), parameter dtype
    c2_sqrt: float  # sqrt(1 - beta2^t), parameter dtype
    l1: float  # float64, for the loss value
    l2: float  # float64, for the loss value


class Schedule(NamedTuple):
    """The coefficients of every step of ``E`` epochs of one model (:func:`fpe_ref.optim.schedule`)."""

    hyper: np.ndarray  # (5,) parameter dtype: beta1, beta2, 1 - beta1, 1 - beta2, eps
    coefs: np.ndarray  # (E, steps, 2) parameter dtype: each step's lr / (1 - beta1^t) and sqrt(1 - beta2^t)
    pens: np.ndarray  # (E, 2) parameter dtype: l1 and 2 l2 of each epoch
    pens64: np.ndarray  # (E, 2) float64: l1 and l2 of each epoch, for the loss value
    evals: np.ndarray  # (E,) bool: count test-set hits after that epoch


class Totals(NamedTuple):
    """Per epoch of one model, written by the epoch loop."""

    loss: np.ndarray  # (E,) float64: sum over batches of batch loss x batch size
    correct: np.ndarray  # (E,) float64: training hits, before each step's update
    test: np.ndarray  # (E,) int64: test-set hits after the epoch (where evals)


# ----------------------------------------------------------------------------- products
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
    """Per-sample loss, ``dL/dZ`` and correctness, the compiled twin of :data:`fpe_ref.layers.LOSSES`.

    ZT (C, nb) logits of the samples ``idx`` (labels ``yf`` as floats, ``yi`` as ints); writes
    dZT (C, nb) ``= dl/dz / nb`` (the batch mean), lvec (nb,) per-sample loss, cvec (nb,) 1.0
    where the prediction is right. Binary (C = 1, ``"bce"``): ``l = max(z, 0) - z y +
    log1p(exp(-|z|))``, ``dl/dz = sigmoid(z) - y`` with ``sigmoid`` in the stable two-branch
    form of ``layers.sigmoid`` (``e = exp(-|z|)`` serves both); prediction ``z > 0``.
    Otherwise (``"xent"``) softmax cross-entropy ``l = log sum exp(z - zmax) + zmax - z_y``;
    prediction: first argmax.
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


# ----------------------------------------------------------------------------- composites
def _hidden_forward_py(X, idx, layer1, dense1, W1d, XbT, AT, HT, tiles):
    """Gather the batch ``idx`` of ``X`` into ``XbT (d, nb)``, ``AT = W1 XbT + b1``, ``HT = relu(AT)``.

    ``dense1``: multiply by the dense mirror ``W1d (h, d)`` (zeros where masked) with BLAS
    instead of the sparse kernel (a layer too dense for the sparse kernels to pay off).
    """
    _gather_t_x(X, idx, XbT)
    if dense1:
        AT[...] = np.dot(W1d, XbT)  # (h, nb)
        _bias_relu(AT, layer1.bias, HT)
    else:
        _forward_x(layer1.indptr, layer1.indices, layer1.data, layer1.bias, XbT, AT, tiles[0], tiles[1])
        _relu_x(AT, HT)


def _fused_step_py(X, yf, yi, idx, binary, layer1, layer2, adam1, adam2, mirrors, buf, coef, tiles):
    """One Alg. A3 step (lines 10-19) of ``z = W2 relu(W1 x + b1) + b2`` on the batch ``idx``.

    Parameters (``h`` hidden, ``C`` outputs, ``nb = len(idx)``)
    ----------
    X (N, d), yf (N,) float labels, yi (N,) int labels, idx (nb,) rows of this batch.
    binary : C == 1 (BCE-with-logits) or softmax cross-entropy.
    layer1, layer2 : :class:`Layer` of ``W1 (h, d)``, ``b1`` and of ``W2 (C, h)``, ``b2``.
    adam1, adam2 : their :class:`Moments`, updated in place.
    mirrors : :class:`Mirrors`, the layers multiplied densely (their mirrors hold the current weights).
    buf : :class:`Scratch` for ``nb`` samples.
    coef : :class:`Coefs` of this step.
    tiles : (4,) int64 forward tiles (row block, input block) of layer 1 and of layer 2.

    Returns ``(mean data loss + penalties, number correct)`` from the forward pass before
    the update, as :func:`fpe_ref.train.train_step`. The penalty value and gradients use the
    parameters before the update: ``l1 sum|W1| + l2 sum_p ||p||^2`` and
    ``l1 sign(W1) + 2 l2 p``, which the Adam kernel adds (L1 on W1 only). Masked weights are
    not stored, so they get no gradient, no moment and no update: they stay exactly 0.
    """
    ip1, ix1, cp1, ri1, pm1, w1, b1 = layer1
    ip2, ix2, cp2, ri2, pm2, w2, b2 = layer2
    dense1, dense2, W1d, W2d = mirrors
    gw1, gb1, gw2, gb2, XbT, AT, HT, ZT, dZT, dHT, lvec, cvec = buf
    hyper, step_size, c2_sqrt, l1, l2 = coef
    h = b1.shape[0]
    d = X.shape[1]
    C = b2.shape[0]
    nb = idx.shape[0]
    nnz1 = ip1[h]
    nnz2 = ip2[C]
    _hidden_forward_x(X, idx, layer1, dense1, W1d, XbT, AT, HT, tiles)  # (h, nb)
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
    mw1, vw1, mb1, vb1 = adam1
    mw2, vw2, mb2, vb2 = adam2
    _adam_nb(w1[:nnz1], gw1[:nnz1], mw1[:nnz1], vw1[:nnz1], b_1, b_2, omb1, omb2, step_size, c2_sqrt, eps, l1_, two_l2)
    _adam_nb(b1, gb1, mb1, vb1, b_1, b_2, omb1, omb2, step_size, c2_sqrt, eps, zero, two_l2)
    _adam_nb(w2[:nnz2], gw2[:nnz2], mw2[:nnz2], vw2[:nnz2], b_1, b_2, omb1, omb2, step_size, c2_sqrt, eps, zero, two_l2)
    _adam_nb(b2, gb2, mb2, vb2, b_1, b_2, omb1, omb2, step_size, c2_sqrt, eps, zero, two_l2)
    if dense1:
        _scatter_entries(w1, ip1, ix1, W1d)
    if dense2:
        _scatter_entries(w2, ip2, ix2, W2d)
    return loss / nb + pen, correct


def _test_correct_py(X, yi, idx_all, binary, layer1, layer2, mirrors, buf_x, buf_a, buf_h, buf_z, chunk, tiles):
    """Number of samples of ``(X, yi)`` one model classifies correctly (forward only, ``chunk`` at a time).

    ``idx_all = arange(len(X))``; buffers hold ``chunk`` columns of ``d``, ``h``, ``h``, ``C`` rows.
    Prediction as :data:`fpe_ref.layers.LOSSES` predicts: ``z > 0`` (C = 1) or the first argmax.
    """
    n, d = X.shape
    h = layer1.bias.shape[0]
    C = layer2.bias.shape[0]
    correct = 0
    for start in range(0, n, chunk):
        nb = min(n, start + chunk) - start
        HT = buf_h[:h * nb].reshape((h, nb))
        ZT = buf_z[:C * nb].reshape((C, nb))
        _hidden_forward_x(X, idx_all[start:start + nb], layer1, mirrors.dense1, mirrors.W1,
                          buf_x[:d * nb].reshape((d, nb)), buf_a[:h * nb].reshape((h, nb)), HT, tiles)
        if mirrors.dense2:
            ZT[...] = np.dot(mirrors.W2, HT)
            _bias_relu(ZT, layer2.bias, ZT[:0])
        else:
            _forward_x(layer2.indptr, layer2.indices, layer2.data, layer2.bias, HT, ZT, tiles[2], tiles[3])
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


def _model_epochs_py(X, yf, yi, binary, order, batch, layer1, layer2, adam1, adam2, mirrors, sched,
                     X_test, y_test, tiles, out):
    """``E`` epochs of one one-hidden-layer model: every step of each epoch, then its test hits.

    ``order (E, N)``: the model's permutation of the training set for each epoch (drawn in
    NumPy); ``batch``: the batch size; ``layer1``, ``layer2`` (:class:`Layer`), ``adam1``,
    ``adam2`` (:class:`Moments`) and ``mirrors`` (:class:`Mirrors`, which must hold the
    current weights): the model, updated in place; ``sched``: its :class:`Schedule`;
    ``X_test (n_test, d)``, ``y_test``: the test set counted after the epochs ``sched.evals``
    marks. Writes ``out`` (:class:`Totals`) and touches no other array.
    """
    E = order.shape[0]
    n = order.shape[1]
    d = X.shape[1]
    h = layer1.bias.shape[0]
    C = layer2.bias.shape[0]
    dt = layer1.data.dtype
    steps = (n + batch - 1) // batch
    buf_x = np.empty(d * batch, dtype=dt)
    buf_a = np.empty(h * batch, dtype=dt)
    buf_h = np.empty(h * batch, dtype=dt)
    buf_dh = np.empty(h * batch, dtype=dt)
    buf_z = np.empty(C * batch, dtype=dt)
    buf_dz = np.empty(C * batch, dtype=dt)
    lvec = np.empty(batch, dtype=np.float64)
    cvec = np.empty(batch, dtype=np.float64)
    gw1 = np.empty(layer1.data.shape[0], dtype=dt)
    gb1 = np.empty(h, dtype=dt)
    gw2 = np.empty(layer2.data.shape[0], dtype=dt)
    gb2 = np.empty(C, dtype=dt)
    hyp = np.zeros(8, dtype=dt)
    for k in range(5):
        hyp[k] = sched.hyper[k]
    idx_test = np.arange(X_test.shape[0])
    for e in range(E):
        hyp[5] = sched.pens[e, 0]
        hyp[6] = sched.pens[e, 1]
        loss_sum = 0.0
        correct = 0.0
        for s in range(steps):
            start = s * batch
            nb = min(n, start + batch) - start
            buf = Scratch(gw1, gb1, gw2, gb2,
                          buf_x[:d * nb].reshape((d, nb)), buf_a[:h * nb].reshape((h, nb)),
                          buf_h[:h * nb].reshape((h, nb)), buf_z[:C * nb].reshape((C, nb)),
                          buf_dz[:C * nb].reshape((C, nb)), buf_dh[:h * nb].reshape((h, nb)), lvec[:nb], cvec[:nb])
            coef = Coefs(hyp, sched.coefs[e, s, 0], sched.coefs[e, s, 1], sched.pens64[e, 0], sched.pens64[e, 1])
            loss, corr = _fused_step_x(X, yf, yi, order[e, start:start + nb], binary, layer1, layer2, adam1, adam2,
                                       mirrors, buf, coef, tiles)
            loss_sum += loss * nb
            correct += corr
        out.loss[e] = loss_sum
        out.correct[e] = correct
        if sched.evals[e]:
            out.test[e] = _test_correct_x(X_test, y_test, idx_test, binary, layer1, layer2, mirrors,
                                          buf_x, buf_a, buf_h, buf_z, batch, tiles)


# ----------------------------------------------------------------------------- compiled
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


# reductions over the batch: reassociation lets them vectorise (see fpe_ref.fast.kernels)
_FM = {**_JIT, "fastmath": {"reassoc", "contract"}}

_bias_relu = numba.njit(**_JIT)(_bias_relu_py)
_gather_entries = numba.njit(**_JIT)(_gather_entries_py)
_scatter_entries = numba.njit(**_JIT)(_scatter_entries_py)

# The serial variant: the products compiled without parallel=True (one model per thread), and
# the composites, which call them through these names.
_gather_t_x = numba.njit(**_JIT)(_variant(_gather_t_py, "serial"))
_relu_x = numba.njit(**_JIT)(_variant(_relu_py, "serial"))
_relu_backward_rowsum_x = numba.njit(**_FM)(_variant(_relu_backward_rowsum_py, "serial"))
_rowsum_x = numba.njit(**_FM)(_variant(_rowsum_py, "serial"))
_loss_x = numba.njit(**_JIT)(_variant(_loss_py, "serial"))
_forward_x = numba.njit(**_JIT)(_variant(_forward_py, "serial"))
_input_grad_x = numba.njit(**_JIT)(_variant(_input_grad_py, "serial"))
_weight_grad_by_row_x = numba.njit(**_FM)(_variant(_weight_grad_by_row_py, "serial"))
_weight_grad_by_col_x = numba.njit(**_FM)(_variant(_weight_grad_by_col_py, "serial"))
_hidden_forward_x = numba.njit(**_JIT)(_variant(_hidden_forward_py, "serial"))
_fused_step_x = numba.njit(**_FM)(_variant(_fused_step_py, "serial"))
_test_correct_x = numba.njit(**_JIT)(_variant(_test_correct_py, "serial"))
_model_epochs_x = numba.njit(**_JIT)(_variant(_model_epochs_py, "serial"))

# The parallel variant: the same products with parallel=True (the per-layer ones are
# fpe_ref.fast.kernels' own), bound into copies of the composites under the same names.
_parallel = {
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
_parallel["_hidden_forward_x"] = numba.njit(**_JIT)(_variant(_hidden_forward_py, "parallel", _parallel))
_parallel["_fused_step_x"] = numba.njit(**_FM)(_variant(_fused_step_py, "parallel", _parallel))
_parallel["_test_correct_x"] = numba.njit(**_JIT)(_variant(_test_correct_py, "parallel", _parallel))
_parallel["_model_epochs_x"] = numba.njit(**_JIT)(_variant(_model_epochs_py, "parallel", _parallel))

# Many small models: one model per thread, serial products inside (fpe_ref.fast.trainer runs
# these from a pool of Python threads; the kernels release the GIL). A numba ``prange`` over
# the models would do the same but took ~20 s more to compile.
model_epochs_serial = _model_epochs_x
# One large model: parallel products inside each step.
model_epochs_parallel = _parallel["_model_epochs_x"]
