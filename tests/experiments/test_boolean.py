"""Tests for the Boolean grids of Sec. 3.2 (fpe_ref.experiments.boolean): the plan, run keys, the
golden numbers of each trainer, refused trainers, one config per sweep directory, and the
``fpe sweep boolean`` / ``fpe report`` commands on the quick config.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from fpe_ref.errors import FPEError
from fpe_ref.experiments import boolean as bs
from fpe_ref.experiments import trainers
from fpe_ref.experiments.runs import RunStore, run_id, strip_timing

QUICK = bs.quick_config()
GRIDS = ("tables", "fig3a")  # quick: 4 + 8 keys, 8 distinct runs x 2 trials -> 12 runs


def quick_keys(grids=GRIDS):
    return bs.plan(QUICK, grids, quick=True)


# ---------------------------------------------------------------- the plan
def test_paper_plan_counts_and_order():
    cfg = bs.SweepConfig()
    keys = bs.plan(cfg)
    ids = [run_id(k) for k in keys]
    assert len(keys) == 40 + 70 + 80 + 35 + 200
    assert len(set(ids)) == 305  # overlapping grids share runs
    assert {k["alpha"] for k in keys[:40]} == {2} and keys[0]["hidden"] == 8  # tables first
    assert sorted({k["m"] for k in keys[:40]}) == list(bs.TABLE_LITERALS)
    assert [k["trial"] for k in keys[:8]] == [0] * 8  # trial by trial: every cell gets trial 0 first
    assert all(k["m"] // k["k"] >= k["alpha"] for k in keys)  # no clause split with fewer clauses than alpha
    assert not any(k["m"] == 12 and k["alpha"] == 4 for k in keys)


def test_plan_rejects_unknown_grid():
    with pytest.raises(FPEError, match="unknown grid 'fig9'"):
        bs.plan(QUICK, ["fig9"], quick=True)


def test_key_round_trips_to_the_case_study_config():
    key = bs.key_for(bs.SweepConfig(), 32, 8, 4, 3)
    cfg = bs.case_config(json.loads(json.dumps(key)))
    assert (cfg.m, cfg.hidden, cfg.alpha, cfg.dense_epochs, cfg.train.betas) == (32, 8, 4, 1000, (0.9, 0.999))
    assert run_id(bs.key_for(bs.SweepConfig(), 32, 8, 4, 3)) == run_id(json.loads(json.dumps(key)))


# ---------------------------------------------------------------- one run
@pytest.mark.parametrize("trainer", list(trainers.key_names("boolean")))
def test_boolean_run_golden_numbers(trainer):
    """The trainer named in the key still computes what it computed when the sweep was run.

    Values from the committed core at the time of the sweep (quick config, m=16, h=4, alpha=2,
    trial 1). If a change of the training code moves them, stored runs of the same key are no
    longer reproducible: give the new code its own name in ``fpe_ref.experiments.trainers.TRAINERS``.
    The numba trainer must give the NumPy reference's numbers (to rounding).
    """
    cfg = dataclasses.replace(QUICK, trainer=trainer, train=dataclasses.replace(QUICK.train, warmup="lr"))  # as then
    r = bs.boolean_run(bs.key_for(cfg, 16, 4, 2, 1))
    assert r["parent"]["test_acc"] == 0.45
    golden = {"dense": (0.4625, 1.82568243068483, -0.13623584980217562),
              "clause": (0.4875, 2.930785881287041, -0.04686258179105484),
              "random": (0.4625, 2.7660704237320783, -0.054191197427485)}
    for v, (acc, cap, cos) in golden.items():
        after = r["models"][v]["after"]
        assert after["test_acc"] == acc, v
        assert after["capacity"] == pytest.approx(cap, rel=1e-9), v
        assert after["cosine"] == pytest.approx(cos, rel=1e-9), v
    assert set(r["_arrays"]) >= {"parent/W1", "dense/W1", "clause/W1", "clause/mask:W1", "random/b1"}


@pytest.mark.parametrize("trainer, match", [("numpy-reference", "cannot be reproduced"), ("torch", "unknown trainer")])
def test_boolean_run_refuses_legacy_and_unknown_trainers(trainer, match):
    key = dict(quick_keys()[0], trainer=trainer)
    with pytest.raises(FPEError, match=match):
        bs.boolean_run(key)
    if trainer == "torch":
        with pytest.raises(FPEError, match="unknown trainer"):
            dataclasses.replace(QUICK, trainer=trainer)


def test_legacy_trainer_configures_but_never_runs():
    """Stores of "numpy-reference" runs (results/boolean_warmup_lr/numpy-v1/) keep their config; running one is refused."""
    cfg = dataclasses.replace(QUICK, trainer="numpy-reference")
    key = bs.key_for(cfg, 16, 4, 2, 0)
    with pytest.raises(FPEError) as err:
        bs.boolean_run(key)
    assert str(err.value) == ("runs of trainer 'numpy-reference' (NumPy trainer before the vectorised random split "
                              "(commit ca2b1d1)) cannot be reproduced by this fpe-ref; use one of numba-v2, numpy-v2")


def test_numba_trainer_is_refused_up_front_where_it_cannot_train():
    """The numba trainer has no orthogonality penalty: the config says so before any run starts."""
    from fpe_ref.train import TrainConfig

    with pytest.raises(FPEError, match="the numba trainer cannot train") as err:
        bs.SweepConfig(train=TrainConfig(orth=0.1))
    assert "\n" not in str(err.value)
    assert bs.SweepConfig(train=TrainConfig(orth=0.1), trainer="numpy-v2").trainer == "numpy-v2"
    assert bs.SweepConfig().trainer == bs.TRAINER == "numba-v2"


def test_cosine_abs_is_the_unsigned_mean_cosine_of_the_saved_weights():
    from fpe_ref.metrics import mean_cosine

    r = bs.boolean_run(bs.key_for(dataclasses.replace(QUICK, trainer="numpy-v2"), 16, 4, 2, 0))
    arrays = r["_arrays"]
    assert r["parent"]["cosine_abs"] == mean_cosine(arrays["parent/W1"], absolute=True)
    for v in ("dense", "clause", "random"):
        after = r["models"][v]["after"]
        assert after["cosine_abs"] == mean_cosine(arrays[f"{v}/W1"], absolute=True), v
        assert after["cosine_abs"] >= abs(after["cosine"]), v


def _mean_abs_cosine_with_bias_by_loop(W1, b1) -> float:
    rows = [np.append(w, b) for w, b in zip(np.asarray(W1, float), np.asarray(b1, float))]
    rows = [r for r in rows if np.linalg.norm(r) > 0]
    cos = [abs(rows[a] @ rows[b]) / (np.linalg.norm(rows[a]) * np.linalg.norm(rows[b]))
           for a in range(len(rows)) for b in range(a + 1, len(rows))]
    return float(np.mean(cos))


def test_cosine_bias_abs_is_the_unsigned_cosine_of_weights_with_bias_of_the_saved_model():
    r = bs.boolean_run(bs.key_for(dataclasses.replace(QUICK, trainer="numpy-v2"), 16, 4, 2, 0))
    arrays = r["_arrays"]
    want = _mean_abs_cosine_with_bias_by_loop(arrays["parent/W1"], arrays["parent/b1"])
    assert r["parent"]["cosine_bias_abs"] == pytest.approx(want, rel=1e-12)
    for v in ("dense", "clause", "random"):
        after = r["models"][v]["after"]
        want = _mean_abs_cosine_with_bias_by_loop(arrays[f"{v}/W1"], arrays[f"{v}/b1"])
        assert after["cosine_bias_abs"] == pytest.approx(want, rel=1e-12), v
        assert after["cosine_bias_abs"] != pytest.approx(after["cosine_abs"], rel=1e-6), v  # the bias counts


@pytest.mark.parametrize("W1, signed, unsigned", [
    ([[1.0, 0.0], [-1.0, 1.0]], -1 / np.sqrt(2), 1 / np.sqrt(2)),
    ([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]], -1 / 3, 1 / 3),  # the zero row is skipped
])
def test_mean_cosine_signed_and_unsigned_by_hand(W1, signed, unsigned):
    from fpe_ref.metrics import mean_cosine

    W1 = np.array(W1)
    assert mean_cosine(W1) == pytest.approx(signed) and mean_cosine(W1, absolute=True) == pytest.approx(unsigned)
    assert np.isnan(mean_cosine(W1[:1], absolute=True))


def test_sweep_dir_holds_one_config(tmp_path):
    bs.open_store(tmp_path / "s", QUICK, quick=True)
    bs.open_store(tmp_path / "s", dataclasses.replace(QUICK, trials=3), quick=True)  # more trials: fine
    other = bs.quick_config(seed=1)
    with pytest.raises(FPEError, match="seed differ"):
        bs.open_store(tmp_path / "s", other, quick=True)


# ---------------------------------------------------------------- the CLI
def test_cli_sweep_then_report(tmp_path):
    from fpe_ref.commands import fpe

    out = str(tmp_path / "q")
    r = CliRunner().invoke(fpe, ["sweep", "boolean", "--quick", "--grid", "tables", "--jobs", "1", "--out", out])
    assert r.exit_code == 0, r.output
    assert "4 run now" in r.output
    r = CliRunner().invoke(fpe, ["sweep", "boolean", "--quick", "--grid", "tables", "--jobs", "1", "--out", out])
    assert r.exit_code == 0 and "4 already finished" in r.output and "0 run now" in r.output
    r = CliRunner().invoke(fpe, ["sweep", "boolean", "--quick", "--dry-run", "--out", out])
    assert r.exit_code == 0 and "tables" in r.output and "finished" in r.output
    r = CliRunner().invoke(fpe, ["report", out])
    assert r.exit_code == 0 and "report.md" in r.output


@pytest.mark.parametrize("args, match", [
    (["report", "/nonexistent/sweep"], "no runs.jsonl"),
    (["sweep", "boolean", "--quick", "--scheduler", "tcp://x:1"], "only used with --executor dask"),
    (["sweep", "boolean", "--quick", "--jobs", "-1"], "--jobs must be a positive integer"),
])
def test_cli_bad_input_is_one_fpe_error(tmp_path, args, match):
    from fpe_ref.commands import fpe

    if args[0] == "sweep":
        args = args + ["--out", str(tmp_path / "s")]
    r = CliRunner().invoke(fpe, args)
    assert isinstance(r.exception, FPEError) and match in str(r.exception)
    assert "\n" not in str(r.exception)


def test_runs_are_computed_unless_reuse_from_names_a_sweep(tmp_path):
    from fpe_ref.commands import fpe

    def sweep(name, *extra):
        res = CliRunner().invoke(fpe, ["sweep", "boolean", "--quick", "--grid", "tables", "--jobs", "1",
                                       "--trials", "1", "--out", str(tmp_path / name), *extra],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output, {r["run_id"]: r for r in RunStore(tmp_path / name / "runs.jsonl").records()}

    out_a, a = sweep("a")
    out_b, b = sweep("b")  # a sibling folder: nothing is copied from it unasked
    out_c, c = sweep("c", "--reuse-from", str(tmp_path / "a"))
    n = len(a)
    assert f"0 copied with --reuse-from, {n} run now" in out_b
    assert f"{n} copied with --reuse-from, 0 run now" in out_c
    assert all(c[k].get("reused_from") for k in c) and not any(b[k].get("reused_from") for k in b)
    assert {k: strip_timing(r) for k, r in a.items()} == {k: strip_timing(r) for k, r in b.items()}
    assert {k: strip_timing(r) for k, r in a.items()} == {k: strip_timing(r) for k, r in c.items()}
