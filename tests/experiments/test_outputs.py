"""Output folders: fresh by default, the committed reference written only when named, one
configuration and one writer per folder, provenance in every folder."""

from __future__ import annotations

import json
import os

import pytest

from fpe_ref.errors import FPEError
from fpe_ref.experiments import outputs as out


def test_default_folder_is_under_runs_and_follows_the_options():
    a = out.default_out("case-study", {"seed": 0, "m": 32})
    assert a.startswith(os.path.join("runs", "case-study") + os.sep)
    assert out.default_out("case-study", {"m": 32, "seed": 0}) == a  # key order does not matter
    assert out.default_out("case-study", {"seed": 1, "m": 32}) != a


def test_quick_never_writes_the_committed_reference(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FPEError, match="--quick never writes under results/"):
        out.resolve_out("results/case_study", "case-study", {}, quick=True)
    if out.checkout_root():
        ref = os.path.join(out.checkout_root(), "results", "x")
        with pytest.raises(FPEError, match="--quick never writes under results/"):
            out.resolve_out(ref, "case-study", {}, quick=True)
    assert out.resolve_out("results/case_study", "case-study", {}, quick=False) == "results/case_study"
    assert out.resolve_out(None, "c", {"a": 1}, quick=True).startswith("runs")


def test_provenance_names_code_command_versions_and_config(tmp_path):
    with out.open_output(tmp_path / "o", {"seed": 3}):
        pass
    prov = json.loads((tmp_path / "o" / "provenance.json").read_text())
    assert prov["config"] == {"seed": 3}
    (inv,) = prov["invocations"]
    assert set(inv["versions"]) == {"python", "numpy", "scipy", "numba"} and all(inv["versions"].values())
    assert inv["command"].startswith("fpe") and set(inv["code"]) == {"commit", "dirty"}
    if out.checkout_root() and os.path.isdir(os.path.join(out.checkout_root(), ".git")):
        assert len(inv["code"]["commit"]) == 40 and isinstance(inv["code"]["dirty"], bool)
    with out.open_output(tmp_path / "o", {"seed": 3}):
        pass
    assert len(json.loads((tmp_path / "o" / "provenance.json").read_text())["invocations"]) == 2


def test_another_configuration_is_refused_naming_the_options(tmp_path):
    with out.open_output(tmp_path, {"seed": 0, "train": {"lr": 1e-3}, "trials": 5}, ignore=("trials",)):
        pass
    with pytest.raises(FPEError, match=r"other options \(seed: 0 -> 7; train.lr: 0.001 -> 0.01\)"):
        with out.open_output(tmp_path, {"seed": 7, "train": {"lr": 1e-2}, "trials": 5}):
            pass
    with out.open_output(tmp_path, {"seed": 0, "train": {"lr": 1e-3}, "trials": 9}, ignore=("trials",)):
        pass  # more trials extend a folder


@pytest.mark.parametrize("text", ["[1, 2]", "{", '{"config": 3, "invocations": []}'])
def test_a_malformed_provenance_file_is_one_line_error(tmp_path, text):
    (tmp_path / "provenance.json").write_text(text)
    with pytest.raises(FPEError, match="provenance"):
        with out.open_output(tmp_path, {}):
            pass


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(tmp_path, lock_held_elsewhere):
    holder = lock_held_elsewhere(tmp_path)
    with pytest.raises(FPEError, match=rf"being written by another fpe process \(pid {holder.pid} "):
        with out.FolderLock(tmp_path):
            pass
    holder.kill()
    holder.wait()
    with out.FolderLock(tmp_path):  # the kernel dropped the dead writer's lock
        with out.FolderLock(tmp_path):  # and a process may take its own lock again
            pass


def test_json_is_written_through_a_private_temporary_file(tmp_path):
    out.write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert os.listdir(tmp_path) == ["a.json"]


def test_config_diff_names_nested_and_absent_options():
    assert out.config_diff({"a": 1, "t": {"lr": 1}}, {"a": 1, "t": {"lr": 2}, "b": 0}) == [
        "b: (absent) -> 0", "t.lr: 1 -> 2"]
