"""Bring a history database to the head schema with the Alembic revisions shipped in the package.

Run by every store at open. The fast path (already at head) reads one row and imports no Alembic.
Otherwise, under a lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock),
so that many processes opening a new database at once migrate it exactly once:

- a version newer than this code knows -> HistoryError (upgrade PolyThrottle);
- a SQLite file of the v1 era (``user_version = 1``, no version table) -> stamped ``0001``, upgraded;
  so is one of the pre-Alembic v2 era (``user_version = 2``: v1 tables plus ``unit``, keys already mapped);
- tables named like ours without our version table -> HistoryError (not a PolyThrottle history);
- an empty database -> created from revision 0001 up;
- a half-migrated database (a recorded revision its tables do not match, e.g. stamped back by hand or a
  version table restored from another backup; or PolyThrottle's tables with no revision recorded) ->
  HistoryError naming the database, the revision found and what to do; nothing is written. Readers get
  the same line (checked before the read-only refusal). The tables are compared by table and column names
  with the shape of each revision (``_SHAPES``).

The upgrade runs in the same transaction: on any error nothing is applied (PostgreSQL and SQLite both
have transactional DDL).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from polythrottle.history import schema
from polythrottle.history.errors import HistoryError
from polythrottle.history.target import HistoryTarget
from polythrottle.history.version import (
    HEAD_REVISION,
    KNOWN_REVISIONS,
    SCHEMA_VERSION,
    VERSION_TABLE,
)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_PG_LOCK_KEY = 0x50544854_0002  # pg_advisory_xact_lock key: "PTHT" + 2
_OUR_TABLES = {"tunes", "measurements"}
_V1_TUNES = {"id", "device", "profile", "workload", "space", "model_version", "slo_ms", "optimizer", "knobs",
             "warm_from", "status", "started_at", "finished_at", "best_config", "best_energy_j", "best_latency_ms",
             "baseline_energy_j", "stop_reason"}
_V1_MEASUREMENTS = {"id", "tune_id", "step", "config", "energy_j", "latency_ms", "energy_rel_std", "latency_rel_std",
                    "role", "measured_at", "extra"}
_SHAPES: dict[str, dict[str, set[str]]] = {
    "0001": {"tunes": _V1_TUNES, "measurements": _V1_MEASUREMENTS},
    HEAD_REVISION: {t.name: {c.name for c in t.columns} for t in (schema.tunes, schema.measurements)},
}
"""Column names of our tables at each revision (frozen copies for the older ones: when a revision is added,
freeze the head's here first)."""
_FIX = "restore a backup or use another --history"


def _revisions(conn: sa.Connection, tables: set[str]) -> list[str]:
    if VERSION_TABLE not in tables:
        return []
    return [r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))]


