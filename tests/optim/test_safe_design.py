"""Safe exploration and SLOs no config meets (polythrottle/optim/safe_design.py)."""

from __future__ import annotations

import numpy as np
import pytest

from polythrottle.optim import Observation, make_optimizer
from tests.optim.cbo_problem import ENERGY, FASTEST, LATENCY, OPT, SLO, SPACE, drive_env


@pytest.mark.parametrize("seed", [0, 1])
def test_safe_exploration_from_the_baseline_and_a_tune_that_ends_itself(seed):
    opt = make_optimizer("cbo", SPACE, SLO, seed)
    seen = drive_env(opt, 20, seed=seed, baseline=FASTEST)
    assert max(LATENCY[seen[1:]]) <= 3 * SLO  # never the slow corner (lowest clock, batch 32: ~17x the SLO)
    assert sum(LATENCY[seen[1:]] > SLO) <= 4
    assert opt.stop_reason and "converged" in opt.stop_reason and len(seen) < 20
    rec = opt.recommend()
    assert LATENCY[rec.index] <= SLO and ENERGY[rec.index] <= 1.05 * OPT


def test_an_slo_no_config_meets_is_recognised_from_the_fastest_configs():
    opt = make_optimizer("cbo", SPACE, 0.5 * LATENCY.min(), 0)
    seen = drive_env(opt, 20, baseline=SPACE.index_of({"gpu_mhz": 700, "batch_size": 4}))
    assert len(seen) <= 5 and FASTEST in seen
    assert "no config can meet" in opt.stop_reason and opt.recommend().index is None


def test_cli_impossible_slo_exits_3_naming_the_fastest_config(capsys):
    from polythrottle.cli import main

    code = main(["tune", "--device", "sim:jetson-nano", "--workload", "bert-base", "--slo-ms", "100",
                 "--noise", "0.02", "--seed", "0", "--json", "--no-history"])
    out, err = capsys.readouterr()
    import json

    res = json.loads(out)
    assert code == 3 and res["best"] is None and res["measurements"] <= 5
    assert "no config can meet" in res["stop_reason"]
    assert "lowest latency reachable" in err and "gpu_mhz=921.6" in err and res["fastest"]["latency_ms"] > 100



def _asked_after(told_points, slo, settings=None):
    """cbo's next ask after it was told ``(gpu_mhz, batch_size)`` points (their true values, 2% noise)."""
    from polythrottle.optim.cbo import ConstrainedBO

    rng = np.random.default_rng(0)
    opt = ConstrainedBO(SPACE, slo, 0, settings)
    for gpu, batch in told_points:
        i = SPACE.index_of({"gpu_mhz": gpu, "batch_size": batch})
        opt.tell(Observation(i, ENERGY[i] * (1 + 0.02 * rng.standard_normal()),
                             LATENCY[i] * (1 + 0.02 * rng.standard_normal())))
    return SPACE.config(opt.ask(remaining=18))


@pytest.mark.parametrize("slo", [14.0, 9.0])
def test_a_batch_step_no_bound_proves_feasible_is_probed(slo):
    # the baseline (1300 MHz, batch 1) takes 8 ms, so batch 2 is bounded only by 16 ms (twice as long
    # at most): no provably feasible move; one step along the batch knob, whose latency effect nothing
    # measured shows yet, is under 3x the SLO and is measured next (truly 13 ms: feasible at 14 ms,
    # not at 9 ms; either way the GP then knows what a batch step costs)
    assert _asked_after([(1300, 1)], slo) == {"gpu_mhz": 1300, "batch_size": 2}


def test_no_probe_beyond_the_hard_bound():
    # with a hard bound of 1.5 x the SLO, the 16 ms bound of batch 2 (1.8 x 9 ms) keeps it unmeasured
    from polythrottle.optim.cbo import CBOSettings

    assert _asked_after([(1300, 1)], 9.0, CBOSettings(bound_factor=1.5))["batch_size"] == 1


def test_a_provably_feasible_batch_move_goes_as_far_as_the_bound_allows():
    # SLO 60 ms: batch 4 is bounded by 4 x 8 = 32 ms, batch 8 by 64 ms: the design moves to batch 4
    assert _asked_after([(1300, 1)], 60.0) == {"gpu_mhz": 1300, "batch_size": 4}
