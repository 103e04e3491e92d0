"""Output folders: where a command writes, what it records there, and who may write it.

Paper: none; this is what makes every number of ``results/`` traceable and every user's run
separate from them.

The rules
---------
* **Fresh by default.** A command that computes writes to ``runs/<command>/<config hash>/``
  (:func:`resolve_out`) under the working directory, a git-ignored folder, unless ``--out``
  names another. The hash is of the resolved configuration, so the same command resumes its
  own folder after a kill, and any other option gives another folder.
* **The committed reference is written only when named.** ``results/`` of the checkout holds
  the committed reference (:func:`reference_dir`); it is written only when ``--out`` names a
  folder in it, and never by a ``--quick`` run (:func:`resolve_out` refuses).
* **One folder, one configuration.** ``provenance.json`` in every output folder holds the
  resolved configuration and one entry per invocation (:func:`provenance`: the commit and
  whether the code had uncommitted changes, the command line, the versions of Python, numpy,
  scipy and numba). An invocation with another configuration is refused, naming the options
  that differ (:func:`check_config`).
* **One writer at a time.** :class:`FolderLock` holds an exclusive ``flock`` on
  ``<folder>/.lock`` for as long as a command writes; a second writer is refused at once. The
  kernel drops the lock when its process dies, so a killed run leaves no stale lock.

:func:`open_output` does the last three in one step.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time

from fpe_ref.errors import FPEError

RUNS_DIR = "runs"  # the default parent of every output folder (git-ignored)
PROVENANCE = "provenance.json"
LOCK = ".lock"
# the paths whose uncommitted edits change what the code computes
CODE_PATHS = ("fpe_ref", "theory", "cli.py", "pyproject.toml")


# ---------------------------------------------------------------- where
@functools.lru_cache(maxsize=1)
def checkout_root() -> str | None:
    """The source checkout this fpe_ref runs from (it has ``pyproject.toml``), or None (a wheel)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return here if os.path.exists(os.path.join(here, "pyproject.toml")) else None


def reference_dir(*parts) -> str | None:
    """``results/<parts>`` of the checkout (the committed reference), or None where there is none."""
    root = checkout_root()
    if root is None:
        return None
    path = os.path.join(root, "results", *parts)
    return path if os.path.exists(path) else None


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def under_reference(path) -> bool:
    """Whether ``path`` lies in a committed-reference folder: the checkout's ``results/`` or ``./results``."""
    folders = [os.path.join(os.getcwd(), "results")]
    if checkout_root() is not None:
        folders.append(os.path.join(checkout_root(), "results"))
    return any(_inside(os.fspath(path), f) for f in folders)


def config_hash(config: dict) -> str:
    """12 hex digits of the sha1 of the configuration's canonical JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def runs_dir() -> str:
    """Where default output folders go: ``runs/`` of the checkout when the working directory is
    inside it (the one git-ignored ``runs/``, wherever in the checkout a command starts), else
    ``./runs``. Returned relative to the working directory where that is shorter."""
    root = checkout_root()
    if root is not None and _inside(os.getcwd(), root):
        return os.path.relpath(os.path.join(root, RUNS_DIR))
    return RUNS_DIR


def default_out(command: str, config: dict) -> str:
    """``runs/<command>/<config hash>``: fresh for a new configuration, the same folder for a rerun."""
    return os.path.join(runs_dir(), command, config_hash(config))


def resolve_out(out_dir, command: str, config: dict, quick: bool = False) -> str:
    """The folder a command writes: ``out_dir`` if given, else :func:`default_out`.

    A ``--quick`` run never writes the committed reference: ``out_dir`` under ``results/`` is
    refused for it.
    """
    out = os.fspath(out_dir) if out_dir else default_out(command, config)
    if quick and under_reference(out):
        raise FPEError(f"--quick never writes under results/ (the committed reference), got --out {out}; "
                       "leave --out out or choose a folder elsewhere")
    return out


# ---------------------------------------------------------------- what made it
def _git(*args) -> str | None:
    root = checkout_root()
    if root is None:
        return None
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_state() -> dict:
    """``{"commit", "dirty"}``: the checkout's commit and whether its code had uncommitted changes.

    ``dirty`` looks at the code only (:data:`CODE_PATHS`), not at ``results/`` or ``runs/``;
    both are None outside a git checkout.
    """
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--", *CODE_PATHS) if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def code_version() -> str:
    """The short form of :func:`code_state`: ``<commit>``, ``<commit>+dirty`` or ``"unknown"``."""
    state = code_state()
    if not state["commit"]:
        return "unknown"
    return state["commit"][:7] + ("+dirty" if state["dirty"] else "")


def command_line() -> str:
    """The command as typed: ``fpe`` and its arguments, quoted for a shell."""
    return "fpe " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def versions() -> dict:
    """The versions of Python, numpy, scipy and numba."""
    import numpy
    import scipy

    out = {"python": platform.python_version(), "numpy": numpy.__version__, "scipy": scipy.__version__}
    from importlib import metadata

    try:  # numba's version without importing it (it loads LLVM)
        out["numba"] = metadata.version("numba")
    except metadata.PackageNotFoundError:  # pragma: no cover - numba is a runtime dependency
        out["numba"] = None
    return out


def provenance() -> dict:
    """One invocation: code state, command line, versions, machine and start time."""
    return {"code": code_state(), "command": command_line(), "versions": versions(),
            "machine": {"host": socket.gethostname(), "platform": platform.platform(), "cpus": os.cpu_count()},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# ---------------------------------------------------------------- one folder, one configuration
def flatten(d, prefix: str = "") -> dict:
    """A nested dict as one level with dotted names: ``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else ()):
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def config_diff(old: dict, new: dict) -> list:
    """``["seed: 0 -> 7", ...]`` for every (dotted) option whose value differs."""
    a, b = flatten(json.loads(json.dumps(old, default=list))), flatten(json.loads(json.dumps(new, default=list)))
    missing = object()
    return [f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}" for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)]


