"""Tunes that end themselves and re-measurements (polythrottle/optim/stopping.py)."""

from __future__ import annotations

import numpy as np

from polythrottle.optim import Observation, make_optimizer
from tests.optim.cbo_problem import FASTEST, SLO, SPACE, drive_env


def test_recheck_prefers_the_point_repeats_can_confirm():
    # the recommendation costs 2.0; B (1.0) measured 2% over the SLO is most likely infeasible, C (1.2)
    # measured 5% under it is likely feasible but not yet confidently: C is worth re-measuring, not B
    opt = make_optimizer("cbo", SPACE, SLO, 0)
    at = lambda gpu, batch: SPACE.index_of({"gpu_mhz": gpu, "batch_size": batch})
    for lat in (0.48, 0.50, 0.52):
        opt.tell(Observation(at(1300, 1), 2.0, lat * SLO))
    for lat in (0.97, 1.03):
        opt.tell(Observation(at(1000, 2), 1.5, lat * SLO))
    opt.tell(Observation(at(700, 8), 1.0, 1.02 * SLO))
    opt.tell(Observation(at(900, 4), 1.2, 0.95 * SLO))
    est = opt._point_estimates()
    p = dict(zip(est.idx, est.p))
    assert opt.settings.recheck_min_p <= p[at(700, 8)] < p[at(900, 4)] < opt.settings.confidence
    assert opt._uncertain_pick(remaining=5) == at(900, 4)
    # with nothing left to spend there is nothing to gain from a recheck
    assert opt._uncertain_pick(remaining=0) is None


def test_a_space_measured_to_the_end_still_confirms_its_cheapest_uncertain_config():
    # four configs, all measured: the cheapest (batch 8) measured once 7% under the SLO is not yet
    # confidently feasible. With nothing left to explore the tune re-measures it instead of ending on
    # a config that costs 5x more
    from polythrottle.space import Knob, SearchSpace

    space = SearchSpace.product([Knob("batch_size", (1, 2, 4, 8))])
    opt = make_optimizer("cbo", space, 3.0, 0)
    # batch 1 measured twice, 8% apart: the measurements are noisy
    for b, lat, e in ((1, 2.0, 0.36), (1, 2.16, 0.37), (2, 2.3, 0.19), (4, 2.5, 0.10), (8, 2.8, 0.057)):
        opt.tell(Observation(space.index_of({"batch_size": b}), e, lat))
    est = opt._point_estimates()
    assert dict(zip(est.idx, est.p))[3] < opt.settings.confidence
    assert opt.ask(remaining=10) == space.index_of({"batch_size": 8})
    assert not opt.stop_reason
    # confirmed by repeats, the tune then ends on it
    for lat in (2.75, 2.8, 2.78):
        opt.tell(Observation(space.index_of({"batch_size": 8}), 0.057, lat))
    opt.ask(remaining=7)
    assert opt.stop_reason and opt.recommend().index == space.index_of({"batch_size": 8})


def test_zero_noise_never_measures_a_config_twice():
    opt = make_optimizer("cbo", SPACE, SLO, 0)
    seen = drive_env(opt, 30, baseline=FASTEST, exact=True)
    assert opt.exact and len(seen) == len(set(seen))
    assert opt.recommend().p_feasible in (0.0, 1.0)


def test_tuner_stops_before_measuring_and_never_remeasures_an_exact_device(tmp_path):
    from polythrottle.devices import DeviceOptions, open_device
    from polythrottle.tuning.tuner import Tuner

    dev = open_device("sim:jetson-agx-orin", DeviceOptions(workload="efficientnet-b0", noise=0.0))
    dev.apply(dev.default_config())
    m = dev.measure()
    assert m.energy_rel_std == 0.0 and m.latency_rel_std == 0.0
    res = Tuner(dev, 20.0, 20, knobs=["gpu_mhz", "emc_mhz", "batch_size"], seed=0).run()
    configs = [tuple(r.config.items()) for r in res.history]
    assert len(configs) == len(set(configs)) and res.stop_reason and len(res.history) <= 20
    assert res.fastest is not None and res.fastest.latency_ms == min(r.measurement.latency_ms for r in res.history)
    noisy = open_device("sim:jetson-agx-orin", DeviceOptions(workload="efficientnet-b0", noise=0.02, seed=0))
    noisy.apply(noisy.default_config())
    assert noisy.measure().latency_rel_std is None  # the true noise level is not leaked to the optimizer


