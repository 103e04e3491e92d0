"""fpe_ref.fast.fused: one fused training step, plain Python and compiled, against the NumPy step
(:func:`fpe_ref.train.train_step`); the serial and parallel variants bound to their own products."""

from __future__ import annotations

import numpy as np
import pytest

from fpe_ref.expand import expand
from fpe_ref.fast import fused
from fpe_ref.fast import kernels as K
from fpe_ref.layers import LOSSES, loss_name
from fpe_ref.mlp import MLP
from fpe_ref.optim import Adam, Penalties
from fpe_ref.train import train_step


def rel(a, b):
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(a))), 1e-300)


def as_layer(S, b):
    """A :class:`fused.Layer` holding copies of ``S``'s values and of the bias ``b``."""
    return fused.Layer(S.indptr, S.indices, S.colptr, S.rowind, S.perm, S.data.copy(), b.copy())


def one_fused_step(step, model, m0, v0, t0, X, y, idx, pen, lr, dense=(False, False)):
    """Run one fused step (compiled or plain Python) on a copy of ``model``; the arguments
    as fpe_ref.fast.trainer.FusedTrainer.run builds them."""
    m = model.copy()
    d, h, C = m.sizes
    n = idx.shape[0]
    S1 = K.from_dense(m.params["W1"], m.masks["W1"])
    S2 = K.from_dense(m.params["W2"], m.masks["W2"])
    layer1, layer2 = as_layer(S1, m.params["b1"]), as_layer(S2, m.params["b2"])
    st = [a[m.masks[k]].copy() if k in m.masks else a.copy()
          for k in ("W1", "b1", "W2", "b2") for a in (m0[k], v0[k])]
    adam1, adam2 = fused.Moments(*st[:4]), fused.Moments(*st[4:])
    b1_, b2_ = 0.9, 0.999
    t = t0 + 1
    hyper = np.array([b1_, b2_, 1 - b1_, 1 - b2_, 1e-8, pen.l1, 2 * pen.l2, 0.0])
    mirrors = fused.Mirrors(dense[0], dense[1], K.to_dense(S1) if dense[0] else np.zeros((1, 1)),
                            K.to_dense(S2) if dense[1] else np.zeros((1, 1)))
    buf = fused.Scratch(np.empty_like(layer1.data), np.empty(h), np.empty_like(layer2.data), np.empty(C),
                        np.empty((d, n)), np.empty((h, n)), np.empty((h, n)), np.empty((C, n)), np.empty((C, n)),
                        np.empty((h, n)), np.empty(n), np.empty(n))
    coef = fused.Coefs(hyper, lr / (1 - b1_**t), (1 - b2_**t) ** 0.5, pen.l1, pen.l2)
    loss, hits = step(X, y.astype(np.float64), y, idx, C == 1, layer1, layer2, adam1, adam2, mirrors, buf, coef,
                      np.array([h, 1 << 20, C, 1 << 20]))
    m.params["W1"] = K.to_dense(S1, layer1.data)
    m.params["W2"] = K.to_dense(S2, layer2.data)
    m.params["b1"], m.params["b2"] = layer1.bias, layer2.bias
    if dense[0]:  # the mirror is refreshed after the update
        np.testing.assert_array_equal(mirrors.W1, m.params["W1"])
    if dense[1]:
        np.testing.assert_array_equal(mirrors.W2, m.params["W2"])
    return m, loss, hits


@pytest.mark.parametrize("C", [1, 4])
@pytest.mark.parametrize("impl,dense", [("compiled", (False, False)), ("python", (False, False)),
                                        ("compiled", (True, True)), ("compiled", (False, True))])
def test_fused_step_against_numpy_train_step(C, impl, dense):
    """One fused step vs fpe_ref.train.train_step (the NumPy twin) at a later Adam step, with
    both penalties, alpha not dividing d, softmax and BCE."""
    rng = np.random.default_rng(C)
    d, h, n = 12, 7, 9
    model = expand(MLP.init([d, h, C], rng), 3, "random", rng).model
    X = rng.standard_normal((30, d))
    y = rng.integers(0, max(2, C), 30)
    idx = rng.permutation(30)[:n]
    m0 = {k: rng.standard_normal(p.shape) * 1e-2 * model.masks.get(k, 1) for k, p in model.params.items()}
    v0 = {k: rng.random(p.shape) * 1e-3 * model.masks.get(k, 1) for k, p in model.params.items()}
    pen, lr, t0 = Penalties(1e-3, 1e-3), 1e-2, 4
    ref = model.copy()
    opt = Adam(ref.params)
    opt.t = t0
    for k in ref.params:
        opt.m[k][...] = m0[k]
        opt.v[k][...] = v0[k]
    loss_ref, logits = train_step(ref, opt, X[idx], y[idx], pen, lr)
    hits_ref = float(np.sum(LOSSES[loss_name(C)].predict(logits) == y[idx]))
    step = fused._fused_step_x if impl == "compiled" else fused._fused_step_py
    got, loss, hits = one_fused_step(step, model, m0, v0, t0, X, y, idx, pen, lr, dense)
    assert abs(loss - loss_ref) <= 1e-12 * abs(loss_ref)
    assert hits == hits_ref
    for k in ref.params:
        assert rel(ref.params[k], got.params[k]) <= 1e-12, k
    for k, M in got.masks.items():
        assert np.all(got.params[k][~M] == 0.0)


PRODUCTS = ["_gather_t_x", "_relu_x", "_relu_backward_rowsum_x", "_rowsum_x", "_loss_x", "_forward_x",
            "_input_grad_x", "_weight_grad_by_row_x", "_weight_grad_by_col_x"]
COMPOSITES = ["_hidden_forward_x", "_fused_step_x", "_test_correct_x", "_model_epochs_x"]


def test_serial_names_are_module_level_and_the_parallel_variant_rebinds_them():
    """The serial composites resolve their products from the module itself; the parallel copies
    see the parallel products under the same names; every compiled function has its own
    qualified name (numba's disk cache key), and nothing parallel is in the serial variant."""
    module = vars(fused)
    serial = {name: module[name] for name in PRODUCTS + COMPOSITES}
    for name in COMPOSITES:
        assert serial[name].py_func.__globals__ is module, name
    assert fused.model_epochs_serial is fused._model_epochs_x
    assert fused.model_epochs_parallel is fused._parallel["_model_epochs_x"]
    for name in PRODUCTS + COMPOSITES:
        s, p = serial[name], fused._parallel[name]
        assert s is not p, name
        assert not s.targetoptions.get("parallel"), name
        assert s.py_func.__qualname__.endswith("_serial"), name
        assert s.py_func.__qualname__ != p.py_func.__qualname__, name
    for name in PRODUCTS:
        assert fused._parallel[name].targetoptions.get("parallel"), name
    assert fused._parallel["_forward_x"] is K._forward_nb
    for name in COMPOSITES:
        g = fused._parallel[name].py_func.__globals__
        assert not fused._parallel[name].targetoptions.get("parallel"), name  # no parallel loop around products
        for product in PRODUCTS:
            assert g[product] is fused._parallel[product], (name, product)
    assert fused._parallel["_fused_step_x"].py_func.__globals__["_hidden_forward_x"] is fused._parallel["_hidden_forward_x"]
