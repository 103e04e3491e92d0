"""The MLP (fpe_ref.mlp): whole-network gradients, PyTorch's initialisation, save/load, and its one-line errors
on bad sizes, dtypes, inputs and files."""

import io
import json

import numpy as np
import pytest

from fpe_ref.errors import FPEError
from fpe_ref.mlp import MLP, param_nbytes

RNG_SEED = 1234  # the conftest ``rng`` fixture's seed for this module


@pytest.mark.parametrize("sizes,layer_norm,masked", [
    ([5, 4, 1], False, False),
    ([5, 4, 1], False, True),
    ([6, 5, 4, 3], False, True),  # multiclass, two hidden layers
    ([6, 5, 4, 4, 5, 1], True, True),  # deep with LayerNorm, binary
    ([6, 5, 4, 4, 5, 3], True, False),  # deep with LayerNorm, multiclass
])
def test_mlp_gradients(masked_model, numgrad, assert_grad, rng, sizes, layer_norm, masked):
    model = masked_model(sizes, rng, layer_norm, (1, 2) if masked else ())
    X = rng.normal(size=(9, sizes[0]))
    y = rng.integers(0, max(2, sizes[-1]), size=9).astype(float)
    # move pre-activations away from the ReLU kink so central differences are valid
    loss, grads = model.loss_and_grads(X, y)
    for name, p in model.params.items():
        num = numgrad(lambda: model.loss_and_grads(X, y)[0], p)
        if name in model.masks:
            num *= model.masks[name]
        assert_grad(grads[name], num, name)


def test_init_matches_pytorch_bounds(rng):
    model = MLP.init([100, 50, 3], rng)
    for l, fan_in in ((1, 100), (2, 50)):
        for name in (f"W{l}", f"b{l}"):
            p = model.params[name]
            assert np.abs(p).max() <= 1 / np.sqrt(fan_in)
            if p.size >= 100:
                assert np.abs(p).max() > 0.9 / np.sqrt(fan_in)  # fills the interval
    assert model.params["W1"].shape == (50, 100)  # (out, in) like nn.Linear


def test_save_load_roundtrip(masked_model, tmp_path, rng):
    model = masked_model([6, 5, 4, 2], rng, True, (1, 2))
    model.save(tmp_path / "m.npz")
    back = MLP.load(tmp_path / "m.npz")
    assert back.layer_norm and list(back.params) == list(model.params)
    for k in model.params:
        np.testing.assert_array_equal(back.params[k], model.params[k], err_msg=k)
    for k in model.masks:
        np.testing.assert_array_equal(back.masks[k], model.masks[k], err_msg=k)
        assert np.all(back.params[k][~back.masks[k]] == 0.0)


def test_load_rejects_nonzero_masked_weight_and_garbage(masked_model, tmp_path, rng):
    model = masked_model([4, 3, 1], rng, False, (1,))
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["W1"][~arrays["mask:W1"]] = 1.0
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(FPEError, match="W1 is non-zero at masked"):
        MLP.load(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FPEError, match="cannot read model file"):
        MLP.load(tmp_path / "junk.npz")


def _npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _corruptions(tmp_path, arrays):
    """(name, file writer) pairs: each writes one kind of damaged model file."""
    def savez(**changes):
        def write(p):
            a = dict(arrays)
            a.update(changes)
            np.savez(p, **{k: v for k, v in a.items() if v is not None})
        return write

    good = (tmp_path / "m.npz").read_bytes()
    return [
        ("truncated", lambda p: p.write_bytes(good[: len(good) // 2]), "cannot read model file"),
        ("empty", lambda p: p.write_bytes(b""), "cannot read model file"),
        ("npy", lambda p: p.write_bytes(_npy_bytes(np.zeros(3))), "cannot read model file"),
        ("meta not json", savez(meta=np.array("{oops")), "corrupt 'meta'"),
        ("meta a list", savez(meta=np.array("[1, 2]")), "corrupt 'meta'"),
        ("meta without sizes", savez(meta=np.array('{"format_version": 1, "layer_norm": false}')), "corrupt 'meta'"),
        ("int mask", savez(**{"mask:W1": arrays["mask:W1"].astype(np.int64)}), "dtype int64, expected bool"),
        ("NaN weight", savez(W2=np.full_like(arrays["W2"], np.nan)), r"bad_\d+\.npz: parameter W2 contains NaN"),
        ("missing bias", savez(b1=None), "lacks parameter"),
        ("string weights", savez(W2=arrays["W2"].astype(str)), "W2 has dtype <U"),
        ("sizes contradict", savez(meta=np.array('{"format_version": 1, "layer_norm": false, "sizes": [4, 5, 1]}')),
         r"meta says sizes \[4, 5, 1\], the stored weights have \[4, 3, 1\]"),
    ]


def test_load_gives_one_line_errors_on_damaged_files(masked_model, tmp_path, rng):
    model = masked_model([4, 3, 1], rng, False, (1,))
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    assert json.loads(str(arrays["meta"]))["format_version"] == 1  # the corruptions below assume it
    for i, (name, write, match) in enumerate(_corruptions(tmp_path, arrays)):
        path = tmp_path / f"bad_{i}.npz"
        write(path)
        with pytest.raises(FPEError, match=match) as info:
            MLP.load(path)
        assert "\n" not in str(info.value), name


def test_bad_inputs_raise_clear_errors(rng):
    model = MLP.init([4, 3, 1], rng)
    with pytest.raises(FPEError, match="layer sizes"):
        MLP.init([4, 0, 1], rng)
    with pytest.raises(FPEError, match="mask of W1"):
        MLP(model.params, {"W1": np.ones((2, 2), bool)})
    bad = dict(model.params)
    bad["W1"] = np.full((3, 4), np.nan)
    with pytest.raises(FPEError, match="W1 contains NaN"):
        MLP(bad)


# ---------------------------------------------------------------- files that lie about their shapes
def _lying_npz(path, member, shape):
    """A zip whose member's .npy header declares ``shape`` float64 over 64 bytes of data."""
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meta.npy", _npy_bytes(np.array(json.dumps({"format_version": 1, "layer_norm": False,
                                                                "sizes": [4, 3, 1]}))))
        z.writestr(member, buf.getvalue() + bytes(64))
    return path


