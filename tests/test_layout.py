"""The layout of the source tree (design/layout.md), checked on the source text itself.

* Imports point down only: ``cli.py -> commands -> experiments -> {fast, parity} -> core``,
  ``theory -> core``, ``interop -> core``, where the core is the top of ``fpe_ref/`` and
  ``fpe_ref/data/`` imports only ``errors`` and ``rng`` of it. Every import counts, also one
  inside a function; the source folders' own names (``import theory``, ``import cli``) never do.
* No import cycle between modules (package ``__init__`` files, which only re-export, aside).
* numba is imported only by ``fpe_ref/fast/`` and ``theory/monte_carlo.py``.
* Every name a module reads as a global is bound by a line of that module (an assignment, a
  ``def``, a ``class``, an import, or a ``global`` statement with an assignment) or is a
  builtin; names injected at run time (``globals().update``) fail this.
* The test tree mirrors the package: ``tests/<area>/test_X.py`` tests the module ``X`` of
  that area's folder.
"""

from __future__ import annotations

import ast
import builtins
import subprocess
import symtable
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

# Source folder -> the package name it installs as (pyproject.toml's package-dir).
SOURCES = {ROOT / "fpe_ref": "fpe_ref", ROOT / "theory": "fpe_ref.theory"}

SUBPACKAGES = ("data", "fast", "parity", "experiments", "commands", "theory", "interop")

# Layer -> the layers its modules may import (its own included).
ALLOWED = {
    "core": {"core", "data"},
    "data": {"data"},  # and DATA_MAY_IMPORT
    "fast": {"fast", "core", "data"},
    "parity": {"parity", "core", "data"},
    "experiments": {"experiments", "fast", "parity", "core", "data"},
    "commands": {"commands", "experiments", "fast", "parity", "core", "data", "theory"},
    "theory": {"theory", "core", "data"},
    "interop": {"interop", "core", "data"},  # adapters to other frameworks; no other layer imports them
}
# Core modules the data loaders may import (the data layer sits below the rest of the core).
DATA_MAY_IMPORT = {"fpe_ref.errors", "fpe_ref.rng"}

NUMBA_ALLOWED = ("fpe_ref/fast/", "theory/monte_carlo.py")

# Test folder -> the source folder whose modules its test files name.
TEST_AREAS = {
    "core": ROOT / "fpe_ref",
    "data": ROOT / "fpe_ref" / "data",
    "fast": ROOT / "fpe_ref" / "fast",
    "experiments": ROOT / "fpe_ref" / "experiments",
    "parity": ROOT / "fpe_ref" / "parity",
    "theory": ROOT / "theory",
    "interop": ROOT / "fpe_ref" / "interop",
    "commands": ROOT / "fpe_ref" / "commands",
}

# Names Python binds in every module's namespace before its first line runs.
MODULE_NAMES = {"__name__", "__doc__", "__file__", "__package__", "__loader__", "__spec__", "__cached__",
                "__builtins__", "__path__", "__annotations__"}
BUILTINS = set(dir(builtins))


def _modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of fpe_ref/ and theory/."""
    out = {}
    for folder, package in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
                continue
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()
RELPATHS = {name: path.relative_to(ROOT).as_posix() for name, path in MODULES.items()}


def _layer(module: str) -> str | None:
    """The layer of a dotted module name of fpe-ref; ``None`` for a module outside it."""
    parts = module.split(".")
    if parts[0] in ("theory", "cli"):  # the source folders' own names: importable from a checkout only,
        return f"{parts[0]} (not installed)"  # never allowed: the installed names are fpe_ref.theory, fpe_ref.commands
    if parts[0] != "fpe_ref":
        return None
    if len(parts) > 1 and parts[1] in SUBPACKAGES:
        return parts[1]
    return "core"


def _imports(name: str):
    """``(line, imported module)`` for every import in module ``name``, at any depth."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                # `from fpe_ref import fast` imports the subpackage fpe_ref.fast
                yield node.lineno, sub if sub in MODULES else module


@pytest.mark.parametrize("name", sorted(MODULES), ids=lambda n: RELPATHS[n])
def test_imports_point_down(name):
    layer = _layer(name)
    bad = []
    for line, target in _imports(name):
        other = _layer(target)
        if other is None or other in ALLOWED[layer] or (layer == "data" and target in DATA_MAY_IMPORT):
            continue
        bad.append(f"{RELPATHS[name]}:{line} imports {target} ({layer} may import only "
                   f"{', '.join(sorted(ALLOWED[layer]))})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", sorted(MODULES), ids=lambda n: RELPATHS[n])
