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


# ---------------------------------------------------------------- tie keys against memory order
EXPAND_CASES = list(golden.TIE_DEFEATS)


def case_inputs(bundle, case):
    manifest, arrays = golden.load_bundle(bundle)
    return manifest["cases"][case], {k[len(case) + 1:]: v for k, v in arrays.items()
                                     if k.startswith(case + "/") and manifest["tensors"][k]["role"] == "input"}


def test_tie_defeats_cover_every_expand_case():
    expand_cases = [c.name for c in golden.canonical_cases() if c.section == "expand"]
    assert sorted(golden.TIE_DEFEATS) == sorted(expand_cases)
    for order in golden.TIE_ORDERS:  # each memory order is defeated by at least two cases
        assert sum(order in v for v in golden.TIE_DEFEATS.values()) >= 2, order
    for c in golden.canonical_cases():
        if c.section == "expand" and c.config["alpha"] >= 3:
            assert set(golden.TIE_DEFEATS[c.name]) == set(golden.TIE_ORDERS), c.name


@pytest.mark.parametrize("case", EXPAND_CASES)
def test_stored_tie_keys_defeat_memory_order(bundle, case):
    """Breaking the cut-off's ties by memory order (or its reverse) prunes other copies than the stored key."""
    cfg, inputs = case_inputs(bundle, case)
    assert set(golden.TIE_DEFEATS[case]) <= set(golden.tie_orders_defeated(cfg, inputs))
    assert golden.tie_key_problem(case, cfg, inputs) is None
    keys = golden.memory_order_keys(5)
    np.testing.assert_array_equal(np.lexsort((keys["memory"], np.zeros(5))), np.arange(5))
    np.testing.assert_array_equal(np.lexsort((keys["reversed"], np.zeros(5))), np.arange(5)[::-1])


@pytest.mark.parametrize("case,order", [(c, o) for c, orders in golden.TIE_DEFEATS.items() for o in orders])
def test_export_refuses_a_key_in_memory_order(tmp_path, monkeypatch, case, order):
    build = golden.build_inputs

    def memory_keyed(c):
        inputs = build(c)
        if c.name == case:
            inputs["tie_key"] = golden.memory_order_keys(len(inputs["tie_key"]))[order]
        return inputs

    monkeypatch.setattr(golden, "build_inputs", memory_keyed)
    with pytest.raises(FPEError, match=f"{case}: .* tie-breaking by {order} memory order") as exc:
        golden.export_bundle(tmp_path / "b")
    assert "\n" not in str(exc.value)


def test_export_refuses_a_key_that_float32_rounding_changes(tmp_path, monkeypatch):
    """The two tied copies at the cut-off get keys 0.5 and 0.5 + 1e-12, equal in float32."""
    build = golden.build_inputs
    case = "expand/h1_xent_alpha2"  # unmasked, so candidate k of W2' is n1 + its row-major index

    def blurred(c):
        inputs = build(c)
        if c.name == case:
            ref = golden.compute_numpy(c.config, inputs)["mask/W2"]
            mem = golden.compute_numpy(c.config, {**inputs, "tie_key": golden.memory_order_keys(
                len(inputs["tie_key"]))["memory"]})["mask/W2"]
            n1 = int(inputs["split"].sum())
            (p,), (q,) = np.flatnonzero((ref == 0) & (mem == 1)), np.flatnonzero((ref == 1) & (mem == 0))
            key = inputs["tie_key"].copy()
            key[n1 + p], key[n1 + q] = 0.5, 0.5 + 1e-12  # the key still prunes p; in float32, memory order decides
            inputs["tie_key"] = key
        return inputs

    monkeypatch.setattr(golden, "build_inputs", blurred)
    with pytest.raises(FPEError, match=f"{case}: the tie key rounded to float32 prunes other weights"):
        golden.export_bundle(tmp_path / "b")