def test_load_refuses_a_header_declaring_a_huge_shape(tmp_path):
    p = _lying_npz(tmp_path / "m.npz", "W1.npy", (10**6, 10**6))
    with pytest.raises(FPEError) as info:
        MLP.load(p)
    assert str(info.value) == (f"cannot read model file: W1 in {p} (member W1.npy) declares shape (1000000, 1000000) "
                               "float64 (8000000000000 bytes), more than the 64 bytes it holds: the file is corrupt "
                               "or truncated")


def test_load_refuses_integer_weights(masked_model, tmp_path, rng):
    model = masked_model([4, 3, 1], rng, False, ())
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["W1"] = np.ones((3, 4), dtype=np.int64)
    np.savez(tmp_path / "int.npz", **arrays)
    with pytest.raises(FPEError, match=r"int\.npz: parameter W1 has dtype int64, expected a float type"):
        MLP.load(tmp_path / "int.npz")


# ---------------------------------------------------------------- sizes, dtypes, memory
@pytest.mark.parametrize("sizes,match", [
    ([32, 8.5, 1], r"^layer sizes\[1\] must be a positive integer, got 8\.5$"),
    ([32, 8.0, 1], r"^layer sizes\[1\] must be a positive integer, got 8\.0$"),
    ([32, True, 1], r"^layer sizes\[1\] must be a positive integer, got True$"),
    ([32, "8", 1], r"^layer sizes\[1\] must be a positive integer, got '8'$"),
    ([32, -1, 1], r"^layer sizes\[1\] must be a positive integer, got -1$"),
    ([32], r"^layer sizes must be >= 1 and at least \[d, C\], got \[32\]$"),
    (32, r"^layer sizes must be a list \[d, h1, \.\.\., C\] of positive integers, got 32$"),
    ("abc", r"^layer sizes must be a list .* got 'abc'$"),
], ids=["half", "integral-float", "bool", "string", "negative", "one-size", "int", "str"])
def test_init_refuses_sizes_it_would_truncate(sizes, match):
    with pytest.raises(FPEError, match=match):
        MLP.init(sizes, 0)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool, "U3"])
def test_init_refuses_non_float_dtypes(dtype):
    with pytest.raises(FPEError, match=r"^dtype must be a float type \(float32 or float64\), got .*"):
        MLP.init([4, 3, 1], 0, dtype=dtype)


def test_init_in_float32_keeps_the_float64_draws_rounded():
    a, b = MLP.init([5, 4, 2], 7), MLP.init([5, 4, 2], 7, dtype=np.float32)
    for k in a.params:
        assert b.params[k].dtype == np.float32
        np.testing.assert_array_equal(b.params[k], a.params[k].astype(np.float32), err_msg=k)


def test_init_refuses_sizes_that_cannot_fit_in_memory():
    with pytest.raises(FPEError, match=r"^an MLP of sizes \[32, 1000000000000, 1\] \(float64\) needs 480\.2 TiB "
                                       r"\(528000000000008 bytes\) but only .* of memory is available$"):
        MLP.init([32, 10**12, 1], 0)


def test_init_memory_check_counts_parameters_and_the_float64_draw(monkeypatch):
    from fpe_ref import errors

    need = param_nbytes([4, 3, 1], np.float32) + 3 * 4 * 8  # float32 params + float64 draw of W1
    monkeypatch.setattr(errors, "available_memory", lambda: need)
    MLP.init([4, 3, 1], 0, dtype=np.float32)
    monkeypatch.setattr(errors, "available_memory", lambda: need - 1)
    with pytest.raises(FPEError, match=r"an MLP of sizes \[4, 3, 1\] \(float32\) needs"):
        MLP.init([4, 3, 1], 0, dtype=np.float32)


