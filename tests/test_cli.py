"""Command-line input rules: an explicit 0 is refused (never silently replaced by a default),
bad counts give one-line errors naming the option, and every command has a readable summary."""

import glob
import os
import re
import subprocess
import sys
import types

import click
import numpy as np
import pytest
from click.testing import CliRunner

from fpe_ref.commands import fpe
from fpe_ref.errors import FPEError

CS = ["reproduce", "case-study", "--trials", "1", "--dense-epochs", "2", "--fpe-epochs", "2", "--n-samples", "200"]


@pytest.mark.parametrize("args,msg", [
    (CS + ["--k", "0"], "k must be a positive integer, got 0"),
    (CS + ["--k", "-4"], "k must be a positive integer, got -4"),
    (CS + ["--literals", "-32"], "m must be a positive integer, got -32"),
    (CS + ["--trials", "0"], "trials must be a positive integer, got 0"),
    (CS + ["--dense-epochs", "0"], "dense_epochs must be a positive integer, got 0"),
    (CS + ["--fpe-epochs", "0"], "fpe_epochs must be a positive integer, got 0"),
    (CS + ["--n-samples", "0"], "n_samples must be a positive integer, got 0"),
    (["reproduce", "case-study", "--quick", "--trials", "0"], "trials must be a positive integer, got 0"),
    (["sweep", "boolean", "--quick", "--dry-run", "--trials", "0"], "trials must be a positive integer, got 0"),
    (["sweep", "boolean", "--dry-run", "--fpe-epochs", "0"], "fpe_epochs must be a positive integer, got 0"),
    (["reproduce", "two-four", "--post-epochs", "0"], "post_epochs must be a positive integer, got 0"),
    (["reproduce", "two-four", "--pretrain-epochs", "0"], "--pretrain-epochs 0 needs an explicit --post-epochs"),
    (["reproduce", "fashion-mnist", "--quick", "--trials", "0"], "trials must be a positive integer, got 0"),
    (["reproduce", "fashion-mnist", "--gram-clusters", "1"], "--gram-clusters 1 is fewer than alpha=2"),
])
def test_bad_counts_are_refused_before_any_work(tmp_path, args, msg):
    res = CliRunner().invoke(fpe, args + ["--out", str(tmp_path / "out")])
    assert isinstance(res.exception, FPEError), res.output
    assert msg in str(res.exception)
    assert not (tmp_path / "out" / "runs.jsonl").exists()


def test_jobs_zero_is_refused(tmp_path):
    res = CliRunner().invoke(fpe, ["reproduce", "fashion-mnist", "--quick", "--jobs", "0", "--data-dir", str(tmp_path),
                                   "--out", str(tmp_path / "out")])
    assert isinstance(res.exception, FPEError) and "--jobs must be >= 1, got 0" in str(res.exception)


def test_quick_keeps_explicit_options(tmp_path):
    res = CliRunner().invoke(fpe, ["sweep", "boolean", "--quick", "--dry-run", "--trials", "3",
                                   "--out", str(tmp_path / "q")])
    assert res.exit_code == 0, res.output
    assert "(trials 3, epochs 4+4)" in res.output, res.output  # --quick's epochs, the explicit trials


def test_one_class_embeddings_are_refused(tmp_path):
    from fpe_ref.data.embeddings import load_embeddings

    rng = np.random.default_rng(0)
    path = tmp_path / "one.npz"
    np.savez(path, X_train=rng.normal(size=(10, 3)), y_train=np.zeros(10, np.int64),
             X_test=rng.normal(size=(4, 3)), y_test=np.zeros(4, np.int64))
    with pytest.raises(FPEError, match="n_classes=1: a classifier needs at least 2 classes"):
        load_embeddings(path)


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


def test_every_command_has_a_readable_summary():
    """click cuts a summary at the first full stop ("Sec. 3.1: ..." became "Sec.")."""
    for path, cmd in _commands(fpe):
        short = cmd.get_short_help_str(limit=200)
        assert len(short) > 12, (path, short)


def test_main_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from fpe_ref.commands import main; main()", *CS, "--k", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["Error: k must be a positive integer, got 0"]