def test_a_recommendation_measured_once_is_confirmed_before_the_tune_ends():
    # no config measured twice: the noise level is the GP's guess, so the pick is measured again first
    opt = make_optimizer("cbo", SPACE, SLO, 0)
    at = lambda gpu, batch: SPACE.index_of({"gpu_mhz": gpu, "batch_size": batch})
    for (gpu, batch), energy, lat in (((1300, 1), 3.0, 0.2), ((1300, 4), 1.5, 0.5), ((1200, 8), 1.0, 0.8)):
        opt.tell(Observation(at(gpu, batch), energy, lat * SLO))
    est = opt._point_estimates()
    rec = opt.recommend().index
    assert rec is not None and opt._unconfirmed_pick(est) == rec
    opt.tell(Observation(rec, 1.0, 0.81 * SLO))
    assert opt._unconfirmed_pick(opt._point_estimates()) is None


def test_a_converged_tune_rechecks_only_a_config_worth_its_own_stop_rule():
    # the recommendation (1200 MHz, batch 8) is confirmed; B (1100 MHz, batch 8) is barely cheaper and
    # measured just under the SLO, C (700 MHz, batch 16) is 30% cheaper, measured 3% under it. Before a
    # converged tune ends, only C is worth re-measuring: B could save less than the saving the tune
    # stopped looking for. With nothing left to explore, B is re-measured too (nothing else to spend on)
    at = lambda gpu, batch: SPACE.index_of({"gpu_mhz": gpu, "batch_size": batch})

    def told(with_c):
        opt = make_optimizer("cbo", SPACE, SLO, 0)
        for (gpu, batch), energy, lat in (((1300, 1), 3.0, 0.2), ((1300, 4), 1.5, 0.5), ((1300, 8), 1.2, 0.7)):
            opt.tell(Observation(at(gpu, batch), energy, lat * SLO))
        for lat in (0.80, 0.82, 0.79):
            opt.tell(Observation(at(1200, 8), 1.0, lat * SLO))
        opt.tell(Observation(at(1100, 8), 0.997, 0.985 * SLO))
        if with_c:
            opt.tell(Observation(at(700, 16), 0.7, 0.97 * SLO))
        return opt

    opt = told(with_c=True)
    est = opt._point_estimates()
    p = dict(zip(est.idx, est.p))
    assert p[at(1100, 8)] < opt.settings.confidence and p[at(700, 16)] < opt.settings.confidence
    assert opt.recommend().index == at(1200, 8)
    assert opt._recheck_before_stop(10, est, converged=True) == at(700, 16)
    opt = told(with_c=False)
    est = opt._point_estimates()
    assert opt.recommend().index == at(1200, 8) and opt.settings.recheck_min_p <= dict(zip(est.idx, est.p))[at(1100, 8)]
    assert opt._recheck_before_stop(10, est, converged=True) is None
    assert opt._recheck_before_stop(10, est, converged=False) == at(1100, 8)


def test_the_sampled_chance_that_a_better_config_remains_matches_each_candidates_own_chance():
    # one candidate at a time: the joint samples must give its own P(cheaper than the target and feasible
    # by the margin), times its speed-order cap, within Monte Carlo error (512 samples: sd <= 0.022)
    import dataclasses

    from scipy.special import ndtr

    opt = make_optimizer("cbo", SPACE, SLO, 0)
    at = lambda gpu, batch: SPACE.index_of({"gpu_mhz": gpu, "batch_size": batch})
    for (gpu, batch), energy, lat in (((1300, 1), 3.0, 0.2), ((1300, 4), 1.5, 0.5), ((1000, 8), 1.0, 0.8),
                                      ((700, 4), 1.1, 0.75), ((1300, 16), 0.9, 0.95)):
        opt.tell(Observation(at(gpu, batch), energy, lat * SLO))
    opt.settings = dataclasses.replace(opt.settings, stop_candidates=1)
    left = opt.unmeasured()
    view = opt.view(left)
    target = float(np.log(0.95))
    margin = 0.02
    for j in (at(900, 8), at(1300, 8), at(600, 16)):
        i = int(np.flatnonzero(left == j)[0])
        own = ndtr((target - view.mean[i, 0]) / view.std[i, 0]) * ndtr((-margin - view.mean[i, 1]) / view.std[i, 1])
        for cap in (1.0, 0.5):
            p_better = np.zeros(len(left))
            p_better[i] = 1.0  # the one candidate sampled
            upper = np.full(len(left), cap)
            p = opt._p_better_remains(left, p_better, target, margin, upper)
            assert abs(p - own * cap) < 0.07, (j, cap, p, own * cap)