def _expand_as_documented(cfg, x, tie):
    """Alg. A1 written from docs/golden.md section 4, breaking ties by the key, by memory order or reversed."""
    L, alpha = cfg["layer"], cfg["alpha"]
    P = {k[len("parent/"):]: v for k, v in x.items() if k.startswith("parent/")}
    Mold = {k[len("parent_mask/"):]: v == 1 for k, v in x.items() if k.startswith("parent_mask/")}
    W, Wn = P[f"W{L}"], P[f"W{L + 1}"]
    M, Mn = Mold.get(f"W{L}", np.ones(W.shape, bool)), Mold.get(f"W{L + 1}", np.ones(Wn.shape, bool))
    parent_of = np.arange(W.shape[0] * alpha) // alpha
    M1 = (x["split"] == 1) & M[parent_of]
    M2 = Mn[:, parent_of].copy()
    W1, W2 = W[parent_of] * M1, Wn[:, parent_of].copy()
    excess = int(M1.sum() + M2.sum() - M.sum() - Mn.sum())
    pos = [np.argwhere(M1), np.argwhere(M2)]
    mags = np.concatenate([np.abs(W1[M1]), np.abs(W2[M2])])
    if tie == "key":
        order = np.lexsort((x["tie_key"], mags))
    elif tie == "memory":  # a stable sort by |w| alone: ties stay in memory order
        order = np.argsort(mags, kind="stable")
    else:  # ties in reversed memory order
        order = mags.size - 1 - np.argsort(mags[::-1], kind="stable")
    prune = order[:excess]
    n1 = len(pos[0])
    out = {}
    for name, Wc, Mc, sel in ((f"W{L}", W1, M1, prune[prune < n1]), (f"W{L + 1}", W2, M2, prune[prune >= n1] - n1)):
        p = pos[0 if name == f"W{L}" else 1][sel]
        Mc[p[:, 0], p[:, 1]] = False
        Wc[~Mc] = 0.0
        out[f"mask/{name}"], out[f"pruned/{name}"] = Mc, p[np.lexsort((p[:, 1], p[:, 0]))].reshape(-1, 2)
    for k, v in P.items():
        copied = k in (f"b{L}", f"ln{L}.gamma", f"ln{L}.beta")
        out[f"param/{k}"] = W1 if k == f"W{L}" else W2 if k == f"W{L + 1}" else v[parent_of] if copied else v
    return out


def _tie_impl(tie):
    def impl(config, inputs, dtype, device):
        if config["section"] != "expand":
            raise NotImplementedError("expand only")
        return _expand_as_documented(config, inputs, tie)
    return impl


@pytest.fixture
def plugin_module(monkeypatch):
    """``plugin_module(name, **callables)``: an importable module for ``--impl name:callable``."""
    import types

    def make(name, **attrs):
        mod = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        monkeypatch.setitem(sys.modules, name, mod)
        return name
    return make


@pytest.mark.parametrize("tie", ["key", "memory", "reversed"])
def test_memory_order_tie_breaking_fails_the_expand_section(bundle, plugin_module, tie):
    mod = plugin_module("golden_plugin_ties", memory=_tie_impl("memory"), reversed=_tie_impl("reversed"),
                        key=_tie_impl("key"))
    result = invoke("check", str(bundle), "--impl", f"{mod}:{tie}", "--only", "expand/")
    report = golden.check_bundle(bundle, f"{mod}:{tie}", only="expand/")
    assert len(report.rows) == 3 * 2 + 3 * 2 + 22 and not report.not_implemented
    if tie == "key":
        assert result.exit_code == 0 and not report.failed, result.output
        return
    assert result.exit_code == 1, result.output
    failed_cases = {r.name.rsplit("/", 2)[0] for r in report.failed}
    assert failed_cases == {c for c, orders in golden.TIE_DEFEATS.items() if tie in orders}
    assert {r.name.split("/")[2] for r in report.failed} <= {"mask", "pruned", "param"}
    assert any("/mask/" in r.name for r in report.failed)


