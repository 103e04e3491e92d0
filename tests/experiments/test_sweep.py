"""Tests for the sweep runner (fpe_ref.experiments.runs), the Boolean grids (fpe_ref.experiments.boolean) and
``fpe report`` statistics (fpe_ref.experiments.boolean_report): resume after a simulated kill, identical records
from identical seeds (serially, in processes, on Dask), and a hand-computed statistics example.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os

import numpy as np
import pytest
from click.testing import CliRunner

from fpe_ref.experiments import boolean as bs
from fpe_ref.experiments import boolean_report as rp
from fpe_ref.errors import FPEError
from fpe_ref.experiments.runs import (
    TIMING_FIELDS,
    LineProgress,
    RunStore,
    canonical,
    local_executor,
    run_id,
    strip_timing,
)

QUICK = bs.quick_config()
GRIDS = ("tables", "fig3a")  # quick: 4 + 8 keys, 8 distinct runs x 2 trials -> 12 runs


def quick_keys(grids=GRIDS):
    return bs.plan(QUICK, grids, quick=True)


def sweep(out_dir, grids=GRIDS, **kw):
    kw.setdefault("lookup", [])
    kw.setdefault("log", lambda s: None)
    return bs.run_boolean_sweep(QUICK, out_dir, grids, quick=True, **kw)


def lines(path):
    with open(path, "rb") as f:
        return f.read().split(b"\n")


# ---------------------------------------------------------------- keys and the store
def test_run_id_ignores_key_order_and_sees_every_field():
    a = {"m": 32, "hidden": 8, "train": {"lr": 1e-3, "l1": 1e-7}}
    b = {"train": {"l1": 1e-7, "lr": 1e-3}, "hidden": 8, "m": 32}
    assert canonical(a) == canonical(b) and run_id(a) == run_id(b)
    assert run_id(a) != run_id({**a, "train": {"lr": 1e-3, "l1": 2e-7}})
    assert len(run_id(a)) == 16


def test_store_skips_a_cut_line_and_never_glues_onto_it(tmp_path):
    store = RunStore(tmp_path / "runs.jsonl")
    store.append({"run_id": "a", "x": 1})
    with open(store.path, "ab") as f:
        f.write(b'{"run_id": "b", "x": ')  # a line cut by a kill
    store.append({"run_id": "c", "x": 3})
    assert sorted(store.load()) == ["a", "c"]
    raw = lines(store.path)
    assert raw[-1] == b"" and raw[1] == b'{"run_id": "b", "x": '
    assert all(json.loads(line)["run_id"] in "ac" for line in (raw[0], raw[2]))


def test_store_first_record_of_an_id_wins(tmp_path):
    store = RunStore(tmp_path / "runs.jsonl")
    store.append({"run_id": "a", "x": 1})
    store.append({"run_id": "a", "x": 2})
    assert store.load()["a"]["x"] == 1


# ---------------------------------------------------------------- the plan
def test_paper_plan_counts_and_order():
    cfg = bs.SweepConfig()
    keys = bs.plan(cfg)
    ids = [run_id(k) for k in keys]
    assert len(keys) == 40 + 70 + 80 + 35 + 200
    assert len(set(ids)) == 305  # overlapping grids share runs
    assert {k["alpha"] for k in keys[:40]} == {2} and keys[0]["hidden"] == 8  # tables first
    assert sorted({k["m"] for k in keys[:40]}) == list(bs.TABLE_LITERALS)
    assert [k["trial"] for k in keys[:8]] == [0] * 8  # trial by trial: every cell gets trial 0 first
    assert all(k["m"] // k["k"] >= k["alpha"] for k in keys)  # no clause split with fewer clauses than alpha
    assert not any(k["m"] == 12 and k["alpha"] == 4 for k in keys)


def test_plan_rejects_unknown_grid():
    with pytest.raises(FPEError, match="unknown grid 'fig9'"):
        bs.plan(QUICK, ["fig9"], quick=True)


def test_key_round_trips_to_the_case_study_config():
    key = bs.key_for(bs.SweepConfig(), 32, 8, 4, 3)
    cfg = bs.case_config(json.loads(json.dumps(key)))
    assert (cfg.m, cfg.hidden, cfg.alpha, cfg.dense_epochs, cfg.train.betas) == (32, 8, 4, 1000, (0.9, 0.999))
    assert run_id(bs.key_for(bs.SweepConfig(), 32, 8, 4, 3)) == run_id(json.loads(json.dumps(key)))


@pytest.mark.parametrize("trainer", list(bs.TRAINERS))
def test_boolean_run_golden_numbers(trainer):
    """The trainer named in the key still computes what it computed when the sweep was run.

    Values from the committed core at the time of the sweep (quick config, m=16, h=4, alpha=2,
    trial 1). If a change of the training code moves them, stored runs of the same key are no
    longer reproducible: give the new code its own name in ``boolean_sweep.TRAINERS``. The
    numba trainer must give the NumPy reference's numbers (to rounding).
    """
    r = bs.boolean_run(bs.key_for(dataclasses.replace(QUICK, trainer=trainer), 16, 4, 2, 1))
    assert r["parent"]["test_acc"] == 0.45
    golden = {"dense": (0.4625, 1.82568243068483, -0.13623584980217562),
              "clause": (0.4875, 2.930785881287041, -0.04686258179105484),
              "random": (0.4625, 2.7660704237320783, -0.054191197427485)}
    for v, (acc, cap, cos) in golden.items():
        after = r["models"][v]["after"]
        assert after["test_acc"] == acc, v
        assert after["capacity"] == pytest.approx(cap, rel=1e-9), v
        assert after["cosine"] == pytest.approx(cos, rel=1e-9), v
    assert set(r["_arrays"]) >= {"parent/W1", "dense/W1", "clause/W1", "clause/mask:W1", "random/b1"}


@pytest.mark.parametrize("trainer, match", [("numpy-reference", "cannot be reproduced"), ("torch", "unknown trainer")])
def test_boolean_run_refuses_legacy_and_unknown_trainers(trainer, match):
    key = dict(quick_keys()[0], trainer=trainer)
    with pytest.raises(FPEError, match=match):
        bs.boolean_run(key)
    if trainer == "torch":
        with pytest.raises(FPEError, match="unknown trainer"):
            dataclasses.replace(QUICK, trainer=trainer)


def test_sweep_dir_holds_one_config(tmp_path):
    bs.open_store(tmp_path / "s", QUICK, quick=True)
    bs.open_store(tmp_path / "s", dataclasses.replace(QUICK, trials=3), quick=True)  # more trials: fine
    other = bs.quick_config(seed=1)
    with pytest.raises(FPEError, match="seed differ"):
        bs.open_store(tmp_path / "s", other, quick=True)


# ---------------------------------------------------------------- resume after a simulated kill
class Killer:
    """Runs ``boolean_run`` but raises on the ``kill_at``-th call (a run dying midway); counts calls."""

    def __init__(self, kill_at=None):
        self.kill_at, self.calls = kill_at, []

    def __call__(self, key):
        self.calls.append(run_id(key))
        if self.kill_at is not None and len(self.calls) == self.kill_at:
            raise RuntimeError("simulated kill")
        return bs.boolean_run(key)


def test_resume_after_a_run_raises_reruns_nothing_finished(tmp_path):
    out = tmp_path / "s"
    total = len({run_id(k) for k in quick_keys()})
    assert total == 10  # 12 keys, (m=16, h=4, alpha=2) shared by both grids
    first = Killer(kill_at=5)
    with pytest.raises(RuntimeError, match="simulated kill"):
        sweep(out, run_fn=first)
    store = RunStore(out / "runs.jsonl")
    finished = set(store.load())
    assert len(finished) == 4 and finished == set(first.calls[:4])
    before = lines(store.path)

    second = Killer()
    res = sweep(out, run_fn=second)
    assert not finished & set(second.calls)  # nothing finished is run again
    assert len(second.calls) == total - 4 and first.calls[4] in second.calls  # the killed run is redone
    assert (res.total, res.already, res.ran) == (total, 4, total - 4)
    assert lines(store.path)[:4] == before[:4]  # finished lines untouched
    assert len(store.records()) == total  # no duplicates

    third = Killer()
    res = sweep(out, run_fn=third)
    assert third.calls == [] and res.ran == 0


def _fail_on(bad_id, key):
    """Module-level (picklable) per-run function that dies on one run."""
    if run_id(key) == bad_id:
        raise RuntimeError("simulated kill")
    return bs.boolean_run(key)


def test_resume_after_a_run_raises_in_a_process_pool(tmp_path):
    out = tmp_path / "s"
    keys = quick_keys()
    ids = list(dict.fromkeys(run_id(k) for k in keys))
    bad = ids[5]
    with local_executor(2) as ex, pytest.raises(RuntimeError, match="simulated kill"):
        sweep(out, executor=ex, window=2, run_fn=functools.partial(_fail_on, bad))
    store = RunStore(out / "runs.jsonl")
    first = store.load()
    assert bad not in first and set(ids[:5]) <= set(first) and len(first) < len(ids)
    res = sweep(out)
    assert res.already == len(first) and res.ran == len(ids) - len(first)
    again = store.load()
    assert set(again) == set(ids) and len(store.records()) == len(ids)
    assert all(again[i] == first[i] for i in first)  # finished records untouched (timing included)


# ---------------------------------------------------------------- identical seeds, identical records
def _compare(a_dir, b_dir):
    a, b = RunStore(a_dir / "runs.jsonl").load(), RunStore(b_dir / "runs.jsonl").load()
    assert set(a) == set(b) and a
    for i in a:
        assert strip_timing(a[i]) == strip_timing(b[i]), f"run {i} differs beyond {TIMING_FIELDS}"


def test_two_invocations_same_seeds_identical_records(tmp_path):
    sweep(tmp_path / "a")
    sweep(tmp_path / "b")
    _compare(tmp_path / "a", tmp_path / "b")
    a = RunStore(tmp_path / "a" / "runs.jsonl").records()
    assert {f for f in TIMING_FIELDS if f != "reused_from"} <= set(a[0])


def test_process_pool_gives_the_serial_records(tmp_path):
    serial = sweep(tmp_path / "serial")
    with local_executor(2) as ex:
        pool = sweep(tmp_path / "pool", executor=ex)
    assert serial.ran == pool.ran == pool.total > 0  # every run computed, none reused
    pids = {r["pid"] for r in RunStore(tmp_path / "pool" / "runs.jsonl").records()}
    assert pids and os.getpid() not in pids, "the runs were not computed in the worker processes"
    assert {r["pid"] for r in RunStore(tmp_path / "serial" / "runs.jsonl").records()} == {os.getpid()}
    _compare(tmp_path / "serial", tmp_path / "pool")


def test_dask_executor_on_a_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    sweep(tmp_path / "serial", grids=("tables",))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        ex = client.get_executor()
        res = sweep(tmp_path / "dask", grids=("tables",), executor=ex)
    assert res.ran == res.total > 0
    _compare(tmp_path / "serial", tmp_path / "dask")


def test_finished_runs_of_a_sibling_sweep_are_reused(tmp_path):
    sweep(tmp_path / "a")
    calls = Killer()
    res = bs.run_boolean_sweep(QUICK, tmp_path / "b", GRIDS, quick=True, run_fn=calls, log=lambda s: None)
    assert calls.calls == [] and res.reused == res.total
    b = RunStore(tmp_path / "b" / "runs.jsonl").records()
    assert all(r["reused_from"].endswith(os.path.join("a", "runs.jsonl")) for r in b)
    _compare(tmp_path / "a", tmp_path / "b")


def test_progress_line_counts_and_eta():
    import io

    buf = io.StringIO()
    p = LineProgress(total=10, done=4, label="t", stream=buf)
    p.start()
    p.update(1)
    p.update(1)
    out = buf.getvalue().splitlines()
    assert out[0].startswith("[t] 4/10 runs done (40%), 0 this session") and out[0].endswith("ETA ?")
    assert out[-1].startswith("[t] 6/10 runs done (60%), 2 this session") and "ETA 0:00:00" in out[-1]


# ---------------------------------------------------------------- report statistics, by hand
def test_ratio_delta_method_and_welch_by_hand():
    dense = [0.8, 0.7, 0.9]  # mean 0.8, sd 0.1
    fpe = [0.9, 0.95, 1.0]  # mean 0.95, sd 0.05
    r = rp.ratio(fpe, dense)
    assert r["ratio"] == pytest.approx(0.95 / 0.8)  # 1.1875
    # SE = R sqrt((0.05^2/3)/0.95^2 + (0.1^2/3)/0.8^2) = 1.1875 * sqrt(0.00092336 + 0.00520833)
    assert r["se"] == pytest.approx(1.1875 * math.sqrt(0.000923361 + 0.005208333), rel=1e-6)
    assert r["se"] == pytest.approx(0.092987, abs=1e-6)
    # Welch: t = 0.15 / sqrt(0.05^2/3 + 0.1^2/3) = 2.32379; df = (a+b)^2 / (a^2/2 + b^2/2) = 2.94118
    a, b = 0.05 ** 2 / 3, 0.1 ** 2 / 3
    t = 0.15 / math.sqrt(a + b)
    df = (a + b) ** 2 / (a ** 2 / 2 + b ** 2 / 2)
    assert t == pytest.approx(2.32379, abs=1e-5) and df == pytest.approx(2.94118, abs=1e-5)
    from scipy import stats

    assert r["p"] == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9)
    assert 0.05 < r["p"] < 0.2 and r["sig"] is False  # 3 trials each: not significant


def test_ratio_marks_a_clear_difference_and_handles_degenerate_cells():
    r = rp.ratio([0.99, 0.98, 1.0, 0.99], [0.7, 0.72, 0.69, 0.71])
    assert r["sig"] and r["p"] < 1e-4
    one = rp.ratio([0.9], [0.8])
    assert one["ratio"] == pytest.approx(1.125) and math.isnan(one["se"]) and math.isnan(one["p"]) and not one["sig"]
    flat = rp.ratio([1.0, 1.0], [1.0, 1.0])
    assert flat["ratio"] == 1.0 and flat["se"] == 0.0 and math.isnan(flat["p"])
    empty = rp.ratio([], [0.8, 0.9])
    assert math.isnan(empty["ratio"]) and empty["n_a"] == 0


def test_mean_sd_se_by_hand():
    s = rp.mean_sd_se([1.0, 2.0, 4.0])  # mean 7/3; sd^2 = ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 7/3
    assert s["mean"] == pytest.approx(7 / 3) and s["sd"] == pytest.approx(math.sqrt(7 / 3))
    assert s["se"] == pytest.approx(math.sqrt(7 / 3) / math.sqrt(3)) and s["n"] == 3


def test_linfit_by_hand():
    exact = rp.linfit([1, 2, 3], [3, 5, 7])
    assert exact["slope"] == pytest.approx(2) and exact["intercept"] == pytest.approx(1) and exact["r2"] == pytest.approx(1)
    # x = 0,1,2,3; y = 0,2,1,3: slope = cov/var = 1.5/1.5... by hand: xbar 1.5, ybar 1.5,
    # Sxy = 2.25+(-0.25)(0.5)... = 4, Sxx = 5 -> slope 0.8, intercept 0.3; SSres = 1.8, SStot = 5 -> R^2 = 0.64
    f = rp.linfit([0, 1, 2, 3], [0, 2, 1, 3])
    assert (f["slope"], f["intercept"], f["r2"]) == pytest.approx((0.8, 0.3, 0.64))
    assert math.isnan(rp.linfit([1, 1], [2, 3])["slope"]) and rp.linfit([1, np.nan, 2], [1, 2, 3])["n"] == 2


def test_report_of_a_partial_grid_marks_missing_cells(tmp_path):
    out = tmp_path / "s"
    sweep(out, grids=("tables",))  # only the tables grid has runs
    written = rp.report(out)
    names = {os.path.basename(p) for p in written}
    assert names == {"report.md", "summary.json", "fig3ab.png", "fig3c.png", "fig4ab.png", "fig4c.png",
                     "fig_accuracy.png"}
    assert all(os.path.getsize(p) > 0 for p in written)
    md = (out / "report.md").read_text()
    assert "| tables | Tables A1/A2 (alpha 2) | 4/4 | 2/2 |" in md
    assert "| fig3a | Figures 3a, 4a, 4c | 2/8 | 1/4 |" in md  # (m=16, h=4, alpha=2) is shared with tables
    assert "| h=6 | 2 | 0/2 | — |" in md  # a missing Figure 3a cell
    assert "1.896 ± 0.377" in md  # the paper's Table A1 beside ours
    summ = json.loads((out / "summary.json").read_text())
    cell = next(c for c in summ["cells"] if c["m"] == 12 and c["alpha"] == 2)
    recs = [r for r in RunStore(out / "runs.jsonl").records() if r["key"]["m"] == 12]
    acc = [r["models"]["clause"]["after"]["test_acc"] for r in sorted(recs, key=lambda r: r["key"]["trial"])]
    den = [r["models"]["dense"]["after"]["test_acc"] for r in sorted(recs, key=lambda r: r["key"]["trial"])]
    assert cell["clause_vs_dense"]["test_acc"]["ratio"] == pytest.approx(np.mean(acc) / np.mean(den))


# ---------------------------------------------------------------- the CLI
def test_cli_sweep_then_report(tmp_path):
    from fpe_ref.commands import fpe

    out = str(tmp_path / "q")
    r = CliRunner().invoke(fpe, ["sweep", "boolean", "--quick", "--grid", "tables", "--jobs", "1", "--out", out])
    assert r.exit_code == 0, r.output
    assert "4 run now" in r.output
    r = CliRunner().invoke(fpe, ["sweep", "boolean", "--quick", "--grid", "tables", "--jobs", "1", "--out", out])
    assert r.exit_code == 0 and "4 already finished" in r.output and "0 run now" in r.output
    r = CliRunner().invoke(fpe, ["sweep", "boolean", "--quick", "--dry-run", "--out", out])
    assert r.exit_code == 0 and "tables" in r.output and "finished" in r.output
    r = CliRunner().invoke(fpe, ["report", out])
    assert r.exit_code == 0 and "report.md" in r.output


@pytest.mark.parametrize("args, match", [
    (["report", "/nonexistent/sweep"], "no runs.jsonl"),
    (["sweep", "boolean", "--quick", "--scheduler", "tcp://x:1"], "only used with --executor dask"),
    (["sweep", "boolean", "--quick", "--jobs", "-1"], "--jobs must be a positive integer"),
])
def test_cli_bad_input_is_one_fpe_error(tmp_path, args, match):
    from fpe_ref.commands import fpe

    if args[0] == "sweep":
        args = args + ["--out", str(tmp_path / "s")]
    r = CliRunner().invoke(fpe, args)
    assert isinstance(r.exception, FPEError) and match in str(r.exception)
    assert "\n" not in str(r.exception)


def test_local_workers_use_one_numba_thread_and_leave_the_parent_alone():
    """Workers start with one numba / BLAS thread; the parent's environment is never changed.

    numba re-reads NUMBA_NUM_THREADS at each compilation and raises when it differs from its
    running pool, so a sweep that set it in the parent broke the parent's later kernels.
    """
    from fpe_ref.fast import kernels as K

    names = ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    before = {name: os.environ.get(name) for name in names}
    with local_executor(1) as ex:
        assert ex.submit(K.max_threads).result() == int(before["NUMBA_NUM_THREADS"] or 1)  # a user's own setting wins
        for name in names:
            assert ex.submit(os.getenv, name).result() == (before[name] or "1"), name
    assert {name: os.environ.get(name) for name in names} == before


def test_open_sweep_dir_keeps_one_config_per_directory(tmp_path):
    from fpe_ref.experiments.runs import open_sweep_dir

    d = tmp_path / "s"
    meta = {"kind": "k", "quick": False, "config": {"lr": 1e-3, "trials": 5}}
    store = open_sweep_dir(d, meta, {"lr": 1e-3})
    assert store.path == os.path.join(d, "runs.jsonl")
    assert json.loads((d / "sweep.json").read_text()) == meta
    # more trials extend the sweep
    open_sweep_dir(d, dict(meta, config={"lr": 1e-3, "trials": 9}), {"lr": 1e-3})
    with pytest.raises(FPEError, match=r"\(lr differ\)"):
        open_sweep_dir(d, dict(meta, config={"lr": 2e-3, "trials": 9}), {"lr": 2e-3})
    with pytest.raises(FPEError, match=r"\(quick differ\)"):
        open_sweep_dir(d, dict(meta, quick=True), {"lr": 1e-3}, same=("kind", "quick"))
    with pytest.raises(FPEError, match=r"\(kind differ\)"):
        open_sweep_dir(d, dict(meta, kind="other"), {"lr": 1e-3})
    (d / "sweep.json").write_text("{not json")
    with pytest.raises(FPEError, match="unreadable"):
        open_sweep_dir(d, meta, {"lr": 1e-3})


def test_no_reuse_recomputes_what_a_sibling_sweep_finished(tmp_path):
    from fpe_ref.commands import fpe
    from fpe_ref.experiments.runs import strip_timing

    def sweep(name, *extra):
        res = CliRunner().invoke(fpe, ["sweep", "boolean", "--quick", "--grid", "tables", "--jobs", "1",
                                       "--trials", "1", "--out", str(tmp_path / name), *extra],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output, {r["run_id"]: r for r in RunStore(tmp_path / name / "runs.jsonl").records()}

    out_a, a = sweep("a")
    out_b, b = sweep("b")
    out_c, c = sweep("c", "--no-reuse")
    n = len(a)
    assert f"{n} reused from other sweeps, 0 run now" in out_b
    assert f"0 reused from other sweeps, {n} run now" in out_c
    assert all(b[k].get("reused_from") for k in b) and not any(c[k].get("reused_from") for k in c)
    assert {k: strip_timing(r) for k, r in a.items()} == {k: strip_timing(r) for k, r in c.items()}
