"""Optimizers on a small synthetic constrained problem with a known optimum."""


import numpy as np
import pytest

from polythrottle.errors import BadInputError
from polythrottle.optim import Observation, make_optimizer
from polythrottle.space import Knob, SearchSpace

SPACE = SearchSpace.product([Knob("gpu_mhz", tuple(range(100, 1400, 100))), Knob("batch_size", (1, 2, 4, 8, 16, 32))])
SLO = 60.0


def truth(cfg):
    f, b = cfg["gpu_mhz"], cfg["batch_size"]
    latency = 5.0 * b * (1300 / f) ** 0.9 + 3.0
    energy = (0.3 + 1.2 * (f / 1300) ** 2) * (1 + 2.0 / b) * (1300 / f) ** 0.3
    return energy, latency


ENERGY, LATENCY = np.array([truth(SPACE.config(i)) for i in range(len(SPACE))]).T
OPT = ENERGY[LATENCY <= SLO].min()


def run(name, seed, budget=20, noise=0.02):
    rng = np.random.default_rng(seed)
    opt = make_optimizer(name, SPACE, SLO, seed)
    first = None
    for step in range(budget):
        i = opt.ask(remaining=budget - step)
        e, lat = ENERGY[i] * (1 + noise * rng.standard_normal()), LATENCY[i] * (1 + noise * rng.standard_normal())
        opt.tell(Observation(i, e, lat))
        if first is None and LATENCY[i] <= SLO and ENERGY[i] <= 1.05 * OPT:
            first = step + 1
        if opt.stop_reason:
            break
    return opt, first


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cbo_finds_known_optimum_and_recommends_truly_feasible(seed):
    opt, first = run("cbo", seed)
    rec = opt.recommend()
    assert first is not None and first <= 15
    assert rec.index is not None
    assert LATENCY[rec.index] <= SLO
    assert ENERGY[rec.index] <= 1.05 * OPT
    assert rec.p_feasible is not None and rec.p_feasible >= 0.9


def test_cbo_beats_random_on_median():
    cbo = [run("cbo", s)[1] or 99 for s in range(3)]
    rnd = [run("random", s)[1] or 99 for s in range(3)]
    assert np.median(cbo) < np.median(rnd)


def test_cbo_is_reproducible():
    a, _ = run("cbo", 7, budget=8)
    b, _ = run("cbo", 7, budget=8)
    assert [o.index for o in a.observations] == [o.index for o in b.observations]


def test_no_feasible_point_gives_no_recommendation():
    opt = make_optimizer("cbo", SPACE, 1.0, 0)
    for _ in range(6):
        i = opt.ask(remaining=10)
        opt.tell(Observation(i, ENERGY[i], LATENCY[i]))
    assert opt.recommend().index is None


def test_random_search_never_repeats_until_exhausted():
    space = SearchSpace.product([Knob("a", (1, 2, 3))])
    opt = make_optimizer("random", space, 10.0, 0)
    seen = []
    for _ in range(3):
        i = opt.ask()
        seen.append(i)
        opt.tell(Observation(i, 1.0, 1.0))
    assert sorted(seen) == [0, 1, 2]


def test_bad_inputs():
    with pytest.raises(BadInputError):
        make_optimizer("nope", SPACE, 10.0)
    with pytest.raises(BadInputError):
        make_optimizer("cbo", SPACE, 0.0)
    opt = make_optimizer("random", SPACE, 10.0)
    with pytest.raises(BadInputError):
        opt.tell(Observation(len(SPACE), 1.0, 1.0))
    with pytest.raises(BadInputError):
        opt.tell(Observation(0, -1.0, 1.0))


def test_knob_latency_trend_defaults_from_name():
    assert Knob("gpu_mhz", (1, 2)).latency_trend == -1
    assert Knob("batch_size", (1, 2)).latency_trend == 1
    assert Knob("precision", ("fp16", "fp32")).latency_trend == 0
    assert Knob("gpu_mhz", (1, 2), latency_trend=0).latency_trend == 0
    with pytest.raises(BadInputError):
        Knob("gpu_mhz", (1, 2), latency_trend=2)


def _told(points):
    """A cbo optimizer told (gpu_mhz, batch_size, latency_ms) points, each measured 3 times."""
    opt = make_optimizer("cbo", SPACE, SLO, 0)
    for gpu, batch, latency in points:
        i = SPACE.index_of({"gpu_mhz": gpu, "batch_size": batch})
        for _ in range(3):
            opt.tell(Observation(i, 1.0, latency))
    opt._point_estimates()
    return opt