def test_param_nbytes_counts_weights_biases_and_layernorm():
    # (4 + 1) * 3 + (3 + 1) * 2 = 23 entries; LayerNorm on the hidden layer: 2 * 3 more
    assert param_nbytes([4, 3, 2]) == 23 * 8
    assert param_nbytes([4, 3, 2], np.float32, layer_norm=True) == 29 * 4
    m = MLP.init([4, 3, 2], 0, layer_norm=True)
    assert sum(p.nbytes for p in m.params.values()) == param_nbytes([4, 3, 2], layer_norm=True)


def test_constructor_refuses_non_float_and_non_array_parameters(rng):
    model = MLP.init([4, 3, 1], rng)
    for value, got in [(model.params["W1"].astype(np.int64), "dtype int64"), (model.params["W1"].tolist(), "list")]:
        bad = dict(model.params, W1=value)
        with pytest.raises(FPEError, match=rf"^parameter W1 has {got}, expected a float ndarray$"):
            MLP(bad)
    with pytest.raises(FPEError, match=r"^mask of W1 is a list, expected a bool ndarray$"):
        MLP(model.params, {"W1": [[True] * 4] * 3})


# ---------------------------------------------------------------- forward / loss / accuracy inputs
def test_accuracy_refuses_a_label_column_it_would_broadcast(rng):
    model = MLP.init([4, 3, 1], rng)
    X, y = rng.normal(size=(6, 4)), np.array([0, 1, 0, 1, 1, 1])
    assert model.accuracy(X, y) == np.mean(model.predict(X) == y)
    with pytest.raises(FPEError, match=r"^labels y have shape \(6, 1\), expected \(6,\)$"):
        model.accuracy(X, y[:, None])
    with pytest.raises(FPEError, match=r"^labels y have shape \(5,\), expected \(6,\)$"):
        model.accuracy(X, y[:5])
    with pytest.raises(FPEError, match=r"^labels y must be integers in \[0, 2\), got values in \[0\.0, 0\.5\]$"):
        model.accuracy(X, np.array([0, 0.5, 0, 0, 0, 0]))
    with pytest.raises(FPEError, match=r"^labels y must be integers in \[0, 2\), got values in \[0, 3\]$"):
        model.accuracy(X, np.array([0, 3, 0, 0, 0, 0]))


@pytest.mark.parametrize("X,match", [
    (np.ones(4), r"^inputs X have shape \(4,\), the model expects \(n, 4\)$"),
    (np.ones((2, 5)), r"^inputs X have shape \(2, 5\), the model expects \(n, 4\)$"),
    ([[1.0, 2.0], [3.0]], r"^inputs X must be a 2-D array \(n, 4\) of numbers, got a ragged list$"),
    (np.array([["a"] * 4]), r"^inputs X must be a 2-D array \(n, 4\) of numbers, got dtype <U1$"),
    (np.array([[0.0, np.nan, 0.0, 0.0]]), r"^inputs X contain NaN or inf \(row 0, column 1: nan\)$"),
], ids=["1-D", "columns", "ragged", "strings", "NaN"])
def test_forward_predict_and_accuracy_refuse_bad_inputs(rng, X, match):
    model = MLP.init([4, 3, 2], rng)
    for call in (lambda: model.forward(X), lambda: model.predict(X), lambda: model.accuracy(X, np.zeros(len(X))),
                 lambda: model.loss_and_grads(X, np.zeros(len(X)))):
        with pytest.raises(FPEError, match=match):
            call()


def test_forward_takes_a_list_as_the_array_it_holds(rng):
    model = MLP.init([4, 3, 2], rng)
    X = rng.normal(size=(3, 4))
    np.testing.assert_array_equal(model.forward(X.tolist())[0], model.forward(X)[0])


def test_loss_refuses_labels_of_the_wrong_shape(rng):
    model = MLP.init([4, 3, 3], rng)
    X, y = rng.normal(size=(6, 4)), np.array([0, 1, 2, 0, 1, 2])
    logits, _ = model.forward(X)
    loss, _ = model.loss(logits, y)
    assert np.isfinite(loss)
    with pytest.raises(FPEError, match=r"^labels y have shape \(6, 1\), expected \(6,\)$"):
        model.loss(logits, y[:, None])  # softmax CE would index (6, 6) entries: a wrong number, silently
    with pytest.raises(FPEError, match=r"^labels y must be integers in \[0, 3\), got values in \[0, 7\]$"):
        model.loss(logits, np.array([0, 7, 2, 0, 1, 2]))
    with pytest.raises(FPEError, match=r"^logits must be an array \(n, 3\) as forward returns them, got an array "
                                       r"of shape \(6,\) dtype float64$"):
        model.loss(logits[:, 0], y)


def test_save_refuses_a_name_numpy_would_change_and_an_unwritable_path(tmp_path):
    model = MLP.init([4, 3, 1], 0)
    with pytest.raises(FPEError, match=r"must end in \.npz, got"):
        model.save(tmp_path / "model")
    with pytest.raises(FPEError, match="cannot write .*: No such file or directory"):
        model.save(tmp_path / "missing" / "m.npz")
    assert list(tmp_path.iterdir()) == []
