"""fpe_ref.fast.trainer: train_batched(backend="numba") against the NumPy reference loop.

One model at a time (``train_batched([model], ...)``) and many side by side (the case study's
mixed dense and expanded models, carried optimizers): the same History and parameters to 1e-9
(float64) after 1000 steps, the same rng use, warm-up and penalties, masks kept exactly; a
model does not depend on its batch mates; sparse and dense (mirror) storage; the case study in
batches against trial by trial; bad input as one-line errors.

Two tests are marked slow only because they compile another variant of the fused step
(float32; parallel products), ~30 s each on a cold numba cache: ``pytest -m slow``.

Tolerances: the fused step sums in another order than BLAS (storage order, vectorised dot
products), so a step agrees to rounding (~1e-16 relative) and training amplifies it; after
1000 steps the observed differences are ~1e-14..1e-12, asserted at 1e-9.
"""

from __future__ import annotations

import numpy as np
import pytest

from fpe_ref.errors import FPEError
from fpe_ref.expand import carry_optimizer, expand
from fpe_ref.fast import threads
from fpe_ref.fast import trainer as T
from fpe_ref.fast.trainer import train_batched
from fpe_ref.mlp import MLP
from fpe_ref.optim import Adam
from fpe_ref.train import TrainConfig, train

TOL = 1e-9


def boolean_data(n, d=32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 2, (n, d)).astype(np.float64)
    y = (X[:, : min(4, d)].sum(axis=1) >= 2).astype(np.int64)
    return X, y