def test_trend_bounds_follow_dominance():
    # a confidently infeasible point at (800 MHz, batch 8): slower points (lower clock, larger batch)
    # are bounded near 0; a confidently feasible one at (1000, 2) makes faster points near-certain
    opt = _told([(800, 8, 2.0 * SLO), (1000, 2, 0.5 * SLO)])
    at = lambda gpu, batch: np.array([SPACE.index_of({"gpu_mhz": gpu, "batch_size": batch})])
    lo, hi = opt._trend_bounds(at(700, 16))
    assert hi[0] < 0.01 and lo[0] == 0.0
    lo, hi = opt._trend_bounds(at(1200, 1))
    assert lo[0] > 0.99 and hi[0] == 1.0
    lo, hi = opt._trend_bounds(at(1200, 32))  # faster clock, larger batch: not comparable to either
    assert (lo[0], hi[0]) == (0.0, 1.0)


def test_cbo_without_trends_still_converges():
    from polythrottle.optim.cbo import CBOSettings, ConstrainedBO

    flat = SearchSpace(tuple(Knob(k.name, k.values, latency_trend=0) for k in SPACE.knobs), SPACE.rows)
    opt = ConstrainedBO(flat, SLO, 0, CBOSettings())
    rng = np.random.default_rng(0)
    for step in range(20):
        i = opt.ask(remaining=20 - step)
        opt.tell(Observation(i, ENERGY[i] * (1 + 0.02 * rng.standard_normal()), LATENCY[i] * (1 + 0.02 * rng.standard_normal())))
    rec = opt.recommend()
    assert rec.index is not None and LATENCY[rec.index] <= SLO and ENERGY[rec.index] <= 1.05 * OPT


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


# ----- issue 15: knob semantics, safe exploration, tunes that end themselves ---------------------------
def test_knob_semantics_defaults_from_name():
    prec = Knob("precision", ("fp16", "fp32", "tf32", "bf16"))
    assert prec.speed_rank == (2, 0, 1, 2) and prec.latency_trend == 0
    assert list(prec.encode()) == [2 / 3, 0.0, 1 / 3, 1.0]  # along the speed order: fp32, tf32, fp16, bf16
    assert Knob("cuda_graphs", ("on", "off")).speed_rank == (1, 0)
    assert Knob("channels_last", ("off", "on")).speed_rank is None
    assert Knob("precision", ("fp16", "native")).speed_rank is None  # an unknown value: no order at all
    assert Knob("gpu_mhz", (1, 2)).latency_exponent == 1.0 and Knob("gpu_mhz", (1, 2)).energy_trend == 0
    assert Knob("batch_size", (1, 2)).energy_trend == -1
    assert Knob("power_w", (1, 2)).latency_exponent is None
    with pytest.raises(BadInputError):
        Knob("precision", ("fp16", "fp32"), speed_rank=(1,))
    with pytest.raises(BadInputError):
        Knob("batch_size", (1, 2), latency_exponent=1.0, latency_trend=0)


def test_speed_order_prunes_dominated_configs_until_measurements_contradict_it():
    from polythrottle.optim.cbo import ConstrainedBO, SpeedOrder

    space = SearchSpace.product([Knob("batch_size", (1, 2, 4)), Knob("precision", ("fp32", "fp16", "bf16")),
                                 Knob("cuda_graphs", ("off", "on"))])
    dominated = SpeedOrder(space).dominated()
    kept = {(c["precision"], c["cuda_graphs"]) for c in (space.config(i) for i in np.flatnonzero(~dominated))}
    assert kept == {("fp16", "on"), ("bf16", "on")}  # fp16 and bf16 tie: neither dominates the other
    opt = ConstrainedBO(space, 10.0, 0)
    at = lambda b, p, g: space.index_of({"batch_size": b, "precision": p, "cuda_graphs": g})
    # fp16 measured clearly slower and costlier than fp32 with everything else equal: the order is wrong here
    for _ in range(2):
        opt.tell(Observation(at(1, "fp32", "on"), 1.0, 2.0))
        opt.tell(Observation(at(1, "fp16", "on"), 2.0, 4.0))
    assert opt._check_order()
    # precision has no known order any more; the CUDA-graphs order, which nothing contradicted, stays
    kept = {(c["precision"], c["cuda_graphs"]) for c in (space.config(i) for i in np.flatnonzero(opt.undominated))}
    assert kept == {("fp32", "on"), ("fp16", "on"), ("bf16", "on")}
    # once graphs-on is measured slower and costlier than graphs-off, that order goes too
    for _ in range(2):
        opt.tell(Observation(at(2, "fp16", "off"), 1.0, 2.0))
        opt.tell(Observation(at(2, "fp16", "on"), 2.0, 4.0))
    assert opt._check_order()
    assert opt.undominated.all()


