"""The MLP (fpe_ref.mlp): whole-network gradients, PyTorch's initialisation, save/load and its errors."""

import io
import json

import numpy as np
import pytest

from fpe_ref.errors import FPEError
from fpe_ref.mlp import MLP

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
