"""Real-data FPE workflow (fpe_ref.experiments.vision) and its commands, on tiny files the tests write."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fpe_ref.data.fashion_mnist import DEFAULT_DATA_DIR
from fpe_ref.errors import FPEError
from fpe_ref.mlp import MLP
from fpe_ref.experiments.runs import strip_timing
from fpe_ref.experiments.vision import (VisionConfig, load_records, parse_variant, per_class_accuracy, run_one,
                                       summarize, vision_train_config)

ALL = ("dense", "random", "gram", "two-four", "rewire", "dense-scratch", "sparse-scratch")


def write_embeddings(path: Path, d=8, C=3, n_train=150, n_test=60, seed=0) -> Path:
    """Gaussian blobs: class k has mean 4 e_k (learnable in a few epochs)."""
    rng = np.random.default_rng(seed)
    means = 4.0 * np.eye(C, d)

    def make(n):
        y = rng.integers(0, C, size=n)
        return (means[y] + rng.normal(size=(n, d))).astype(np.float32), y.astype(np.int64)

    Xtr, ytr = make(n_train)
    Xte, yte = make(n_test)
    np.savez(path, X_train=Xtr, y_train=ytr, X_test=Xte, y_test=yte)
    return path


def write_fmnist(d: Path, n_train=40, n_test=20) -> Path:
    rng = np.random.default_rng(0)

    def idx(arr):
        return bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape) + arr.tobytes()

    for stem, n in (("train", n_train), ("t10k", n_test)):
        (d / f"{stem}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx(rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))))
        (d / f"{stem}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(np.arange(n, dtype=np.uint8) % 10)))
    return d


@pytest.fixture
def emb(tmp_path):
    return write_embeddings(tmp_path / "blobs.npz")


def tiny_cfg(path, **kw):
    base = dict(dataset="embeddings", data_path=str(path), pretrain_epochs=2, post_epochs=2, trials=1,
                variants=ALL, dtype="float64", rewire_every=2, gram_clusters=4,
                train=vision_train_config(batch_size=50, lr=0.03))
    base.update(kw)
    return VisionConfig(**base)


# ---------------------------------------------------------------- config and helpers
@pytest.mark.parametrize("kw,msg", [
    (dict(dataset="cifar"), "dataset must be"),
    (dict(dataset="embeddings", data_path=None), "needs a file"),
    (dict(variants=("dense", "sparse")), "unknown variant"),
    (dict(variants=("dense", "sparse-scratch")), "add 'random'"),
    (dict(variants=("dense", "dense")), "repeat"),
    (dict(variants=("dense@4",)), "only split variants"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(layers=1), "layers must be"),
    (dict(pretrain_epochs=-1), "pretrain_epochs"),
    (dict(rewire_fraction=2.0), "fraction"),
])
def test_config_bad_input(kw, msg):
    with pytest.raises(FPEError, match=msg):
        VisionConfig(**kw)


def test_parse_variant():
    assert parse_variant("random@4", 2) == ("random", 4)
    assert parse_variant("gram", 2) == ("gram", 2)
    with pytest.raises(FPEError, match="integer"):
        parse_variant("random@x", 2)
    with pytest.raises(FPEError, match=">= 2"):
        parse_variant("random@1", 2)


def test_per_class_accuracy_hand_example():
    # one-input, two-class net whose logits are (0, x): predicts 1 iff x > 0
    model = MLP({"W1": np.array([[0.0], [1.0]]), "b1": np.zeros(2)})
    X = np.array([[1.0], [-1.0], [2.0], [-3.0], [0.5]])
    y = np.array([1, 0, 0, 0, 1])
    assert per_class_accuracy(model, X, y, 3)[:2] == [2 / 3, 1.0]
    assert np.isnan(per_class_accuracy(model, X, y, 3)[2])


# ---------------------------------------------------------------- runs
def test_run_one_every_variant_holds_counts(emb):
    cfg = tiny_cfg(emb)
    rec = run_one(cfg, 4, 0)
    m = rec["models"]
    assert set(m) == set(ALL)
    nnz = rec["parent"]["nonzero_weights"]
    assert all(m[v]["nonzero_weights"] == nnz for v in ALL), {v: m[v]["nonzero_weights"] for v in ALL}
    assert m["random"]["sizes"] == [8, 8, 3] and m["dense"]["sizes"] == [8, 4, 3]
    assert m["sparse-scratch"]["sizes"] == m["random"]["sizes"]
    assert m["dense-scratch"]["epochs"] == m["sparse-scratch"]["epochs"] == 4
    assert m["rewire"]["rewire_events"] >= 1 and m["rewire"]["rewired_weights"] > 0
    assert m["rewire"]["test_acc_at_split"] == m["random"]["test_acc_at_split"]  # paired: the same split
    assert sum(m["gram"]["gram_cluster_sizes"]) == 8
    assert len(m["dense"]["per_class_test_acc"]) == 3 and m["dense"]["val_acc"] is not None
    assert len(m["random"]["curve"]["test_acc"]) == 2
    assert rec["parent"]["test_acc"] > 0.5  # the blobs are learnable


def test_run_one_is_seeded(emb):
    cfg = tiny_cfg(emb, variants=("dense", "random"))
    a, b = run_one(cfg, 4, 1), run_one(cfg, 4, 1)
    assert a == b


@pytest.mark.parametrize("layers", [5, 7])
def test_run_one_deep_alternating(tmp_path, layers):
    path = write_embeddings(tmp_path / "e.npz", d=12, C=4)
    cfg = tiny_cfg(path, layers=layers, variants=("dense", "random", "sparse-scratch"))
    rec = run_one(cfg, 4, 0)
    m = rec["models"]
    assert m["random"]["nonzero_weights"] == m["dense"]["nonzero_weights"] == m["sparse-scratch"]["nonzero_weights"]
    assert m["random"]["expanded_layers"] == list(range(1, layers, 2))
    assert m["random"]["layernorm"] > m["dense"]["layernorm"]  # LayerNorm on, and wider after expansion
    hidden = m["random"]["sizes"][1:-1]
    assert hidden == [8 if i % 2 == 0 else 4 for i in range(layers - 1)]


def test_summarize_two_trials(emb):
    cfg = tiny_cfg(emb, variants=("dense", "random"))
    recs = [{"key": {"hidden": 4, "trial": t}, **run_one(cfg, 4, t)} for t in range(2)]
    s = summarize(recs, cfg.variants)[4]
    assert s["dense"]["n"] == 2 and "ri" in s["random"] and "ri" not in s["dense"]
    assert s["random"]["acc_best_test_selected"] >= s["random"]["acc_mean"]
    assert "acc_best_val_selected" in s["random"]


# ---------------------------------------------------------------- commands
def _cli():
    from fpe_ref.commands import fpe

    return fpe


def _invoke(args):
    res = CliRunner().invoke(_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


TINY = ["--pretrain-epochs", "1", "--post-epochs", "1", "--trials", "2", "--jobs", "1", "--dtype", "float64",
        "--batch-size", "50", "--lr", "0.03"]


def test_cli_embeddings_single_layer_and_resume(emb, tmp_path):
    out = tmp_path / "out"
    args = ["reproduce", "embeddings", "--data", str(emb), "--hidden", "4", "--hidden", "6", "--gram-clusters", "4",
            "--out", str(out)] + TINY
    text = _invoke(args)
    assert "Relative improvement" in text and "Gram split" in text
    for f in ("runs.jsonl", "sweep.json", "tables.md", "summary.json", "fig5_embeddings.png"):
        assert (out / f).exists(), f
    lines = (out / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 4
    _invoke(args)  # resume: nothing new
    assert len((out / "runs.jsonl").read_text().splitlines()) == 4
    assert len(load_records(out)) == 4
    tables = (out / "tables.md").read_text()
    assert "best of T (val-selected)" in tables and "sparse mask from scratch" in tables


def test_cli_embeddings_deep(tmp_path):
    path = write_embeddings(tmp_path / "e.npz", d=12, C=4)
    out = tmp_path / "deep"
    _invoke(["reproduce", "embeddings", "--data", str(path), "--layers", "5", "--hidden", "4", "--out", str(out),
             "--no-baselines"] + TINY)
    summ = json.loads((out / "summary.json").read_text())
    assert set(summ["summary"]["4"]) == {"parent", "dense", "random"}
    assert (out / "tableA3_deep.png").exists()


def test_cli_other_settings_refused(emb, tmp_path):
    out = tmp_path / "out"
    _invoke(["reproduce", "embeddings", "--data", str(emb), "--hidden", "4", "--out", str(out), "--no-gram",
             "--no-baselines"] + TINY)
    res = CliRunner().invoke(_cli(), ["reproduce", "embeddings", "--data", str(emb), "--hidden", "4", "--out",
                                      str(out), "--no-baselines", "--no-gram", "--l2", "0.01"] + TINY)
    assert res.exit_code != 0 and "other options (train.l2: 1e-05 -> 0.01)" in str(res.exception)


def test_cli_data_path_is_absolute_and_changed_data_is_refused(emb, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ["reproduce", "embeddings", "--hidden", "4", "--out", str(out), "--no-gram", "--no-baselines"] + TINY
    _invoke(args + ["--data", str(emb)])
    n_runs = len((out / "runs.jsonl").read_text().splitlines())
    monkeypatch.chdir(emb.parent)  # the same file named relatively: the same sweep, nothing re-run
    _invoke(args + ["--data", "./" + emb.name])
    assert len((out / "runs.jsonl").read_text().splitlines()) == n_runs
    write_embeddings(emb, seed=1)  # other data under the same name
    res = CliRunner().invoke(_cli(), args + ["--data", str(emb)])
    assert res.exit_code != 0 and "data_sha1 differ" in str(res.exception)


@pytest.mark.parametrize("cmd,extra,files", [
    ("two-four", ["--hidden", "4"], ["tableA5_two_four.png"]),
    ("rewiring", ["--hidden", "4", "--every", "1", "--decay", "constant"], ["rewiring.png"]),
    ("alpha", ["--hidden", "4", "--alphas", "2", "--alphas", "4"], ["fig6d_alpha.png"]),
])
def test_cli_section_34_and_a7_commands(emb, tmp_path, cmd, extra, files):
    out = tmp_path / cmd
    text = _invoke(["reproduce", cmd, "--data", str(emb), "--out", str(out)] + extra + TINY)
    assert "Test accuracy" in text
    for f in ["tables.md", "summary.json"] + files:
        assert (out / f).exists(), f


def test_cli_pretrain_timing(emb, tmp_path):
    out = tmp_path / "pt"
    text = _invoke(["reproduce", "pretrain-timing", "--data", str(emb), "--hidden", "4", "--split-at", "0",
                    "--split-at", "2", "--total-epochs", "3", "--trials", "2", "--jobs", "1", "--batch-size", "50",
                    "--out", str(out)])
    assert "split at epoch" in text
    assert (out / "fig6b_pretrain_timing.png").exists()
    assert (out / "split_at_0" / "runs.jsonl").exists() and (out / "split_at_2" / "runs.jsonl").exists()


def test_cli_fashion_mnist_quick_on_tiny_idx(tmp_path):
    d = tmp_path / "fm"
    d.mkdir()
    write_fmnist(d)
    out = tmp_path / "out"
    text = _invoke(["reproduce", "fashion-mnist", "--quick", "--data-dir", str(d), "--hidden", "2", "--jobs", "1",
                    "--val-fraction", "0.25", "--out", str(out)])
    assert "Gram split" in text
    tables = (out / "tables.md").read_text()
    assert "Per-class test accuracy" in tables and "Ankle boot" in tables
    assert (out / "fig5a_fashion_mnist.png").exists()


@pytest.mark.parametrize("args,msg", [
    (["reproduce", "two-four", "--data", "X", "--data-dir", "Y"], None),
    (["reproduce", "pretrain-timing", "--split-at", "50", "--total-epochs", "40"], "split-at"),
    (["reproduce", "embeddings", "--data", "X", "--hidden", "1000000000000", "--out", "Y"],
     "training an MLP of sizes [8, 2000000000000, 3] (float32) needs"),
])
def test_cli_bad_input(tmp_path, emb, args, msg):
    args = [a if a != "X" else str(emb) for a in args]
    args = [a if a != "Y" else str(tmp_path) for a in args]
    res = CliRunner().invoke(_cli(), args)
    assert res.exit_code != 0
    assert isinstance(res.exception, FPEError) or "Error" in res.output
    if msg:
        assert msg in str(res.exception)


# ---------------------------------------------------------------- the real Debian files (quick)
@pytest.mark.skipif(not Path(DEFAULT_DATA_DIR).is_dir(), reason=f"{DEFAULT_DATA_DIR} absent")
def test_real_fashion_mnist_one_epoch_each():
    cfg = VisionConfig(pretrain_epochs=1, post_epochs=1, trials=1, variants=("random",))
    rec = run_one(cfg, 4, 0)
    assert rec["parent"]["test_acc"] > 0.3  # one epoch of a 4-neuron MLP on the real data (chance: 0.1)
    assert rec["models"]["random"]["nonzero_weights"] == rec["parent"]["nonzero_weights"] == 4 * 784 + 40
    assert rec["models"]["random"]["sizes"] == [784, 8, 10]
    assert len(rec["models"]["random"]["per_class_test_acc"]) == 10


def _assert_close_records(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_close_records(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_close_records(u, v, f"{path}[{i}]")
    elif isinstance(a, float):
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-9 * max(1.0, abs(a)), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_numba_trainer_equals_the_reference_in_float64(emb, monkeypatch):
    """--trainer numba: the same run to rounding, every model trained by the numba trainer."""
    import dataclasses

    from fpe_ref.experiments import trainers

    used = []

    def recording(name):
        t = trainers.TRAINERS[name]
        return dataclasses.replace(t, train_many=lambda *a, **k: used.append(name) or t.train_many(*a, **k))

    for name in ("numpy", "numba"):
        monkeypatch.setitem(trainers.TRAINERS, name, recording(name))
    variants = ("dense", "random", "gram", "dense-scratch", "sparse-scratch")
    ref = run_one(tiny_cfg(emb, variants=variants), 4, 0)
    assert used == ["numpy"] * 6  # parent, variants
    used.clear()
    fast = run_one(tiny_cfg(emb, variants=variants, trainer="numba-v1"), 4, 0)
    assert used == ["numba"] * 6
    _assert_close_records(ref, fast)


@pytest.mark.parametrize("kw, match", [
    (dict(variants=("dense", "random", "rewire")), "the rewire variant: .*RewiringAdam"),
    (dict(layers=5, variants=("dense", "random")), "layers=5, layer_norm=True"),
    (dict(layer_norm=True, variants=("dense", "random")), "layers=2, layer_norm=True: .*no LayerNorm"),
])
def test_numba_trainer_refuses_what_it_cannot_train_before_any_run(emb, kw, match):
    """Rewiring, depth and LayerNorm train with numpy only: --trainer numba is refused by the config."""
    tiny_cfg(emb, **kw)  # the reference trains them
    with pytest.raises(FPEError, match="the numba trainer cannot train " + match) as err:
        tiny_cfg(emb, trainer="numba-v1", **kw)
    assert "\n" not in str(err.value)


def test_unknown_trainer_is_refused(emb):
    with pytest.raises(FPEError, match="trainer must be one of"):
        tiny_cfg(emb, trainer="cuda")


def test_records_are_bitwise_equal_for_any_jobs(tmp_path):
    """--jobs 1 and --jobs 2 give the same records to the last bit (784 inputs: BLAS products big
    enough to be threaded where a run computes with more than one BLAS thread)."""
    data = write_fmnist(tmp_path, n_train=2000, n_test=200)
    recs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"j{jobs}"
        _invoke(["reproduce", "fashion-mnist", "--data-dir", str(data), "--hidden", "4", "--hidden", "8",
                 "--trials", "1", "--pretrain-epochs", "1", "--post-epochs", "1", "--jobs", jobs, "--out", str(out)])
        recs[jobs] = {r["run_id"]: strip_timing(r) for r in load_records(out)}
    assert len(recs["1"]) == 2 and recs["1"] == recs["2"]
