"""train_batched against one model at a time; the fused step against its NumPy twin; the case
study trained in batches against trial by trial; ``fpe bench`` on a tiny configuration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fpe_ref.fast import kernels as K
from fpe_ref.fast.trainer import train_batched
from fpe_ref.errors import FPEError
from fpe_ref.expand import carry_optimizer, expand
from fpe_ref.mlp import MLP
from fpe_ref.optim import Adam
from fpe_ref.train import TrainConfig, train, train_step

TOL = 1e-9


def boolean_data(n, d=32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 2, (n, d)).astype(np.float64)
    return X, (X[:, :4].sum(axis=1) >= 2).astype(np.int64)


def rel(a, b):
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(a))), 1e-300)


def mixed_models():
    """The case study's phase 2 in miniature: dense [32, 8, 1] and expanded [32, 16, 1] models,
    different masks, one continuing a carried optimizer with a different step count."""
    X, y = boolean_data(400, seed=9)
    out, opts = [], []
    for s in range(2):
        parent = MLP.init([32, 8, 1], np.random.default_rng(s))
        opt, _ = train(parent, X, y, TrainConfig(epochs=s + 1, warmup_epochs=2, batch_size=100), np.random.default_rng(s))
        out.append(parent.copy())
        opts.append(None)
        for split in ("random", "clause"):
            res = expand(parent, 2, split, np.random.default_rng(10 + s), groups=[np.arange(i, i + 4) for i in range(0, 32, 4)])
            out.append(res.model)
            opts.append(carry_optimizer(opt, res, parent) if split == "clause" else None)
    return out, opts


def copy_opt(o, model):
    if o is None:
        return None
    c = Adam(model.params, o.lr, o.betas, o.eps)
    c.t = o.t
    for k in o.m:
        c.m[k][...] = o.m[k]
        c.v[k][...] = o.v[k]
    return c


def test_batched_equals_one_at_a_time_after_1000_steps():
    models, opts = mixed_models()
    X, y = boolean_data(1000)
    Xt, yt = boolean_data(200, seed=1)
    cfg = TrainConfig(epochs=100, warmup_epochs=100, batch_size=100)  # 1000 steps
    ref = [m.copy() for m in models]
    out_ref = [train(m, X, y, cfg, np.random.default_rng(100 + i), X_test=Xt, y_test=yt, optimizer=copy_opt(o, m))
               for i, (m, o) in enumerate(zip(ref, opts))]
    got = [m.copy() for m in models]
    out = train_batched(got, X, y, cfg, [np.random.default_rng(100 + i) for i in range(len(got))], X_test=Xt, y_test=yt,
                        optimizers=[copy_opt(o, m) for m, o in zip(got, opts)])
    worst = 0.0
    for a, b, (oa, ha), (ob, hb) in zip(ref, got, out_ref, out):
        assert a.sizes == b.sizes
        for k in a.params:
            worst = max(worst, rel(a.params[k], b.params[k]), rel(oa.m[k], ob.m[k]) if np.any(oa.m[k]) else 0.0)
        assert oa.t == ob.t
        np.testing.assert_allclose(hb.loss, ha.loss, rtol=TOL)
        assert hb.train_acc == ha.train_acc and hb.test_acc == ha.test_acc and hb.test_epoch == ha.test_epoch
        for k, M in b.masks.items():
            assert np.all(b.params[k][~M] == 0.0), f"{k}: masked weight became non-zero"
    assert worst <= TOL, f"max relative difference {worst:.2e}"


@pytest.mark.parametrize("storage", ["sparse", "dense"])
def test_sparse_and_dense_storage_equal_numpy(storage):
    """The fused step multiplies a layer with the sparse kernels or, when it is dense enough,
    as a dense mirror with BLAS (``storage_plan``): both equal the reference, masks kept."""
    rng = np.random.default_rng(3)
    parent = MLP.init([24, 6, 7], rng)
    models = [parent, expand(parent, 3, "random", rng).model]
    X = rng.standard_normal((300, 24))
    y = rng.integers(0, 7, 300)
    cfg = TrainConfig(epochs=20, warmup_epochs=20, batch_size=64)
    ref = [m.copy() for m in models]
    for i, m in enumerate(ref):
        train(m, X, y, cfg, np.random.default_rng(i), X_test=X[:50], y_test=y[:50])
    got = [m.copy() for m in models]
    train_batched(got, X, y, cfg, [np.random.default_rng(i) for i in range(2)], X_test=X[:50], y_test=y[:50],
                  storage=storage)
    for a, b in zip(ref, got):
        for k in a.params:
            assert rel(a.params[k], b.params[k]) <= 1e-12, k
        for k, M in b.masks.items():
            assert np.all(b.params[k][~M] == 0.0)


def test_a_model_does_not_depend_on_its_batch_mates():
    models, _ = mixed_models()
    X, y = boolean_data(300)
    cfg = TrainConfig(epochs=4, warmup_epochs=4, batch_size=64)
    alone = models[2].copy()
    train(alone, X, y, cfg, np.random.default_rng(7), backend="numba")
    together = [m.copy() for m in models]
    rngs = [np.random.default_rng(i) for i in range(len(models))]
    rngs[2] = np.random.default_rng(7)
    train_batched(together[::-1], X, y, cfg, rngs[::-1])  # other order too
    for k in alone.params:
        assert np.array_equal(alone.params[k], together[2].params[k]), k  # bit for bit


def test_numpy_backend_is_the_reference_loop():
    models, _ = mixed_models()
    X, y = boolean_data(200)
    cfg = TrainConfig(epochs=2, warmup_epochs=2, batch_size=100)
    a = [m.copy() for m in models[:2]]
    b = [m.copy() for m in models[:2]]
    train_batched(a, X, y, cfg, [np.random.default_rng(i) for i in range(2)], backend="numpy")
    for i, m in enumerate(b):
        train(m, X, y, cfg, np.random.default_rng(i))
    for m1, m2 in zip(a, b):
        for k in m1.params:
            assert np.array_equal(m1.params[k], m2.params[k])


def test_bad_arguments():
    models, _ = mixed_models()
    X, y = boolean_data(100)
    cfg = TrainConfig(epochs=1, batch_size=50)
    r = np.random.default_rng(0)
    with pytest.raises(FPEError, match="one rng per model"):
        train_batched(models[:2], X, y, cfg, [r])
    with pytest.raises(FPEError, match="distinct rng"):
        train_batched(models[:2], X, y, cfg, [r, r])
    with pytest.raises(FPEError, match="optimizers"):
        train_batched(models[:2], X, y, cfg, [r, np.random.default_rng(1)], optimizers=[None])
    with pytest.raises(FPEError, match="plan"):
        train_batched(models[:1], X, y, cfg, [r], plan="gpu")
    with pytest.raises(FPEError, match="storage"):
        train_batched(models[:1], X, y, cfg, [r], storage="csr")
    with pytest.raises(FPEError, match="inputs have shape"):
        train_batched(models[:1], X[:, :5], y, cfg, [r])
    with pytest.raises(FPEError, match=r"rngs\[1\] is int"):
        train_batched(models[:2], X, y, cfg, [r, 5])
    broken = models[0].copy()
    broken.params["b1"][0] = np.nan
    with pytest.raises(FPEError, match="model 0: parameter b1 contains NaN or inf before training"):
        train_batched([broken], X, y, cfg, [r])
    assert train_batched([], X, y, cfg, []) == []


# ----------------------------------------------------------------------------- the fused step
def one_fused_step(step, model, m0, v0, t0, X, y, idx, pen, lr, dense=(False, False)):
    """Run one fused step (compiled or plain Python) on a copy of ``model``; the arguments
    as fpe_ref.fast.trainer.FusedTrainer.run builds them."""
    m = model.copy()
    d, h, C = m.sizes
    n = idx.shape[0]
    S1 = K.from_dense(m.params["W1"], m.masks["W1"])
    S2 = K.from_dense(m.params["W2"], m.masks["W2"])
    w1, w2, b1, b2 = S1.data.copy(), S2.data.copy(), m.params["b1"].copy(), m.params["b2"].copy()
    st = [a[m.masks[k]].copy() if k in m.masks else a.copy()
          for k in ("W1", "b1", "W2", "b2") for a in (m0[k], v0[k])]
    b1_, b2_ = 0.9, 0.999
    t = t0 + 1
    hyper = np.array([b1_, b2_, 1 - b1_, 1 - b2_, 1e-8, pen.l1, 2 * pen.l2, 0.0])
    loss, hits = step(X, y.astype(np.float64), y, idx, C == 1,
                      S1.indptr, S1.indices, S1.colptr, S1.rowind, S1.perm, w1, b1,
                      S2.indptr, S2.indices, S2.colptr, S2.rowind, S2.perm, w2, b2, *st,
                      np.empty_like(w1), np.empty_like(b1), np.empty_like(w2), np.empty_like(b2),
                      np.empty((d, n)), np.empty((h, n)), np.empty((h, n)), np.empty((C, n)), np.empty((C, n)),
                      np.empty((h, n)), np.empty(n), np.empty(n), hyper, lr / (1 - b1_**t), (1 - b2_**t) ** 0.5,
                      pen.l1, pen.l2, np.array([h, 1 << 20, C, 1 << 20]), dense[0], dense[1],
                      K.to_dense(S1) if dense[0] else np.zeros((1, 1)), K.to_dense(S2) if dense[1] else np.zeros((1, 1)))
    m.params["W1"] = K.to_dense(S1, w1)
    m.params["W2"] = K.to_dense(S2, w2)
    m.params["b1"], m.params["b2"] = b1, b2
    return m, loss, hits


@pytest.mark.parametrize("C", [1, 4])
@pytest.mark.parametrize("impl,dense", [("compiled", (False, False)), ("python", (False, False)),
                                        ("compiled", (True, True)), ("compiled", (False, True))])
def test_fused_step_against_numpy_train_step(C, impl, dense):
    """One fused step vs fpe_ref.train.train_step (the NumPy twin) at a later Adam step, with
    both penalties, alpha not dividing d, softmax and BCE."""
    from fpe_ref.optim import Penalties

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
    hits_ref = float(np.sum(((logits[:, 0] > 0) if C == 1 else logits.argmax(axis=1)) == y[idx]))
    step = K._SERIAL["_fused_step_x"] if impl == "compiled" else K._fused_step_py
    got, loss, hits = one_fused_step(step, model, m0, v0, t0, X, y, idx, pen, lr, dense)
    assert abs(loss - loss_ref) <= 1e-12 * abs(loss_ref)
    assert hits == hits_ref
    for k in ref.params:
        assert rel(ref.params[k], got.params[k]) <= 1e-12, k
    for k, M in got.masks.items():
        assert np.all(got.params[k][~M] == 0.0)


# ----------------------------------------------------------------------------- case study
def test_case_study_batches_equal_trial_by_trial():
    from fpe_ref.experiments.case_study import CaseStudyConfig, make_data, run_trial, run_trials

    cfg = CaseStudyConfig(dense_epochs=4, fpe_epochs=4, trials=2, n_samples=500,
                          train=TrainConfig(batch_size=100, warmup_epochs=4), carry_optimizer=True)
    tr, te, groups = make_data(cfg)
    one = [run_trial(cfg, t, tr, te, groups) for t in (0, 1)]  # numpy, one model at a time
    both = run_trials(cfg, [0, 1], tr, te, groups, backend="numba")
    for (ra, ma, pa), (rb, mb, pb) in zip(one, both):
        assert ra["trial"] == rb["trial"]
        assert set(ra["models"]) == set(rb["models"]) == {"dense", "clause", "random"}
        for v in ra["models"]:
            a, b = ra["models"][v], rb["models"][v]
            assert a["ledger"] == b["ledger"] and a["expand_report"] == b["expand_report"]
            assert a["after"]["test_acc"] == b["after"]["test_acc"]
            assert abs(a["after"]["capacity"] - b["after"]["capacity"]) <= 1e-9
            np.testing.assert_allclose(b["history"]["loss"], a["history"]["loss"], rtol=TOL)
            for k in ma[v].params:
                assert rel(ma[v].params[k], mb[v].params[k]) <= TOL, (v, k)


# ----------------------------------------------------------------------------- fpe bench




@pytest.mark.parametrize("limit,threads,warns", [(True, 2, False), (False, 1, False), (False, 2, True),
                                                 (False, None, True)])
def test_storage_plan_depends_on_shapes_only_and_unlimited_blas_is_warned(monkeypatch, capsys, limit, threads, warns):
    """The plan never depends on the environment (the mirrors and the sparse kernels agree to
    rounding, not bitwise); when the mirrors' BLAS cannot be held to one thread, one warning."""
    from fpe_ref.fast import trainer as batched

    monkeypatch.setattr(batched, "_can_limit_blas", lambda: limit)
    monkeypatch.setattr(batched, "blas_threads", lambda: threads)
    monkeypatch.setattr(batched, "_warned", False)
    rng = np.random.default_rng(0)
    parent = MLP.init([256, 16, 10], rng)  # W1: 4096 entries, dense -> a mirror
    X, y = rng.standard_normal((64, 256)), rng.integers(0, 10, 64)
    for _ in range(2):
        trainer = batched.FusedTrainer([parent], X, y, TrainConfig(epochs=1, batch_size=32), None, None, [None],
                                       "auto", "auto")
        assert tuple(trainer.dense[0]) == (True, False)
    err = capsys.readouterr().err
    assert err.count("cannot hold BLAS to one thread") == (1 if warns else 0), err


def test_blas_threads_reads_the_environment_without_threadpoolctl(monkeypatch):
    import sys

    from fpe_ref.fast import trainer as batched

    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    assert batched.blas_threads() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert batched.blas_threads() == 1


def test_mirrored_runs_hold_every_blas_to_one_thread():
    """NumPy's and SciPy's BLAS (numba's np.dot calls SciPy's) are both limited while mirrors run."""
    import os

    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy

    from fpe_ref.fast import trainer as batched

    scipy_dir = os.path.dirname(os.path.dirname(scipy.__file__))  # site-packages: scipy/ and scipy.libs/
    with batched._single_threaded_blas(True):
        infos = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
        assert infos and all(i["num_threads"] == 1 for i in infos), infos
        own = [i for i in infos if os.path.realpath(i["filepath"]).startswith(os.path.join(scipy_dir, "scipy"))]
        if not own:
            pytest.skip("SciPy shares NumPy's BLAS here (nothing separate to limit)")
