"""Golden bundle: deterministic export, exact numpy check, corrupted tensors named, torch parity on CPU."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import fpe_ref
from fpe_ref.commands import fpe
from fpe_ref.parity import golden
from fpe_ref.errors import FPEError


def invoke(*args):
    return CliRunner().invoke(fpe, ["golden", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden") / "bundle"
    result = invoke("export", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "16 cases" in result.output  # 16 forward cases
    return out


def arrays_of(d):
    with np.load(d / golden.NPZ_NAME, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def rewrite(d, arrays, manifest=None):
    golden._write_npz(os.fspath(d / golden.NPZ_NAME), arrays)
    if manifest is not None:
        (d / golden.MANIFEST_NAME).write_text(json.dumps(manifest))


# ---------------------------------------------------------------- export
def test_export_is_deterministic(bundle, tmp_path):
    again = tmp_path / "again"
    golden.export_bundle(again)
    a, b = arrays_of(bundle), arrays_of(again)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    for f in (golden.NPZ_NAME, golden.MANIFEST_NAME):  # byte-identical files, too
        assert (again / f).read_bytes() == (bundle / f).read_bytes(), f


def test_manifest_describes_every_tensor(bundle):
    manifest = json.loads((bundle / golden.MANIFEST_NAME).read_text())
    arrays = arrays_of(bundle)
    assert manifest["format_version"] == golden.FORMAT_VERSION
    assert manifest["fpe_ref_version"] == fpe_ref.__version__
    assert manifest["seeds"]["master"] == golden.SEED
    assert sorted(manifest["tensors"]) == sorted(arrays)
    for name, entry in manifest["tensors"].items():
        a = arrays[name]
        assert a.dtype == np.float64, name
        assert list(a.shape) == entry["shape"], name
        assert entry["sha256"] == golden._sha256(a), name
        if entry["role"] == "expected":
            tol = entry["tol"]
            exact = name.split("/")[2] in ("mask", "pruned")
            assert tol == ({"float64": 0.0, "float32": 0.0} if exact else
                           {"float64": 1e-10, "float32": tol["float32"]}), name
            assert exact or 0 < tol["float32"] <= 1e-4, name
    cases = manifest["cases"]
    fwd = [c for c in cases.values() if c["section"] == "forward"]
    assert {(c["hidden_layers"], c["loss"], c["layer_norm"], c["expanded"]) for c in fwd} == {
        (h, loss, ln, ex) for h in (1, 5) for loss in ("bce", "xent") for ln in (False, True) for ex in (False, True)}
    adam = [n for n, c in cases.items() if c["section"] == "adam"]
    for n in adam:
        c = cases[n]
        assert c["steps"] == 20 and c["l1"] > 0 and c["l2"] > 0 and c["orth"] > 0
        assert arrays[f"{n}/param/W1"].shape[0] == 20 and arrays[f"{n}/v/W1"].shape[0] == 20
    assert {c["section"] for c in cases.values()} == {"forward", "expand", "adam", "metrics"}


def test_bundle_invariants(bundle):
    """What the bundle promises, asserted exactly: masked weights 0, FPE keeps the weight count."""
    arrays, manifest = arrays_of(bundle), json.loads((bundle / golden.MANIFEST_NAME).read_text())
    for name, cfg in manifest["cases"].items():
        if cfg["section"] == "adam":
            for k in [k for k in arrays if k.startswith(f"{name}/mask/")]:
                W = arrays[f"{name}/param/{k.rsplit('/', 1)[1]}"]  # (20, out, in)
                assert np.all(W[:, arrays[k] == 0] == 0.0), k
        if cfg["section"] == "expand":
            L = cfg["layer"]
            parent = sum(arrays[f"{name}/parent_mask/W{k}"].sum() if f"{name}/parent_mask/W{k}" in arrays
                         else arrays[f"{name}/parent/W{k}"].size for k in (L, L + 1))
            child = arrays[f"{name}/mask/W{L}"].sum() + arrays[f"{name}/mask/W{L + 1}"].sum()
            assert child == parent, name


@pytest.mark.parametrize("case", ["expand/h1_xent_alpha2", "expand/h1_bce_alpha3", "expand/h3_xent_ln_layer2_masked"])
def test_stored_tie_key_decides_the_pruning(bundle, case):
    """Each expand case's cut-off falls inside a group of duplicated W_{l+1} copies: another key prunes another copy."""
    manifest, arrays = golden.load_bundle(bundle)
    inputs = {k[len(case) + 1:]: v for k, v in arrays.items()
              if k.startswith(case + "/") and manifest["tensors"][k]["role"] == "input"}
    L = manifest["cases"][case]["layer"]
    inputs["tie_key"] = 1.0 - inputs["tie_key"]  # the reverse order among ties
    out = golden.compute_numpy(manifest["cases"][case], inputs)
    assert not np.array_equal(out[f"mask/W{L + 1}"], arrays[f"{case}/mask/W{L + 1}"])


