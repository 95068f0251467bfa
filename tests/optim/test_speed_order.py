"""The knobs' speed order in constrained BO (polythrottle/optim/speed_order.py)."""

from __future__ import annotations

import numpy as np

from polythrottle.optim import Observation, make_optimizer
from polythrottle.space import Knob, SearchSpace
from tests.optim.cbo_problem import FASTEST, SLO, SPACE, told


def test_trend_bounds_follow_dominance():
    # a confidently infeasible point at (800 MHz, batch 8): slower points (lower clock, larger batch)
    # are bounded near 0; a confidently feasible one at (1000, 2) makes faster points near-certain
    opt = told([(800, 8, 2.0 * SLO), (1000, 2, 0.5 * SLO)])
    at = lambda gpu, batch: np.array([SPACE.index_of({"gpu_mhz": gpu, "batch_size": batch})])
    lo, hi = opt._trend_bounds(at(700, 16))
    assert hi[0] < 0.01 and lo[0] == 0.0
    lo, hi = opt._trend_bounds(at(1200, 1))
    assert lo[0] > 0.99 and hi[0] == 1.0
    lo, hi = opt._trend_bounds(at(1200, 32))  # faster clock, larger batch: not comparable to either
    assert (lo[0], hi[0]) == (0.0, 1.0)


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


def test_a_contradicted_pair_of_ranks_keeps_the_rest_of_the_order():
    # TF32 measured faster than fp16 (as at batch 1 with CUDA graphs on an H100): their order goes, but
    # fp32 stays slower than both, so fp32 configs stay pruned and an impossible verdict need not measure them
    from polythrottle.optim.cbo import ConstrainedBO

    space = SearchSpace.product([Knob("batch_size", (1, 2)), Knob("precision", ("fp32", "tf32", "fp16")),
                                 Knob("cuda_graphs", ("off", "on"))])
    opt = ConstrainedBO(space, 10.0, 0)
    at = lambda b, p, g: space.index_of({"batch_size": b, "precision": p, "cuda_graphs": g})
    for _ in range(2):
        opt.tell(Observation(at(1, "tf32", "on"), 1.0, 2.0))
        opt.tell(Observation(at(1, "fp16", "on"), 2.0, 4.0))
    assert opt._check_order()
    kept = {(c["precision"], c["cuda_graphs"]) for c in (space.config(i) for i in np.flatnonzero(opt.undominated))}
    assert kept == {("tf32", "on"), ("fp16", "on")}
    assert not opt.order.unranked
    assert not opt._check_order()  # nothing new contradicted


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


def _run(space, slo, start, observe, seed=0, opt_seed=0, budget=20):
    """Run cbo from config ``start``, ``observe(index, rng)`` measuring each config it asks for (rng seeded by
    ``seed``), until it ends itself or ``budget`` is spent; (optimizer, measured indices)."""
    opt = make_optimizer("cbo", space, slo, opt_seed)
    rng = np.random.default_rng(seed)
    seen: list[int] = []
    i = space.index_of(start)
    while len(seen) < budget and not opt.stop_reason:
        opt.tell(observe(i, rng))
        seen.append(i)
        i = opt.ask(remaining=budget - len(seen))
    return opt, seen


def _tune(space, slo, start, latency, seed=0, budget=20):
    """Run cbo from config ``start`` on a noiseless-energy, 3%-noise-latency problem; (optimizer, measured indices)."""

    def observe(i, rng):
        c = space.config(i)
        return Observation(i, 0.1 * latency(c) / c["batch_size"], latency(c) * (1 + 0.03 * rng.standard_normal()))

    return _run(space, slo, start, observe, seed=seed, budget=budget)