def test_an_unwritable_output_path_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = subprocess.run([sys.executable, "-c", "from fpe_ref.commands import main; main()", *CS, "--out", str(tmp_path / "file" / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()
    assert last == [f"Error: cannot read or write a file ({tmp_path / 'file' / 'x'}): Not a directory"], proc.stderr


@pytest.mark.parametrize("args,msg", [
    (["--test-fraction", "1.5"], "test_fraction must be a number in (0, 1), got 1.5"),
    (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
])
def test_sweep_settings_are_checked_before_sweep_json_is_written(tmp_path, args, msg):
    out = tmp_path / "q"
    res = CliRunner().invoke(fpe, ["sweep", "boolean", "--quick", "--out", str(out), *args])
    assert isinstance(res.exception, FPEError) and msg in str(res.exception)
    assert not (out / "sweep.json").exists()


# ---------------------------------------------------------------- the trainer choice
class _Stop(Exception):
    """Raised by a stand-in for an experiment: the command got as far as calling it."""


def _captured(monkeypatch, module, name):
    """Replace ``module.name`` by a stand-in that records its arguments and stops the command."""
    calls = []

    def stand_in(*args, **kwargs):
        calls.append((args, kwargs))
        raise _Stop

    monkeypatch.setattr(module, name, stand_in)
    return calls


def _case_study_call(monkeypatch, tmp_path, extra):
    from fpe_ref.experiments import case_study

    calls = _captured(monkeypatch, case_study, "run_case_study")
    res = CliRunner().invoke(fpe, CS + ["--out", str(tmp_path / "cs"), *extra])
    assert isinstance(res.exception, _Stop), (res.output, res.exception)
    (cfg, _out), kwargs = calls[0]
    return cfg, kwargs


@pytest.mark.parametrize("trainer_args,backend_args,backend", [
    ([], ["--backend", "numba"], "numba"),
    (["--trainer", "numba"], ["--backend", "numba"], "numba"),
    (["--trainer", "numpy"], ["--backend", "numpy"], "numpy"),
    (["--trainer", "auto"], ["--backend", "auto"], "numba"),
    (["--trainer", "numpy"], ["--trainer", "numpy", "--backend", "numpy"], "numpy"),
    (["--trainer", "numpy"], ["--backend", "numpy", "--trainer", "auto"], "numpy"),  # an eager alias, any order
])
def test_hidden_backend_alias_gives_the_same_call_as_trainer(monkeypatch, tmp_path, trainer_args, backend_args,
                                                             backend):
    cfg_t, kw_t = _case_study_call(monkeypatch, tmp_path, trainer_args)
    cfg_b, kw_b = _case_study_call(monkeypatch, tmp_path, backend_args)
    assert kw_t["trainer"] == kw_b["trainer"] == backend
    assert cfg_t == cfg_b
    assert {k: v for k, v in kw_t.items() if not callable(v)} == {k: v for k, v in kw_b.items() if not callable(v)}


def test_backend_is_hidden_and_may_not_contradict_trainer(tmp_path):
    text = CliRunner().invoke(fpe, ["reproduce", "case-study", "--help"]).output
    assert "--trainer" in text and "--backend" not in text
    res = CliRunner().invoke(fpe, CS + ["--backend", "numpy", "--trainer", "numba", "--out", str(tmp_path)])
    assert isinstance(res.exception, FPEError)
    assert str(res.exception) == "--backend numpy contradicts --trainer numba: give one of them"


def _sweep_trainer(monkeypatch, tmp_path, extra):
    from fpe_ref.experiments import boolean

    calls = _captured(monkeypatch, boolean, "run_boolean_sweep")
    res = CliRunner().invoke(fpe, ["sweep", "boolean", "--quick", "--jobs", "1", "--out", str(tmp_path / "s"), *extra])
    assert isinstance(res.exception, _Stop), (res.output, res.exception)
    return calls[0][0][0].trainer


def _vision_trainer(monkeypatch, tmp_path, extra):
    from fpe_ref.commands import reproduce

    calls = _captured(monkeypatch, reproduce, "run_sweep_cmd")
    res = CliRunner().invoke(fpe, ["reproduce", "fashion-mnist", "--quick", "--data-dir", str(tmp_path),
                                   "--out", str(tmp_path / "v"), *extra])
    assert isinstance(res.exception, _Stop), (res.output, res.exception)
    return calls[0][0][0].trainer


@pytest.mark.parametrize("experiment,extra,expected", [
    ("case_study", [], "numba"),
    ("case_study", ["--trainer", "auto"], "numba"),
    ("case_study", ["--trainer", "numpy"], "numpy"),
    ("boolean", [], "numba-v2"),
    ("boolean", ["--trainer", "auto"], "numba-v2"),
    ("boolean", ["--trainer", "numpy"], "numpy-v2"),
    ("vision", [], "numpy-reference"),
    ("vision", ["--trainer", "auto"], "numpy-reference"),
    ("vision", ["--trainer", "numba"], "numba-v1"),
])
def test_trainer_auto_resolves_per_experiment(monkeypatch, tmp_path, experiment, extra, expected):
    """auto: numba for the case study and the Boolean sweep, numpy for the vision commands."""
    if experiment == "case_study":
        got = _case_study_call(monkeypatch, tmp_path, extra)[1]["trainer"]
    elif experiment == "boolean":
        got = _sweep_trainer(monkeypatch, tmp_path, extra)
    else:
        got = _vision_trainer(monkeypatch, tmp_path, extra)
    assert got == expected


# ---------------------------------------------------------------- one registry of shared options
def _all_options():
    """{spelling: [(command path, click.Option)]} over every command of ``fpe``."""
    found = {}
    for path, cmd in _commands(fpe):
        for p in cmd.params:
            if isinstance(p, click.Option):
                for spelling in p.opts:
                    found.setdefault(spelling, []).append((path, p))
    return found


def _declared(path):
    """The option spellings ``path`` declares (``click.option("--x"`` or ``_factory("--x"``)."""
    text = open(path).read()
    return re.findall(r'(?:click\.option|_factory)\(\s*"(--[\w-]+)', text)


def _command_files():
    """The files that define commands, and options.py."""
    import fpe_ref.commands as pkg
    from fpe_ref.commands import theory as theory_commands

    here = os.path.dirname(pkg.__file__)
    return ([f for f in sorted(glob.glob(os.path.join(here, "*.py"))) if not f.endswith("options.py")]
            + [theory_commands.__file__]), os.path.join(here, "options.py")


def test_every_shared_option_is_defined_once_in_options_py():
    shared = {s for s, uses in _all_options().items() if len(uses) > 1 and s != "--help"}
    assert {"--seed", "--out", "--jobs", "--quick", "--trainer", "--lr", "--batch-size", "--l1", "--l2",
            "--orth", "--warmup", "--warmup-epochs", "--dtype", "--val-fraction", "--trials"} <= shared
    files, options_py = _command_files()
    for f in files:
        assert not shared & set(_declared(f)), (f, shared & set(_declared(f)))
    declared = _declared(options_py)
    assert len(declared) == len(set(declared)), declared
    assert shared <= set(declared) | {"--no-baselines"}


@pytest.mark.parametrize("spelling", [
    "--seed", "--trainer", "--lr", "--batch-size", "--l1", "--l2", "--orth", "--warmup", "--warmup-epochs",
    "--test-fraction", "--alpha", "--baselines", "--gram-clusters", "--gram-linkage", "--val-fraction",
    "--data-dir", "--n-classes",
])
def test_a_shared_option_has_one_default_and_one_help(spelling):
    uses = _all_options()[spelling]
    assert len(uses) > 1
    forms = {(p.help, repr(p.default), repr(p.type), p.name) for _, p in uses}
    assert len(forms) == 1, (spelling, [path for path, _ in uses], forms)


@pytest.mark.parametrize("spelling", ["--out", "--jobs", "--quick", "--trials", "--hidden", "--dtype", "--data",
                                      "--pretrain-epochs", "--post-epochs", "--dense-epochs", "--fpe-epochs",
                                      "--n-samples"])
def test_a_per_command_option_keeps_one_spelling_and_one_help(spelling):
    """Options whose default is the command's: one parameter name, and one help text before the note."""
    uses = _all_options()[spelling]
    assert len({p.name for _, p in uses} - {"dtypes"}) == 1
    base = os.path.commonprefix([p.help for _, p in uses])
    assert len(base) >= 20, (spelling, [p.help for _, p in uses])


def test_trainer_option_is_the_registry_of_trainers():
    from fpe_ref.experiments import trainers

    for path, p in _all_options()["--trainer"]:
        assert tuple(p.type.choices) == trainers.CHOICES and p.default == "auto" and p.help == trainers.HELP, path


def test_theory_takes_the_shared_seed_and_refuses_a_negative_one(tmp_path):
    from fpe_ref.commands.theory import theory

    res = CliRunner().invoke(theory, ["check", "--quick", "--seed", "-1", "--out", str(tmp_path)])
    assert isinstance(res.exception, FPEError) and str(res.exception) == "seed must be an integer >= 0, got -1"


# ---------------------------------------------------------------- registration
def test_every_command_and_group_shows_its_help():
    for path, _ in [((), fpe), *_commands(fpe)]:
        res = CliRunner().invoke(fpe, [*path, "--help"])
        assert res.exit_code == 0 and "Usage: fpe" in res.output, (path, res.output)


def test_the_submodules_stay_modules_and_their_groups_are_registered():
    import fpe_ref.commands as pkg
    from fpe_ref.commands import bench, golden, reproduce, study, sweep
    from fpe_ref.commands import theory as theory_commands

    for mod in (bench, golden, reproduce, study, sweep):
        assert isinstance(mod, types.ModuleType) and getattr(pkg, mod.__name__.rsplit(".", 1)[1]) is mod
    assert fpe.commands["reproduce"] is reproduce.reproduce
    assert fpe.commands["sweep"] is sweep.sweep and fpe.commands["report"] is sweep.report
    assert fpe.commands["golden"] is golden.golden and fpe.commands["bench"] is bench.bench_cmd
    assert fpe.commands["theory"] is theory_commands.theory and fpe.commands["study"] is study.study
    assert set(fpe.commands) == {"reproduce", "sweep", "report", "golden", "bench", "theory", "study"}
    assert set(reproduce.reproduce.commands) == {"case-study", "fashion-mnist", "embeddings", "pretrain-timing",
                                                 "alpha", "two-four", "rewiring"}


@pytest.mark.parametrize("first", ["fpe_ref.commands.theory", "fpe_ref.commands.options", "fpe_ref.commands.reproduce",
                                   "fpe_ref.commands"])
def test_any_command_module_may_be_imported_first(first):
    """fpe_ref.commands registers theory's group and theory's commands take options.py's options."""
    code = (f"import {first}\nfrom fpe_ref.commands import fpe\n"
            "print(sorted(fpe.commands), sorted(fpe.commands['theory'].commands))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["['bench',", "'golden',", "'report',", "'reproduce',", "'study',", "'sweep',", "'theory']",
                                   "['check',", "'plot']"]