def _drive_env(opt, budget, noise=0.02, seed=0, baseline=None, exact=False):
    """Ask/tell like the tuner (a stop ends the tune before measuring); returns the measured indices."""
    rng = np.random.default_rng(seed)
    seen = []
    if baseline is not None:
        opt.tell(Observation(baseline, ENERGY[baseline], LATENCY[baseline], *((0.0, 0.0) if exact else ())))
        seen.append(baseline)
    while len(seen) < budget:
        i = opt.ask(remaining=budget - len(seen))
        if opt.stop_reason:
            break
        if exact:
            opt.tell(Observation(i, ENERGY[i], LATENCY[i], 0.0, 0.0))
        else:
            opt.tell(Observation(i, ENERGY[i] * (1 + noise * rng.standard_normal()),
                                 LATENCY[i] * (1 + noise * rng.standard_normal())))
        seen.append(i)
    return seen


FASTEST = SPACE.index_of({"gpu_mhz": 1300, "batch_size": 1})


@pytest.mark.parametrize("seed", [0, 1])
def test_safe_exploration_from_the_baseline_and_a_tune_that_ends_itself(seed):
    opt = make_optimizer("cbo", SPACE, SLO, seed)
    seen = _drive_env(opt, 20, seed=seed, baseline=FASTEST)
    assert max(LATENCY[seen[1:]]) <= 3 * SLO  # never the slow corner (lowest clock, batch 32: ~17x the SLO)
    assert sum(LATENCY[seen[1:]] > SLO) <= 4
    assert opt.stop_reason and "converged" in opt.stop_reason and len(seen) < 20
    rec = opt.recommend()
    assert LATENCY[rec.index] <= SLO and ENERGY[rec.index] <= 1.05 * OPT


def test_zero_noise_never_measures_a_config_twice():
    opt = make_optimizer("cbo", SPACE, SLO, 0)
    seen = _drive_env(opt, 30, baseline=FASTEST, exact=True)
    assert opt.exact and len(seen) == len(set(seen))
    assert opt.recommend().p_feasible in (0.0, 1.0)


def test_an_slo_no_config_meets_is_recognised_from_the_fastest_configs():
    opt = make_optimizer("cbo", SPACE, 0.5 * LATENCY.min(), 0)
    seen = _drive_env(opt, 20, baseline=SPACE.index_of({"gpu_mhz": 700, "batch_size": 4}))
    assert len(seen) <= 5 and FASTEST in seen
    assert "no config can meet" in opt.stop_reason and opt.recommend().index is None


def test_repeated_measurements_outweigh_one_noisy_faster_neighbour():
    # B is slower than A by the knobs' order (lower clock). A measured once 1% over the SLO must not cap
    # B's P(feasible), when B was measured four times 6% under it, at A's own P(feasible).
    opt = make_optimizer("cbo", SPACE, SLO, 0)
    a, b = SPACE.index_of({"gpu_mhz": 1300, "batch_size": 8}), SPACE.index_of({"gpu_mhz": 1200, "batch_size": 8})
    opt.tell(Observation(a, 1.0, 1.01 * SLO))
    for x in (0.93, 0.95, 0.94, 0.94):
        opt.tell(Observation(b, 1.0, x * SLO))
    opt.tell(Observation(FASTEST, 3.0, 0.2 * SLO))
    est = opt._point_estimates()
    p = dict(zip(est.idx, est.p))
    assert p[a] < 0.5 < opt.settings.confidence <= p[b]


def test_tuner_stops_before_measuring_and_never_remeasures_an_exact_device(tmp_path):
    from polythrottle.devices import DeviceOptions, open_device
    from polythrottle.tuner import Tuner

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
