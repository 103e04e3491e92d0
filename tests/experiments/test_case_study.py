"""The case study (fpe_ref.experiments.case_study): the command end to end on a tiny config
(outputs, resume, reproducibility, errors) and its trainers."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from fpe_ref.commands import fpe
from fpe_ref.errors import FPEError
from fpe_ref.experiments.case_study import CaseStudyConfig, make_data, run_case_study, run_trials
from fpe_ref.train import TrainConfig

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


# ---------------------------------------------------------------- trainers (fpe_ref.experiments.trainers)
def _tiny_config(**kw):
    base = dict(m=8, k=4, hidden=2, dense_epochs=2, fpe_epochs=2, trials=2, n_samples=200,
                train=TrainConfig(batch_size=50, warmup_epochs=2))
    base.update(kw)
    return CaseStudyConfig(**base)


def test_run_trials_numba_equals_numpy_and_records_the_resolved_trainer():
    cfg = _tiny_config()
    tr, te, groups = make_data(cfg)
    fast = run_trials(cfg, [0, 1], tr, te, groups, trainer="auto")
    ref = run_trials(cfg, [0, 1], tr, te, groups, trainer="numpy")
    assert [r["backend"] for r, _, _ in fast] == ["numba", "numba"]
    assert [r["backend"] for r, _, _ in ref] == ["numpy", "numpy"]
    for (rf, mf, _), (rr, mr, _) in zip(fast, ref):
        assert rf["trial"] == rr["trial"]
        for v in ("dense", "clause", "random"):
            np.testing.assert_allclose(mf[v].params["W1"], mr[v].params["W1"], rtol=1e-9, atol=1e-12, err_msg=v)
            assert rf["models"][v]["after"]["test_acc"] == rr["models"][v]["after"]["test_acc"], v


def test_run_case_study_refuses_a_trainer_before_any_work(tmp_path):
    cfg = _tiny_config(train=TrainConfig(orth=0.1))
    out = tmp_path / "cs"
    with pytest.raises(FPEError, match=r"numba trainer cannot train models of sizes \[8, 2, 1\]: .*orthogonality"):
        run_case_study(cfg, out, log=lambda s: None, trainer="numba")
    assert not out.exists()  # refused before any file was written
    with pytest.raises(FPEError, match="unknown trainer 'cuda'"):
        run_case_study(_tiny_config(), out, log=lambda s: None, trainer="cuda")


# ---------------------------------------------------------------- one folder, kills, fresh folders
def test_two_seeds_cannot_be_mixed_in_one_folder(tmp_path):
    out = tmp_path / "cs"
    run(TINY + ["--out", str(out)])
    before = (out / "trials.jsonl").read_bytes()
    res = CliRunner().invoke(fpe, ["reproduce", "case-study", *TINY, "--seed", "7", "--out", str(out)])
    assert isinstance(res.exception, FPEError) and "seed: 0 -> 7" in str(res.exception)
    assert (out / "trials.jsonl").read_bytes() == before


def test_default_folder_is_fresh_under_runs_and_a_rerun_resumes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = run(TINY)
    folder = next(line.split(" -> ")[1] for line in first.splitlines() if line.startswith("case study:"))
    assert folder.startswith("runs/case-study/") and (tmp_path / folder / "provenance.json").exists()
    assert "resuming: 2 finished trial(s)" in run(TINY)
    other = run(TINY + ["--seed", "1"])
    assert folder not in other and "resuming" not in other


SLOW = ["--trials", "4", "--dense-epochs", "150", "--fpe-epochs", "150", "--n-samples", "4000",
        "--trainer", "numpy"]


def _records(path):
    return {r["trial"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_kill_9_mid_run_loses_only_the_trial_in_progress_and_the_same_command_resumes(tmp_path):
    import os
    import signal
    import time

    cmd = [sys.executable, "-c", "from fpe_ref.commands import main; main()", "reproduce", "case-study", *SLOW]
    whole = tmp_path / "whole"
    subprocess.run(cmd + ["--out", str(whole)], check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = killed / "trials.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (store.exists() and store.read_text().count("\n") >= 1):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = _records(store)
    assert 1 <= len(kept) < 4, "the kill did not land mid-run"
    res = subprocess.run(cmd + ["--out", str(killed)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"resuming: {len(kept)} finished trial(s)" in res.stdout + res.stderr
    a, b = _records(whole / "trials.jsonl"), _records(store)
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    assert all(a[t] == b[t] for t in a)
    assert json.loads((whole / "summary.json").read_text()) == json.loads((killed / "summary.json").read_text())


def test_a_second_case_study_writing_the_same_folder_is_refused(tmp_path, lock_held_elsewhere):
    out = tmp_path / "cs"
    lock_held_elsewhere(out)
    res = CliRunner().invoke(fpe, ["reproduce", "case-study", *TINY, "--out", str(out)])
    assert isinstance(res.exception, FPEError) and "being written by another fpe process" in str(res.exception)
    assert not (out / "trials.jsonl").exists()


def test_a_diverging_run_is_warned_about_in_the_output_and_the_records(tmp_path):
    out = tmp_path / "cs"
    text = run(["--trials", "1", "--dense-epochs", "20", "--fpe-epochs", "20", "--n-samples", "400",
                "--batch-size", "100", "--lr", "50", "--warmup-epochs", "20", "--out", str(out)])
    (rec,) = map(json.loads, (out / "trials.jsonl").read_text().splitlines())
    assert rec["warnings"] and all(w.split(":")[0] in {"parent (phase 1)", "dense (phase 2)", "clause (phase 2)",
                                                        "random (phase 2)"} for w in rec["warnings"])
    assert "warning, trial 0:" in text


def test_a_sound_run_has_no_warnings_field(tmp_path):
    out = tmp_path / "cs"
    run(["--trials", "1", "--dense-epochs", "60", "--fpe-epochs", "60", "--n-samples", "1000", "--batch-size", "100",
         "--lr", "0.01", "--warmup-epochs", "60", "--out", str(out)])
    (rec,) = map(json.loads, (out / "trials.jsonl").read_text().splitlines())
    assert "warnings" not in rec, rec.get("warnings")


def test_trials_in_worker_processes_give_the_serial_records(tmp_path):
    args = ["--trials", "3", "--dense-epochs", "5", "--fpe-epochs", "5", "--n-samples", "400", "--batch-size", "100"]
    run(args + ["--jobs", "1", "--out", str(tmp_path / "serial")])
    text = run(args + ["--jobs", "2", "--out", str(tmp_path / "workers")])
    assert text.count("stored in") == 3
    a, b = _records(tmp_path / "serial" / "trials.jsonl"), _records(tmp_path / "workers" / "trials.jsonl")
    assert sorted(a) == sorted(b) == [0, 1, 2] and all(a[t] == b[t] for t in a)
    for t in a:
        for v in ("parent", "dense", "clause", "random"):
            assert (tmp_path / "workers" / "models" / f"trial{t}_{v}.npz").exists()


@pytest.mark.parametrize("edit, problem", [
    (lambda r: r["models"]["clause"]["after"].update(test_acc=1.7), "test_acc = 1.7 is not an accuracy"),
    (lambda r: r["models"]["clause"].pop("after"), "models.clause.after.test_acc is missing"),
    (lambda r: r["models"]["random"]["after"].update(test_acc=0.999), "do not match its digest"),
    (lambda r: r.pop("config_key"), "no trial number or config"),
])
def test_a_bad_stored_trial_is_a_one_line_error_not_a_number_in_the_summary(tmp_path, edit, problem):
    out = tmp_path / "cs"
    run(TINY + ["--out", str(out)])
    lines = (out / "trials.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    edit(rec)
    (out / "trials.jsonl").write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n")
    res = CliRunner().invoke(fpe, ["reproduce", "case-study", *TINY, "--out", str(out)])
    assert isinstance(res.exception, FPEError) and problem in str(res.exception), res.output
    assert "\n" not in str(res.exception)
