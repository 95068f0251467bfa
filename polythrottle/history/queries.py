"""The history's read queries, as functions of an open connection (``HistoryStore`` runs them in a
transaction and turns database errors into HistoryErrors). Every row read back is type-checked
(``rowcheck.RowCheck``): a database changed by hand gives one line naming the row and column."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from polythrottle.errors import brief
from polythrottle.history.records import (
    ExportedMeasurement,
    HistoryKey,
    StoredBest,
    StoredMeasurement,
    StoredTune,
    VersionSummary,
)
from polythrottle.history.rowcheck import RowCheck
from polythrottle.history.schema import measurements, tunes


def key_where(key: HistoryKey) -> sa.ColumnElement[bool]:
    return sa.and_(tunes.c.device == key.device, tunes.c.workload == key.workload, tunes.c.space == key.space)


def unit_where(unit: str | None) -> sa.ColumnElement[bool]:
    """``unit``'s own history: its rows and the rows of unknown unit (""). None: every unit."""
    return sa.true() if unit is None else tunes.c.unit.in_([unit, ""])


@dataclass(frozen=True)
class Filters:
    """Filters of ``tunes``/``export`` (None: any)."""

    device: str | None = None
    workload: str | None = None
    model_version: str | None = None
    unit: str | None = None

    def where(self) -> sa.ColumnElement[bool]:
        conds = [col == v for col, v in ((tunes.c.device, self.device), (tunes.c.workload, self.workload),
                                         (tunes.c.model_version, self.model_version), (tunes.c.unit, self.unit))
                 if v is not None]
        return sa.and_(sa.true(), *conds)


def _count() -> Any:
    return (sa.select(sa.func.count()).select_from(measurements).where(measurements.c.tune_id == tunes.c.id)
            .scalar_subquery())


def _measurement(r: Any, where: str, model_version: str, unit: str) -> StoredMeasurement:
    row = RowCheck(where, f"measurement {r['id']}")
    return StoredMeasurement(
        tune_id=r["tune_id"], model_version=model_version, step=row.integer("step", r["step"]),
        config=row.config("config", r["config"]), energy_j=row.positive("energy_j", r["energy_j"]),
        latency_ms=row.positive("latency_ms", r["latency_ms"]), role=row.text("role", r["role"]),
        measured_at=row.number("measured_at", r["measured_at"]),
        energy_rel_std=row.optional("energy_rel_std", r["energy_rel_std"]),
        latency_rel_std=row.optional("latency_rel_std", r["latency_rel_std"]),
        extra=row.mapping("extra", r["extra"]) if r["extra"] else {}, unit=unit,
    )


def observations(conn: sa.Connection, where: str, key: HistoryKey, model_version: str | None,
                 unit: str | None) -> list[StoredMeasurement]:
    cond = sa.and_(key_where(key), unit_where(unit))
    if model_version is not None:
        cond = sa.and_(cond, tunes.c.model_version == model_version)
    q = (sa.select(measurements, tunes.c.model_version, tunes.c.unit)
         .join(tunes, tunes.c.id == measurements.c.tune_id).where(cond).order_by(measurements.c.id))
    out = []
    for r in conn.execute(q).mappings().all():
        row = RowCheck(where, f"measurement {r['id']}")
        out.append(_measurement(r, where, row.text("model_version", r["model_version"]), row.text("unit", r["unit"])))
    return out


def best(conn: sa.Connection, where: str, key: HistoryKey, model_version: str, slo_ms: float | None,
         unit: str | None) -> StoredBest | None:
    q = (sa.select(tunes, _count().label("n"))
         .where(key_where(key), unit_where(unit), tunes.c.model_version == model_version, tunes.c.status == "done",
                tunes.c.best_config.is_not(None))
         .order_by(tunes.c.finished_at.desc(), tunes.c.id.desc()))
    for r in conn.execute(q).mappings().all():
        row = RowCheck(where, f"tune {r['id']}")
        stored_slo = row.positive("slo_ms", r["slo_ms"])
        if slo_ms is not None and not math.isclose(stored_slo, slo_ms, rel_tol=1e-9):
            continue
        baseline = r["baseline_energy_j"]
        return StoredBest(
            tune_id=r["id"], model_version=row.text("model_version", r["model_version"]), slo_ms=stored_slo,
            config=row.config("best_config", r["best_config"]),
            energy_j=row.positive("best_energy_j", r["best_energy_j"]),
            latency_ms=row.positive("best_latency_ms", r["best_latency_ms"]),
            finished_at=row.number("finished_at", r["finished_at"]), measurements=r["n"],
            baseline_energy_j=None if baseline is None else row.positive("baseline_energy_j", baseline),
            warm_from=None if r["warm_from"] is None else row.text("warm_from", r["warm_from"]),
            unit=row.text("unit", r["unit"]),
        )
    return None


