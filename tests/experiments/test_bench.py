"""fpe bench: a tiny configuration end to end, and the command's registration."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner


# fixed machine peaks (measuring them takes seconds): 1 GFLOP/s float64, 2 float32, 1 GB/s
PEAKS = {"matmul_n": 0, "matmul_flops_per_s": {"float32": 2e9, "float64": 1e9}, "copy_bytes": 0,
         "last_level_cache_bytes": 0, "copy_bytes_per_s_by_threads": {"1": 1e9}, "bandwidth_bytes_per_s": 1e9,
         "threads": 1}


def _fixed_peaks(monkeypatch, bench):
    monkeypatch.setattr(bench, "machine_peaks", lambda threads, n, copy_mib: dict(PEAKS, threads=threads))


def test_step_work_and_limit_on_a_hand_example():
    """[32, 8, 1] dense, batch 500, float32: W = 256 + 8 weights, P = 264 + 9 parameters.

    flops = 500 (6 * 264 - 2 * 256) = 536000 (no input gradient of the first layer);
    bytes = 4 (8 * 273 + 500 * 32 + 2 * 500 * 9) = 4 (2184 + 16000 + 9000) = 108736.
    """
    from fpe_ref.experiments import bench

    assert bench.step_work([32, 8, 1], [256, 8], 500, 4) == (536000, 108736)
    assert bench.step_work([32, 8, 1], [256, 8], 500, 8) == (536000, 2 * 108736)
    # the FPE alpha=2 child as sparse: the parent's 264 weights over 16 hidden units
    assert bench.step_work([32, 16, 1], [256, 8], 500, 4) == (536000, 4 * (8 * 281 + 16000 + 2 * 500 * 17))
    peaks = {"matmul_flops_per_s": {"float32": 1e9}, "bandwidth_bytes_per_s": 1e8}
    r = bench.roofline(536000, 108736, 2.17472, peaks, "float32")  # compute 0.536 ms, memory 1.08736 ms
    assert r["limit_bound"] == "memory" and r["limit_ms"] == pytest.approx(1.08736)
    assert r["fraction_of_limit"] == pytest.approx(0.5) and (r["flops"], r["bytes"]) == (536000, 108736)
    r = bench.roofline(536000, 108736, 1.0, dict(peaks, bandwidth_bytes_per_s=1e9), "float32")
    assert r["limit_bound"] == "compute" and r["limit_ms"] == pytest.approx(0.536)


def test_machine_peaks_on_small_sizes(monkeypatch):
    from fpe_ref.experiments import bench

    monkeypatch.setattr(bench, "_last_level_cache_bytes", lambda: 0)
    p = bench.machine_peaks(2, n=32, copy_mib=1, reps=1)
    assert set(p["matmul_flops_per_s"]) == {"float32", "float64"} and all(v > 0 for v in p["matmul_flops_per_s"].values())
    assert p["copy_bytes"] == 2**20 and set(p["copy_bytes_per_s_by_threads"]) == {"1", "2"}
    assert p["bandwidth_bytes_per_s"] == max(p["copy_bytes_per_s_by_threads"].values()) > 0
    assert "GB/s" in bench.peaks_line(p)


def test_quick_shrinks_only_quick():
    from fpe_ref.experiments import bench

    full = bench.BenchConfig.make()
    assert full == bench.BenchConfig() and full.model_list() == bench.MODELS and full.dtypes == ("float32", "float64")
    assert (full.alphas, full.min_reps, full.seconds_per_row, full.case_study_epochs, full.case_study_trials) == \
        ((2, 4, 8), 5, 2.0, 1000, 5) and full.case_study_torch_one
    q = bench.BenchConfig.make(quick=True)
    assert q.model_list() == bench.QUICK_MODELS and q.dtypes == ("float32",) and q.alphas == (2, 8)
    assert (q.case_study_epochs, q.case_study_trials, q.case_study_torch_one) == (20, 2, False)
    assert bench.BenchConfig.make(quick=True, dtypes=("float64",)).dtypes == ("float64",)  # options still apply


def test_bench_on_a_tiny_configuration(tmp_path, monkeypatch):
    from fpe_ref.experiments import bench

    monkeypatch.setattr(bench, "MODELS", (("boolean", 8, 2, 1),))
    _fixed_peaks(monkeypatch, bench)
    cfg = bench.BenchConfig(dtypes=("float64",), alphas=(2, 16), n_train=200, batch_size=100, min_reps=2,
                            seconds_per_row=0.0, case_study_epochs=2, case_study_trials=1, torch=False, jax=False,
                            threads=1)
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
    assert saved["machine_peaks"] == dict(PEAKS, threads=1)
    for r in rows:  # every row: its work and its limit under the (fixed) peaks
        assert {"flops", "bytes", "limit_ms", "fraction_of_limit", "limit_bound"} <= set(r)
        H = r["hidden"]
        w = [r["nnz"]["W1"], r["nnz"]["W2"]] if r["layout"] == "sparse" else [8 * H, H]  # masked-dense: every entry
        assert (r["flops"], r["bytes"]) == bench.step_work([8, H, 1], w, 100, 8)
        assert r["limit_ms"] == max(r["flops"] / 1e9, r["bytes"] / 1e9) * 1e3
        assert r["fraction_of_limit"] == r["limit_ms"] / r["ms_median"]
    masked = [r for r in rows if r["variant"] == "FPE alpha=2" and r["impl"] == "numpy"][0]
    assert masked["flops"] == 100 * (6 * (8 * 4 + 4) - 2 * 8 * 4) and masked["nnz"] == {"W1": 16, "W2": 2}
    text = bench.table(rec["steps"])
    assert "FPE alpha=2 (masked-dense, numpy)" in text and "limit ms" in text and "of limit" in text


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


@pytest.mark.parametrize("compile_works, torch_one", [(True, True), (False, False)])
def test_bench_with_torch_uses_the_parity_twin(tmp_path, monkeypatch, compile_works, torch_one):
    """With PyTorch: a torch row per variant; the torch case studies (one at a time unless
    --quick leaves it out, batched, compiled where compiling works, skipped with the reason
    where not) end where NumPy's does, and the fastest agreeing peer is named against our
    fastest way."""
    torch = pytest.importorskip("torch")
    from fpe_ref.experiments import bench
    from fpe_ref.parity import torch_ref

    monkeypatch.setattr(torch_ref, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", _compile_stand_in(compile_works))
    monkeypatch.setattr(bench, "MODELS", (("boolean", 8, 2, 1),))
    _fixed_peaks(monkeypatch, bench)
    monkeypatch.setattr(bench, "agreement", lambda: {"steps": 0, "numba_vs_numpy": 0.0, "batched_vs_one_at_a_time": 0.0,
                                                     "batched_vs_numpy": 0.0})
    cfg = bench.BenchConfig(dtypes=("float64",), alphas=(2,), n_train=200, batch_size=100, min_reps=2,
                            seconds_per_row=0.0, case_study_epochs=2, case_study_trials=1, torch=True, jax=False,
                            threads=1, case_study_torch_one=torch_one)
    rec = bench.run_bench(cfg, tmp_path, log=lambda s: None)
    torch_rows = {(r["variant"], r["layout"]) for r in rec["steps"] if r["impl"] == "torch"}
    assert torch_rows == {("dense parent", "dense"), ("FPE alpha=2", "masked-dense")}
    for r in rec["steps"]:
        if r["impl"] == "torch":  # the same work and limit as the NumPy row of the same model
            np_row = [n for n in rec["steps"] if n["variant"] == r["variant"] and n["impl"] == "numpy"][0]
            assert (r["flops"], r["bytes"], r["limit_ms"]) == (np_row["flops"], np_row["bytes"], np_row["limit_ms"])
    assert rec["environment_before"]["torch"]["threads"] == 1
    cs = rec["case_study"]
    peers = ({"torch, one model at a time"} if torch_one else set()) | {"torch, batched (bmm)"} | \
        ({bench.TORCH_COMPILE} if compile_works else set())
    assert set(cs["wall_s"]) == set(bench.OURS) | peers
    skipped = {} if torch_one else {"torch, one model at a time": "not run in --quick (case_study_torch_one=False)"}
    if compile_works:
        assert cs["skipped"] == skipped and cs["torch_compile_warmup_s"] > 0
    else:
        assert cs["skipped"] == {**skipped, bench.TORCH_COMPILE: "torch.compile failed on cpu: RuntimeError: "
                                                                 "InductorError: no working C++ compiler"}
        assert cs["torch_compile_warmup_s"] is None
    assert ("case_study_torch_over_batched" in rec["targets"]) == torch_one
    assert all(v <= 1e-12 for v in cs["max_acc_difference_vs_numpy"].values()) and all(cs["agrees"].values())
    f = cs["fastest"]
    assert f["torch"] == min(peers, key=cs["wall_s"].get) and f["ours"] == min(bench.OURS, key=cs["wall_s"].get)
    assert f["torch_over_ours"] == cs["wall_s"][f["torch"]] / cs["wall_s"][f["ours"]]
    t = rec["targets"]["case_study_fastest_torch_over_fastest_ours"]
    assert (t["value"], t["torch"], t["ours"]) == (f["torch_over_ours"], f["torch"], f["ours"])
    lines = "\n".join(bench.case_study_lines(cs))
    assert f"fastest PyTorch peer: {f['torch']}" in lines and ("skipped" in lines) != compile_works
    assert "torch ms" in bench.table(rec["steps"])


def test_bench_with_jax_uses_the_jax_twin(tmp_path, monkeypatch):
    """With JAX: a jax row per variant (same work as NumPy's, its jit warm-up untimed and
    recorded), and the "jax, jit + vmap" case study, which ends where NumPy's does and is named
    against our fastest way; the version is in the environment."""
    pytest.importorskip("jax")
    from fpe_ref.experiments import bench

    monkeypatch.setattr(bench, "MODELS", (("boolean", 8, 2, 1),))
    _fixed_peaks(monkeypatch, bench)
    monkeypatch.setattr(bench, "agreement", lambda: {"steps": 0, "numba_vs_numpy": 0.0, "batched_vs_one_at_a_time": 0.0,
                                                     "batched_vs_numpy": 0.0})
    cfg = bench.BenchConfig(dtypes=("float32", "float64"), alphas=(2,), n_train=200, batch_size=100, min_reps=2,
                            seconds_per_row=0.0, case_study_epochs=2, case_study_trials=1, torch=False, jax=True,
                            threads=1)
    rec = bench.run_bench(cfg, tmp_path, log=lambda s: None)
    jax_rows = [r for r in rec["steps"] if r["impl"] == "jax"]
    assert {(r["variant"], r["layout"], r["dtype"]) for r in jax_rows} == \
        {(v, lay, dt) for v, lay in (("dense parent", "dense"), ("FPE alpha=2", "masked-dense"))
         for dt in ("float32", "float64")}
    for r in jax_rows:
        np_row = [n for n in rec["steps"] if n["variant"] == r["variant"] and n["dtype"] == r["dtype"]
                  and n["impl"] == "numpy"][0]
        assert (r["flops"], r["bytes"], r["limit_ms"]) == (np_row["flops"], np_row["bytes"], np_row["limit_ms"])
        assert r["jit_warmup_s"] > 0 and r["reps"] >= 2 and r["ms_min"] <= r["ms_median"] <= r["ms_max"]
    import jax

    assert rec["environment_before"]["jax"]["version"] == jax.__version__
    cs = rec["case_study"]
    assert set(cs["wall_s"]) == set(bench.OURS) | {bench.JAX} and cs["skipped"] == {}
    assert cs["jax_jit_warmup_s"] > 0 and cs["torch_compile_warmup_s"] is None
    assert all(v <= 1e-12 for v in cs["max_acc_difference_vs_numpy"].values()) and all(cs["agrees"].values())
    f = cs["fastest"]
    assert f["jax"] == bench.JAX and f["torch"] is None
    assert f["jax_over_ours"] == cs["wall_s"][bench.JAX] / cs["wall_s"][f["ours"]]
    assert rec["targets"]["case_study_jax_over_fastest_ours"]["value"] == f["jax_over_ours"]
    lines = "\n".join(bench.case_study_lines(cs))
    assert f"fastest JAX peer: {bench.JAX}" in lines and "PyTorch peer" not in lines
    text = bench.table(rec["steps"])
    assert "jax ms" in text and "(dense, jax)" not in text  # jax on the NumPy lines


def test_bench_without_jax_says_why(tmp_path, monkeypatch):
    """jax not importable: no jax row, and the case study's skipped names the reason; jax=False: silent."""
    from fpe_ref.experiments import bench

    why = "jax is not installed (No module named 'jax'; the extra jax: pip install 'fpe-ref[jax]')"
    monkeypatch.setattr(bench, "_jax_ref", lambda cfg: (None, why if cfg.jax else "switched off (jax=False)"))
    monkeypatch.setattr(bench, "MODELS", (("boolean", 8, 2, 1),))
    _fixed_peaks(monkeypatch, bench)
    monkeypatch.setattr(bench, "agreement", lambda: {"steps": 0, "numba_vs_numpy": 0.0, "batched_vs_one_at_a_time": 0.0,
                                                     "batched_vs_numpy": 0.0})
    cfg = bench.BenchConfig(dtypes=("float64",), alphas=(), n_train=100, batch_size=100, min_reps=1,
                            seconds_per_row=0.0, case_study_epochs=2, case_study_trials=1, torch=False, jax=True,
                            threads=1)
    logged = []
    rec = bench.run_bench(cfg, tmp_path, log=logged.append)
    assert not [r for r in rec["steps"] if r["impl"] == "jax"]
    assert rec["case_study"]["skipped"] == {bench.JAX: why} and rec["environment_before"]["jax"] == why
    assert f"  jax rows: skipped ({why})" in logged
    assert f"  {bench.JAX:<36} skipped: {why}" in bench.case_study_lines(rec["case_study"])


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


def test_pinned_holds_every_thread_to_n_cpus_and_restores_them():
    """The JAX peer's thread pool is held to --threads by affinity; afterwards every thread is as before."""
    import os
    import threading

    from fpe_ref.experiments.bench import pinned

    avail = os.sched_getaffinity(0)
    if len(avail) < 2:
        pytest.skip("one CPU: nothing to pin")
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        tasks = lambda: [int(t) for t in os.listdir("/proc/self/task")]  # noqa: E731
        with pinned(1):
            assert all(len(os.sched_getaffinity(t)) == 1 for t in tasks())
        assert all(os.sched_getaffinity(t) == avail for t in tasks())
        with pinned(len(avail)):
            assert all(os.sched_getaffinity(t) == avail for t in tasks())
    finally:
        stop.set()
        worker.join()
