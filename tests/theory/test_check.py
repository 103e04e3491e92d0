"""The check run of fpe_ref.theory.check: its grid, simulations independent of the job count, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fpe_ref.errors import FPEError
from fpe_ref.theory import check as chk


def test_run_simulations_independent_of_jobs():
    cfg1 = chk.CheckConfig.quick_config(jobs=1, parent_budget=200, neuron_budget=2000)
    cfg2 = chk.CheckConfig.quick_config(jobs=2, parent_budget=200, neuron_budget=2000)
    settings = [chk.Setting("grid", "t", 16, 2, 2, 4), chk.Setting("grid", "t", 24, 3, 4, 3)]
    s1, s2 = chk.run_simulations(settings, cfg1), chk.run_simulations(settings, cfg2)
    for key in s1:
        np.testing.assert_array_equal(s1[key]["coll_values"], s2[key]["coll_values"], err_msg=str(key))
        assert s1[key]["all_covered"] == s2[key]["all_covered"]


def test_full_grid_shape():
    """The default grid spans k in {2,3,4} x alpha in {2,4,8} and holds the paper's k=4 case study."""
    grid = chk.main_grid(chk.CheckConfig())
    assert {(s.k, s.alpha) for s in grid} == set(itertools.product((2, 3, 4), (2, 4, 8)))
    assert (32, 4, 2, 8) in {s.key for s in grid}
    assert all(s.r <= chk.CheckConfig().r_cap for s in grid)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: chk.CheckConfig(jobs=0), "jobs .* 0"),
    ],
)
def test_bad_input_raises_fpe_error(call, match):
    """An invalid check configuration (jobs = 0) raises FPEError naming the value."""
    with pytest.raises(FPEError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