def multiclass_data(n, d, C, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.argmax(X[:, :C] + 0.5 * rng.standard_normal((n, C)), axis=1)
    return X, y


def make_model(kind, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "dense":
        return MLP.init([32, 8, 1], rng, dtype=dtype)
    if kind == "fpe-random":
        return expand(MLP.init([32, 8, 1], rng, dtype=dtype), 2, "random", rng).model
    if kind == "fpe-alpha3-multiclass":  # alpha not dividing d, softmax
        return expand(MLP.init([20, 6, 5], rng, dtype=dtype), 3, "random", rng).model
    raise ValueError(kind)


def data_for(model, n=1000, seed=0):
    d, _, C = model.sizes
    return boolean_data(n, d, seed) if C == 1 else multiclass_data(n, d, C, seed)


def rel(a, b):
    scale = max(float(np.max(np.abs(a))), 1e-300)
    return float(np.max(np.abs(a - b))) / scale


def train_numba(model, X, y, cfg, rng, *, X_test=None, y_test=None, optimizer=None):
    """One model through the numba backend: ``(optimizer, History)``, as ``train`` returns."""
    return train_batched([model], X, y, cfg, [rng], X_test=X_test, y_test=y_test, optimizers=[optimizer],
                         backend="numba")[0]


def assert_same_run(ref, got, opt_ref, opt_got, hist_ref, hist_got, tol=TOL):
    for k in ref.params:
        assert rel(ref.params[k], got.params[k]) <= tol, f"{k}: rel diff {rel(ref.params[k], got.params[k]):.2e}"
        assert rel(opt_ref.m[k], opt_got.m[k]) <= tol, f"m:{k}"
        assert rel(opt_ref.v[k], opt_got.v[k]) <= tol, f"v:{k}"
    assert opt_ref.t == opt_got.t
    assert hist_ref.test_epoch == hist_got.test_epoch
    np.testing.assert_allclose(hist_got.loss, hist_ref.loss, rtol=tol, err_msg="loss history")
    assert hist_got.train_acc == hist_ref.train_acc
    assert hist_got.test_acc == hist_ref.test_acc
    for k, M in got.masks.items():
        assert np.all(got.params[k][~M] == 0.0), f"{k}: a masked weight became non-zero"


@pytest.mark.parametrize("kind", ["dense", "fpe-random", "fpe-alpha3-multiclass"])
def test_numba_backend_matches_numpy_after_1000_steps(kind):
    model = make_model(kind)
    X, y = data_for(model)
    Xt, yt = data_for(model, 300, seed=1)
    cfg = TrainConfig(epochs=100, warmup_epochs=100, batch_size=100)  # 10 steps per epoch: 1000 steps
    ref, got = model.copy(), model.copy()
    opt_r, h_r = train(ref, X, y, cfg, np.random.default_rng(5), X_test=Xt, y_test=yt)
    opt_g, h_g = train_numba(got, X, y, cfg, np.random.default_rng(5), X_test=Xt, y_test=yt)
    assert opt_r.t == 1000
    assert_same_run(ref, got, opt_r, opt_g, h_r, h_g)


@pytest.mark.parametrize("warmup", ["lr", "penalty", "none"])
def test_warmup_penalties_last_batch_and_eval_every(warmup):
    model = make_model("fpe-random")
    X, y = data_for(model, 430)  # batches of 100, 100, 100, 100, 30
    cfg = TrainConfig(epochs=12, warmup_epochs=7, warmup=warmup, batch_size=100, l1=1e-3, l2=1e-3, eval_every=5)
    ref, got = model.copy(), model.copy()
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    opt_r, h_r = train(ref, X, y, cfg, r1, X_test=X[:50], y_test=y[:50])
    opt_g, h_g = train_numba(got, X, y, cfg, r2, X_test=X[:50], y_test=y[:50])
    assert h_g.test_epoch == [5, 10, 12]
    assert_same_run(ref, got, opt_r, opt_g, h_r, h_g)
    assert r1.random() == r2.random()  # the same draws from the shuffling stream


def test_continues_a_given_optimizer_and_updates_it_in_place():
    model = make_model("fpe-random")
    X, y = data_for(model, 400)
    cfg = TrainConfig(epochs=5, warmup_epochs=5, batch_size=100)
    start_opt, _ = train(model, X, y, cfg, np.random.default_rng(0))
    # a non-zero moment at a masked position decays as NumPy's Adam decays it
    M = model.masks["W1"]
    start_opt.m["W1"][~M] = 0.25
    ref, got = model.copy(), model.copy()
    o_r, o_g = Adam(ref.params), Adam(got.params)
    for o in (o_r, o_g):
        o.t = start_opt.t
        for k in ref.params:
            o.m[k][...] = start_opt.m[k]
            o.v[k][...] = start_opt.v[k]
    opt_r, h_r = train(ref, X, y, cfg, np.random.default_rng(1), optimizer=o_r)
    opt_g, h_g = train_numba(got, X, y, cfg, np.random.default_rng(1), optimizer=o_g)
    assert opt_g is o_g and opt_g.t == start_opt.t + 20
    assert_same_run(ref, got, opt_r, opt_g, h_r, h_g)
    assert np.array_equal(opt_g.m["W1"][~M], opt_r.m["W1"][~M])


def test_masked_weights_stay_exactly_zero_and_counts_are_kept():
    model = make_model("fpe-random")
    X, y = data_for(model, 300)
    before = model.ledger()
    # big penalties and learning rate: every stored weight moves, masked ones must not
    cfg = TrainConfig(epochs=20, warmup_epochs=1, batch_size=64, lr=0.05, l1=1e-2, l2=1e-2)
    train_numba(model, X, y, cfg, np.random.default_rng(0))
    for k, M in model.masks.items():
        assert np.all(model.params[k][~M] == 0.0)
    assert model.ledger() == before


@pytest.mark.slow  # compiles the float32 fused kernels: ~30 s on a cold numba cache
@pytest.mark.parametrize("dtype", [np.float32])
def test_float32_agrees_to_float32_rounding(dtype):
    model = make_model("fpe-random", dtype)
    X, y = data_for(model, 500)
    cfg = TrainConfig(epochs=10, warmup_epochs=10, batch_size=100)
    ref, got = model.copy(), model.copy()
    train(ref, X, y, cfg, np.random.default_rng(0))
    train_numba(got, X, y, cfg, np.random.default_rng(0))
    for k in ref.params:
        assert got.params[k].dtype == dtype
        assert rel(ref.params[k].astype(np.float64), got.params[k].astype(np.float64)) < 1e-4, k


@pytest.mark.slow  # compiles the parallel fused kernels: ~35 s on a cold numba cache
def test_parallel_products_equal_serial_and_any_thread_count():
    model = make_model("fpe-alpha3-multiclass")
    X, y = data_for(model, 300)
    cfg = TrainConfig(epochs=3, warmup_epochs=3, batch_size=100)
    runs = []
    before = threads.get_num_threads()
    try:
        for plan, n_threads in (("models", 1), ("models", before), ("single", 1), ("single", before)):
            threads.set_num_threads(n_threads)
            m = model.copy()
            train_batched([m], X, y, cfg, [np.random.default_rng(0)], plan=plan)
            runs.append(m)
    finally:
        threads.set_num_threads(before)
    for m in runs[1:]:
        for k in model.params:
            assert rel(runs[0].params[k], m.params[k]) <= 1e-12, k


def test_unsupported_models_and_settings_are_one_line_errors():
    X, y = boolean_data(100, 8)
    cfg = TrainConfig(epochs=1, batch_size=50)
    rng = np.random.default_rng(0)
    deep = MLP.init([8, 4, 4, 1], rng)
    with pytest.raises(FPEError, match="one-hidden-layer"):
        train_numba(deep, X, y, cfg, rng)
    with pytest.raises(FPEError, match="LayerNorm"):
        train_numba(MLP.init([8, 4, 1], rng, layer_norm=True), X, y, cfg, rng)
    with pytest.raises(FPEError, match="orth"):
        train_numba(MLP.init([8, 4, 1], rng), X, y, TrainConfig(epochs=1, batch_size=50, orth=1e-3), rng)
    m = MLP.init([8, 4, 1], rng)

    class CustomAdam(Adam):  # e.g. fpe_ref.rewire.RewiringAdam, which changes masks mid-run
        pass
    with pytest.raises(FPEError, match="CustomAdam"):
        train_numba(m, X, y, cfg, rng, optimizer=CustomAdam(m.params))
    with pytest.raises(FPEError, match="backend must be one of"):
        train_batched([m], X, y, cfg, [rng], backend="cuda")
    with pytest.raises(FPEError, match="diverged"), np.errstate(all="ignore"):
        train_numba(m, X * 1e200, y, TrainConfig(epochs=2, batch_size=50, lr=1e200), rng)
    for msg in ("one-hidden-layer",):
        try:
            train_numba(deep, X, y, cfg, rng)
        except FPEError as exc:
            assert "\n" not in str(exc) and msg in str(exc)


# ----------------------------------------------------------------------------- many models side by side
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
    train_numba(alone, X, y, cfg, np.random.default_rng(7))
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


def test_an_int_seed_shuffles_as_default_rng():
    models, _ = mixed_models()
    X, y = boolean_data(100)
    cfg = TrainConfig(epochs=2, batch_size=50)
    a, b = [models[0].copy()], [models[0].copy()]
    ha = train_batched(a, X, y, cfg, [5])[0][1]
    hb = train_batched(b, X, y, cfg, [np.random.default_rng(5)])[0][1]
    assert ha.loss == hb.loss
    for k in a[0].params:
        assert np.array_equal(a[0].params[k], b[0].params[k]), k


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
    with pytest.raises(FPEError, match=r"rngs\[1\] is str"):
        train_batched(models[:2], X, y, cfg, [r, "5"])
    with pytest.raises(FPEError, match=r"rngs\[1\] is float"):
        train_batched(models[:2], X, y, cfg, [r, 5.0])
    broken = models[0].copy()
    broken.params["b1"][0] = np.nan
    with pytest.raises(FPEError, match="model 0: parameter b1 contains NaN or inf before training"):
        train_batched([broken], X, y, cfg, [r])
    assert train_batched([], X, y, cfg, []) == []


# ----------------------------------------------------------------------------- case study
def test_case_study_batches_equal_trial_by_trial():
    from fpe_ref.experiments.case_study import CaseStudyConfig, make_data, run_trial, run_trials

    cfg = CaseStudyConfig(dense_epochs=4, fpe_epochs=4, trials=2, n_samples=500,
                          train=TrainConfig(batch_size=100, warmup_epochs=4), carry_optimizer=True)
    tr, te, groups = make_data(cfg)
    one = [run_trial(cfg, t, tr, te, groups, trainer="numpy") for t in (0, 1)]  # one model at a time
    both = run_trials(cfg, [0, 1], tr, te, groups, trainer="numba")
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


@pytest.mark.parametrize("limit,n_threads,warns", [(True, 2, False), (False, 1, False), (False, 2, True),
                                                 (False, None, True)])
def test_storage_plan_depends_on_shapes_only_and_unlimited_blas_is_warned(monkeypatch, capsys, limit, n_threads,
                                                                           warns):
    """The plan never depends on the environment (the mirrors and the sparse kernels agree to
    rounding, not bitwise); when the mirrors' BLAS cannot be held to one thread, one warning."""
    monkeypatch.setattr(threads, "_can_limit_blas", lambda: limit)
    monkeypatch.setattr(threads, "blas_threads", lambda: n_threads)
    monkeypatch.setattr(threads, "_warned", False)
    rng = np.random.default_rng(0)
    parent = MLP.init([256, 16, 10], rng)  # W1: 4096 entries, dense -> a mirror
    X, y = rng.standard_normal((64, 256)), rng.integers(0, 10, 64)
    for _ in range(2):
        trainer = T.FusedTrainer([parent], X, y, TrainConfig(epochs=1, batch_size=32), None, None, [None],
                                       "auto", "auto")
        assert tuple(trainer.dense[0]) == (True, False)
    err = capsys.readouterr().err
    assert err.count("cannot hold BLAS to one thread") == (1 if warns else 0), err
