"""The run store and its executors: a grid of runs, resumable, through a ``concurrent.futures.Executor``.

Paper: none directly; this is the machinery behind the grids of independent trainings of
Sec. 3.2 (Figures 3 and 4, Tables A1/A2: ``fpe_ref.experiments.boolean``) and Sec. 3.3, 3.4
and A.7 (``fpe_ref.experiments.vision``).

The model
---------
A *run* is identified by its *key*: a JSON-able dict holding everything that determines its
result (for the Boolean sweep: ``m, k, hidden, alpha, trial, seed``, epochs, data size and the
whole training config). ``run_id(key)`` is a hash of the canonical JSON of the key, so two
runs with the same key are the same run, whichever grid asked for it.

A *store* is one ``runs.jsonl``: one JSON line per finished run, appended by the parent
process the moment the run's future completes. A run may also return arrays (its trained
weights) under ``"_arrays"``; the parent saves them to ``arrays/<run_id>.npz`` beside the
store before appending the line (the workers never write files, so a Dask cluster needs no
shared file system). Each line holds ``run_id``, ``key``, the
run's result fields and the timing fields ``TIMING_FIELDS`` (the only fields that differ
between two invocations with the same seeds).

Crash safety (the "kill" guarantees)
------------------------------------
* A line is written with one ``os.write`` on an ``O_APPEND`` descriptor under an exclusive
  ``flock`` and then ``fsync``-ed: a regular-file write is not split by a signal, so a
  finished run is either fully on disk or not at all, and two invocations appending to one
  store do not interleave.
* Should a line still be cut (power loss, full disk), readers skip lines that are not valid
  JSON (that run is simply run again), and ``append`` first terminates an unterminated last
  line so the next record never glues onto a broken one.

Resume: ``run_sweep`` loads the store, skips every key already there, and runs only the rest.
Killing a sweep (Ctrl-C, ``kill``, a run that raises) loses at most the runs in flight.

Executors
---------
``executor=None`` runs serially in this process (debuggable; what tests use).
``local_executor(jobs)`` is a ``ProcessPoolExecutor`` (spawned workers, BLAS and numba limited
to one thread each, so ``jobs`` workers use ``jobs`` cores). ``dask_executor(address)`` returns
dask.distributed's ``Client.get_executor()``: the same sweep on a Dask cluster, with
``fpe-ref`` installed on the workers (optional extra ``pip install fpe-ref[dask]``).

At most ``window`` runs are in flight at a time (submitted in plan order), so the plan's
order is the order of work and a failure leaves few runs to cancel.
"""

from __future__ import annotations

import concurrent.futures as cf
import fcntl
import hashlib
import json
import multiprocessing
import os
import socket
import sys
import time
from dataclasses import dataclass

from fpe_ref.errors import FPEError
from fpe_ref.experiments.outputs import write_json_atomic

# Fields that may differ between two invocations with the same seeds (excluded from identity checks).
TIMING_FIELDS = ("elapsed_s", "finished_at", "host", "pid", "reused_from")

STORE_NAME = "runs.jsonl"
ARRAYS_FIELD = "_arrays"  # a result's {name: ndarray}, saved to <store dir>/arrays/<run_id>.npz, not to the line
# Thread limits for the spawned workers. BLAS libraries read these once, when they load, and
# numba re-reads NUMBA_NUM_THREADS at every compilation (refusing a value that differs from its
# running pool), so they are put in the environment only for the instant a worker process is
# started (``_OneThreadSpawnProcess``), never left in the parent's: there they would also
# misreport the parent's own BLAS (already loaded) to ``fpe_ref.fast.threads.blas_threads``.
_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "NUMBA_NUM_THREADS")


# ---------------------------------------------------------------- keys
def canonical(key: dict) -> str:
    """The canonical JSON of a key (sorted keys, tuples as lists): equal keys give equal strings."""
    try:
        return json.dumps(key, sort_keys=True, separators=(",", ":"))
    except TypeError as exc:
        raise FPEError(f"run key is not JSON-serialisable: {exc}") from exc


