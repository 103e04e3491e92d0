"""The ``fpe theory`` click group (fpe_ref.commands.theory): ``check`` and ``plot`` end to end on --quick settings."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fpe_ref.theory import check as chk
from fpe_ref.theory import closed_form as cf
from fpe_ref.commands.theory import theory


def test_check_quick_cli(tmp_path):
    """``fpe theory check --quick`` passes, prints the rate and the summary, and writes check.json records."""
    res = CliRunner().invoke(theory, ["check", "--quick", "--jobs", "1", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "neurons/s" in res.output and "All checks passed." in res.output
    rep = json.loads((tmp_path / "check.json").read_text())
    assert rep["format_version"] == chk.FORMAT_VERSION and rep["n_failed"] == 0 and rep["n_checks"] > 50
    for key in ("m", "k", "alpha", "r", "quantity", "closed_form", "estimate", "interval", "pass", "model"):
        assert key in rep["records"][0]
    assert {r["model"] for r in rep["records"]} == {"a", "b", "dense"}
    assert (tmp_path / "check.txt").read_text().startswith("\n== Closed form vs simulation")
    case = [p for p in rep["paper_settings"] if p["label"].startswith("Sec 3.1")][0]
    assert case["coverage_a"] == pytest.approx(cf.coverage_exact(32, 4, 2, 8))


def test_check_exits_nonzero_on_failure(tmp_path, monkeypatch):
    """A wrong closed form makes the check fail with a non-zero exit code."""
    real = cf.coverage_exact
    monkeypatch.setattr(cf, "coverage_exact", lambda *a, **kw: min(1.0, real(*a, **kw) + 0.2))
    res = CliRunner().invoke(theory, ["check", "--quick", "--jobs", "1", "--out", str(tmp_path)])
    assert res.exit_code != 0
    assert "theory checks failed" in res.output and "FAIL" in res.output


def test_plot_quick_cli(tmp_path):
    res = CliRunner().invoke(theory, ["plot", "--quick", "--jobs", "1", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for f in ("coverage_vs_r.png", "collision_ratio_vs_alpha.png", "paper_settings.png", "plot_data.json"):
        assert (tmp_path / f).stat().st_size > 1000, f


def test_quick_check_writes_a_fresh_folder_and_never_the_reference(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(theory, ["check", "--quick", "--jobs", "1"])
    assert res.exit_code == 0, res.output
    folder = res.output.splitlines()[0].split(" -> ")[1]
    assert folder.startswith("runs/theory/") and (tmp_path / folder / "check.json").exists()
    assert (tmp_path / folder / "provenance.json").exists()
    res = CliRunner().invoke(theory, ["check", "--quick", "--jobs", "1", "--out", "results/theory"])
    assert res.exit_code != 0 and "--quick never writes under results/" in str(res.exception)
    assert not (tmp_path / "results").exists()