def test_numba_only_in_fast_and_the_theory_simulator(name):
    if RELPATHS[name].startswith(NUMBA_ALLOWED):
        return
    bad = [f"{RELPATHS[name]}:{line} imports {target}"
           for line, target in _imports(name) if target.split(".")[0] == "numba"]
    assert not bad, f"numba outside {', '.join(NUMBA_ALLOWED)}:\n" + "\n".join(bad)


def _tables(table: symtable.SymbolTable):
    yield table
    for child in table.get_children():
        yield from _tables(child)


def _undefined_globals(source: str, filename: str) -> dict[str, list[str]]:
    """Names read as globals in some scope that no line of the module binds: ``{name: [scopes]}``."""
    top = symtable.symtable(source, filename, "exec")
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    for table in _tables(top):  # `global x` in a function, then `x = ...` there
        defined |= {s.get_name() for s in table.get_symbols() if s.is_declared_global() and s.is_assigned()}
    missing = {}
    for table in _tables(top):
        for s in table.get_symbols():
            n = s.get_name()
            if s.is_global() and s.is_referenced() and n not in defined | BUILTINS | MODULE_NAMES:
                missing.setdefault(n, []).append(table.get_name())
    return missing


def test_undefined_global_detector_catches_injected_names():
    src = "import os\nglobals().update(x=1)\n\ndef f(a):\n    global g\n    g = 2\n    return os.sep, a, x, len\n"
    assert _undefined_globals(src, "m.py") == {"x": ["f"]}


@pytest.mark.parametrize("name", sorted(MODULES), ids=lambda n: RELPATHS[n])
def test_every_global_name_is_defined(name):
    path = MODULES[name]
    source = path.read_text()
    missing = _undefined_globals(source, str(path))
    tree = ast.parse(source, str(path))
    stars = [f"{RELPATHS[name]}:{n.lineno} from {n.module} import *" for n in ast.walk(tree)
             if isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)]
    assert not stars, "a star import hides which names a module defines:\n" + "\n".join(stars)
    assert not missing, f"{RELPATHS[name]}: names used that no line defines: " + ", ".join(
        f"{n} (in {', '.join(sorted(set(scopes)))})" for n, scopes in sorted(missing.items()))


def _test_files():
    out = []
    for path in sorted(TESTS.glob("*/test_*.py")):
        out.append(path.relative_to(TESTS).as_posix())
    return out


@pytest.mark.parametrize("test_file", _test_files())
def test_test_tree_mirrors_the_package(test_file):
    area, filename = test_file.split("/")
    assert area in TEST_AREAS, f"tests/{test_file}: tests/{area}/ is not one of the areas {sorted(TEST_AREAS)}"
    folder = TEST_AREAS[area]
    module = folder / (filename.removeprefix("test_"))
    assert module.is_file(), (f"tests/{test_file} names no module: {module.relative_to(ROOT).as_posix()} "
                              f"does not exist")


def _fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter outside the checkout (only the installed package is found)."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_importing_the_public_api_loads_numpy_only():
    loaded = _fresh_python("import sys, fpe_ref; print(sorted({m.split('.')[0] for m in sys.modules} & "
                           "{'numba', 'click', 'matplotlib', 'scipy', 'torch'}))")
    assert loaded == "[]", f"import fpe_ref loaded {loaded}"


def test_installed_package_adds_no_top_level_cli_or_theory():
    found = _fresh_python("import importlib.util as u; print([n for n in ('cli', 'theory') if u.find_spec(n)])")
    assert found == "[]", f"top-level modules {found} are importable outside the checkout"
    where = _fresh_python("import fpe_ref.theory.closed_form as m, fpe_ref.commands as c; print(callable(c.main))")
    assert where == "True"


def _import_graph() -> dict[str, set]:
    """Module -> the modules of fpe-ref it imports (at any depth), package ``__init__`` files left out:
    they only re-export, so an edge through one is not a dependency of the code."""
    packages = {n for n, p in MODULES.items() if p.name == "__init__.py"}
    graph = {}
    for name in MODULES:
        if name in packages:
            continue
        graph[name] = {t for _, t in _imports(name) if t in MODULES and t not in packages and t != name}
    return graph


def test_no_import_cycle():
    graph = _import_graph()
    state, stack, cycles = {}, [], []

    def visit(n):  # depth-first search; a grey node met again closes a cycle
        state[n] = "grey"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "grey":
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = "black"

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