# ---------------------------------------------------------------- check: any implementation
NUMPY_TWIN = '''
from fpe_ref.parity import golden

CALLS = []


def compute(config, inputs, dtype, device):
    """fpe-ref's own code behind the plugin interface."""
    CALLS.append((config["section"], dtype, device, sorted(inputs), {v.dtype.name for v in inputs.values()}))
    return golden.compute_numpy(config, inputs, dtype)


def forward_and_metrics(config, inputs, dtype, device):
    if config["section"] not in ("forward", "metrics"):
        raise NotImplementedError(f"no {config['section']} yet")
    return golden.compute_numpy(config, inputs, dtype)


def partly_wrong(config, inputs, dtype, device):
    if config["section"] == "adam":
        raise NotImplementedError
    out = golden.compute_numpy(config, inputs, dtype)
    if config["section"] == "metrics":
        out["gram"] = 2 * out["gram"]
    return out


def raises(config, inputs, dtype, device):
    raise RuntimeError("device lost\\nmore text")


def exits(config, inputs, dtype, device):
    import sys
    sys.exit(5)


def returns_a_list(config, inputs, dtype, device):
    return [1.0]


class Impl:
    @staticmethod
    def run(config, inputs, dtype, device):
        return golden.compute_numpy(config, inputs, dtype)
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder holding numpy_twin.py, as the current directory; sys.path and the plugin modules restored after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "golden_plugin_twin.py").write_text(NUMPY_TWIN)
    monkeypatch.chdir(d)
    before = set(sys.modules)
    yield d
    for name in set(sys.modules) - before:
        if name.startswith(("golden_plugin_", "fpe_golden_impl_")):
            del sys.modules[name]


@pytest.mark.parametrize("form", ["module", "file", "relative-file", "dotted"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_plugged_in_implementation_passes(bundle, plugin_dir, form, dtype):
    spec = {"module": "golden_plugin_twin:compute", "file": f"{plugin_dir / 'golden_plugin_twin.py'}:compute",
            "relative-file": "./golden_plugin_twin.py:compute", "dotted": "golden_plugin_twin:Impl.run"}[form]
    result = invoke("check", str(bundle), "--impl", spec, "--dtype", dtype)
    assert result.exit_code == 0, result.output
    n = len([e for e in json.loads((bundle / golden.MANIFEST_NAME).read_text())["tensors"].values()
             if e["role"] == "expected"])
    assert f"passed: {n} of {n} tensors" in result.output and "FAIL" not in result.output
    assert f"impl {spec} (plugin)" in result.output and f"manifest tolerances for {dtype}" in result.output


def test_a_plugin_receives_float64_copies_dtype_and_device(bundle, plugin_dir):
    golden.check_bundle(bundle, "golden_plugin_twin:compute", dtype="float32", only="metrics/")
    calls = sys.modules["golden_plugin_twin"].CALLS
    assert calls == [("metrics", "float32", "cpu", ["W1", "groups"], {"float64"})] * 2


def test_sections_not_implemented_are_not_failures(bundle, plugin_dir):
    result = invoke("check", str(bundle), "--impl", "golden_plugin_twin:forward_and_metrics")
    assert result.exit_code == 3, result.output
    report = golden.check_bundle(bundle, "golden_plugin_twin:forward_and_metrics")
    assert not report.failed and report.exit_status == 3
    assert {r.name.split("/")[0] for r in report.not_implemented} == {"expand", "adam"}
    assert {r.name.split("/")[0] for r in report.rows if r.ok} == {"forward", "metrics"}
    assert all(r.status == "NOT IMPLEMENTED" and r.note in ("no expand yet", "no adam yet") for r in report.not_implemented)
    lines = result.output.splitlines()
    k, n = len(report.not_implemented), len(report.rows)
    assert lines[-2].startswith(f"NOT IMPLEMENTED: {k} of {n} tensors, in 5 cases: expand/h1_xent_alpha2")
    assert lines[-1].startswith(f"passed: {n - k} of {n - k} implemented tensors")
    assert ["expand/*/mask", "6", "tensors", "NOT", "IMPLEMENTED"] in [ln.split() for ln in lines]


def test_failures_beside_sections_not_implemented_exit_1(bundle, plugin_dir):
    result = invoke("check", str(bundle), "--impl", "golden_plugin_twin:partly_wrong")
    assert result.exit_code == 1, result.output
    report = golden.check_bundle(bundle, "golden_plugin_twin:partly_wrong")
    assert [r.name for r in report.failed] == ["metrics/dense/gram", "metrics/sparse_edge/gram"]
    assert report.not_implemented and all(r.name.startswith("adam/") for r in report.not_implemented)
    assert result.output.splitlines()[-1].startswith("FAILED: 2 of ")


@pytest.mark.parametrize("callable_,note", [
    ("raises", "the implementation raised RuntimeError: device lost"),
    ("returns_a_list", "the implementation returned a list, not a dict of tensors"),
    ("exits", "the implementation raised SystemExit: 5"),
])
def test_a_plugin_that_raises_gives_fail_rows(bundle, plugin_dir, callable_, note):
    result = invoke("check", str(bundle), "--impl", f"golden_plugin_twin:{callable_}", "--only", "metrics/")
    assert result.exit_code == 1, result.output
    report = golden.check_bundle(bundle, f"golden_plugin_twin:{callable_}", only="metrics/")
    assert report.rows and len(report.failed) == len(report.rows) and not report.not_implemented
    assert all(r.note == note and r.status == "FAIL" for r in report.rows)


BAD_PLUGINS = {
    "no_callable.py": "x = 1\n",
    "import_fails.py": "raise ImportError('needs jax')\n",
    "syntax.py": "def f(:\n",
    "exits.py": "import sys\nsys.exit(4)\n",
}


@pytest.mark.parametrize("spec,match", [
    ("golden_plugin_twin", "--impl must be one of numpy, torch, MODULE:CALLABLE or path/to/file.py:CALLABLE"),
    ("golden_plugin_twin:", "--impl must be one of"),
    ("golden_plugin_twin:1x", "--impl must be one of"),
    ("golden_plugin_no_such_module:compute", "cannot import module golden_plugin_no_such_module "
                                             r"\(ModuleNotFoundError: No module named"),
    ("golden_plugin_twin:nothing", "module golden_plugin_twin has no attribute 'nothing'"),
    ("golden_plugin_twin:CALLS", "CALLS in module golden_plugin_twin is a list, not callable"),
    ("missing.py:compute", "file missing.py not found"),
    ("no_callable.py:compute", "no_callable.py has no attribute 'compute'"),
    ("no_callable.py:x", "x in no_callable.py is a int, not callable"),
    ("import_fails.py:f", "importing import_fails.py raised ImportError: needs jax"),
    ("syntax.py:f", "importing syntax.py raised SyntaxError"),
    ("exits.py:f", "importing exits.py raised SystemExit: 4"),
])
def test_a_plugin_that_cannot_be_loaded_is_one_line(bundle, plugin_dir, monkeypatch, capsys, spec, match):
    import cli

    for name, text in BAD_PLUGINS.items():
        (plugin_dir / name).write_text(text)
    with pytest.raises(FPEError, match=match) as exc:
        golden.check_bundle(bundle, spec)
    assert "\n" not in str(exc.value)
    monkeypatch.setattr(sys, "argv", ["fpe", "golden", "check", str(bundle), "--impl", spec])
    with pytest.raises(SystemExit) as code:
        cli.main()
    err = capsys.readouterr().err
    assert code.value.code == 2 and err.startswith("Error: --impl") and err.count("\n") == 1, err


def test_the_bundle_is_verified_before_a_plugin_is_called(bundle, tmp_path, plugin_module):
    """A corrupted input keeps its case from the plugin; a reshaped expected tensor with its bytes intact fails."""
    d = tmp_path / "bad"
    shutil.copytree(bundle, d)
    arrays = arrays_of(d)
    arrays["metrics/dense/W1"] = arrays["metrics/dense/W1"] + 1.0
    arrays["metrics/sparse_edge/gram"] = arrays["metrics/sparse_edge/gram"].reshape(-1)  # same SHA-256
    rewrite(d, arrays)
    seen = []

    def impl(config, inputs, dtype, device):
        seen.append(config["seed_stream"][2])
        return golden.compute_numpy(config, inputs, dtype)

    mod = plugin_module("golden_plugin_recorder", impl=impl)
    report = golden.check_bundle(d, f"{mod}:impl", only="metrics/")
    assert seen == ["metrics/sparse_edge"]
    assert {r.name for r in report.failed} == {r.name for r in report.rows if r.name.startswith("metrics/dense/")} | {
        "metrics/sparse_edge/gram"}
    gram = next(r for r in report.rows if r.name == "metrics/sparse_edge/gram")
    assert "stored tensor shape [144] differs from the manifest's [12, 12] (corrupted bundle)" in gram.note


# ---------------------------------------------------------------- what the comparison means at the edges
@pytest.mark.parametrize("x,ref,ok,max_rel", [
    (np.zeros(3), np.zeros(3), True, 0.0),  # all-zero reference: reproduced exactly ...
    (np.full(3, 1e-300), np.zeros(3), False, np.inf),  # ... or it fails, in every dtype
    (np.zeros((0, 2)), np.zeros((0, 2)), True, 0.0),  # no pruned positions
    (np.array(np.nan), np.array(np.nan), True, 0.0),  # undefined (cosine of < 2 non-zero rows) matches undefined
    (np.array(0.5), np.array(np.nan), False, np.nan),
    (np.array(np.nan), np.array(0.5), False, np.nan),
    (np.array([np.nan, 2.0 + 2e-12]), np.array([np.nan, 2.0]), True, 1e-12),  # the rest compared as usual
    (np.array([1.0, np.inf]), np.array([1.0, 2.0]), False, np.nan),
])
def test_compare_at_the_edges(x, ref, ok, max_rel):
    row = golden._compare("t", x, ref, 1e-10)
    assert row.ok == ok and row.shape == ref.shape, row
    np.testing.assert_allclose(row.max_rel, max_rel, rtol=1e-3)


def test_an_undefined_cosine_is_checked_as_nan(bundle, tmp_path, plugin_module):
    """A W1 with one non-zero row: the mean cosine is NaN, matched by NaN and failed by any number."""
    d = tmp_path / "one_row"
    shutil.copytree(bundle, d)
    arrays, manifest = arrays_of(d), json.loads((d / golden.MANIFEST_NAME).read_text())
    case = "metrics/dense"
    W1 = arrays[f"{case}/W1"].copy()
    W1[1:] = 0.0
    arrays[f"{case}/W1"] = W1
    expected = golden.compute_numpy(manifest["cases"][case], {"W1": W1, "groups": arrays[f"{case}/groups"]})
    assert np.isnan(expected["cosine"])
    for k, v in {"W1": W1, **expected}.items():
        arrays[f"{case}/{k}"] = np.asarray(v, dtype=np.float64)
        manifest["tensors"][f"{case}/{k}"]["sha256"] = golden._sha256(v)
    rewrite(d, arrays, manifest)
    assert not golden.check_bundle(d, "numpy", only=case).failed

    def zero_cosine(config, inputs, dtype, device):
        return {**golden.compute_numpy(config, inputs, dtype), "cosine": 0.0}

    mod = plugin_module("golden_plugin_zero_cosine", impl=zero_cosine)
    report = golden.check_bundle(d, f"{mod}:impl", only=case)
    assert [r.name for r in report.failed] == [f"{case}/cosine"]
    assert report.failed[0].note == "a number where the reference is NaN (undefined)"


def test_check_help_names_the_plugin_contract_and_exit_statuses():
    result = invoke("check", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for part in ("MODULE:CALLABLE", "CALLABLE(config, inputs, dtype, device)", "NotImplementedError",
                 "0 every checked tensor is within its tolerance", "1 some tensor fails",
                 "3 no tensor fails, but the implementation does not implement some cases", "2 bad input"):
        assert part in text, part


# ---------------------------------------------------------------- bundle files: damaged arrays, concurrent exports
def test_a_bundle_array_declaring_a_huge_shape_is_one_line(bundle, tmp_path):
    """golden.npz whose first member's header declares (10**6, 10**6): refused from the header, nothing allocated."""
    import io
    import zipfile

    d = tmp_path / "b"
    shutil.copytree(bundle, d)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    with zipfile.ZipFile(d / golden.NPZ_NAME, "w") as z:
        z.writestr("adam/h1_xent_fpe/X.npy", header.getvalue() + bytes(64))
    with pytest.raises(FPEError) as exc:
        golden.check_bundle(d, "numpy")
    assert str(exc.value) == (
        f"cannot read the golden bundle's arrays: adam/h1_xent_fpe/X in {d / golden.NPZ_NAME} (member "
        "adam/h1_xent_fpe/X.npy) declares shape (1000000, 1000000) float64 (8000000000000 bytes), more than the 64 "
        "bytes it holds: the file is corrupt or truncated")


def test_writers_into_one_folder_use_temporary_files_of_their_own(tmp_path, monkeypatch):
    """Writer A is interrupted, mid-file, by a whole export of writer B into the same folder: both finish, and
    the file in place is a complete one. (With one shared temporary name, B would truncate A's file and move
    it into place half-written, and A's os.replace would then fail.)"""
    path = os.fspath(tmp_path / golden.NPZ_NAME)
    a = {f"a/{i}": np.full(50, float(i)) for i in range(5)}
    b = {f"b/{i}": np.full(50, -float(i)) for i in range(5)}
    real, calls, temps = np.lib.format.write_array, [], []
    real_temp = golden._temp_file

    def record_temp(p):
        tmp, f = real_temp(p)
        temps.append(tmp)
        return tmp, f

    def write_array(f, array, **kw):
        calls.append(1)
        if len(calls) == 2:  # A has written one member: now B writes its whole file
            golden._write_npz(path, b)
        real(f, array, **kw)

    monkeypatch.setattr(golden, "_temp_file", record_temp)
    monkeypatch.setattr(np.lib.format, "write_array", write_array)
    golden._write_npz(path, a)
    monkeypatch.setattr(np.lib.format, "write_array", real)
    assert len(temps) == 2 and temps[0] != temps[1]
    with np.load(path, allow_pickle=False) as f:  # A replaced last: its file, complete
        assert sorted(f.files) == sorted(a)
        for k in a:
            np.testing.assert_array_equal(f[k], a[k])
    assert sorted(os.listdir(tmp_path)) == [golden.NPZ_NAME]  # no temporary file left behind


def test_concurrent_forced_exports_into_one_folder_give_the_one_bundle(bundle, tmp_path):
    import threading

    out, errors_ = tmp_path / "shared", []

    def export():
        try:
            golden.export_bundle(out, force=True)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors_.append(exc)

    threads = [threading.Thread(target=export) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors_ == []
    for f in (golden.NPZ_NAME, golden.MANIFEST_NAME):
        assert (out / f).read_bytes() == (bundle / f).read_bytes(), f
    assert sorted(os.listdir(out)) == sorted([golden.NPZ_NAME, golden.MANIFEST_NAME])


def test_export_records_its_provenance_beside_the_bundle(tmp_path):
    from click.testing import CliRunner

    from fpe_ref.commands import fpe

    res = CliRunner().invoke(fpe, ["golden", "export", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    prov = json.loads((tmp_path / "b" / "provenance.json").read_text())
    assert prov["config"]["command"] == "golden export" and prov["invocations"][0]["command"].startswith("fpe")
    res = CliRunner().invoke(fpe, ["golden", "export", str(tmp_path / "b")])  # refused without --force
    assert res.exit_code != 0 and len(json.loads((tmp_path / "b" / "provenance.json").read_text())["invocations"]) == 1