def _tables(conn: sa.Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


def _alembic(conn: sa.Connection, stamp: str | None) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = conn
    if stamp is not None:
        command.stamp(cfg, stamp)
    command.upgrade(cfg, "head")


def schema_revision(engine: sa.Engine) -> str | None:
    """The database's revision (None: no version table)."""
    with engine.connect() as conn:
        revs = _revisions(conn, _tables(conn))
    return revs[0] if len(revs) == 1 else None


def _shape(conn: sa.Connection, tables: set[str]) -> str | None:
    """The revision whose tables these are (table and column names), None when they match none."""
    if _OUR_TABLES - tables or {"tunes_v2", "measurements_v2"} & tables:  # 0002's work tables: cut short
        return None
    insp = sa.inspect(conn)
    columns = {t: {c["name"] for c in insp.get_columns(t)} for t in _OUR_TABLES}
    return next((rev for rev, shape in _SHAPES.items() if columns == shape), None)


def _refuse_half_migrated(conn: sa.Connection, tables: set[str], revs: list[str], target: HistoryTarget,
                          sqlite_user_version: int) -> None:
    """HistoryError, one line naming the database, the revision found and what to do, when the revision
    recorded and the tables disagree (an upgrade would fail half-way or damage them). Nothing is written."""
    where = f"history database {target.display} is half-migrated"
    then = "(then polythrottle opens it, upgrading it if needed); else " + _FIX
    if revs == [HEAD_REVISION]:  # the fast path: the tables' presence only
        missing = sorted(_OUR_TABLES - tables)
        if missing:
            raise HistoryError(
                f"{where}: {VERSION_TABLE} says schema revision {HEAD_REVISION} but table(s) {', '.join(missing)} "
                f"are missing; nothing changed: {_FIX} (no tables at all: DROP TABLE {VERSION_TABLE} and the next "
                "polythrottle command creates the history)")
        return
    if len(revs) > 1:
        return  # several rows: _refuse_newer says so
    shape = _shape(conn, tables) if tables & _OUR_TABLES else ""
    if not revs:
        legacy = target.is_sqlite and sqlite_user_version in (1, 2) and shape in (None, "0001")
        if shape and not legacy:
            there = VERSION_TABLE in tables
            create = "" if there else f"CREATE TABLE {VERSION_TABLE} (version_num varchar(32) PRIMARY KEY); "
            raise HistoryError(
                f"{where}: its tables are at schema revision {shape} but {VERSION_TABLE} "
                f"{'is empty' if there else 'is missing'}; nothing changed. If the tables are right: {create}"
                f"INSERT INTO {VERSION_TABLE} VALUES ('{shape}') {then}")
        return  # empty: created; tables not ours (or a legacy SQLite file): the caller decides
    if shape == revs[0]:
        return  # a plain older database: upgraded
    if shape:
        raise HistoryError(
            f"{where}: {VERSION_TABLE} says schema revision {revs[0]}, its tables are at {shape}; nothing changed. "
            f"If the tables are right: UPDATE {VERSION_TABLE} SET version_num = '{shape}' {then}")
    found = ", ".join(sorted(tables & (_OUR_TABLES | {"tunes_v2", "measurements_v2"}))) or "none"
    raise HistoryError(f"{where}: {VERSION_TABLE} says schema revision {revs[0]} but its tables ({found}) match "
                       f"no revision; nothing changed: {_FIX}")


class UpgradeNeeded(HistoryError):
    """A reader (``read_only``) met a database that must be created or upgraded first (a write). ``empty``: it
    has no tables at all (a 0-byte file): an empty history to a reader."""

    def __init__(self, message: str, *, empty: bool = False) -> None:
        super().__init__(message)
        self.empty = empty


def _refuse_newer(revs: list[str], target: HistoryTarget) -> None:
    unknown = [r for r in revs if r not in KNOWN_REVISIONS]
    if unknown or len(revs) > 1:
        raise HistoryError(
            f"history database {target.display} has schema revision {', '.join(revs)}, newer than this "
            f"PolyThrottle supports ({HEAD_REVISION}); upgrade PolyThrottle or use another history"
        )


def ensure_schema(engine: sa.Engine, write_engine: sa.Engine, target: HistoryTarget,
                  sqlite_user_version: int = 0, *, read_only: bool = False) -> int:
    """Upgrade the database to the head revision if needed; returns the schema version (an int).

    Raises HistoryError for a newer schema or a database that is not a PolyThrottle history,
    UpgradeNeeded when ``read_only`` and the database is not at the head revision (nothing is written),
    and SQLAlchemy errors (the caller translates them)."""
    with engine.connect() as conn:
        tables = _tables(conn)
        revs = _revisions(conn, tables)
        if revs == [HEAD_REVISION] and _OUR_TABLES <= tables:
            return SCHEMA_VERSION
        _refuse_newer(revs, target)
        _refuse_half_migrated(conn, tables, revs, target, sqlite_user_version)
        conn.rollback()
    if read_only:
        state = f"is at schema revision {revs[0]}" if revs else "has no history schema yet"
        raise UpgradeNeeded(f"history database {target.display} {state} (this PolyThrottle reads {HEAD_REVISION})",
                            empty=not revs and not tables)
    with write_engine.connect() as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
        tables = _tables(conn)  # again, under the lock: another process may have migrated meanwhile
        revs = _revisions(conn, tables)
        _refuse_newer(revs, target)
        _refuse_half_migrated(conn, tables, revs, target, sqlite_user_version)
        if revs == [HEAD_REVISION]:
            return SCHEMA_VERSION
        stamp = None
        if not revs and tables & _OUR_TABLES:
            if target.is_sqlite and sqlite_user_version in (1, 2) and _OUR_TABLES <= tables:
                # written by PolyThrottle before Alembic: the v1 schema, or v1 plus a ``unit`` column
                # (``user_version = 2``, main between #13 and the history package), which 0002 keeps
                stamp = "0001"
            else:
                raise HistoryError(
                    f"history database {target.display} has tables {', '.join(sorted(tables & _OUR_TABLES))} "
                    "not written by PolyThrottle; use another database (or another schema in it)"
                )
        _alembic(conn, stamp)
    return SCHEMA_VERSION


__all__ = ["MIGRATIONS_DIR", "UpgradeNeeded", "ensure_schema", "schema_revision"]