def test_an_impossible_verdict_first_checks_the_ranks_it_rests_on():
    # at batch 1 with CUDA graphs, TF32 is faster than fp16 (as on the H100 ResNet-50 table); the SLO is
    # under every latency. The speed ranks (fp32 -> tf32 -> fp16, graphs off -> on) say fp16 + graphs is
    # the fastest; before declaring the SLO impossible, cbo measures one rank lower on each ranked knob,
    # so the fastest config it reports is the truly fastest one, within 5 measurements (ranks whose one-rank
    # slowdown is bounded: precision, not CUDA graphs)
    space = SearchSpace.product([Knob("batch_size", (1, 2, 4)), Knob("precision", ("fp32", "tf32", "fp16")),
                                 Knob("cuda_graphs", ("off", "on"))])
    base = {"fp32": 5.0, "tf32": 1.0, "fp16": 1.12}

    def latency(c):
        return base[c["precision"]] * (1.0 if c["cuda_graphs"] == "on" else 4.0) * (1 + 0.6 * (c["batch_size"] - 1))

    opt, seen = _tune(space, 0.8, {"batch_size": 1, "precision": "fp32", "cuda_graphs": "off"}, latency)
    assert "no config can meet" in opt.stop_reason and opt.recommend().index is None
    assert len(seen) <= 5
    assert space.index_of({"batch_size": 1, "precision": "tf32", "cuda_graphs": "on"}) in seen
    # CUDA graphs off, 4x slower here and up to 17x in the measured tables, is not measured to check its rank
    assert all(space.config(i)["cuda_graphs"] == "on" for i in seen[1:])


def test_an_impossible_verdict_first_measures_every_value_of_an_unordered_knob():
    # a categorical knob without a known speed order (here "backend"): the GP has no data on its
    # unmeasured values and predicts them as slow as the slowest measured config. Two slow measurements
    # must not end the tune as impossible while the fast value (c, 10x faster) was never measured.
    space = SearchSpace.product([Knob("batch_size", (1, 8, 32)), Knob("precision", ("fp32", "bf16")),
                                 Knob("backend", ("a", "b", "c"))])
    assert space.knobs[2].speed_rank is None
    base = {"a": 23.0, "b": 25.0, "c": 2.2}

    def latency(cfg):
        return base[cfg["backend"]] * (1.0 if cfg["precision"] == "bf16" else 1.4) * cfg["batch_size"] ** 0.1

    opt, seen = _tune(space, 4.0, {"batch_size": 1, "precision": "fp32", "backend": "a"}, latency)
    assert "no config can meet" not in opt.stop_reason
    assert any(space.config(j)["backend"] == "c" for j in seen)
    rec = opt.recommend()
    assert rec.index is not None and space.config(rec.index)["backend"] == "c"


def test_an_impossible_verdict_stands_after_every_unordered_value_was_measured():
    space = SearchSpace.product([Knob("batch_size", (1, 8)), Knob("backend", ("a", "b", "c"))])

    def latency(cfg):
        return {"a": 20.0, "b": 30.0, "c": 12.0}[cfg["backend"]] * cfg["batch_size"] ** 0.5

    opt, seen = _tune(space, 1.0, {"batch_size": 1, "backend": "a"}, latency, seed=1)
    assert "no config can meet" in opt.stop_reason
    assert {space.config(j)["backend"] for j in seen} == {"a", "b", "c"}
    assert len(seen) <= 5


def _precision_problem(tf32_factor):
    """batch x precision x CUDA graphs where TF32 runs at ``tf32_factor`` x fp16's latency (draws more power)."""
    space = SearchSpace.product([Knob("batch_size", (1, 2, 4, 8)), Knob("precision", ("fp32", "tf32", "fp16")),
                                 Knob("cuda_graphs", ("off", "on"))])
    base = {"fp32": 3.0, "tf32": tf32_factor, "fp16": 1.0}
    per_batch = {1: 1.0, 2: 1.1, 4: 1.35, 8: 1.6}

    def latency(c):
        return base[c["precision"]] * (1.0 if c["cuda_graphs"] == "on" else 6.0) * per_batch[c["batch_size"]]

    return space, latency


def test_a_converged_tune_checks_the_precision_order_it_pruned_by():
    # as EfficientNet-B0 on an H200: TF32 runs 15-20% faster than fp16, so at SLO 1.5 batch 8 fits in TF32
    # (1.28) but not in fp16 (1.6). The order fp32 -> tf32 -> fp16 prunes every TF32 config; before the tune
    # ends itself, cbo measures its pick one precision rank lower, sees the order contradicted, and finds
    # the cheapest config (TF32, batch 8) instead of stopping at fp16 batch 4
    space, latency = _precision_problem(0.8)
    start = {"batch_size": 1, "precision": "fp32", "cuda_graphs": "off"}
    for seed in range(3):
        opt, seen = _tune(space, 1.5, start, latency, seed=seed)
        assert space.index_of({"batch_size": 4, "precision": "tf32", "cuda_graphs": "on"}) in seen
        assert opt.recommend().index == space.index_of({"batch_size": 8, "precision": "tf32", "cuda_graphs": "on"})
        assert opt.stop_reason.startswith(("converged", "every config not dominated"))


