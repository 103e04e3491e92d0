"""fpe bench: a tiny configuration end to end, and the command's registration."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner


def test_bench_on_a_tiny_configuration(tmp_path, monkeypatch):
    from fpe_ref.experiments import bench

    monkeypatch.setattr(bench, "MODELS", (("boolean", 8, 2, 1),))
    cfg = bench.BenchConfig(dtypes=("float64",), alphas=(2, 16), n_train=200, batch_size=100, min_reps=2,
                            seconds_per_row=0.0, case_study_epochs=2, case_study_trials=1, torch=False, threads=1)
    monkeypatch.setattr(bench, "agreement", lambda: {"steps": 0, "numba_vs_numpy": 0.0, "batched_vs_one_at_a_time": 0.0,
                                                     "batched_vs_numpy": 0.0})
    rec = bench.run_bench(cfg, tmp_path, log=lambda s: None)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["format_version"] == 1 and saved["config"]["threads"] == 1
    assert len(saved["environment_before"]["load_average"]) == 3
    rows = saved["steps"]
    assert {(r["variant"], r["impl"]) for r in rows} == {("dense parent", "numpy"), ("dense parent", "numba"),
                                                          ("FPE alpha=2", "numpy"), ("FPE alpha=2", "numba")}
    dense = [r for r in rows if r["variant"] == "dense parent" and r["impl"] == "numpy"][0]
    assert dense["x_dense"] == 1.0 and dense["ms_min"] <= dense["ms_median"] <= dense["ms_max"] and dense["reps"] >= 2
    cs = saved["case_study"]
    assert set(cs["wall_s"]) == {"numpy, one model at a time", "numba, one model at a time", "numba, batched"}
    assert all(v <= 1e-12 for v in cs["max_acc_difference_vs_numpy"].values())
    assert "FPE alpha=2 (masked-dense, numpy)" in bench.table(rec["steps"])


def test_bench_with_torch_uses_the_parity_twin(tmp_path, monkeypatch):
    """With PyTorch: a torch row per variant, and the torch case study ends where NumPy's does."""
    pytest.importorskip("torch")
    from fpe_ref.experiments import bench

    monkeypatch.setattr(bench, "MODELS", (("boolean", 8, 2, 1),))
    monkeypatch.setattr(bench, "agreement", lambda: {"steps": 0, "numba_vs_numpy": 0.0, "batched_vs_one_at_a_time": 0.0,
                                                     "batched_vs_numpy": 0.0})
    cfg = bench.BenchConfig(dtypes=("float64",), alphas=(2,), n_train=200, batch_size=100, min_reps=2,
                            seconds_per_row=0.0, case_study_epochs=2, case_study_trials=1, torch=True, threads=1)
    rec = bench.run_bench(cfg, tmp_path, log=lambda s: None)
    torch_rows = {(r["variant"], r["layout"]) for r in rec["steps"] if r["impl"] == "torch"}
    assert torch_rows == {("dense parent", "dense"), ("FPE alpha=2", "masked-dense")}
    assert rec["environment_before"]["torch"]["threads"] == 1
    cs = rec["case_study"]
    assert "torch, one model at a time" in cs["wall_s"]
    assert all(v <= 1e-12 for v in cs["max_acc_difference_vs_numpy"].values())
    assert "torch ms" in bench.table(rec["steps"])


def test_bench_command_is_registered():
    from fpe_ref.commands import fpe

    result = CliRunner().invoke(fpe, ["bench", "--help"])
    assert result.exit_code == 0 and "--quick" in result.output and "--threads" in result.output
