"""A history that survives an intermittent link: a remote database plus a local spool.

``SpooledHistory(url, spool_dir)`` writes to the remote (PostgreSQL) database while it answers. When it
does not (down at open, or a write fails because the server went away; for a SQLite history, the file
locked by another process longer than ``timeout_s``: ``HistoryLocked``), the write goes to a small
SQLite spool in ``spool_dir`` instead, committed before the call returns, and the tune goes on: reads
then see what the spool has. The spool is uploaded when the remote answers again: at the next open, or
at the next write or read once ``retry_s`` has passed since the last attempt. The upload goes in chunks
of ``upload_chunk`` measurements (oldest first, with the tunes they belong to; then the tunes left without
any), each one remote transaction of ``ON CONFLICT DO NOTHING`` inserts keyed by the writers' client ids,
so memory stays bounded however long the outage was. A chunk's spool rows are deleted only after it
committed: a crash, an outage or a lost reply in between repeats that chunk, which stores nothing twice,
and the chunks before it stay uploaded. The delete removes only what was read: those measurements, and a
tune only while its row is as read (status, ``finished_at``) and has no measurement left, so a finish or a
measurement another process spools meanwhile stays for the next upload. Every spooled measurement is stored
exactly once, and every spooled finish reaches the remote.

Tune ids: a tune begun while the remote answered has the remote's id; one begun offline gets a
negative id, valid for this object only (also after the upload).

The spool file is ``spool_dir/history-spool-<hash of the URL without password>.sqlite`` (one per
remote; several processes may share it), created at open (for a SQLite history: at the first write it takes). A spool found corrupt at open (a power cut
on an SD card) is moved aside to ``NAME.corrupt-UNIXTIME`` with one warning line, and a new one is started:
a spool is a buffer, and a tune must not stop because of one.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from polythrottle.history.errors import HistoryCorrupt, HistoryError, HistoryUnavailable
from polythrottle.history.records import (
    HistoryKey,
    MeasurementRow,
    StoredBest,
    StoredMeasurement,
    TuneRow,
    VersionSummary,
)
from polythrottle.history.schema import MEASUREMENT_COLUMNS, TUNE_COLUMNS, measurements, tunes
from polythrottle.history.store import HistoryStore
from polythrottle.history.target import HistoryTarget, mask, parse_target
from polythrottle.space import Value

log = logging.getLogger("polythrottle.history")
UPLOAD_CHUNK = 500
"""Spooled measurements per upload transaction (and spool rows held in memory at once)."""


@dataclass
class _Tune:
    row: TuneRow  # the latest state (finish included), as the spool would store it
    remote_id: int | None = None


def _quarantine(spool: Path, why: HistoryError) -> Path:
    """Rename a corrupt spool (and its -wal/-shm) to ``NAME.corrupt-UNIXTIME``; returns the new name.
    Raises ``why`` when it cannot be moved."""
    moved = spool.with_name(f"{spool.name}.corrupt-{int(time.time())}")
    try:
        for suffix in ("-wal", "-shm", ""):
            part = Path(f"{spool}{suffix}")
            if part.exists():
                os.replace(part, f"{moved}{suffix}")
    except OSError:
        raise why from None
    return moved


def _measurement_chunk(conn: sa.Connection, after_id: int, limit: int) -> tuple[list[TuneRow], list[MeasurementRow], int]:
    """Up to ``limit`` spooled measurements with ids above ``after_id`` (oldest first), the tunes they belong to
    (their latest state) and the last id read (``after_id`` when none is left)."""
    q = (sa.select(measurements, tunes.c.client_id.label("tune_client_id"))
         .join(tunes, tunes.c.id == measurements.c.tune_id)
         .where(measurements.c.id > after_id).order_by(measurements.c.id).limit(limit))
    found = list(conn.execute(q).mappings())
    mrows = [MeasurementRow(**{c: r[c] for c in MEASUREMENT_COLUMNS if c != "tune_id"}, tune_client_id=r["tune_client_id"])
             for r in found]
    tune_ids = sorted({r["tune_id"] for r in found})
    trows = [TuneRow(**{c: r[c] for c in TUNE_COLUMNS})
             for r in conn.execute(sa.select(tunes).where(tunes.c.id.in_(tune_ids)).order_by(tunes.c.id)).mappings()]
    return trows, mrows, found[-1]["id"] if found else after_id


def _bare_tune_chunk(conn: sa.Connection, after_id: int, limit: int) -> tuple[list[TuneRow], int]:
    """Up to ``limit`` spooled tunes with ids above ``after_id`` that have no measurement in the spool."""
    has = sa.select(measurements.c.id).where(measurements.c.tune_id == tunes.c.id).exists()
    found = list(conn.execute(sa.select(tunes).where(tunes.c.id > after_id, ~has).order_by(tunes.c.id)
                              .limit(limit)).mappings())
    return [TuneRow(**{c: r[c] for c in TUNE_COLUMNS}) for r in found], found[-1]["id"] if found else after_id


def spool_path(target: HistoryTarget, spool_dir: str | os.PathLike[str]) -> Path:
    """The spool file of ``target`` in ``spool_dir``."""
    digest = hashlib.sha256(mask(target.url).encode()).hexdigest()[:12]
    return Path(spool_dir).expanduser() / f"history-spool-{digest}.sqlite"


class SpooledHistory:
    """A ``HistoryStore`` API over a remote database that may be out of reach (see the module doc).

    Raises HistoryError for what waiting will not fix (wrong password, not a history, newer schema, a
    bad value, an unusable spool); never HistoryUnavailable.
    """

    def __init__(self, target: str | os.PathLike[str] | HistoryTarget, spool_dir: str | os.PathLike[str], *,
                 retry_s: float = 30.0, timeout_s: float = 10.0, upload_chunk: int = UPLOAD_CHUNK) -> None:
        self.target = target if isinstance(target, HistoryTarget) else parse_target(target)
        self.spool_file = spool_path(self.target, spool_dir)
        self.upload_chunk = max(1, int(upload_chunk))
        self.retry_s = float(retry_s)
        self.timeout_s = float(timeout_s)
        self._remote: HistoryStore | None = None
        self._spool: HistoryStore | None = None
        self._tunes: dict[int, _Tune] = {}
        self._offline_ids = itertools.count(1)
        self._last_try = -float("inf")
        self.last_error: str | None = None
        self.uploaded = 0  # measurements uploaded from the spool by this object
        self.spooled = 0  # measurements this object wrote to the spool (the remote did not answer)
        existed = self.spool_file.exists()
        if not self.target.is_sqlite:  # now: an unusable state dir fails at start, and an outage costs no schema
            self._spool_store()  # set-up; a SQLite history (locked only now and then) makes its spool when needed
        try:
            self._connect()
        except BaseException:  # refused (wrong password, bad URL, ...): no empty spool file left behind
            self._drop_new_spool(existed)
            raise

    def _drop_new_spool(self, existed: bool) -> None:
        """Close the spool; delete its files if this object created it and nothing was spooled."""
        spool = self._spool
        if spool is None:
            return
        try:  # a file this object just created: tiny, unless another process spooled into it meanwhile
            empty = not existed and spool.rows() == ([], [])
        except HistoryError:
            empty = False
        self._spool = None
        spool.close()
        if empty:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.spool_file}{suffix}").unlink(missing_ok=True)

    # ----- plumbing ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.target.display

    @property
    def online(self) -> bool:
        """Whether the last attempt to reach the remote succeeded."""
        return self._remote is not None

    def __repr__(self) -> str:
        return f"SpooledHistory({self.url!r}, spool={str(self.spool_file)!r}, online={self.online})"

    def _spool_store(self) -> HistoryStore:
        if self._spool is None:
            try:
                self._spool = HistoryStore(self.spool_file, timeout_s=self.timeout_s)
            except HistoryCorrupt as e:  # a power cut on an SD card: keep the file, start a new spool, go on
                moved = _quarantine(self.spool_file, e)
                log.warning("polythrottle: warning: local spool: %s; moved it to %s (kept for inspection) and "
                            "started a new spool; its measurements, if any, are not uploaded",
                            str(e).removesuffix("; move it away to start a new history"), moved)
                self._spool = HistoryStore(self.spool_file, timeout_s=self.timeout_s)
        return self._spool

    def _offline(self, e: HistoryUnavailable) -> None:
        self.last_error = str(e)
        if self._remote is not None:
            self._remote.close()
            self._remote = None
        self._last_try = time.monotonic()

    def _connect(self) -> bool:
        """Open the remote if needed, then upload the spool. False (and offline) if it cannot be reached."""
        self._last_try = time.monotonic()
        try:
            if self._remote is None:
                self._remote = HistoryStore(self.target, timeout_s=self.timeout_s)
            self._flush()
            self.last_error = None
            return True
        except HistoryUnavailable as e:
            self._offline(e)
            return False

    def _ready(self) -> bool:
        """Whether to use the remote now: it answered last time, or it is time to try again."""
        if self._remote is not None:
            return True
        if time.monotonic() - self._last_try < self.retry_s:
            return False
        return self._connect()

    def _flush(self) -> None:
        """Upload everything in the spool, chunk by chunk (one remote transaction each), deleting each chunk
        from the spool once it committed. HistoryUnavailable mid-way leaves the chunks not yet committed
        spooled (the next upload goes on from there)."""
        assert self._remote is not None
        if self._spool is None and not self.spool_file.exists():
            return
        spool, n = self._spool_store(), self.upload_chunk
        after = 0
        while True:
            trows, mrows, after = spool.read("read spool", partial(_measurement_chunk, after_id=after, limit=n))
            if not mrows:
                break
            self._upload(spool, trows, mrows)
        after = 0
        while True:
            trows, after = spool.read("read spool", partial(_bare_tune_chunk, after_id=after, limit=n))
            if not trows:
                break
            self._upload(spool, trows, [])

    def _upload(self, spool: HistoryStore, trows: list[TuneRow], mrows: list[MeasurementRow]) -> None:
        assert self._remote is not None
        ids = self._remote.merge(trows, mrows)
        self.uploaded += len(mrows)
        try:  # a tune goes from the spool with its last measurement there, if it is still as read and uploaded
            spool.forget([m.client_id for m in mrows], trows)
        except HistoryError as e:  # uploaded but still spooled: the next upload repeats it, storing nothing twice
            self.last_error = str(e)
        for t in self._tunes.values():
            if t.remote_id is None and t.row.client_id in ids:
                t.remote_id = ids[t.row.client_id]

    def sync(self) -> bool:
        """Try to reach the remote now and upload the spool; True if it is online afterwards."""
        return self._connect()

    def pending(self) -> int:
        """Measurements in the spool, not yet uploaded."""
        if self._spool is None and not self.spool_file.exists():
            return 0
        return int(self._spool_store().read("count spool", lambda c: c.execute(
            sa.select(sa.func.count()).select_from(measurements)).scalar_one()))

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
        if self._spool is not None:
            self._spool.close()

    def __enter__(self) -> SpooledHistory:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _tune(self, tune_id: int) -> _Tune:
        t = self._tunes.get(tune_id)
        if t is None:
            raise HistoryError(f"history {self.url}: no tune {tune_id} was begun through this store")
        return t

    def _write(self, t: _Tune, rows: Sequence[MeasurementRow] = ()) -> None:
        """Store ``t``'s current state and ``rows`` in one transaction: remote if it answers, else the spool."""
        if self._ready():
            assert self._remote is not None
            try:
                if rows and t.remote_id is not None:  # the tune is there: only the measurements
                    self._remote.merge([], rows, tune_ids={t.row.client_id: t.remote_id})
                else:
                    t.remote_id = self._remote.merge([t.row], rows)[t.row.client_id]
                return
            except HistoryUnavailable as e:
                self._offline(e)
        try:
            self._spool_store().merge([t.row], rows)
        except HistoryError as e:  # the history did not answer and the spool cannot keep the write: say both
            if self.last_error is None or str(e) == self.last_error:
                raise
            raise HistoryError(f"{self.last_error}, and the local spool cannot keep the write: {e}") from None
        self.spooled += len(rows)

    # ----- writes -----------------------------------------------------------------------------
    def begin_tune(self, key: HistoryKey, model_version: str, *, slo_ms: float, optimizer: str,
                   knobs: Sequence[str], warm_from: str | None = None, unit: str = "",
                   client_id: str | None = None) -> int:
        """Start a tune; its id is the remote's, or negative when begun on the spool."""
        t = _Tune(TuneRow.begin(key, model_version, slo_ms=slo_ms, optimizer=optimizer, knobs=knobs,
                                warm_from=warm_from, unit=unit, client_id=client_id))
        self._write(t)
        handle = t.remote_id if t.remote_id is not None else -next(self._offline_ids)
        self._tunes[handle] = t
        return handle

    def add_measurement(self, tune_id: int, *, step: int, config: Mapping[str, Value], energy_j: float,
                        latency_ms: float, role: str, energy_rel_std: float | None = None,
                        latency_rel_std: float | None = None, extra: Mapping[str, Any] | None = None) -> None:
        """Persist one measurement (remote or spool; committed before this returns)."""
        t = self._tune(tune_id)
        m = MeasurementRow.new(t.row.client_id, step=step, config=config, energy_j=energy_j, latency_ms=latency_ms,
                               role=role, energy_rel_std=energy_rel_std, latency_rel_std=latency_rel_std, extra=extra)
        self._write(t, [m])

    def finish_tune(self, tune_id: int, *, best_config: Mapping[str, Value] | None, best_energy_j: float | None = None,
                    best_latency_ms: float | None = None, baseline_energy_j: float | None = None,
                    stop_reason: str = "", status: str = "done") -> None:
        """Mark a tune finished (remote or spool)."""
        t = self._tune(tune_id)
        t.row.finish(best_config=best_config, best_energy_j=best_energy_j, best_latency_ms=best_latency_ms,
                     baseline_energy_j=baseline_energy_j, stop_reason=stop_reason, status=status)
        self._write(t)

    def record_tune(self, key: HistoryKey, model_version: str, result: Any, *, warm_from: str | None = None,
                    unit: str = "") -> int:
        """Persist a finished ``TuneResult`` (remote or spool)."""
        t = _Tune(TuneRow.begin(key, model_version, slo_ms=result.slo_ms, optimizer=result.optimizer,
                                knobs=result.tuned_knobs, warm_from=warm_from, unit=unit))
        best = result.best
        t.row.finish(best_config=None if best is None else best.config,
                     best_energy_j=None if best is None else best.energy_j,
                     best_latency_ms=None if best is None else best.latency_ms,
                     baseline_energy_j=result.baseline.energy_j, stop_reason=result.stop_reason, status="done")
        rows = [MeasurementRow.new(t.row.client_id, step=r.step, config=r.config, energy_j=r.measurement.energy_j,
                                   latency_ms=r.measurement.latency_ms, role=r.role,
                                   energy_rel_std=r.measurement.energy_rel_std,
                                   latency_rel_std=r.measurement.latency_rel_std) for r in result.history]
        self._write(t, rows)
        handle = t.remote_id if t.remote_id is not None else -next(self._offline_ids)
        self._tunes[handle] = t
        return handle

    # ----- reads: the remote when it answers (after the upload), else what the spool has ----------
    def _reader(self) -> HistoryStore | None:
        if self._ready():
            return self._remote
        if self._spool is None and not self.spool_file.exists():
            return None
        return self._spool_store()

    def _read(self, name: str, *args: Any, default: Any, **kwargs: Any) -> Any:
        store = self._reader()
        if store is not None and store is self._remote:
            try:
                return getattr(store, name)(*args, **kwargs)
            except HistoryUnavailable as e:
                self._offline(e)
                store = self._reader()
        return default if store is None else getattr(store, name)(*args, **kwargs)

    def observations(self, key: HistoryKey, *, model_version: str | None = None,
                     unit: str | None = None) -> list[StoredMeasurement]:
        return self._read("observations", key, model_version=model_version, unit=unit, default=[])

    def best(self, key: HistoryKey, *, model_version: str, slo_ms: float | None = None,
             unit: str | None = None) -> StoredBest | None:
        return self._read("best", key, model_version=model_version, slo_ms=slo_ms, unit=unit, default=None)

    def model_versions(self, key: HistoryKey, *, unit: str | None = None) -> list[VersionSummary]:
        return self._read("model_versions", key, unit=unit, default=[])

    def previous_version(self, key: HistoryKey, current: str, *, unit: str | None = None) -> str | None:
        others = [v for v in self.model_versions(key, unit=unit) if v.model_version != current]
        return others[-1].model_version if others else None

    def keys(self) -> list[HistoryKey]:
        return self._read("keys", default=[])


__all__ = ["SpooledHistory", "spool_path"]
