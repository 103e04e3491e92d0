"""Tests for the run store and its executors (fpe_ref.experiments.runs): keys, a store that survives a
cut line, resume after a simulated kill, identical records from identical seeds (serially, in
processes, on Dask), reuse from sibling stores, progress lines and the workers' thread limits.
The workload is the quick Boolean sweep (fpe_ref.experiments.boolean).
"""

from __future__ import annotations

import functools
import json
import os
import re

import pytest

from fpe_ref.errors import FPEError
from fpe_ref.experiments import boolean as bs
from fpe_ref.experiments.runs import (
    TIMING_FIELDS,
    RunStore,
    canonical,
    local_executor,
    open_sweep_dir,
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


def test_open_sweep_dir_keeps_one_config_per_directory(tmp_path):
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


def test_finished_runs_of_a_named_sweep_are_reused(tmp_path):
    sweep(tmp_path / "a")
    calls = Killer()
    res = bs.run_boolean_sweep(QUICK, tmp_path / "b", GRIDS, quick=True, run_fn=calls, log=lambda s: None,
                               lookup=[RunStore(tmp_path / "a" / "runs.jsonl")])
    assert calls.calls == [] and res.reused == res.total
    b = RunStore(tmp_path / "b" / "runs.jsonl").records()
    assert all(r["reused_from"].endswith(os.path.join("a", "runs.jsonl")) for r in b)
    _compare(tmp_path / "a", tmp_path / "b")


def test_a_sibling_sweep_is_not_reused_unasked(tmp_path):
    sweep(tmp_path / "a")
    calls = Killer()
    res = bs.run_boolean_sweep(QUICK, tmp_path / "b", GRIDS, quick=True, run_fn=calls, log=lambda s: None)
    assert res.reused == 0 and len(calls.calls) == res.total


def _edit_first(path, edit):
    lines = path.read_text().splitlines()
    rec = json.loads(lines[0])
    edit(rec)
    path.write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n")
    return rec


def test_a_hand_edited_record_is_not_reused_but_computed(tmp_path):
    sweep(tmp_path / "a")
    path = tmp_path / "a" / "runs.jsonl"
    # a valid accuracy, but not the one the run computed
    rec = _edit_first(path, lambda r: r["models"]["clause"]["after"].update(test_acc=0.999))
    said = []
    calls = Killer()
    res = bs.run_boolean_sweep(QUICK, tmp_path / "b", GRIDS, quick=True, run_fn=calls, log=said.append,
                               lookup=[RunStore(path)])
    assert res.reused == res.total - 1 and len(calls.calls) == 1
    assert any("do not match its digest" in s and rec["run_id"] in s for s in said)


@pytest.mark.parametrize("edit, problem", [
    (lambda r: r.pop("key"), "field 'key' is missing"),
    (lambda r: r.update(run_id="0" * 16), "is not the hash of its key"),
    (lambda r: r["models"]["dense"]["after"].update(test_acc=1.5), "test_acc = 1.5 is not an accuracy"),
    (lambda r: r["models"]["dense"]["after"].update(test_acc="high"), "test_acc = 'high' is not an accuracy"),
])
def test_an_invalid_record_in_the_own_store_is_one_line_error(tmp_path, edit, problem):
    sweep(tmp_path / "a")
    _edit_first(tmp_path / "a" / "runs.jsonl", edit)
    with pytest.raises(FPEError, match=re.escape(problem)):
        sweep(tmp_path / "a")


# ---------------------------------------------------------------- progress and workers
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


def _children(pid):
    """Pids whose parent is ``pid`` (from /proc), zombies left out."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(name))
    return out


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", "from fpe_ref.commands import main; main()", "sweep", "boolean",
                             "--grid", "tables", "--trials", "1", "--dense-epochs", "400", "--fpe-epochs", "400",
                             "--n-samples", "4000", "--jobs", "2", "--out", str(tmp_path / "s")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.2)
            # the pool's workers (spawned) run "from multiprocessing.spawn import spawn_main"
            workers = [p for p in _children(proc.pid) if b"spawn_main" in open(f"/proc/{p}/cmdline", "rb").read()]
        assert len(workers) == 2, "the sweep's two workers did not start"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(map(_alive, workers)):
        time.sleep(0.1)
    assert not any(map(_alive, workers)), "workers outlived their killed parent"


@pytest.mark.parametrize("text", ["[1, 2, 3]", '"a string"', '{"config": [1]}', "{not json", "\xff\xfe"])
def test_a_malformed_sweep_json_is_one_line_error(tmp_path, text):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(FPEError, match=r"sweep\.json (is not a sweep description|is unreadable)"):
        sweep(tmp_path / "s")


@pytest.mark.parametrize("address", ["notanaddress", "tcp://host", "http://host:8786", "host:99999", ""])
def test_a_scheduler_that_is_not_an_address_is_refused_before_connecting(address):
    from fpe_ref.experiments.runs import check_scheduler_address

    with pytest.raises(FPEError, match="is not a Dask scheduler address"):
        check_scheduler_address(address)


def test_scheduler_addresses_that_are_accepted():
    from fpe_ref.experiments.runs import check_scheduler_address

    for address in ("tcp://10.0.0.1:8786", "localhost:8786", "tls://[::1]:8786"):
        assert check_scheduler_address(address) == address
