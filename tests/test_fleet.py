"""Fleet: twin units differ by a seeded spread; a new unit's warm start pools the other units' history with a
level per unit, and refuses a fleet whose units disagree in shape."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from polythrottle.devices import DeviceOptions, open_device
from polythrottle.errors import BadInputError
from polythrottle.history import HistoryStore
from polythrottle.history_tune import choose_prior, tune_key
from polythrottle.optim.base import Observation
from polythrottle.optim.pooled_prior import MAX_SPREAD, pool
from polythrottle.tuner import Tuner


def _sim(unit: int):
    return open_device(f"sim:jetson-agx-orin?unit={unit}", DeviceOptions(workload="efficientnet-b0"))


def test_twin_units_differ_by_a_few_percent_and_unit_0_is_the_nominal_board() -> None:
    nominal = open_device("sim:jetson-agx-orin", DeviceOptions(workload="efficientnet-b0"))
    e0 = nominal.table.metric("energy_j")
    assert np.array_equal(_sim(0).table.metric("energy_j"), e0)
    diffs = [np.abs(np.log(_sim(u).table.metric("energy_j") / e0)) for u in (1, 2, 3)]
    assert all(0.005 < np.median(d) < 0.15 for d in diffs)
    assert np.array_equal(_sim(2).table.metric("energy_j"), _sim(2).table.metric("energy_j"))  # seeded
    assert _sim(3).identity().unit == "3" and _sim(3).identity().device == "sim:jetson-agx-orin"


@pytest.mark.parametrize("bad", ["x", "-1", "1.5", "99999999999"])
def test_a_bad_unit_is_one_line(bad: str) -> None:
    with pytest.raises(BadInputError, match="unit must be an integer"):
        open_device(f"sim:jetson-agx-orin?unit={bad}", DeviceOptions(workload="efficientnet-b0"))


def test_pooling_recovers_each_source_level_and_keeps_the_shape() -> None:
    rng = np.random.default_rng(0)
    shape_e, shape_l = rng.uniform(0, 1, 20), rng.uniform(0, 1, 20)
    obs = []
    for s, (de, dl) in enumerate([(0.1, -0.05), (-0.1, 0.05), (0.0, 0.0)]):
        for i in rng.choice(20, 12, replace=False):
            obs.append((f"u{s}", Observation(int(i), math.exp(shape_e[i] + de), math.exp(shape_l[i] + dl))))
    pooled = pool(obs)
    assert pooled.sources == 3 and pooled.measurements == len(obs) and pooled.agrees
    assert pooled.spread is not None and pooled.spread < 1e-6
    for o in pooled.observations:  # the typical unit: levels centred
        assert math.log(o.objective) == pytest.approx(shape_e[o.index], abs=1e-6)
        assert math.log(o.constraint) == pytest.approx(shape_l[o.index], abs=1e-6)


def test_sources_that_disagree_in_shape_are_refused() -> None:
    rng = np.random.default_rng(1)
    obs = [(s, Observation(i, math.exp(rng.normal(0, 0.5)), 1.0)) for s in ("a", "b") for i in range(10)]
    pooled = pool(obs)
    assert pooled.spread is not None and pooled.spread > MAX_SPREAD and not pooled.agrees


def _record(store: HistoryStore, key, unit: str, version: str, rows: list[tuple[dict, float, float]]) -> None:
    tid = store.begin_tune(key, version, slo_ms=15, optimizer="cbo", knobs=["gpu_mhz"], unit=unit)
    for step, (cfg, e, lat) in enumerate(rows):
        store.add_measurement(tid, step=step, config=cfg, energy_j=e, latency_ms=lat, role="explore")
    store.finish_tune(tid, best_config=None)


def test_a_new_unit_starts_from_the_fleet_then_from_its_own_history(tmp_path: Path) -> None:
    dev = _sim(3)
    tuner = Tuner(dev, 15.0, 5, optimizer="random", knobs=["gpu_mhz"])
    key = tune_key(tuner, dev)
    base = tuner.baseline_config
    cfgs = [{**base, "gpu_mhz": v} for v in tuner.space.knob("gpu_mhz").values[-4:]]
    with HistoryStore(tmp_path / "h.sqlite") as store:
        assert choose_prior(store, key, "v1", "3", tuner) is None  # nothing stored: cold
        _record(store, key, "1", "v1", [(c, 1.0 + 0.1 * i, 10.0 + i) for i, c in enumerate(cfgs)])
        _record(store, key, "2", "v1", [(c, 1.1 * (1.0 + 0.1 * i), 10.5 + i) for i, c in enumerate(cfgs)])
        prior, info = choose_prior(store, key, "v1", "3", tuner)
        assert info.source == "fleet" and info.units == 2 and info.prior_measurements == 8 and info.fallback is None
        assert len(prior) == 4  # one pooled observation per config
        _record(store, key, "3", "v1", [(cfgs[0], 1.2, 11.0)])
        prior, info = choose_prior(store, key, "v1", "3", tuner)
        assert info.source == "unit" and len(prior) == 1  # a repeated tune: its own measurements first
        prior, info = choose_prior(store, key, "v2", "3", tuner)  # a new model version: the fleet had none
        assert info.source == "unit" and info.from_version == "v1"


def test_a_fleet_that_disagrees_is_not_used(tmp_path: Path) -> None:
    dev = _sim(4)
    tuner = Tuner(dev, 15.0, 5, optimizer="random", knobs=["gpu_mhz"])
    key = tune_key(tuner, dev)
    cfgs = [{**tuner.baseline_config, "gpu_mhz": v} for v in tuner.space.knob("gpu_mhz").values[-6:]]
    with HistoryStore(tmp_path / "h.sqlite") as store:
        _record(store, key, "1", "v1", [(c, 1.0 + i, 10.0) for i, c in enumerate(cfgs)])
        _record(store, key, "2", "v1", [(c, 6.0 - i, 10.0) for i, c in enumerate(cfgs)])
        prior, info = choose_prior(store, key, "v1", "4", tuner)
        assert prior == [] and info.source == "fleet" and "disagree" in (info.fallback or "")
