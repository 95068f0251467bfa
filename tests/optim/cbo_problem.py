"""A small synthetic constrained problem with a known optimum (GPU clock x batch size), shared by the
optimizer tests, and helpers that drive an optimizer on it like the tuner does."""

from __future__ import annotations

import numpy as np

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


def told(points):
    """A cbo optimizer told (gpu_mhz, batch_size, latency_ms) points, each measured 3 times."""
    opt = make_optimizer("cbo", SPACE, SLO, 0)
    for gpu, batch, latency in points:
        i = SPACE.index_of({"gpu_mhz": gpu, "batch_size": batch})
        for _ in range(3):
            opt.tell(Observation(i, 1.0, latency))
    opt._point_estimates()
    return opt


def drive_env(opt, budget, noise=0.02, seed=0, baseline=None, exact=False):
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