# ---------------------------------------------------------------- check: numpy
def test_numpy_check_passes_exactly(bundle):
    result = invoke("check", str(bundle), "--impl", "numpy")
    assert result.exit_code == 0, result.output
    assert "exact (tolerance 0)" in result.output
    n = len(json.loads((bundle / golden.MANIFEST_NAME).read_text())["tensors"])
    assert "passed:" in result.output and "FAIL" not in result.output
    rows = [ln for ln in result.output.splitlines() if ln.endswith("  ok")]
    assert 0 < len(rows) < n
    assert all(" 0.000e+00   0.000e+00 " in ln for ln in rows)  # max_abs and max_rel are exactly 0


def test_numpy_check_on_another_platform_uses_the_tolerances(bundle, monkeypatch):
    here = golden.platform_fingerprint()
    monkeypatch.setattr(golden, "platform_fingerprint", lambda: {**here, "blas_core": "SomeOtherCPU"})
    report = golden.check_bundle(bundle, "numpy")
    assert not report.failed
    assert "another platform (blas_core" in report.header and "exact (tolerance 0)" not in report.header


CORRUPT = [  # (tensor, whether the manifest's SHA-256 is updated to match the corrupted value)
    ("forward/h5_xent_ln_fpe/grad/W3", False),
    ("adam/h1_xent_fpe/v/W1", True),  # a self-consistent bundle whose expected value is simply wrong
    ("expand/h1_bce_alpha3/pruned/W1", True),
    ("metrics/sparse_edge/cosine", False),
]


@pytest.mark.parametrize("target,update_digest", CORRUPT)
def test_corrupted_tensor_fails_naming_it(bundle, tmp_path, target, update_digest):
    d = tmp_path / "bad"
    shutil.copytree(bundle, d)
    arrays = arrays_of(d)
    a = arrays[target].copy()
    flat = a.reshape(-1)
    flat[flat.size // 2] += 1.0 if "pruned" in target else 1e-6 * max(1.0, np.abs(a).max())
    arrays[target] = a
    manifest = None
    if update_digest:
        manifest = json.loads((d / golden.MANIFEST_NAME).read_text())
        manifest["tensors"][target]["sha256"] = golden._sha256(a)
    rewrite(d, arrays, manifest)
    result = invoke("check", str(d), "--impl", "numpy")
    assert result.exit_code == 1, result.output
    failing = [ln for ln in result.output.splitlines() if "FAIL" in ln and not ln.startswith("FAILED")]
    assert len(failing) == 1 and failing[0].startswith(target + " "), result.output
    assert ("SHA-256" in failing[0]) != update_digest
    assert "FAILED: 1 of" in result.output and target in result.output.splitlines()[-1]


def test_corrupted_input_fails_its_case(bundle, tmp_path):
    d = tmp_path / "bad_input"
    shutil.copytree(bundle, d)
    arrays = arrays_of(d)
    arrays["metrics/dense/W1"] = arrays["metrics/dense/W1"] * 2.0
    rewrite(d, arrays)
    report = golden.check_bundle(d, "numpy")
    assert report.failed and all(r.name.startswith("metrics/dense/") for r in report.failed)
    assert all("corrupted input metrics/dense/W1" in r.note for r in report.failed)


def _edit_manifest(d, change):
    m = json.loads((d / golden.MANIFEST_NAME).read_text())
    change(m)
    (d / golden.MANIFEST_NAME).write_text(json.dumps(m))


def _first(manifest, role):
    return next(e for e in manifest["tensors"].values() if e["role"] == role)


@pytest.mark.parametrize("value", [np.nan, "shape"])
def test_nan_or_misshapen_input_is_not_computed_on(bundle, tmp_path, value):
    d = tmp_path / "bad_input"
    shutil.copytree(bundle, d)
    arrays = arrays_of(d)
    name = "forward/h1_bce_noln_dense/X"
    arrays[name] = arrays[name][:, :-1] if value == "shape" else np.where(arrays[name] > 0, np.nan, arrays[name])
    rewrite(d, arrays)
    report = golden.check_bundle(d, "numpy")
    assert report.failed and all(r.name.startswith("forward/h1_bce_noln_dense/") for r in report.failed)
    assert all(f"corrupted input {name}" in r.note and "not computed" in r.note for r in report.failed)


def test_an_implementation_that_raises_gives_fail_rows(bundle, monkeypatch):
    def broken(cfg, inputs, dtype="float64"):
        raise RuntimeError("kernel launch failed\nsecond line")

    monkeypatch.setattr(golden, "compute_numpy", broken)
    report = golden.check_bundle(bundle, "numpy", only="metrics/")
    assert report.rows and len(report.failed) == len(report.rows)
    assert all(r.note == "the implementation raised RuntimeError: kernel launch failed" for r in report.failed)


def test_export_into_an_impossible_place_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FPEError, match="cannot create the bundle directory") as exc:
        golden.export_bundle(tmp_path / "file" / "bundle")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: (d / golden.MANIFEST_NAME).unlink(), "not a golden bundle"),
    (lambda d: (d / golden.MANIFEST_NAME).write_text(
        (d / golden.MANIFEST_NAME).read_text().replace('"format_version": 1', '"format_version": 99')),
     "format version 99"),
    (lambda d: (d / golden.NPZ_NAME).write_bytes(b"not a zip"), "cannot read"),
    (lambda d: (d / golden.MANIFEST_NAME).write_text("[1, 2]"), "JSON list, not a golden manifest"),
    (lambda d: _edit_manifest(d, lambda m: m.pop("tensors")), "'tensors' is missing"),
    (lambda d: _edit_manifest(d, lambda m: m.pop("cases")), "'cases' is missing"),
    (lambda d: _edit_manifest(d, lambda m: _first(m, "expected")["tol"].update(float32="big")),
     "tolerance 'big' for float32"),
    (lambda d: _edit_manifest(d, lambda m: _first(m, "input").update(shape="3x4")), "shape '3x4'"),
])
def test_bad_bundles_raise_one_line_errors(bundle, tmp_path, mutate, match):
    d = tmp_path / "b"
    shutil.copytree(bundle, d)
    mutate(d)
    with pytest.raises(FPEError, match=match) as exc:
        golden.check_bundle(d, "numpy")
    assert "\n" not in str(exc.value)


