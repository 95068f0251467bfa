"""The history store: every measurement of every tune, persisted in SQLite (standard library ``sqlite3``).

Rows are keyed by a ``HistoryKey`` (device, profile, workload, knob-space fingerprint) plus a model
version (a fingerprint of the weights or a user-given string), so a re-tune after a model update can
start from what was learned on the previous version (see ``polythrottle.optim.warm_start``).

Durability: WAL journal, ``synchronous=FULL``, one transaction per write. A process killed mid-write
loses at most the write in flight; everything committed before survives. The schema is versioned
(``PRAGMA user_version``); a database that is corrupt, is not a history database, or was written by a
newer PolyThrottle raises ``HistoryError`` (a ``BadInputError``: one line, exit 2), never a traceback.

Small API (used by the tune CLI, the Python API and the daemon)::

    store = HistoryStore(path)
    tune_id = store.begin_tune(key, "v2", slo_ms=50, optimizer="warm-cbo", knobs=["gpu_mhz"])
    store.add_measurement(tune_id, step=0, config={...}, energy_j=0.4, latency_ms=30, role="baseline")
    store.finish_tune(tune_id, best_config={...}, best_energy_j=0.3, best_latency_ms=45)
    store.best(key, model_version="v2", slo_ms=50)        # -> StoredBest | None
    store.observations(key, model_version="v1")           # -> list[StoredMeasurement]
    store.model_versions(key)                             # -> list[VersionSummary], oldest first
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from polythrottle.errors import BadInputError, brief
from polythrottle.space import Config, SearchSpace, Value

SCHEMA_VERSION = 1
"""Version this code writes. Older versions are migrated on open; newer ones are refused."""

APPLICATION_ID = 0x50544854  # "PTHT": marks the file as a PolyThrottle history database

DEFAULT_FILENAME = "history.sqlite"

_SCHEMA_V1 = """
CREATE TABLE tunes (
    id             INTEGER PRIMARY KEY,
    device         TEXT NOT NULL,
    profile        TEXT NOT NULL,
    workload       TEXT NOT NULL,
    space          TEXT NOT NULL,
    model_version  TEXT NOT NULL,
    slo_ms         REAL NOT NULL,
    optimizer      TEXT NOT NULL,
    knobs          TEXT NOT NULL,          -- JSON list of tuned knob names
    warm_from      TEXT,                   -- model version the tune was warm-started from
    status         TEXT NOT NULL,          -- running | done | failed
    started_at     REAL NOT NULL,          -- unix seconds
    finished_at    REAL,
    best_config    TEXT,                   -- JSON object, NULL when nothing was feasible
    best_energy_j  REAL,
    best_latency_ms REAL,
    baseline_energy_j REAL,
    stop_reason    TEXT
);
CREATE INDEX tunes_by_key ON tunes (device, profile, workload, space, model_version);
CREATE TABLE measurements (
    id             INTEGER PRIMARY KEY,
    tune_id        INTEGER NOT NULL REFERENCES tunes (id) ON DELETE CASCADE,
    step           INTEGER NOT NULL,
    config         TEXT NOT NULL,          -- JSON object, the full device config
    energy_j       REAL NOT NULL,          -- energy per inference, joules
    latency_ms     REAL NOT NULL,
    energy_rel_std REAL,
    latency_rel_std REAL,
    role           TEXT NOT NULL,          -- baseline | explore | recheck | ...
    measured_at    REAL NOT NULL,
    extra          TEXT                    -- JSON object or NULL
);
CREATE INDEX measurements_by_tune ON measurements (tune_id);
"""

_MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1}
"""``_MIGRATIONS[v]`` upgrades a database from version v-1 to v."""


class HistoryError(BadInputError):
    """The history database cannot be used (corrupt, not ours, newer schema, locked, unwritable)."""


@dataclass(frozen=True)
class HistoryKey:
    """What makes measurements comparable, apart from the model version.

    device: the device identity (e.g. ``sim:jetson-agx-orin``, ``nvml:0``, ``replay``).
    profile: the board profile or GPU name ("" if none). workload: the workload name ("" if none).
    space: fingerprint of the tuned knob space (``space_fingerprint``).
    """

    device: str
    profile: str
    workload: str
    space: str


@dataclass(frozen=True)
class StoredMeasurement:
    """One persisted measurement. ``config`` is the full device config."""

    tune_id: int
    model_version: str
    step: int
    config: Config
    energy_j: float
    latency_ms: float
    role: str
    measured_at: float
    energy_rel_std: float | None = None
    latency_rel_std: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredBest:
    """The recommendation of a finished tune."""

    tune_id: int
    model_version: str
    slo_ms: float
    config: Config
    energy_j: float
    latency_ms: float
    finished_at: float
    measurements: int
    baseline_energy_j: float | None = None
    warm_from: str | None = None


@dataclass(frozen=True)
class VersionSummary:
    """A model version seen for a key: how many tunes and measurements, and when it was last tuned."""

    model_version: str
    tunes: int
    measurements: int
    last_tuned_at: float


def space_fingerprint(space: SearchSpace, fixed: Mapping[str, Value] | None = None) -> str:
    """A short stable hash of a knob space: knob names and values, and the values held fixed."""
    doc = {
        "knobs": [[k.name, [str(v) for v in k.values]] for k in space.knobs],
        "fixed": {k: str(v) for k, v in sorted((fixed or {}).items())},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def default_history_path(state_dir: Path | None = None) -> Path:
    """``STATE_DIR/history.sqlite``; the state dir is ``$POLYTHROTTLE_STATE_DIR``, else
    ``$XDG_STATE_HOME/polythrottle``, else ``~/.local/state/polythrottle``."""
    if state_dir is None:
        env = os.environ.get("POLYTHROTTLE_STATE_DIR")
        if env:
            state_dir = Path(env)
        else:
            base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
            state_dir = Path(base) / "polythrottle"
    return Path(state_dir).expanduser() / DEFAULT_FILENAME


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _opt_float(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class _Row:
    """Checks the values of one stored row (a tampered database must give one line, not a traceback)."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what

    def bad(self, column: str, value: Any, expected: str) -> HistoryError:
        return HistoryError(f"history database {self.path}: {self.what}: {column} is {brief(value, 40)}, not "
                            f"{expected}; the database was changed by hand: move it away to start a new history")

    def number(self, column: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.bad(column, value, "a finite number")
        return float(value)

    def positive(self, column: str, value: Any) -> float:
        x = self.number(column, value)
        if x <= 0:
            raise self.bad(column, value, "a positive number")
        return x

    def optional(self, column: str, value: Any) -> float | None:
        return None if value is None else self.number(column, value)

    def integer(self, column: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.bad(column, value, "an integer")
        return value

    def text(self, column: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.bad(column, value, "text")
        return value

    def mapping(self, column: str, value: Any) -> dict[str, Any]:
        try:
            x = json.loads(value) if isinstance(value, str) else None
        except (ValueError, RecursionError):
            x = None
        if not isinstance(x, dict):
            raise self.bad(column, value, "a JSON object")
        return x

    def config(self, column: str, value: Any) -> Config:
        x = self.mapping(column, value)
        for k, v in x.items():
            if isinstance(v, bool) or not isinstance(v, (str, int, float)) or (
                    isinstance(v, float) and not math.isfinite(v)):
                raise self.bad(f"{column}.{brief(k, 30)}", v, "a knob value")
        return x


class HistoryStore:
    """A SQLite history database at ``path`` (created with its parent directory if missing).

    Raises HistoryError if the file is corrupt, not a history database, of a newer schema, or cannot
    be opened. Not shared between threads: open one store per thread or process (SQLite's locking
    makes concurrent processes safe; a writer waits up to ``timeout_s`` for another's transaction).
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 10.0) -> None:
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HistoryError(f"history database {self.path}: cannot create its directory ({e.strerror})") from None
        if self.path.exists() and not self.path.is_file():
            raise HistoryError(f"history database {self.path} is not a regular file")
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
        except sqlite3.Error as e:
            raise HistoryError(f"history database {self.path}: cannot open ({e})") from None
        self._conn.row_factory = sqlite3.Row
        try:
            with self._errors("open"):
                self._open()
        except BaseException:
            self._conn.close()
            raise

    # ----- plumbing ---------------------------------------------------------------------------
    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn SQLite errors into one-line HistoryErrors naming the file."""
        try:
            yield
        except HistoryError:
            raise
        except sqlite3.DatabaseError as e:
            msg = str(e)
            if isinstance(e, sqlite3.OperationalError) and "locked" in msg:
                raise HistoryError(f"history database {self.path} is locked by another process ({what})") from None
            if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
                raise HistoryError(
                    f"history database {self.path} is corrupt ({msg}); move it away to start a new history"
                ) from None
            raise HistoryError(f"history database {self.path}: {what} failed ({msg})") from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT); rolled back on any error."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _open(self) -> None:
        c = self._conn
        app_id = c.execute("PRAGMA application_id").fetchone()[0]
        version = c.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app_id != APPLICATION_ID and (tables or version):
            raise HistoryError(f"{self.path} is not a PolyThrottle history database")
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"history database {self.path} has schema version {version}, newer than this PolyThrottle "
                f"supports ({SCHEMA_VERSION}); upgrade PolyThrottle or use another history file"
            )
        quick = c.execute("PRAGMA quick_check").fetchone()[0]
        if quick != "ok":
            raise HistoryError(f"history database {self.path} is corrupt ({quick}); move it away to start a new history")
        mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise HistoryError(f"history database {self.path}: cannot enable write-ahead logging (got {mode})")
        c.execute("PRAGMA synchronous = FULL")
        c.execute("PRAGMA foreign_keys = ON")
        if version < SCHEMA_VERSION:
            with self._transaction():
                # Re-read under the write lock: another process may have migrated meanwhile.
                version = c.execute("PRAGMA user_version").fetchone()[0]
                for v in range(version + 1, SCHEMA_VERSION + 1):
                    for stmt in _MIGRATIONS[v].split(";"):
                        if stmt.strip():
                            c.execute(stmt)
                c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._errors("read"):
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    # ----- writes -----------------------------------------------------------------------------
    _TUNE_COLUMNS = (
        "device", "profile", "workload", "space", "model_version", "slo_ms", "optimizer", "knobs", "warm_from",
        "status", "started_at", "finished_at", "best_config", "best_energy_j", "best_latency_ms",
        "baseline_energy_j", "stop_reason",
    )
    _MEASUREMENT_COLUMNS = (
        "tune_id", "step", "config", "energy_j", "latency_ms", "energy_rel_std", "latency_rel_std", "role",
        "measured_at", "extra",
    )

    @staticmethod
    def _insert(c: sqlite3.Connection, table: str, columns: tuple[str, ...], row: Mapping[str, Any]) -> int:
        values = [row.get(col) for col in columns]
        cur = c.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values
        )
        return int(cur.lastrowid or 0)

    @staticmethod
    def _tune_row(key: HistoryKey, model_version: str, slo_ms: float, optimizer: str, knobs: Sequence[str],
                  warm_from: str | None) -> dict[str, Any]:
        return {
            "device": key.device, "profile": key.profile, "workload": key.workload, "space": key.space,
            "model_version": model_version, "slo_ms": float(slo_ms), "optimizer": optimizer,
            "knobs": _json(list(knobs)), "warm_from": warm_from, "status": "running", "started_at": time.time(),
        }

    @staticmethod
    def _measurement_row(tune_id: int, step: int, config: Mapping[str, Value], energy_j: float,
                         latency_ms: float, role: str, energy_rel_std: float | None = None,
                         latency_rel_std: float | None = None,
                         extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if not (math.isfinite(energy_j) and energy_j > 0 and math.isfinite(latency_ms) and latency_ms > 0):
            raise HistoryError(f"refusing to store a measurement with energy_j={energy_j}, latency_ms={latency_ms}")
        return {
            "tune_id": tune_id, "step": int(step), "config": _json(dict(config)), "energy_j": float(energy_j),
            "latency_ms": float(latency_ms), "energy_rel_std": _opt_float(energy_rel_std),
            "latency_rel_std": _opt_float(latency_rel_std), "role": role, "measured_at": time.time(),
            "extra": _json(dict(extra)) if extra else None,
        }

    def begin_tune(
        self,
        key: HistoryKey,
        model_version: str,
        *,
        slo_ms: float,
        optimizer: str,
        knobs: Sequence[str],
        warm_from: str | None = None,
    ) -> int:
        """Start a tune (status ``running``); returns its id for ``add_measurement``/``finish_tune``."""
        row = self._tune_row(key, model_version, slo_ms, optimizer, knobs, warm_from)
        with self._errors("begin tune"), self._transaction() as c:
            return self._insert(c, "tunes", self._TUNE_COLUMNS, row)

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
        """Persist one measurement (committed before this returns). Raises HistoryError on a bad value."""
        row = self._measurement_row(tune_id, step, config, energy_j, latency_ms, role, energy_rel_std,
                                    latency_rel_std, extra)
        with self._errors("store measurement"), self._transaction() as c:
            self._insert(c, "measurements", self._MEASUREMENT_COLUMNS, row)

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
        with self._errors("finish tune"), self._transaction() as c:
            c.execute(
                "UPDATE tunes SET status = ?, finished_at = ?, best_config = ?, best_energy_j = ?,"
                " best_latency_ms = ?, baseline_energy_j = ?, stop_reason = ? WHERE id = ?",
                (status, time.time(), None if best_config is None else _json(dict(best_config)),
                 _opt_float(best_energy_j), _opt_float(best_latency_ms), _opt_float(baseline_energy_j),
                 stop_reason, tune_id),
            )

    def record_tune(self, key: HistoryKey, model_version: str, result: Any, *, warm_from: str | None = None) -> int:
        """Persist a finished ``polythrottle.tuner.TuneResult`` (all its measurements) in one transaction."""
        row = self._tune_row(key, model_version, result.slo_ms, result.optimizer, result.tuned_knobs, warm_from)
        best = result.best
        row.update(
            status="done", finished_at=time.time(), stop_reason=result.stop_reason,
            baseline_energy_j=result.baseline.energy_j,
            best_config=None if best is None else _json(best.config),
            best_energy_j=None if best is None else best.energy_j,
            best_latency_ms=None if best is None else best.latency_ms,
        )
        with self._errors("record tune"), self._transaction() as c:
            tune_id = self._insert(c, "tunes", self._TUNE_COLUMNS, row)
            for r in result.history:
                m = r.measurement
                self._insert(c, "measurements", self._MEASUREMENT_COLUMNS, self._measurement_row(
                    tune_id, r.step, r.config, m.energy_j, m.latency_ms, r.role, m.energy_rel_std,
                    m.latency_rel_std))
        return tune_id

    # ----- reads ------------------------------------------------------------------------------
    @staticmethod
    def _key_where(key: HistoryKey) -> tuple[str, tuple[str, ...]]:
        return (
            "t.device = ? AND t.profile = ? AND t.workload = ? AND t.space = ?",
            (key.device, key.profile, key.workload, key.space),
        )

    def observations(self, key: HistoryKey, *, model_version: str | None = None) -> list[StoredMeasurement]:
        """Every stored measurement for ``key`` (of one model version, or of all), oldest first. Raises
        HistoryError (one line) naming a row whose values are of the wrong type (a tampered database)."""
        where, params = self._key_where(key)
        if model_version is not None:
            where += " AND t.model_version = ?"
            params = (*params, model_version)
        with self._errors("read measurements"):
            rows = self._conn.execute(
                "SELECT m.*, t.model_version FROM measurements m JOIN tunes t ON t.id = m.tune_id"
                f" WHERE {where} ORDER BY m.id",
                params,
            ).fetchall()
        out = []
        for r in rows:
            row = _Row(self.path, f"measurement {r['id']}")
            out.append(StoredMeasurement(
                tune_id=r["tune_id"], model_version=row.text("model_version", r["model_version"]),
                step=row.integer("step", r["step"]), config=row.config("config", r["config"]),
                energy_j=row.positive("energy_j", r["energy_j"]),
                latency_ms=row.positive("latency_ms", r["latency_ms"]),
                role=row.text("role", r["role"]), measured_at=row.number("measured_at", r["measured_at"]),
                energy_rel_std=row.optional("energy_rel_std", r["energy_rel_std"]),
                latency_rel_std=row.optional("latency_rel_std", r["latency_rel_std"]),
                extra=row.mapping("extra", r["extra"]) if r["extra"] else {},
            ))
        return out

    def best(self, key: HistoryKey, *, model_version: str, slo_ms: float | None = None) -> StoredBest | None:
        """The recommendation of the latest finished tune of ``key``/``model_version`` (for ``slo_ms``
        when given) that found a feasible config; None if there is none. Raises HistoryError (one
        line) for a row of the wrong types."""
        where, params = self._key_where(key)
        where += " AND t.model_version = ? AND t.status = 'done' AND t.best_config IS NOT NULL"
        params = (*params, model_version)
        with self._errors("read best"):
            rows = self._conn.execute(
                "SELECT t.*, (SELECT COUNT(*) FROM measurements m WHERE m.tune_id = t.id) AS n"
                f" FROM tunes t WHERE {where} ORDER BY t.finished_at DESC, t.id DESC",
                params,
            ).fetchall()
        for r in rows:
            row = _Row(self.path, f"tune {r['id']}")
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
            )
        return None

    def model_versions(self, key: HistoryKey) -> list[VersionSummary]:
        """Model versions with at least one measurement for ``key``, least recently tuned first."""
        where, params = self._key_where(key)
        with self._errors("read versions"):
            rows = self._conn.execute(
                "SELECT t.model_version AS v, COUNT(DISTINCT t.id) AS tunes, COUNT(m.id) AS n,"
                " MAX(COALESCE(m.measured_at, t.started_at)) AS last"
                f" FROM tunes t JOIN measurements m ON m.tune_id = t.id WHERE {where}"
                " GROUP BY t.model_version ORDER BY last, t.model_version",
                params,
            ).fetchall()
        out = []
        for r in rows:
            row = _Row(self.path, f"model version {brief(r['v'], 40)}")
            out.append(VersionSummary(row.text("model_version", r["v"]), r["tunes"], r["n"],
                                      row.number("measured_at", r["last"])))
        return out

    def previous_version(self, key: HistoryKey, current: str) -> str | None:
        """The most recently tuned model version other than ``current`` (None if there is none)."""
        others = [v for v in self.model_versions(key) if v.model_version != current]
        return others[-1].model_version if others else None

    def integrity_check(self) -> str:
        """SQLite's full ``integrity_check``: ``"ok"`` or the first problem found."""
        with self._errors("integrity check"):
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])


__all__ = [
    "DEFAULT_FILENAME",
    "SCHEMA_VERSION",
    "HistoryError",
    "HistoryKey",
    "HistoryStore",
    "StoredBest",
    "StoredMeasurement",
    "VersionSummary",
    "default_history_path",
    "space_fingerprint",
]
