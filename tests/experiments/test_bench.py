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
    assert set(cs["wall_s"]) == set(bench.OURS) == {"numpy, one model at a time", "numba, one model at a time",
                                                     "numba, batched", "numba, trials in 2 worker processes"}
    assert all(v <= 1e-12 for v in cs["max_acc_difference_vs_numpy"].values())
    assert all(cs["agrees"].values()) and cs["skipped"] == {} and cs["torch_compile_warmup_s"] is None
    assert cs["fastest"]["ours"] == min(cs["wall_s"], key=cs["wall_s"].get) and cs["fastest"]["torch"] is None
    assert "case_study_fastest_torch_over_fastest_ours" not in saved["targets"]
    assert "FPE alpha=2 (masked-dense, numpy)" in bench.table(rec["steps"])


def _compile_stand_in(works):
    """torch.compile replaced for a test (the real one takes tens of seconds): the function
    itself, or one whose first call fails as a compiler would."""
    def compile(fn):
        if works:
            return fn

        def broken(*args):
            raise RuntimeError("InductorError: no working C++ compiler")
        return broken
    return compile


@pytest.mark.parametrize("compile_works", [True, False])
def test_bench_with_torch_uses_the_parity_twin(tmp_path, monkeypatch, compile_works):
    """With PyTorch: a torch row per variant; the torch case studies (one at a time, batched,
    compiled where compiling works, skipped with the reason where not) end where NumPy's does,
    and the fastest agreeing peer is named against our fastest way."""
    torch = pytest.importorskip("torch")
    from fpe_ref.experiments import bench
    from fpe_ref.parity import torch_ref

    monkeypatch.setattr(torch_ref, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", _compile_stand_in(compile_works))
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
    peers = {"torch, one model at a time", "torch, batched (bmm)"} | ({bench.TORCH_COMPILE} if compile_works else set())
    assert set(cs["wall_s"]) == set(bench.OURS) | peers
    if compile_works:
        assert cs["skipped"] == {} and cs["torch_compile_warmup_s"] > 0
    else:
        assert cs["skipped"] == {bench.TORCH_COMPILE: "torch.compile failed on cpu: RuntimeError: InductorError: "
                                                      "no working C++ compiler"}
        assert cs["torch_compile_warmup_s"] is None
    assert all(v <= 1e-12 for v in cs["max_acc_difference_vs_numpy"].values()) and all(cs["agrees"].values())
    f = cs["fastest"]
    assert f["torch"] == min(peers, key=cs["wall_s"].get) and f["ours"] == min(bench.OURS, key=cs["wall_s"].get)
    assert f["torch_over_ours"] == cs["wall_s"][f["torch"]] / cs["wall_s"][f["ours"]]
    t = rec["targets"]["case_study_fastest_torch_over_fastest_ours"]
    assert (t["value"], t["torch"], t["ours"]) == (f["torch_over_ours"], f["torch"], f["ours"])
    lines = "\n".join(bench.case_study_lines(cs))
    assert f"fastest PyTorch peer: {f['torch']}" in lines and ("skipped" in lines) != compile_works
    assert "torch ms" in bench.table(rec["steps"])


def test_a_way_that_differs_from_numpy_does_not_count():
    """The fastest peer is the fastest among the ways whose accuracies agree with NumPy's."""
    from fpe_ref.experiments import bench

    accs = {"dense": [0.5], "clause": [0.75], "random": [0.625]}
    wrong = {"dense": [0.5], "clause": [0.5], "random": [0.625]}
    walls = {"numpy, one model at a time": 9.0, "numba, batched": 2.0, "torch, batched (bmm)": 1.0,
             "torch, one model at a time": 4.0}
    cs = bench._summarize_case_study(walls, {n: wrong if n == "torch, batched (bmm)" else accs for n in walls},
                                     n_test=1000)
    assert cs["agrees"] == {n: n != "torch, batched (bmm)" for n in walls}
    assert (cs["fastest"]["ours"], cs["fastest"]["torch"]) == ("numba, batched", "torch, one model at a time")
    assert cs["fastest"]["torch_over_ours"] == 2.0
    assert "DIFFERS: not counted" in "\n".join(bench.case_study_lines({**cs, "wall_s": walls, "skipped": {}}))


def test_bench_command_is_registered():
    from fpe_ref.commands import fpe

    result = CliRunner().invoke(fpe, ["bench", "--help"])
    assert result.exit_code == 0 and "--quick" in result.output and "--threads" in result.output