def test_a_contradicted_rank_gets_its_best_opened_config_measured_before_the_tune_ends():
    # as EfficientNet-B0 on the H200 table: TF32 is 20% faster than fp16 at batch 4 and scales better with
    # batch, so batch 8 meets the SLO in TF32 (1.45) but not in fp16 (2.1). Scaling TF32 by fp16's batch
    # trend, the GP puts TF32 batch 8 16% over the SLO (too likely over 1.2x the SLO to explore); once the
    # rank check contradicts the precision order, the tune measures the opened config most likely to be a
    # cheaper feasible pick before it ends itself
    space = SearchSpace.product([Knob("batch_size", (1, 2, 4, 8)), Knob("precision", ("fp32", "tf32", "fp16")),
                                 Knob("cuda_graphs", ("off", "on"))])
    per_batch = {"fp32": {1: 3.0, 2: 3.3, 4: 4.0, 8: 5.0}, "tf32": {1: 0.9, 2: 0.95, 4: 1.05, 8: 1.45},
                 "fp16": {1: 1.0, 2: 1.05, 4: 1.32, 8: 2.1}}
    power = {"fp32": 1.3, "tf32": 1.1, "fp16": 1.0}

    def latency(c):
        return per_batch[c["precision"]][c["batch_size"]] * (1.0 if c["cuda_graphs"] == "on" else 6.0)

    def observe(i, rng):
        c = space.config(i)
        return Observation(i, 0.1 * power[c["precision"]] * latency(c) / c["batch_size"],
                           latency(c) * (1 + 0.03 * rng.standard_normal()))

    best = space.index_of({"batch_size": 8, "precision": "tf32", "cuda_graphs": "on"})
    start = {"batch_size": 1, "precision": "fp32", "cuda_graphs": "off"}
    for seed in range(3):
        opt, seen = _run(space, 1.5, start, observe, seed=seed, opt_seed=seed)
        assert best in seen, [space.config(j) for j in seen]
        assert opt.recommend().index == best
        assert opt.stop_reason.startswith(("converged", "every config not dominated")), opt.stop_reason
        assert len(seen) <= 12


def test_the_precision_check_costs_one_measurement_when_the_order_holds():
    # TF32 20% slower than fp16: the check confirms the order; the pick and the stop stay as without it,
    # and CUDA graphs (off can be many times slower) is never checked on a feasible tune
    space, latency = _precision_problem(1.2)
    start = {"batch_size": 1, "precision": "fp32", "cuda_graphs": "off"}
    for seed in range(3):
        opt, seen = _tune(space, 1.5, start, latency, seed=seed)
        assert opt.recommend().index == space.index_of({"batch_size": 4, "precision": "fp16", "cuda_graphs": "on"})
        explored = [space.config(i) for i in seen[1:]]
        assert all(c["cuda_graphs"] == "on" for c in explored)
        assert sum(c["precision"] == "tf32" for c in explored) <= 1


def test_a_rank_contradicted_within_one_measurements_noise_gets_a_second_look():
    # as EfficientNet-B0 live on an H200: TF32 batch 4 measured once 8% faster than fp16 batch 4 (1% noise
    # per measurement, reported), beyond the rank test's relative slack but inside its noise allowance for
    # one measurement; before the tune ends, each of the two is measured again so that the test decides on
    # two measurements of each (batch 8 meets the SLO in TF32 only)
    space, latency = _precision_problem(0.92)
    power = {"fp32": 1.3, "tf32": 1.1, "fp16": 1.0}
    tf32_b4 = space.index_of({"batch_size": 4, "precision": "tf32", "cuda_graphs": "on"})
    fp16_b4 = space.index_of({"batch_size": 4, "precision": "fp16", "cuda_graphs": "on"})
    start = {"batch_size": 1, "precision": "fp32", "cuda_graphs": "off"}

    def observe(i, rng):
        c = space.config(i)
        return Observation(i, 0.1 * power[c["precision"]] * latency(c) / c["batch_size"],
                           latency(c) * (1 + 0.01 * rng.standard_normal()), objective_rel_std=0.01, constraint_rel_std=0.01)

    for seed in range(3):
        opt, seen = _run(space, 1.5, start, observe, seed=seed, opt_seed=seed)
        assert seen.count(tf32_b4) == 2 and seen.count(fp16_b4) >= 2, [space.config(j) for j in seen]
        assert len(seen) <= 12
