"""Tests for fpe_ref.fast.kernels: sparse storage, the three products and Adam, each as plain Python
vs compiled Numba vs NumPy twin vs a dense NumPy expression on the masked weight.

Tolerances against dense NumPy (BLAS sums in another order) are relative to the sum of the
absolute values of the terms, ``|X| |W * M|^T + |b|`` and so on, the natural bound of a
re-ordered sum: 1e-12 in float64 and 1e-5 in float32 (>= 2 K eps32 for the K <= 64 terms
here). Plain, compiled and NumPy forward / input gradient / Adam are compared bit for bit; the
compiled weight gradient (vectorised reduction) to the same relative tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest

from fpe_ref.fast import kernels as K
from fpe_ref import layers
from fpe_ref.errors import FPEError
from fpe_ref.optim import Adam
from fpe_ref.splits import random_split

RTOL = {np.float64: 1e-12, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]


def make_mask(case, rng):
    """Boolean masks ``(out, in)`` covering the shapes the kernels must handle."""
    if case == "random":
        return rng.random((13, 17)) < 0.35
    if case == "fpe-alpha3-d10":  # Alg. A1 split, alpha not dividing d
        return random_split(4, 10, 3, rng)
    if case == "fpe-alpha4-d64":
        return random_split(5, 64, 4, rng)
    if case == "empty-rows":
        M = rng.random((9, 12)) < 0.5
        M[[0, 4, 8]] = False
        M[:, 3] = False  # an input nobody reads (empty CSC column)
        return M
    if case == "single-input":
        return np.array([[True], [False], [True], [True], [True], [True]])
    if case == "all-masked":
        return np.zeros((6, 5), dtype=bool)
    if case == "fully-dense":
        return np.ones((7, 9), dtype=bool)
    if case == "ragged":  # row r holds r entries: every unroll-by-4 remainder, 0..10 per row
        M = np.zeros((11, 10), dtype=bool)
        for r in range(11):
            M[r, rng.permutation(10)[:r]] = True
        return M
    raise ValueError(case)


CASES = ["random", "fpe-alpha3-d10", "fpe-alpha4-d64", "empty-rows", "single-input", "all-masked", "fully-dense", "ragged"]


def problem(case, dtype, n=7, seed=0):
    rng = np.random.default_rng([seed, CASES.index(case)])
    M = make_mask(case, rng)
    W = rng.standard_normal(M.shape).astype(dtype)
    X = rng.standard_normal((n, M.shape[1])).astype(dtype)  # (n, in)
    dY = rng.standard_normal((n, M.shape[0])).astype(dtype)  # (n, out)
    b = rng.standard_normal(M.shape[0]).astype(dtype)
    return W, M, X, dY, b


def assert_scaled_close(got, ref, scale, dtype, what):
    tol = RTOL[dtype] * scale + np.finfo(dtype).tiny
    bad = np.abs(got.astype(np.float64) - ref.astype(np.float64)) > tol
    assert not bad.any(), f"{what}: {bad.sum()} entries off by more than {RTOL[dtype]:g} x sum|terms|"


# ----------------------------------------------------------------------------- storage


@pytest.mark.parametrize("case", CASES)
def test_storage_roundtrip_and_transposed_index(case):
    W, M, *_ = problem(case, np.float64)
    S = K.from_dense(W, M)
    assert S.nnz == M.sum() and S.shape == M.shape and S.dtype == np.float64
    D = K.to_dense(S)
    np.testing.assert_array_equal(D, np.where(M, W, 0.0))
    assert np.all(D[~M] == 0.0) and not np.signbit(D[~M]).any(), "masked positions are exact +0.0"
    np.testing.assert_array_equal(K.to_mask(S), M)
    # CSR: rows in order, columns increasing within a row
    np.testing.assert_array_equal(np.diff(S.indptr), M.sum(axis=1))
    for r in range(M.shape[0]):
        np.testing.assert_array_equal(S.indices[S.indptr[r]:S.indptr[r + 1]], np.flatnonzero(M[r]))
    # CSC index: column-major order of the same entries, values through perm
    np.testing.assert_array_equal(np.diff(S.colptr), M.sum(axis=0))
    np.testing.assert_array_equal(S.data[S.perm], W.T[M.T])
    np.testing.assert_array_equal(S.rowind, np.nonzero(M.T)[1])
    for a in (S.indptr, S.indices, S.colptr, S.rowind, S.perm):
        assert a.dtype == np.int64


def test_stored_zero_is_kept_and_dtype_follows_w():
    W = np.array([[0.0, 2.0], [3.0, 0.0]], dtype=np.float32)
    M = np.array([[1, 1], [0, 0]])  # 0/1 accepted
    S = K.from_dense(W, M)
    assert S.nnz == 2 and S.dtype == np.float32
    np.testing.assert_array_equal(S.data, [0.0, 2.0])  # a stored 0.0 is a parameter
    assert K.from_dense(W.astype(int), M).dtype == np.float64
    assert K.from_dense(W, M, dtype=np.float64).dtype == np.float64


# ----------------------------------------------------------------------------- the three products


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_forward(case, dtype):
    """``Y = X W^T + b`` over stored weights: plain == compiled == NumPy bitwise, ~ dense BLAS."""
    W, M, X, dY, b = problem(case, dtype)
    S = K.from_dense(W, M)
    XT = np.ascontiguousarray(X.T)
    got = {impl: K.linear_forward_t(S, XT, b, impl=impl) for impl in K.IMPLS}  # (out, n)
    np.testing.assert_array_equal(got["numba"], got["python"], err_msg="compiled vs plain")
    np.testing.assert_array_equal(got["numba"], got["numpy"], err_msg="compiled vs NumPy twin")
    ref = X @ (W * M).T + b  # (n, out)
    scale = np.abs(X) @ np.abs(W * M).T + np.abs(b)
    assert_scaled_close(got["numba"].T, ref, scale, dtype, "forward vs dense")
    Y, _ = K.sparse_linear_forward(X, S, b)
    np.testing.assert_array_equal(Y, got["numba"].T)
    out = np.empty_like(got["numba"])
    assert K.linear_forward_t(S, XT, b, out=out) is out


@pytest.mark.parametrize("seed", range(12))
def test_random_shapes_all_three_products(seed):
    """Random (out, in, n, density, dtype): compiled == NumPy twin, and both ~ the dense expressions."""
    rng = np.random.default_rng([7, seed])
    out, d, n = (int(v) for v in rng.integers(1, 40, size=3))
    dtype = DTYPES[seed % 2]
    M = rng.random((out, d)) < rng.uniform(0.05, 1.0)
    W = rng.standard_normal((out, d)).astype(dtype)
    X = rng.standard_normal((n, d)).astype(dtype)
    dY = rng.standard_normal((n, out)).astype(dtype)
    b = rng.standard_normal(out).astype(dtype)
    S = K.from_dense(W, M)
    XT, dYT = np.ascontiguousarray(X.T), np.ascontiguousarray(dY.T)
    Wm = W * M
    Y = K.linear_forward_t(S, XT, b)
    np.testing.assert_array_equal(Y, K.linear_forward_t(S, XT, b, impl="numpy"))
    assert_scaled_close(Y.T, X @ Wm.T + b, np.abs(X) @ np.abs(Wm).T + np.abs(b), dtype, "forward")
    dX = K.linear_input_grad_t(S, dYT)
    np.testing.assert_array_equal(dX, K.linear_input_grad_t(S, dYT, impl="numpy"))
    assert_scaled_close(dX.T, dY @ Wm, np.abs(dY) @ np.abs(Wm), dtype, "input grad")
    scale = (np.abs(dY).T @ np.abs(X))[M]
    for order in ("row", "col"):
        assert_scaled_close(K.linear_weight_grad_t(S, XT, dYT, order=order), (dY.T @ X)[M], scale, dtype,
                            f"weight grad ({order})")


@pytest.mark.parametrize("tiles", [(1, 1), (3, 4), (5, 16), (100, 7)])
@pytest.mark.parametrize("case", ["fpe-alpha4-d64", "ragged", "empty-rows"])
def test_forward_tiling_changes_no_bits(case, tiles):
    """Row/input blocks of the forward kernel only reorder memory traffic, never the sums."""
    W, M, X, dY, b = problem(case, np.float32)
    S = K.from_dense(W, M)
    XT = np.ascontiguousarray(X.T)
    ref = K.linear_forward_t(S, XT, b, impl="numpy")
    for kernel in (K._forward_nb, K._forward_py):
        YT = np.full_like(ref, np.nan)
        kernel(S.indptr, S.indices, S.data, b, XT, YT, *tiles)
        np.testing.assert_array_equal(YT, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_input_grad(case, dtype):
    """``dX = dY W``: plain == compiled == NumPy bitwise, ~ dense BLAS."""
    W, M, X, dY, b = problem(case, dtype)
    S = K.from_dense(W, M)
    dYT = np.ascontiguousarray(dY.T)
    got = {impl: K.linear_input_grad_t(S, dYT, impl=impl) for impl in K.IMPLS}  # (in, n)
    np.testing.assert_array_equal(got["numba"], got["python"], err_msg="compiled vs plain")
    np.testing.assert_array_equal(got["numba"], got["numpy"], err_msg="compiled vs NumPy twin")
    ref = dY @ (W * M)  # (n, in)
    scale = np.abs(dY) @ np.abs(W * M)
    assert_scaled_close(got["numba"].T, ref, scale, dtype, "input grad vs dense")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_weight_grad(case, dtype):
    """SDDMM ``dW[p] = sum_n dY[n, r] X[n, c]`` at stored (r, c) only: CSR and CSC loops,
    plain and compiled, NumPy twin, dense ``(dY^T X)[M]``."""
    W, M, X, dY, b = problem(case, dtype)
    S = K.from_dense(W, M)
    XT, dYT = np.ascontiguousarray(X.T), np.ascontiguousarray(dY.T)
    got = {(impl, order): K.linear_weight_grad_t(S, XT, dYT, impl=impl, order=order)
           for impl in ("numba", "python") for order in ("row", "col")}
    got["numpy", "-"] = K.linear_weight_grad_t(S, XT, dYT, impl="numpy")
    ref = (dY.T @ X)[M]  # row-major = CSR order
    scale = (np.abs(dY).T @ np.abs(X))[M]
    for key, dW in got.items():
        assert dW.shape == (S.nnz,) and dW.dtype == dtype
        assert_scaled_close(dW, ref, scale, dtype, f"weight grad {key} vs dense")
    for order in ("row", "col"):
        assert_scaled_close(got["numba", order], got["python", order], scale, dtype, f"compiled vs plain ({order})")
    # the plain loops add in storage order, whichever operand is outer: the same bits
    np.testing.assert_array_equal(got["python", "row"], got["python", "col"])
    dense = K.to_dense(S, K.linear_weight_grad_t(S, XT, dYT))
    assert np.all(dense[~M] == 0.0), "no gradient at masked positions"


@pytest.mark.parametrize("case", ["random", "fpe-alpha4-d64", "empty-rows"])
def test_batch_major_pair_matches_dense_masked_layer(case):
    """sparse_linear_forward/backward == fpe_ref.layers.linear_forward/backward with the mask."""
    W, M, X, dY, b = problem(case, np.float64, n=11)
    S = K.from_dense(W, M)
    Wm = np.where(M, W, 0.0)
    y, cache = K.sparse_linear_forward(X, S, b)
    y_ref, cache_ref = layers.linear_forward(X, Wm, b)
    scale = np.abs(X) @ np.abs(Wm).T + np.abs(b)
    assert_scaled_close(y, y_ref, scale, np.float64, "forward")
    dx, dW, db = K.sparse_linear_backward(dY, cache)
    dx_ref, dW_ref, db_ref = layers.linear_backward(dY, cache_ref, M)
    assert_scaled_close(dx, dx_ref, np.abs(dY) @ np.abs(Wm), np.float64, "dx")
    assert_scaled_close(K.to_dense(S, dW), dW_ref, np.abs(dY).T @ np.abs(X), np.float64, "dW")
    assert_scaled_close(db, db_ref, np.abs(dY).sum(axis=0), np.float64, "db")
    assert K.sparse_linear_backward(dY, cache, need_dx=False)[0] is None


def test_finite_difference_gradients():
    """Loss ``sum(R * layer(x))``: dW (stored entries), dx, db against central differences (float64)."""
    W, M, X, R, b = problem("fpe-alpha3-d10", np.float64, n=6)
    S = K.from_dense(W, M)

    def loss(S_, X_, b_):
        return float(np.sum(R * K.sparse_linear_forward(X_, S_, b_)[0]))

    _, cache = K.sparse_linear_forward(X, S, b)
    dx, dW, db = K.sparse_linear_backward(R, cache)
    h = 1e-6
    for p in range(S.nnz):
        up, dn = S.data.copy(), S.data.copy()
        up[p] += h
        dn[p] -= h
        fd = (loss(S._replace(data=up), X, b) - loss(S._replace(data=dn), X, b)) / (2 * h)
        assert abs(fd - dW[p]) < 1e-7 * (1 + abs(fd)), f"dW entry {p}"
    for i, j in [(0, 0), (3, 7), (5, 9)]:
        E = np.zeros_like(X)
        E[i, j] = h
        fd = (loss(S, X + E, b) - loss(S, X - E, b)) / (2 * h)
        assert abs(fd - dx[i, j]) < 1e-7 * (1 + abs(fd)), f"dx[{i}, {j}]"
    e = np.zeros_like(b)
    e[2] = h
    assert abs((loss(S, X, b + e) - loss(S, X, b - e)) / (2 * h) - db[2]) < 1e-7


@pytest.mark.parametrize("n", [1, 5, 33])
def test_batch_sizes(n):
    """Odd batch sizes (vector remainders) and a batch of one."""
    W, M, X, dY, b = problem("fpe-alpha4-d64", np.float64, n=n)
    S = K.from_dense(W, M)
    XT, dYT = np.ascontiguousarray(X.T), np.ascontiguousarray(dY.T)
    np.testing.assert_array_equal(K.linear_forward_t(S, XT, b), K.linear_forward_t(S, XT, b, impl="numpy"))
    np.testing.assert_array_equal(K.linear_input_grad_t(S, dYT), K.linear_input_grad_t(S, dYT, impl="numpy"))
    ref = (dY.T @ X)[M]
    assert_scaled_close(K.linear_weight_grad_t(S, XT, dYT), ref, (np.abs(dY).T @ np.abs(X))[M], np.float64, "dW")


def test_reproducible_and_independent_of_thread_count():
    """Same inputs -> same bits, run to run and with 1 thread vs all threads."""
    W, M, X, dY, b = problem("fpe-alpha4-d64", np.float32, n=301)
    S = K.from_dense(W, M)
    XT, dYT = np.ascontiguousarray(X.T), np.ascontiguousarray(dY.T)

    def run():
        return (K.linear_forward_t(S, XT, b), K.linear_input_grad_t(S, dYT),
                K.linear_weight_grad_t(S, XT, dYT, order="row"), K.linear_weight_grad_t(S, XT, dYT, order="col"))

    first = run()
    n_threads = K.get_num_threads()
    K.set_num_threads(1)
    try:
        single = run()
    finally:
        K.set_num_threads(n_threads)
    for a, b_, c in zip(first, run(), single):
        np.testing.assert_array_equal(a, b_)
        np.testing.assert_array_equal(a, c)


# ----------------------------------------------------------------------------- Adam and penalties


def adam_run(impl, dtype, steps, l1, l2, seed=0):
    """``steps`` Adam steps on the stored weights of an FPE mask with fixed random gradients."""
    W, M, *_ = problem("fpe-alpha3-d10", dtype, seed=seed)
    S = K.from_dense(W, M)
    m, v = np.zeros_like(S.data), np.zeros_like(S.data)
    grads = np.random.default_rng(seed).standard_normal((steps, S.nnz)).astype(dtype)
    for t in range(1, steps + 1):
        K.adam_update(S.data, grads[t - 1], m, v, t, lr=1e-2, l1=l1, l2=l2, impl=impl)
    return S, M, m, v


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l1,l2", [(0.0, 0.0), (1e-2, 0.0), (0.0, 1e-2), (3e-3, 5e-2)])
def test_adam_100_steps_all_impls_agree(dtype, l1, l2):
    runs = {impl: adam_run(impl, dtype, 100, l1, l2) for impl in K.IMPLS}
    S, M, m, v = runs["numba"]
    for impl in ("python", "numpy"):
        S2, _, m2, v2 = runs[impl]
        for name, a, b in (("w", S.data, S2.data), ("m", m, m2), ("v", v, v2)):
            np.testing.assert_array_equal(a, b, err_msg=f"Adam {name}: compiled vs {impl}")
    D = K.to_dense(S)
    assert np.all(D[~M] == 0.0), "masked weights are not stored, so they stay exactly 0"
    assert np.count_nonzero(D[M]) == M.sum()


def test_adam_matches_fpe_ref_optim_adam_bitwise():
    """Sparse Adam + penalties == fpe_ref.optim.Adam on the dense masked weight (float64, bits)."""
    W, M, *_ = problem("fpe-alpha4-d64", np.float64)
    l1, l2 = 1e-3, 1e-2
    S = K.from_dense(W, M)
    m, v = np.zeros_like(S.data), np.zeros_like(S.data)
    params = {"W1": np.where(M, W, 0.0)}
    opt = Adam(params, lr=3e-3)
    rng = np.random.default_rng(5)
    for t in range(1, 31):
        G = rng.standard_normal(M.shape) * M  # a masked loss gradient
        K.adam_update(S.data, G[M], m, v, t, lr=3e-3, l1=l1, l2=l2)
        pen = l1 * np.sign(params["W1"])  # as fpe_ref.optim.penalty_loss_and_grads
        pen += 2.0 * l2 * params["W1"]
        opt.step(params, {"W1": G + pen * M}, {"W1": M})
    np.testing.assert_array_equal(K.to_dense(S), params["W1"])
    np.testing.assert_array_equal(m, opt.m["W1"][M])


def test_dense_adam_any_shape():
    """The same kernel updates a dense parameter (here a 2-D weight and a bias)."""
    rng = np.random.default_rng(2)
    for shape in [(4, 3), (5,)]:
        w = rng.standard_normal(shape)
        g = rng.standard_normal(shape)
        states = {}
        for impl in K.IMPLS:
            w_, m, v = w.copy(), np.zeros(shape), np.zeros(shape)
            for t in range(1, 4):
                K.adam_update(w_, g, m, v, t, lr=0.1, l2=1e-3, impl=impl)
            states[impl] = w_
        np.testing.assert_array_equal(states["numba"], states["numpy"])
        np.testing.assert_array_equal(states["numba"], states["python"])


def test_penalty_gradient_signs():
    """d/dw (l1 |w| + l2 w^2) = l1 sign(w) + 2 l2 w, with sign(0) = 0 (torch's abs backward)."""
    w = np.array([-2.0, -0.0, 0.0, 3.0])
    np.testing.assert_array_equal(K.penalty_grad(w, l1=0.5), [-0.5, 0.0, 0.0, 0.5])
    np.testing.assert_array_equal(K.penalty_grad(w, l2=0.25), [-1.0, 0.0, 0.0, 1.5])
    np.testing.assert_array_equal(K.penalty_grad(w, l1=0.5, l2=0.25), [-1.5, 0.0, 0.0, 2.0])


@pytest.mark.parametrize("impl", K.IMPLS)
@pytest.mark.parametrize("l1,l2", [(0.1, 0.0), (0.0, 0.1)])
def test_penalty_alone_shrinks_towards_zero_and_keeps_zero(impl, l1, l2):
    """With a zero loss gradient, one step moves w towards 0 by ~lr; w = 0 stays exactly 0."""
    w = np.array([-2.0, 0.0, 3.0, -0.0])
    m, v = np.zeros(4), np.zeros(4)
    K.adam_update(w, np.zeros(4), m, v, 1, lr=0.01, l1=l1, l2=l2, impl=impl)
    # first Adam step: lr * g / (|g| + eps) = lr * sign(g) up to eps / |g|
    np.testing.assert_allclose(w[[0, 2]], [-2.0 + 0.01, 3.0 - 0.01], rtol=0, atol=1e-9)
    assert w[1] == 0.0 and w[3] == 0.0 and m[1] == 0.0 and v[1] == 0.0


def test_adam_first_step_by_hand():
    """t = 1, g = 0.5, w = 1: m = 0.05, v = 0.00025, w = 1 - 0.1 * 0.5 / (0.5 + 1e-8)."""
    w, m, v = np.array([1.0]), np.zeros(1), np.zeros(1)
    K.adam_update(w, np.array([0.5]), m, v, 1, lr=0.1)
    np.testing.assert_allclose(m, [0.05], rtol=1e-15)
    np.testing.assert_allclose(v, [0.00025], rtol=1e-12)
    np.testing.assert_allclose(w, [1.0 - 0.1 * 0.5 / (0.5 + 1e-8)], rtol=1e-15)


# ----------------------------------------------------------------------------- bad input


def test_bad_input():
    W = np.ones((3, 4))
    with pytest.raises(FPEError, match="must match"):
        K.from_dense(W, np.ones((4, 3), dtype=bool))
    with pytest.raises(FPEError, match="boolean"):
        K.from_dense(W, np.full((3, 4), 2))
    with pytest.raises(FPEError, match="2-D"):
        K.from_dense(np.ones(3), np.ones(3, dtype=bool))
    S = K.from_dense(W, np.ones((3, 4), dtype=bool))
    with pytest.raises(FPEError, match="dtype"):
        K.linear_forward_t(S, np.ones((4, 2), dtype=np.float32))
    with pytest.raises(FPEError, match="shape"):
        K.linear_forward_t(S, np.ones((5, 2)))
    with pytest.raises(FPEError, match="impl"):
        K.linear_forward_t(S, np.ones((4, 2)), impl="cuda")
    with pytest.raises(FPEError, match="order"):
        K.linear_weight_grad_t(S, np.ones((4, 2)), np.ones((3, 2)), order="diag")
    w = np.ones(3)
    with pytest.raises(FPEError, match="t must be"):
        K.adam_update(w, w, np.zeros(3), np.zeros(3), 0, lr=0.1)
    with pytest.raises(FPEError, match="in place"):
        K.adam_update(np.ones((3, 2)).T, np.ones((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)), 1, lr=0.1)
