"""``polythrottle fleet``: per device (board), workload, knob space, model version and SLO, how many units
and tunes the history holds, the config the tunes recommend most, and how much that config's energy and
latency vary across the units that measured it.

Per unit the config's value is the median of that unit's measurements of it (any tune of the same key
and model version, whatever its SLO); across units: min, median, max and the coefficient of variation
(population standard deviation / mean; None with fewer than 2 units). Units of unknown id ("") are one
unit. ``feasible_units``: units whose median latency of the config meets the group's SLO.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from polythrottle.errors import brief
from polythrottle.history.rowcheck import RowCheck
from polythrottle.history.schema import measurements, tunes
from polythrottle.history.store import HistoryStore
from polythrottle.space import Config


@dataclass(frozen=True)
class Spread:
    """A quantity over units: min, median, max and coefficient of variation (None for one unit)."""

    min: float
    median: float
    max: float
    cv: float | None

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        mean = statistics.fmean(values)
        cv = statistics.pstdev(values) / mean if len(values) > 1 and mean > 0 else None
        return cls(min(values), statistics.median(values), max(values), cv)


@dataclass(frozen=True)
class FleetGroup:
    device: str
    workload: str
    space: str
    model_version: str
    slo_ms: float
    units: int
    tunes: int
    measurements: int
    best_config: Config | None  # the config most finished tunes recommended (ties: lower energy)
    best_tunes: int  # how many finished tunes recommended it
    config_units: int  # units that measured it
    energy_j: Spread | None
    latency_ms: Spread | None
    feasible_units: int

    @property
    def board(self) -> str:
        return self.device.partition(":")[2]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["board"] = self.board
        return d


def fleet_summary(store: HistoryStore) -> list[FleetGroup]:
    """One ``FleetGroup`` per (device, workload, space, model version, SLO), sorted by those."""
    group_cols = (tunes.c.device, tunes.c.workload, tunes.c.space, tunes.c.model_version, tunes.c.slo_ms)
    q_groups = (sa.select(*group_cols, sa.func.count(sa.distinct(tunes.c.unit)), sa.func.count(sa.distinct(tunes.c.id)),
                          sa.func.count(measurements.c.id))
                .select_from(tunes.outerjoin(measurements, measurements.c.tune_id == tunes.c.id))
                .group_by(*group_cols).order_by(*group_cols))
    q_best = (sa.select(*group_cols, tunes.c.best_config, sa.func.count(), sa.func.avg(tunes.c.best_energy_j))
              .where(tunes.c.status == "done", tunes.c.best_config.is_not(None))
              .group_by(*group_cols, tunes.c.best_config))

    def read(conn: sa.Connection) -> tuple[Sequence[Any], Sequence[Any]]:
        return conn.execute(q_groups).all(), conn.execute(q_best).all()

    groups, bests = store.read("fleet summary", read)
    choice: dict[tuple, tuple[str, int, float]] = {}
    for *g, cfg, n, mean_e in bests:
        key = tuple(g)
        cand = (cfg, int(n), float(mean_e) if mean_e is not None else float("inf"))
        cur = choice.get(key)
        if cur is None or (cand[1], -cand[2]) > (cur[1], -cur[2]):
            choice[key] = cand

    out = []
    for device, workload, space, version, slo, units, ntunes, nmeas in groups:
        best = choice.get((device, workload, space, version, slo))
        row = RowCheck(store.url, f"tunes of {brief(device, 40)}, {brief(workload, 40)}, model version {brief(version, 40)}")
        slo_ms = row.positive("slo_ms", slo)
        best_config = row.config("best_config", best[0]) if best else None
        energy = latency = None
        config_units = feasible = 0
        if best is not None:
            per_unit = _per_unit(store, device, workload, space, version, best[0])
            if per_unit:
                energy = Spread.of([e for e, _ in per_unit.values()])
                latency = Spread.of([lat for _, lat in per_unit.values()])
                config_units = len(per_unit)
                feasible = sum(1 for _, lat in per_unit.values() if lat <= slo_ms)
        out.append(FleetGroup(
            device=device, workload=workload, space=space, model_version=version, slo_ms=slo_ms, units=int(units),
            tunes=int(ntunes), measurements=int(nmeas), best_config=best_config,
            best_tunes=best[1] if best else 0, config_units=config_units, energy_j=energy, latency_ms=latency,
            feasible_units=feasible,
        ))
    return out


def _per_unit(store: HistoryStore, device: str, workload: str, space: str, version: str,
              config_json: str) -> dict[str, tuple[float, float]]:
    """{unit: (median energy_j, median latency_ms)} of one config's measurements."""
    q = (sa.select(tunes.c.unit, measurements.c.energy_j, measurements.c.latency_ms)
         .join(tunes, tunes.c.id == measurements.c.tune_id)
         .where(tunes.c.device == device, tunes.c.workload == workload, tunes.c.space == space,
                tunes.c.model_version == version, measurements.c.config == config_json))
    rows = store.read("fleet summary", lambda c: c.execute(q).all())
    by_unit: dict[str, list[tuple[float, float]]] = defaultdict(list)
    row = RowCheck(store.url, f"measurements of {brief(config_json, 60)} on {brief(device, 40)}, model version "
                   f"{brief(version, 40)}")
    for unit, e, lat in rows:
        by_unit[unit].append((row.positive("energy_j", e), row.positive("latency_ms", lat)))
    return {u: (statistics.median(e for e, _ in v), statistics.median(lat for _, lat in v)) for u, v in by_unit.items()}


__all__ = ["FleetGroup", "Spread", "fleet_summary"]
