"""The history store: every measurement of every tune, in SQLite (embedded) or PostgreSQL (a fleet).

Rows are keyed by a ``HistoryKey`` (device, workload, knob-space fingerprint) plus a model version;
each tune records the unit it ran on. Writers make the ids (``client_id``: a UUID per tune, UUID:step
per measurement), and every insert is ``ON CONFLICT DO NOTHING`` on them: a write repeated after a
lost reply (or a spool uploaded twice) stores each row exactly once, whatever the number of writers.

Durability: one transaction per write (committed before the call returns). SQLite: WAL,
``synchronous=FULL``; a process killed mid-write loses at most the write in flight. A database that is
corrupt, is not a history, or was written by a newer PolyThrottle raises ``HistoryError`` (one line,
exit 2), never a traceback; a PostgreSQL server out of reach raises ``HistoryUnavailable`` (exit 6).

    store = HistoryStore("h.sqlite")            # or "postgresql://user@host/db" (see open_history)
    tune_id = store.begin_tune(key, "v2", slo_ms=50, optimizer="cbo", knobs=["gpu_mhz"], unit="0")
    store.add_measurement(tune_id, step=0, config={...}, energy_j=0.4, latency_ms=30, role="baseline")
    store.finish_tune(tune_id, best_config={...}, best_energy_j=0.3, best_latency_ms=45)
    store.best(key, model_version="v2", slo_ms=50)        # -> StoredBest | None
    store.observations(key, model_version="v1")           # -> list[StoredMeasurement]
    store.model_versions(key)                             # -> list[VersionSummary], oldest first
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from polythrottle.history import queries, sqlite_file
from polythrottle.history.engine import make_engine, memory_engine, translate, writer
from polythrottle.history.errors import HistoryError, HistoryUnavailable
from polythrottle.history.migrate import UpgradeNeeded, ensure_schema
from polythrottle.history.records import (
    ExportedMeasurement,
    HistoryKey,
    MeasurementRow,
    StoredBest,
    StoredMeasurement,
    StoredTune,
    TuneRow,
    VersionSummary,
    opt_float,
    to_json,
)
from polythrottle.history.schema import MEASUREMENT_COLUMNS, TUNE_COLUMNS, measurements, tunes
from polythrottle.history.target import HistoryTarget, parse_target
from polythrottle.space import Value

T = TypeVar("T")
_CHUNK = 500  # client ids per IN (...) list (old SQLite allows 999 parameters)
_FINISH_COLUMNS = ("status", "finished_at", "best_config", "best_energy_j", "best_latency_ms", "baseline_energy_j",
                   "stop_reason")


class HistoryStore:
    """A history database: ``target`` is a path, ``sqlite:///PATH`` or ``postgresql://...``.

    create: make a missing SQLite file (and its directory); False raises HistoryError instead.
    read_only: a reader (``history``, ``fleet``, ``plot``): nothing is written, so a history the user may
    only read can be read (a write raises HistoryError); a database that must be upgraded first is upgraded
    only when this process may write it (else HistoryError), one without tables (a 0-byte file) reads as an
    empty history and is left as it is; implies ``create=False``.
    Raises HistoryError if the database is corrupt, not a history, of a newer schema, locked or
    unwritable, or refuses the credentials; HistoryUnavailable if the server cannot be reached.
    Usable from several threads; one store per process is enough.
    """

    def __init__(self, target: str | os.PathLike[str] | HistoryTarget, *, timeout_s: float = 10.0,
                 create: bool = True, read_only: bool = False) -> None:
        self.target = target if isinstance(target, HistoryTarget) else parse_target(target)
        self.timeout_s = float(timeout_s)
        self.read_only = read_only
        self._tune_cids: dict[int, str] = {}
        if self.target.is_sqlite:
            assert self.target.path is not None
            sqlite_file.prepare(self.target.path, create and not read_only)
        try:
            self._open(read_only)
        except UpgradeNeeded as e:  # a reader met a database to create or upgrade: only a writer can
            if e.empty:  # no schema yet (a 0-byte file): an empty history (in memory), the file left as it is
                self._open(False, memory=True)
                return
            try:
                self._open(False)
            except HistoryUnavailable:
                raise
            except HistoryError as w:
                raise HistoryError(f"{e}; upgrading it needs write access, which failed: {w}") from None

    def _open(self, read_only: bool, *, memory: bool = False) -> None:
        self._engine = memory_engine() if memory else make_engine(self.target, self.timeout_s, read_only=read_only)
        self._writer = writer(self._engine)
        try:
            user_version = (sqlite_file.check(self._engine, self.url, read_only=read_only)
                            if self.target.is_sqlite and not memory else 0)
            ensure_schema(self._engine, self._writer, self.target, user_version, read_only=read_only)
        except BaseException as e:
            self._engine.dispose()
            if isinstance(e, (sa.exc.SQLAlchemyError, sqlite3.Error, OSError)):
                raise translate(e, self.target, "open") from None
            raise

    # ----- plumbing ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Where the history is, safe to print (the path, or the URL with its password masked)."""
        return self.target.display

    @property
    def path(self) -> Path | None:
        """The SQLite file (None for PostgreSQL)."""
        return self.target.path

    @property
    def dialect(self) -> str:
        return self.target.kind

    def __repr__(self) -> str:
        return f"HistoryStore({self.url!r})"

    def _run(self, what: str, fn: Callable[[sa.Connection], T], *, write: bool) -> T:
        """``fn(conn)`` in one transaction (committed on return); one retry if a PostgreSQL connection
        dropped (safe: every write is idempotent by client id). Errors become HistoryErrors."""
        if write and self.read_only:
            raise HistoryError(f"history {self.url} was opened read-only ({what})")
        engine = self._writer if write else self._engine
        for attempt in (0, 1):
            try:
                with engine.begin() as conn:
                    return fn(conn)
            except HistoryError:
                raise
            except sa.exc.DBAPIError as e:
                if attempt == 0 and not self.target.is_sqlite and e.connection_invalidated:
                    continue
                raise translate(e, self.target, what) from None
            except (sa.exc.SQLAlchemyError, sqlite3.Error, OSError) as e:
                raise translate(e, self.target, what) from None
        raise AssertionError("unreachable")

    def read(self, what: str, fn: Callable[[sa.Connection], T]) -> T:
        """Run a read-only query function in one transaction (for summaries built on the schema)."""
        return self._run(what, fn, write=False)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The schema version (an int; ``SCHEMA_VERSION`` after open)."""
        from polythrottle.history.migrate import schema_revision

        try:
            rev = schema_revision(self._engine)
        except sa.exc.SQLAlchemyError as e:
            raise translate(e, self.target, "read") from None
        return int(rev) if rev else 0

    # ----- writes -----------------------------------------------------------------------------
    def _insert(self) -> Any:
        return pg_dialect.insert if self._engine.dialect.name == "postgresql" else sqlite_dialect.insert

    def _upsert_tunes(self, conn: sa.Connection, rows: Sequence[TuneRow]) -> dict[str, int]:
        """Insert tunes by client id; one already there gets the finish state of ``rows`` unless it
        is finished already. Returns {client_id: id}."""
        latest = {r.client_id: r for r in rows}  # one row per client id (the last given wins)
        if latest:
            stmt = self._insert()(tunes)
            stmt = stmt.on_conflict_do_update(
                index_elements=["client_id"],
                set_={c: getattr(stmt.excluded, c) for c in _FINISH_COLUMNS},
                where=(tunes.c.status == "running") & (stmt.excluded.status != "running"),
            )
            conn.execute(stmt, [{c: getattr(r, c) for c in TUNE_COLUMNS} for r in latest.values()])
        return self._tune_ids(conn, list(latest))

    @staticmethod
    def _tune_ids(conn: sa.Connection, client_ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        ids = list(dict.fromkeys(client_ids))
        for start in range(0, len(ids), _CHUNK):
            q = sa.select(tunes.c.client_id, tunes.c.id).where(tunes.c.client_id.in_(ids[start:start + _CHUNK]))
            out.update({cid: int(i) for cid, i in conn.execute(q)})
        return out

    def _insert_measurements(self, conn: sa.Connection, rows: Sequence[MeasurementRow],
                             tune_ids: Mapping[str, int]) -> int:
        """Insert measurements, skipping client ids already stored. Returns how many were sent."""
        missing = {r.tune_client_id for r in rows} - set(tune_ids)
        if missing:
            found = self._tune_ids(conn, sorted(missing))
            tune_ids = {**tune_ids, **found}
            missing -= set(found)
        if missing:
            raise HistoryError(f"history {self.url}: measurement of an unknown tune {min(missing)}")
        if rows:
            values = []
            for r in rows:
                v = {c: getattr(r, c) for c in MEASUREMENT_COLUMNS if c != "tune_id"}
                v["tune_id"] = tune_ids[r.tune_client_id]
                values.append(v)
            stmt = self._insert()(measurements).on_conflict_do_nothing(index_elements=["client_id"])
            conn.execute(stmt, values)
        return len(rows)

    def merge(self, tune_rows: Sequence[TuneRow], measurement_rows: Sequence[MeasurementRow] = (),
              tune_ids: Mapping[str, int] | None = None) -> dict[str, int]:
        """Store tunes and measurements made elsewhere (a spool, another file) in one transaction,
        each exactly once by client id; returns {tune client_id: id here}. A tune already here keeps
        its identity and gets the given finish state unless it is finished already. ``tune_ids``:
        ids here of tunes known to exist (their measurements need no look-up)."""
        def run(conn: sa.Connection) -> dict[str, int]:
            ids = dict(tune_ids or {})
            ids.update(self._upsert_tunes(conn, list(tune_rows)))
            self._insert_measurements(conn, list(measurement_rows), ids)
            return ids

        ids = self._run("merge", run, write=True)
        self._tune_cids.update({i: cid for cid, i in ids.items()})
        return ids

    def begin_tune(
        self,
        key: HistoryKey,
        model_version: str,
        *,
        slo_ms: float,
        optimizer: str,
        knobs: Sequence[str],
        warm_from: str | None = None,
        unit: str = "",
        client_id: str | None = None,
    ) -> int:
        """Start a tune (status ``running``) on ``unit``; returns its id for ``add_measurement`` and
        ``finish_tune``. ``client_id``: the tune's global id (made here if None; a repeated call with
        the same one returns the same tune)."""
        row = TuneRow.begin(key, model_version, slo_ms=slo_ms, optimizer=optimizer, knobs=knobs,
                            warm_from=warm_from, unit=unit, client_id=client_id)
        return self.merge([row])[row.client_id]

    def tune_client_id(self, tune_id: int) -> str:
        """The client id of tune ``tune_id``. Raises HistoryError if there is no such tune."""
        cid = self._tune_cids.get(tune_id)
        if cid is None:
            cid = self._run("read tune", lambda c: c.execute(
                sa.select(tunes.c.client_id).where(tunes.c.id == tune_id)).scalar(), write=False)
            if cid is None:
                raise HistoryError(f"history {self.url} has no tune {tune_id}")
            self._tune_cids[tune_id] = cid
        return cid

    def add_measurement(
        self,
        tune_id: int,
        *,
        step: int,
        config: Mapping[str, Value],
        energy_j: float,
        latency_ms: float,
        role: str,
        energy_rel_std: float | None = None,
        latency_rel_std: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Persist one measurement (committed before this returns). ``step`` identifies it within its
        tune: storing a step again is a repeat and is ignored. Raises HistoryError on a bad value."""
        cid = self.tune_client_id(tune_id)
        row = MeasurementRow.new(cid, step=step, config=config, energy_j=energy_j, latency_ms=latency_ms,
                                 role=role, energy_rel_std=energy_rel_std, latency_rel_std=latency_rel_std,
                                 extra=extra)
        self._run("store measurement", lambda c: self._insert_measurements(c, [row], {cid: tune_id}), write=True)

    def finish_tune(
        self,
        tune_id: int,
        *,
        best_config: Mapping[str, Value] | None,
        best_energy_j: float | None = None,
        best_latency_ms: float | None = None,
        baseline_energy_j: float | None = None,
        stop_reason: str = "",
        status: str = "done",
    ) -> None:
        """Mark a tune finished (``done``, or ``failed`` when it was interrupted) with its recommendation."""
        if status not in ("done", "failed"):
            raise HistoryError(f"a tune finishes as 'done' or 'failed', not {status!r}")
        values = {"status": status, "finished_at": time.time(),
                  "best_config": None if best_config is None else to_json(dict(best_config)),
                  "best_energy_j": opt_float(best_energy_j), "best_latency_ms": opt_float(best_latency_ms),
                  "baseline_energy_j": opt_float(baseline_energy_j), "stop_reason": stop_reason}
        n = self._run("finish tune", lambda c: c.execute(
            sa.update(tunes).where(tunes.c.id == tune_id).values(**values)).rowcount, write=True)
        if not n:
            raise HistoryError(f"history {self.url} has no tune {tune_id}")

    def record_tune(self, key: HistoryKey, model_version: str, result: Any, *, warm_from: str | None = None,
                    unit: str = "") -> int:
        """Persist a finished ``polythrottle.tuning.tuner.TuneResult`` (all its measurements) in one transaction."""
        row = TuneRow.begin(key, model_version, slo_ms=result.slo_ms, optimizer=result.optimizer,
                            knobs=result.tuned_knobs, warm_from=warm_from, unit=unit)
        best = result.best
        row.finish(best_config=None if best is None else best.config,
                   best_energy_j=None if best is None else best.energy_j,
                   best_latency_ms=None if best is None else best.latency_ms,
                   baseline_energy_j=result.baseline.energy_j, stop_reason=result.stop_reason, status="done")
        meas = [MeasurementRow.new(row.client_id, step=r.step, config=r.config, energy_j=r.measurement.energy_j,
                                   latency_ms=r.measurement.latency_ms, role=r.role,
                                   energy_rel_std=r.measurement.energy_rel_std,
                                   latency_rel_std=r.measurement.latency_rel_std) for r in result.history]
        return self.merge([row], meas)[row.client_id]

    # ----- rows as written (spool upload, copies between databases) ---------------------------------
    def rows(self) -> tuple[list[TuneRow], list[MeasurementRow]]:
        """Every tune and measurement as written (with client ids), in one consistent read."""
        def run(conn: sa.Connection) -> tuple[list[TuneRow], list[MeasurementRow]]:
            trows = [TuneRow(**{c: r[c] for c in TUNE_COLUMNS})
                     for r in conn.execute(sa.select(tunes).order_by(tunes.c.id)).mappings()]
            q = (sa.select(measurements, tunes.c.client_id.label("tune_client_id"))
                 .join(tunes, tunes.c.id == measurements.c.tune_id).order_by(measurements.c.id))
            mrows = [MeasurementRow(**{c: r[c] for c in MEASUREMENT_COLUMNS if c != "tune_id"},
                                    tune_client_id=r["tune_client_id"])
                     for r in conn.execute(q).mappings()]
            return trows, mrows

        return self._run("read rows", run, write=False)

    def forget(self, measurement_client_ids: Sequence[str], tunes_read: Sequence[TuneRow]) -> None:
        """Delete these measurements, then each tune of ``tunes_read`` with no measurement left whose row is still
        as read (status, ``finished_at``: a finish spooled since by another process stays). One transaction."""
        def run(conn: sa.Connection) -> None:
            ids = list(measurement_client_ids)
            for start in range(0, len(ids), _CHUNK):
                conn.execute(sa.delete(measurements).where(measurements.c.client_id.in_(ids[start:start + _CHUNK])))
            left = sa.select(measurements.c.id).where(measurements.c.tune_id == tunes.c.id).exists()
            for t in tunes_read:  # a few per chunk: the tunes of its measurements
                conn.execute(sa.delete(tunes).where(tunes.c.client_id == t.client_id, tunes.c.status == t.status,
                                                    tunes.c.finished_at.is_not_distinct_from(t.finished_at), ~left))

        self._run("forget rows", run, write=True)
        gone = {t.client_id for t in tunes_read}
        self._tune_cids = {i: c for i, c in self._tune_cids.items() if c not in gone}

    # ----- reads ------------------------------------------------------------------------------
    def observations(self, key: HistoryKey, *, model_version: str | None = None,
                     unit: str | None = None) -> list[StoredMeasurement]:
        """Every stored measurement for ``key`` (of one model version, or of all; of one unit's own
        history, or of every unit), oldest first. A row of the wrong types: HistoryError (one line)."""
        return self._run("read measurements", lambda c: queries.observations(c, self.url, key, model_version, unit),
                         write=False)

    def best(self, key: HistoryKey, *, model_version: str, slo_ms: float | None = None,
             unit: str | None = None) -> StoredBest | None:
        """The recommendation of the latest finished tune of ``key``/``model_version`` (for ``slo_ms``
        when given; of ``unit``'s own history when given) that found a feasible config; None if none."""
        return self._run("read best", lambda c: queries.best(c, self.url, key, model_version, slo_ms, unit),
                         write=False)

    def model_versions(self, key: HistoryKey, *, unit: str | None = None) -> list[VersionSummary]:
        """Model versions with at least one measurement for ``key`` (in ``unit``'s own history when
        given), least recently tuned first."""
        return self._run("read versions", lambda c: queries.model_versions(c, self.url, key, unit), write=False)

    def previous_version(self, key: HistoryKey, current: str, *, unit: str | None = None) -> str | None:
        """The most recently tuned model version other than ``current`` (None if there is none)."""
        others = [v for v in self.model_versions(key, unit=unit) if v.model_version != current]
        return others[-1].model_version if others else None

    def keys(self) -> list[HistoryKey]:
        """Every key with at least one tune, sorted."""
        return self._run("read keys", queries.keys, write=False)

    def tunes(self, *, device: str | None = None, workload: str | None = None, model_version: str | None = None,
              unit: str | None = None, limit: int | None = None) -> list[StoredTune]:
        """Tunes matching the filters (None: any), newest first, at most ``limit``."""
        filters = queries.Filters(device, workload, model_version, unit)
        return self._run("read tunes", lambda c: queries.tunes_matching(c, self.url, filters, limit), write=False)

    def tune(self, tune_id: int) -> tuple[StoredTune, list[StoredMeasurement]] | None:
        """Tune ``tune_id`` and its measurements (None if there is no such tune)."""
        return self._run("read tune", lambda c: queries.tune(c, self.url, tune_id), write=False)

    def export(self, *, device: str | None = None, workload: str | None = None, model_version: str | None = None,
               unit: str | None = None, page: int = 5000) -> Iterator[ExportedMeasurement]:
        """Every measurement matching the filters, oldest first, read ``page`` rows per transaction."""
        filters = queries.Filters(device, workload, model_version, unit)
        last = 0
        while True:
            read_page = functools.partial(queries.export_page, where=self.url, filters=filters, after_id=last, page=page)
            rows = self._run("export", read_page, write=False)
            yield from (m for _, m in rows)
            if len(rows) < page:
                return
            last = rows[-1][0]

    def integrity_check(self) -> str:
        """SQLite's full ``integrity_check`` (``"ok"`` or the first problem); ``"ok"`` on PostgreSQL."""
        if not self.target.is_sqlite:
            return "ok"
        return str(self._run("integrity check", lambda c: c.exec_driver_sql("PRAGMA integrity_check").scalar(),
                             write=False))


__all__ = ["HistoryStore"]