def test_bad_options_and_overwrite(bundle, monkeypatch):
    with pytest.raises(FPEError, match="already holds a bundle"):
        golden.export_bundle(bundle)
    with pytest.raises(FPEError, match="CPU only"):
        golden.check_bundle(bundle, "numpy", device="cuda")
    with pytest.raises(FPEError, match="--only"):
        golden.check_bundle(bundle, "numpy", only="no-such-tensor")
    monkeypatch.setitem(sys.modules, "fpe_ref.parity.torch_ref", None)  # as if torch were not installed
    monkeypatch.delattr(fpe_ref.parity, "torch_ref", raising=False)
    with pytest.raises(FPEError, match=r"pip install 'fpe-ref\[torch\]'"):
        golden.check_bundle(bundle, "torch")


@pytest.mark.parametrize("corrupt", [False, True])
def test_cli_main_exit_codes(bundle, tmp_path, monkeypatch, capsys, corrupt):
    """Through ``cli.main``: a missing bundle is a one-line error (exit 2), a failed check exits 1."""
    import cli

    d = tmp_path / "missing"
    if corrupt:
        shutil.copytree(bundle, d)
        arrays = arrays_of(d)
        arrays["metrics/dense/gram"] = arrays["metrics/dense/gram"] + 1.0
        rewrite(d, arrays)
    monkeypatch.setattr(sys, "argv", ["fpe", "golden", "check", str(d), "--impl", "numpy", "--only", "metrics/"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    if corrupt:
        assert exc.value.code == 1
    else:
        assert exc.value.code == 2 and err.startswith("Error: ") and err.count("\n") == 1, err


def test_only_restricts_the_check(bundle):
    report = golden.check_bundle(bundle, "numpy", only="metrics/")
    assert report.rows and all(r.name.startswith("metrics/") for r in report.rows) and not report.failed


# ---------------------------------------------------------------- check: torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_check_passes_on_cpu(bundle, dtype):
    pytest.importorskip("torch")
    result = invoke("check", str(bundle), "--impl", "torch", "--device", "cpu", "--dtype", dtype)
    assert result.exit_code == 0, result.output
    assert "impl torch" in result.output and "passed:" in result.output and "FAIL" not in result.output


def test_committed_bundle_is_what_this_code_exports(bundle):
    """results/parity/bundle is regenerated, not stale: same inputs bit for bit, expected within the check.

    The bundle's FPE masks come from golden's own split generator, so a change to
    ``splits.random_split`` (or any other module) that alters a fresh export fails here.
    """
    from pathlib import Path

    committed = Path(__file__).resolve().parents[2] / "results" / "parity" / "bundle"
    old = json.loads((committed / golden.MANIFEST_NAME).read_text())["tensors"]
    new = json.loads((bundle / golden.MANIFEST_NAME).read_text())["tensors"]
    assert sorted(old) == sorted(new)
    inputs = [k for k, e in new.items() if e["role"] == "input"]
    assert inputs and [k for k in inputs if old[k]["sha256"] != new[k]["sha256"]] == []
    assert not golden.check_bundle(committed, "numpy").failed
