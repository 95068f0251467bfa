"""Safe exploration and SLOs no config meets (polythrottle/optim/safe_design.py)."""

from __future__ import annotations

import pytest

from polythrottle.optim import make_optimizer
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
