"""Bring a history database to the head schema with the Alembic revisions shipped in the package.

Run by every store at open. The fast path (already at head) reads one row and imports no Alembic.
Otherwise, under a lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock),
so that many processes opening a new database at once migrate it exactly once:

- a version newer than this code knows -> HistoryError (upgrade PolyThrottle);
- a SQLite file of the v1 era (``user_version = 1``, no version table) -> stamped ``0001``, upgraded;
  so is one of the pre-Alembic v2 era (``user_version = 2``: v1 tables plus ``unit``, keys already mapped);
- tables named like ours without our version table -> HistoryError (not a PolyThrottle history);
- an empty database -> created from revision 0001 up.

The upgrade runs in the same transaction: on any error nothing is applied (PostgreSQL and SQLite both
have transactional DDL).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

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


class UpgradeNeeded(HistoryError):
    """A reader (``read_only``) met a database that must be created or upgraded first (a write)."""


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
        conn.rollback()
    if revs == [HEAD_REVISION]:
        return SCHEMA_VERSION
    _refuse_newer(revs, target)
    if read_only:
        state = f"is at schema revision {revs[0]}" if revs else "has no history schema yet"
        raise UpgradeNeeded(f"history database {target.display} {state} (this PolyThrottle reads {HEAD_REVISION})")
    with write_engine.connect() as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
        tables = _tables(conn)  # again, under the lock: another process may have migrated meanwhile
        revs = _revisions(conn, tables)
        _refuse_newer(revs, target)
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