def model_versions(conn: sa.Connection, where: str, key: HistoryKey, unit: str | None) -> list[VersionSummary]:
    last = sa.func.max(measurements.c.measured_at).label("last")
    q = (sa.select(tunes.c.model_version, sa.func.count(sa.distinct(tunes.c.id)), sa.func.count(measurements.c.id),
                   last)
         .join(measurements, measurements.c.tune_id == tunes.c.id)
         .where(key_where(key), unit_where(unit))
         .group_by(tunes.c.model_version).order_by(last, tunes.c.model_version))
    out = []
    for v, t, n, ts in conn.execute(q).all():
        row = RowCheck(where, f"model version {brief(v, 40)}")
        out.append(VersionSummary(row.text("model_version", v), int(t), int(n), row.number("measured_at", ts)))
    return out


def keys(conn: sa.Connection) -> list[HistoryKey]:
    rows = conn.execute(sa.select(tunes.c.device, tunes.c.workload, tunes.c.space).distinct()).all()
    return sorted((HistoryKey(*r) for r in rows), key=lambda k: (k.device, k.workload, k.space))


def _stored_tune(r: Any, where: str) -> StoredTune:
    row = RowCheck(where, f"tune {r['id']}")

    def opt_text(column: str) -> str | None:
        return None if r[column] is None else row.text(column, r[column])

    return StoredTune(
        id=r["id"], client_id=r["client_id"], key=HistoryKey(r["device"], r["workload"], r["space"]),
        model_version=row.text("model_version", r["model_version"]), unit=row.text("unit", r["unit"]),
        slo_ms=row.positive("slo_ms", r["slo_ms"]), optimizer=row.text("optimizer", r["optimizer"]),
        knobs=row.names("knobs", r["knobs"]), warm_from=opt_text("warm_from"), status=row.text("status", r["status"]),
        started_at=row.number("started_at", r["started_at"]), finished_at=row.optional("finished_at", r["finished_at"]),
        best_config=row.config("best_config", r["best_config"]) if r["best_config"] else None,
        best_energy_j=row.optional("best_energy_j", r["best_energy_j"]),
        best_latency_ms=row.optional("best_latency_ms", r["best_latency_ms"]),
        baseline_energy_j=row.optional("baseline_energy_j", r["baseline_energy_j"]),
        stop_reason=opt_text("stop_reason"), measurements=int(r["n"]),
    )


def tunes_matching(conn: sa.Connection, where: str, filters: Filters, limit: int | None) -> list[StoredTune]:
    q = (sa.select(tunes, _count().label("n")).where(filters.where())
         .order_by(tunes.c.started_at.desc(), tunes.c.id.desc()))
    if limit is not None:
        q = q.limit(limit)
    return [_stored_tune(r, where) for r in conn.execute(q).mappings().all()]


def tune(conn: sa.Connection, where: str, tune_id: int) -> tuple[StoredTune, list[StoredMeasurement]] | None:
    t = conn.execute(sa.select(tunes, _count().label("n")).where(tunes.c.id == tune_id)).mappings().first()
    if t is None:
        return None
    stored = _stored_tune(t, where)
    ms = conn.execute(sa.select(measurements).where(measurements.c.tune_id == tune_id)
                      .order_by(measurements.c.step, measurements.c.id)).mappings().all()
    return stored, [_measurement(m, where, stored.model_version, stored.unit) for m in ms]


def export_page(conn: sa.Connection, where: str, filters: Filters, after_id: int,
                page: int) -> list[tuple[int, ExportedMeasurement]]:
    """Up to ``page`` measurements with row ids above ``after_id``, oldest first, with their row ids."""
    q = (sa.select(measurements, tunes.c.device, tunes.c.workload, tunes.c.space, tunes.c.model_version,
                   tunes.c.unit, tunes.c.slo_ms)
         .join(tunes, tunes.c.id == measurements.c.tune_id)
         .where(filters.where(), measurements.c.id > after_id).order_by(measurements.c.id).limit(page))
    out = []
    for r in conn.execute(q).mappings().all():
        tune_row = RowCheck(where, f"tune {r['tune_id']}")
        m = _measurement(r, where, tune_row.text("model_version", r["model_version"]), tune_row.text("unit", r["unit"]))
        out.append((r["id"], ExportedMeasurement(
            tune_id=r["tune_id"], measurement_id=r["client_id"], device=r["device"], workload=r["workload"],
            space=r["space"], model_version=m.model_version, unit=m.unit,
            slo_ms=tune_row.positive("slo_ms", r["slo_ms"]), step=m.step,
            role=m.role, config=m.config, energy_j=m.energy_j, latency_ms=m.latency_ms,
            energy_rel_std=m.energy_rel_std, latency_rel_std=m.latency_rel_std, measured_at=m.measured_at,
        )))
    return out


__all__ = ["Filters", "best", "export_page", "key_where", "keys", "model_versions", "observations", "tune",
           "tunes_matching", "unit_where"]
