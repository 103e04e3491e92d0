"""docs/tutorial.md runs as written: each job's code, and the output the text shows."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fpe_ref.commands import fpe

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", TUTORIAL.read_text(), flags=re.S)


def _python_blocks():
    """``(code, the output block right after it or None)`` for every python block."""
    out = []
    for i, (lang, body) in enumerate(BLOCKS):
        if lang == "python":
            nxt = BLOCKS[i + 1] if i + 1 < len(BLOCKS) else None
            out.append((body, nxt[1] if nxt is not None and nxt[0] == "" else None))
    return out


def _run(code: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, str(TUTORIAL), "exec"), {"__name__": "tutorial"})
    return buf.getvalue()


def test_the_tutorial_has_three_jobs():
    assert len(_python_blocks()) == 3


def test_job1_numpy_pipeline_prints_what_the_text_shows():
    code, shown = _python_blocks()[0]
    assert _run(code).strip() == shown.strip()


def test_job2_torch_model_prints_what_the_text_shows():
    pytest.importorskip("torch")
    code, shown = _python_blocks()[1]
    assert _run(code).strip() == shown.strip()


def test_job3_a_partial_implementation_passes_what_it_implements(tmp_path, monkeypatch):
    code, _ = _python_blocks()[2]
    plugin = tmp_path / "my_metrics.py"
    plugin.write_text(code)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(fpe, ["golden", "export", "bundle"]).exit_code == 0
    res = runner.invoke(fpe, ["golden", "check", "bundle", "--impl", f"{plugin.name}:compute"])
    assert res.exit_code == 3, res.output
    text = TUTORIAL.read_text()
    for line in ("passed: 8 of 8 implemented tensors within tolerance",
                 "NOT IMPLEMENTED: 422 of 430 tensors, in 21 cases"):
        assert line in res.output and line in text, line
    assert "exit status 3" in text
    assert os.path.exists("bundle/manifest.json")