def read_json(path, what: str = "file"):
    """The JSON in ``path``, or a one-line ``FPEError`` naming the file (unreadable, not JSON)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FPEError(f"{path}: cannot read this {what} ({exc}); move it away or use another --out") from exc


def read_provenance(out_dir) -> dict | None:
    """``provenance.json`` of ``out_dir`` (checked to be an object with a ``config``), or None."""
    path = os.path.join(out_dir, PROVENANCE)
    if not os.path.exists(path):
        return None
    prov = read_json(path, "provenance file")
    if not isinstance(prov, dict) or not isinstance(prov.get("config"), dict) \
            or not isinstance(prov.get("invocations"), list):
        raise FPEError(f"{path} is not a provenance file (an object with 'config' and 'invocations'); "
                       "move it away or use another --out")
    return prov


def check_config(out_dir, config: dict, ignore=()) -> None:
    """Refuse ``out_dir`` if its ``provenance.json`` holds another configuration (naming the options)."""
    prov = read_provenance(out_dir)
    if prov is None:
        return
    old = {k: v for k, v in prov["config"].items() if k not in ignore}
    new = {k: v for k, v in config.items() if k not in ignore}
    diff = config_diff(old, new)
    if diff:
        raise FPEError(f"{out_dir} holds a run with other options ({'; '.join(diff)}); rerun with the same "
                       "options to resume it, or choose another --out")


def write_json_atomic(path, obj) -> None:
    """Write ``obj`` as JSON through a temporary file of this writer's own, then an atomic rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as open() would create it (mkstemp makes it private)
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=list)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def record_invocation(out_dir, config: dict) -> dict:
    """Add this invocation to ``provenance.json`` (creating it with ``config``); returns its content."""
    prov = read_provenance(out_dir) or {"config": config, "invocations": []}
    prov["config"] = config  # equal to the stored one (check_config), or extended by allowed fields
    prov["invocations"].append(provenance())
    write_json_atomic(os.path.join(out_dir, PROVENANCE), prov)
    return prov


# ---------------------------------------------------------------- one writer at a time
_HELD: dict = {}  # realpath of a held lock -> [fd, depth]: a process may take its own lock again


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``<folder>/.lock`` (re-entrant within a process)."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.path = os.path.realpath(os.path.join(self.folder, LOCK))

    def __enter__(self):
        held = _HELD.get(self.path)
        if held is not None:
            held[1] += 1
            return self
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with contextlib.suppress(OSError):
                who = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            raise FPEError(f"{self.folder} is being written by another fpe process ({who or 'pid unknown'}); "
                           "wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: {command_line()}\n".encode(), 0)
        _HELD[self.path] = [fd, 1]
        return self

    def __exit__(self, *exc):
        held = _HELD[self.path]
        held[1] -= 1
        if held[1] == 0:
            del _HELD[self.path]
            fcntl.flock(held[0], fcntl.LOCK_UN)
            os.close(held[0])
        return False


@contextlib.contextmanager
def open_output(out_dir, config: dict, ignore=(), replace: bool = False):
    """Lock ``out_dir``, refuse another configuration there, record this invocation; yields ``out_dir``.

    ``ignore`` names top-level configuration fields that may change between invocations of one
    folder (``trials``: more trials extend a run). ``replace``: the command rewrites the whole
    folder each time (a benchmark, a theory check), so another configuration replaces the
    provenance instead of being refused.
    """
    with FolderLock(out_dir):
        if replace:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(out_dir, PROVENANCE))
        else:
            check_config(out_dir, config, ignore)
        record_invocation(out_dir, config)
        yield out_dir


def report_dirs(folder, out_dir, log=print) -> tuple:
    """``(folder, out_dir)`` of ``fpe report`` / ``fpe study report``: ``folder`` as given, or the
    committed one of that name; the report goes to ``out_dir``, else into ``folder`` itself,
    except for a committed reference under ``results/``, whose report goes to
    ``runs/report/<name>/`` (said through ``log``) unless ``--out`` names it."""
    path = folder
    if not os.path.isdir(path) and reference_dir(folder) is not None:
        path = reference_dir(folder)
    if out_dir is None:
        out_dir = path
        if under_reference(path):
            out_dir = os.path.join(runs_dir(), "report", os.path.basename(os.path.normpath(path)))
            log(f"{path} is the committed reference: the report goes to {out_dir} "
                f"(--out {path} to regenerate the committed one)")
    return path, out_dir
