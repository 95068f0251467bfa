"""Optimizers on a small synthetic constrained problem with a known optimum."""

import math

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
        e, l = ENERGY[i] * (1 + noise * rng.standard_normal()), LATENCY[i] * (1 + noise * rng.standard_normal())
        opt.tell(Observation(i, e, l))
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
