"""The case-study command end to end on a tiny config: outputs, resume, reproducibility, errors."""

import json
import subprocess
import sys

from click.testing import CliRunner

from fpe_ref.commands import fpe

TINY = ["--trials", "2", "--dense-epochs", "3", "--fpe-epochs", "3", "--n-samples", "400", "--batch-size", "100"]


def run(args):
    result = CliRunner().invoke(fpe, ["reproduce", "case-study", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_case_study_writes_summary_figures_and_resumes(tmp_path):
    out = tmp_path / "cs"
    text = run(TINY + ["--out", str(out)])
    assert "best of 2 trials, selected on the test set" in text
    assert "non-zero weights 264 (W1=256, W2=8)" in text  # the ledger
    summary = json.loads((out / "summary.json").read_text())
    for v in ("dense", "clause", "random"):
        m = summary["models"][v]
        for key in ("acc_mean", "acc_std", "acc_best", "capacity", "cosine", "nonzero_weights"):
            assert key in m, (v, key)
        assert m["nonzero_weights"] == 264
        assert len(m["accs"]) == 2 and m["acc_best"] == max(m["accs"])
    assert summary["models"]["clause"]["biases"] == 17 and summary["models"]["dense"]["biases"] == 9
    assert summary["config"]["trials"] == 2
    for png in ("fig2_dense_clause.png", "figA1_random.png", "training_curves.png"):
        assert (out / png).stat().st_size > 1000
    lines = (out / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 2
    # resume: nothing is trained again, the same summary comes out
    again = run(TINY + ["--out", str(out)])
    assert "resuming: 2 finished trial(s)" in again
    assert len((out / "trials.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "summary.json").read_text()) == summary


def test_case_study_is_reproducible_from_the_seed(tmp_path):
    a, b, c = (json.loads((run(TINY + ["--out", str(tmp_path / n), "--seed", s]) and (tmp_path / n / "summary.json")).read_text())
               for n, s in (("a", "3"), ("b", "3"), ("c", "4")))
    assert a["models"] == b["models"]
    assert a["models"] != c["models"]


def test_interrupted_trial_line_is_ignored(tmp_path):
    out = tmp_path / "cs"
    run(TINY + ["--out", str(out)])
    path = out / "trials.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # a kill mid-write of trial 1
    text = run(TINY + ["--out", str(out)])
    assert "resuming: 1 finished trial(s)" in text
    # the re-run trial's record starts on a line of its own, not glued to the cut one
    assert "resuming: 2 finished trial(s)" in run(TINY + ["--out", str(out)])


def test_bad_alpha_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from fpe_ref.commands import main; main()", "reproduce", "case-study", *TINY,
                           "--alpha", "64", "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "Error: alpha=64 is larger than the fan-in d=32: a child would get no inputs"
    assert "Traceback" not in proc.stderr
