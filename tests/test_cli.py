"""Command-line input rules: an explicit 0 is refused (never silently replaced by a default),
bad counts give one-line errors naming the option, and every command has a readable summary."""

import subprocess
import sys

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