def run_id(key: dict) -> str:
    """A 16-hex-digit id of the run: sha1 of ``canonical(key)``."""
    return hashlib.sha1(canonical(key).encode()).hexdigest()[:16]


def strip_timing(rec: dict) -> dict:
    """The record without ``TIMING_FIELDS``: what two invocations with the same seeds agree on."""
    return {k: v for k, v in rec.items() if k not in TIMING_FIELDS}


def record_digest(rec: dict) -> str:
    """sha1 of the record's canonical JSON, timing fields and the digest itself left out.

    Written into every new record (``"digest"``): a record edited by hand no longer matches it.
    """
    body = {k: v for k, v in strip_timing(rec).items() if k != "digest"}
    return hashlib.sha1(canonical(body).encode()).hexdigest()


_ACCURACY_FIELDS = ("test_acc", "val_acc", "train_acc")


def accuracy_problem(obj, where="") -> str | None:
    """The first accuracy field (``test_acc``, ``val_acc``, ``train_acc``) at any depth of ``obj``
    that is not a number in [0, 1] (lists: each element), or None."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            name = f"{where}.{k}" if where else k
            if k in _ACCURACY_FIELDS:
                for x in (v if isinstance(v, list) else [v]):
                    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0:
                        return f"{name} = {x!r} is not an accuracy in [0, 1]"
            else:
                found = accuracy_problem(v, name)
                if found:
                    return found
    return None


def record_problem(rec) -> str | None:
    """Why ``rec`` is not a valid run record, or None.

    A record is a JSON object with a ``run_id`` equal to the hash of its ``key`` (an object),
    a ``sweep`` kind, every accuracy field a number in [0, 1] (at any depth), and,
    where it has one, a ``digest`` equal to :func:`record_digest` (records written before
    digests existed have none).
    """
    if not isinstance(rec, dict):
        return f"a line holds {type(rec).__name__}, not a record object"
    for name, kind in (("run_id", str), ("key", dict), ("sweep", str)):
        if not isinstance(rec.get(name), kind):
            return f"field {name!r} is missing or not {'an object' if kind is dict else 'a string'}"
    if rec["run_id"] != run_id(rec["key"]):
        return f"run_id {rec['run_id']} is not the hash of its key"
    return content_problem(rec)


def content_problem(rec: dict) -> str | None:
    """An accuracy out of [0, 1] anywhere in ``rec``, or a ``digest`` it does not match; else None."""
    found = accuracy_problem(rec)
    if found:
        return found
    if "digest" in rec and rec["digest"] != record_digest(rec):
        return "its fields do not match its digest (edited after it was written)"
    return None


# ---------------------------------------------------------------- store
class RunStore:
    """One ``runs.jsonl``: load finished runs, append one run atomically (module docstring)."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return f"RunStore({self.path!r})"

    def lines(self) -> list:
        """Every JSON object in the file, in file order; a line that is not valid JSON is skipped."""
        out = []
        if not os.path.exists(self.path):
            return out
        with open(self.path, "rb") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue  # a cut line: that run is run again
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def records(self) -> list:
        """Every valid run record (a JSON object with a ``run_id``) in file order."""
        return [rec for rec in self.lines() if "run_id" in rec]

    def load(self, check: str | None = None, log=None) -> dict:
        """``{run_id: record}`` of the finished runs (the first record of an id wins).

        ``check`` validates every record (:func:`record_problem`): ``"strict"`` makes an
        invalid one a one-line ``FPEError`` naming the file, the run and the problem;
        ``"skip"`` leaves it out (said through ``log``), so that it is run again; ``None``
        takes the records as they are.
        """
        done = {}
        for rec in self.records():
            problem = record_problem(rec) if check else None
            if problem:
                msg = f"{self.path}: run {rec.get('run_id')}: {problem}"
                if check == "strict":
                    raise FPEError(msg + "; delete that line to run it again")
                if log is not None:
                    log(msg + "; not reused")
                continue
            done.setdefault(rec["run_id"], rec)
        return done

    def append(self, rec: dict) -> None:
        """Append ``rec`` as one line: one ``os.write`` under ``flock``, then ``fsync``."""
        data = (json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n").encode()
        d = os.path.dirname(self.path)
        if d:
            os.makedirs(d, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as f:  # terminate a line cut by an earlier crash
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        data = b"\n" + data
            view = memoryview(data)
            while view:  # one write in practice; loop only on a short write (full disk)
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def arrays_path(store: RunStore, rid: str) -> str:
    """Where the arrays of run ``rid`` live: ``<store dir>/arrays/<run_id>.npz``."""
    return os.path.join(os.path.dirname(os.path.abspath(store.path)), "arrays", f"{rid}.npz")


def save_arrays(store: RunStore, rid: str, arrays: dict) -> str:
    """Write ``arrays`` compressed (no pickles) via a temporary file and an atomic rename."""
    import numpy as np

    path = arrays_path(store, rid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)
    return path


def load_arrays(store: RunStore, rid: str) -> dict:
    """The arrays saved with run ``rid`` (``FPEError`` if there are none)."""
    import numpy as np

    path = arrays_path(store, rid)
    if not os.path.exists(path):
        raise FPEError(f"run {rid} has no saved arrays ({path})")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def open_sweep_dir(out_dir, meta: dict, signature: dict, same=("kind",), same_if_recorded=()) -> RunStore:
    """``out_dir/runs.jsonl`` of a sweep; writes ``out_dir/sweep.json`` (``meta``) or checks the one there.

    One directory holds one configuration, so that a report never mixes runs of different
    settings. ``signature`` is the configuration minus ``trials`` (more trials extend a
    sweep); the ``config`` stored in an existing ``sweep.json``, minus ``trials``, must equal
    it, and so must every top-level field named in ``same``, and every field named in
    ``same_if_recorded`` that the existing file holds (fields added after a sweep started,
    such as a data fingerprint). Otherwise ``FPEError`` names the fields that differ.
    ``meta`` is written atomically (temporary file, then rename).
    """
    os.makedirs(out_dir, exist_ok=True)
    meta_path = os.path.join(out_dir, "sweep.json")
    new_sig = json.loads(json.dumps(signature, default=list))
    if os.path.exists(meta_path):
        try:
            with open(meta_path) as f:
                old = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FPEError(f"{meta_path} is unreadable ({exc}); move it away or use another --out") from exc
        if not isinstance(old, dict) or not isinstance(old.get("config", {}), dict):
            raise FPEError(f"{meta_path} is not a sweep description (a JSON object with a 'config' object); "
                           "move it away or use another --out")
        old_sig = dict(old.get("config", {}))
        old_sig.pop("trials", None)
        diff = sorted(k for k in set(old_sig) | set(new_sig) if old_sig.get(k) != new_sig.get(k))
        diff += [name for name in same if old.get(name) != meta.get(name)]
        diff += [name for name in same_if_recorded if name in old and old[name] != meta.get(name)]
        if diff:
            raise FPEError(f"{out_dir} holds a sweep with other settings ({', '.join(diff)} differ); "
                           "use another --out")
    write_json_atomic(meta_path, meta)
    return RunStore(os.path.join(out_dir, STORE_NAME))


# ---------------------------------------------------------------- executors
def _worker_env() -> dict:
    """The variables a worker starts with: one thread each, unless the user set them already."""
    return {name: os.environ.get(name, "1") for name in _THREAD_ENV}


class _OneThreadSpawnProcess(multiprocessing.get_context("spawn").Process):
    """A spawned process that starts with ``_worker_env()``; the parent's environment is restored."""

    def start(self):
        saved = {name: os.environ.get(name) for name in _THREAD_ENV}
        os.environ.update(_worker_env())
        try:
            super().start()  # the child's environment is copied here
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class _OneThreadSpawnContext(type(multiprocessing.get_context("spawn"))):
    """The "spawn" context, with ``_OneThreadSpawnProcess`` (module level: spawn pickles processes)."""

    Process = _OneThreadSpawnProcess


def _exit_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Runs in each worker as it starts: the worker exits as soon as its parent is gone.

    A pool's workers otherwise outlive a parent killed with ``kill -9`` (nothing tells them),
    and go on computing runs whose results nobody stores. A daemon thread checks twice a
    second whether the parent's pid is still the worker's parent.
    """
    import threading

    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(poll_s)

    if os.getppid() != parent_pid:  # the parent died before this worker got here
        os._exit(1)
    threading.Thread(target=watch, name="fpe-parent-watch", daemon=True).start()


def local_executor(jobs: int) -> cf.Executor:
    """``jobs`` local worker processes (spawned, one BLAS and one numba thread each, gone with the parent)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise FPEError(f"--jobs must be a positive integer, got {jobs!r}")
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=_OneThreadSpawnContext(),
                                  initializer=_exit_with_parent, initargs=(os.getpid(),))


def dask_executor(address: str):
    """``(executor, client)`` for the Dask scheduler at ``address`` (``Client.get_executor()``).

    Needs the optional extra ``dask[distributed]``; the workers must be able to import fpe_ref.
    Close the client when done.
    """
    if not address:
        raise FPEError("--executor dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.1:8786)")
    check_scheduler_address(address)
    try:
        from distributed import Client
    except ImportError as exc:
        raise FPEError("--executor dask needs the optional extra: pip install 'fpe-ref[dask]' "
                       "(or pip install 'dask[distributed]')") from exc
    try:
        client = Client(address, timeout="30s")
    except OSError as exc:
        raise FPEError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
    return client.get_executor(), client


def check_scheduler_address(address: str) -> str:
    """``address`` if it reads as a Dask scheduler address (``[protocol://]host:port``), else ``FPEError``."""
    import re

    m = re.fullmatch(r"(?:(tcp|tls|inproc|ucx|ws|wss)://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})", address or "")
    if m is None or not 0 < int(m.group(3)) < 65536:
        raise FPEError(f"--scheduler {address!r} is not a Dask scheduler address (protocol://host:port, "
                       "e.g. tcp://10.0.0.1:8786)")
    return address


def executor_workers(executor) -> int:
    """How many runs the executor works on at once (for the in-flight window)."""
    if executor is None:
        return 1
    n = getattr(executor, "_max_workers", None)
    if n:
        return int(n)
    client = getattr(executor, "_client", None)  # dask.distributed ClientExecutor
    if client is not None:
        try:
            return max(1, sum(client.nthreads().values()))
        except Exception:  # noqa: BLE001 - a scheduler that cannot answer: be conservative
            return 4
    return 4


# ---------------------------------------------------------------- the runner
def _timed_call(fn, key):
    """Runs in the worker: ``fn(key)`` plus where and how long (the timing fields)."""
    t0 = time.perf_counter()
    result = fn(key)
    if not isinstance(result, dict):
        raise TypeError(f"the run function must return a dict, got {type(result).__name__}")
    return result, {"elapsed_s": round(time.perf_counter() - t0, 3), "host": socket.gethostname(), "pid": os.getpid()}


def make_record(key: dict, result: dict, timing: dict, kind: str) -> dict:
    rec = {"run_id": run_id(key), "sweep": kind, "key": key, **result}
    rec["digest"] = record_digest(rec)
    rec.update(timing)
    rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return rec


def _log_failure(log, rid, key, exc, records, plan, store):
    log(f"sweep stopped: run {rid} {canonical(key)} raised {exc!r}; {len(records)}/{len(plan)} finished "
        f"runs are in {store.path}; run the same command again to resume")


@dataclass
class SweepResult:
    total: int  # distinct runs in the plan
    already: int  # found finished in the store
    reused: int  # copied from another store
    ran: int  # run by this invocation
    records: dict  # run_id -> record, for every run of the plan that is finished


def run_sweep(keys, fn, store: RunStore, *, kind: str, executor=None, window=None, progress=None,
              lookup=(), log=None) -> SweepResult:
    """Run every key of ``keys`` not yet in ``store``; append each result the moment it finishes.

    Parameters
    ----------
    keys : iterable of dict
        The plan, in the order the work should be done (duplicates are dropped).
    fn : callable(key) -> dict
        The per-run function, a module-level function (it is pickled to the workers). Its
        result is stored as the record's fields next to ``run_id``, ``sweep``, ``key``.
    store : RunStore
    kind : str
        The sweep kind written into every record (``"boolean"``); ``fpe report`` dispatches on it.
    executor : concurrent.futures.Executor, optional
        ``None``: run serially in this process.
    window : int, optional
        Runs in flight at most (default twice the executor's workers).
    progress : fpe_ref.experiments.progress.Progress, optional
        ``start()``, then ``update(n)`` after each finished run (its ``total``/``done`` are set here).
    lookup : iterable of RunStore
        Other stores (``--reuse-from``) whose finished runs with the same key are copied into
        ``store`` (with ``reused_from``) instead of being run again; a record there that is
        not valid (:func:`record_problem`: edited by hand, accuracies out of range, fields
        missing) is run here instead.
    log : callable(str), optional

    Raises
    ------
    The first exception a run raises, after the runs already in flight have finished and
    been stored and the rest cancelled: rerunning the same sweep resumes.
    """
    log = log or (lambda s: print(s, file=sys.stderr))
    plan, seen = [], set()
    for key in keys:
        rid = run_id(key)
        if rid not in seen:
            seen.add(rid)
            plan.append((rid, key))
    done = store.load(check="strict")
    records = {rid: done[rid] for rid, _ in plan if rid in done}
    already = len(records)
    reused = 0
    todo = [(rid, key) for rid, key in plan if rid not in records]
    for other in lookup:
        if not todo or os.path.abspath(other.path) == os.path.abspath(store.path):
            continue
        found = other.load(check="skip", log=log)
        keep = []
        for rid, key in todo:
            if rid in found and canonical(found[rid].get("key")) == canonical(key):
                rec = dict(found[rid])
                rec["reused_from"] = other.path
                src = arrays_path(other, rid)
                if os.path.exists(src):
                    import shutil

                    os.makedirs(os.path.dirname(arrays_path(store, rid)), exist_ok=True)
                    shutil.copyfile(src, arrays_path(store, rid))
                store.append(rec)
                records[rid] = rec
                reused += 1
            else:
                keep.append((rid, key))
        todo = keep
    if progress is not None:
        progress.total, progress.done = len(plan), len(records)
        progress.start()

    def finish(rid, key, result, timing):
        arrays = result.pop(ARRAYS_FIELD, None)
        if arrays:  # saved before the line is appended: a finished line implies its arrays exist
            save_arrays(store, rid, arrays)
        rec = make_record(key, result, timing, kind)
        store.append(rec)
        records[rid] = rec
        if progress is not None:
            progress.update(1)

    ran = 0
    if executor is None:
        for rid, key in todo:
            try:
                result, timing = _timed_call(fn, key)
            except Exception as exc:
                _log_failure(log, rid, key, exc, records, plan, store)
                raise
            finish(rid, key, result, timing)
            ran += 1
        return SweepResult(len(plan), already, reused, ran, records)

    window = window or 2 * executor_workers(executor)
    queue = list(reversed(todo))  # pop() from the end = plan order
    running = {}
    failure = None
    try:
        while queue or running:
            while queue and failure is None and len(running) < window:
                rid, key = queue.pop()
                running[executor.submit(_timed_call, fn, key)] = (rid, key)
            finished, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                rid, key = running.pop(fut)
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is not None:
                    if failure is None:
                        failure = (rid, key, exc)
                        for other in running:  # not yet started ones never start
                            other.cancel()
                        queue.clear()
                    continue
                result, timing = fut.result()
                finish(rid, key, result, timing)
                ran += 1
    except BaseException:
        for fut in running:
            fut.cancel()
        raise
    if failure is not None:
        rid, key, exc = failure
        _log_failure(log, rid, key, exc, records, plan, store)
        raise exc
    return SweepResult(len(plan), already, reused, ran, records)
