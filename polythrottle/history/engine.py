"""SQLAlchemy engines for a history target, and database errors turned into one-line ``HistoryError``s.

SQLite (embedded default): WAL journal, ``synchronous=FULL``, foreign keys on, one transaction per
write taken with ``BEGIN IMMEDIATE`` (a writer waits up to ``timeout_s`` for another's transaction,
then fails with ``HistoryLocked``, exit 6: transient, spooled like a server outage by a spooled history). pysqlite's own transaction handling is switched off (SQLAlchemy's
documented recipe) so that DDL in migrations is transactional too.

PostgreSQL (psycopg 3): a small pool whose connections are pinged before use (a server restart costs
nothing but a reconnect), ``connect_timeout`` = ``timeout_s``; TCP keepalives and ``tcp_user_timeout``
end a connection whose server went silent mid-query in about 25 s (waiting for a reply) or ``timeout_s``
(data unacknowledged), where the kernel alone retransmits for ~15 min. Connection-level failures
(refused, timed out, server shut down) are ``HistoryUnavailable``; wrong credentials, a missing
database or a URL option that cannot work (a bad ``sslmode``, TLS the server lacks) are plain
``HistoryError`` (retrying will not help).
"""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event

from polythrottle.errors import first_line
from polythrottle.history.errors import (
    HistoryCorrupt,
    HistoryDriverMissing,
    HistoryError,
    HistoryLocked,
    HistoryUnavailable,
)
from polythrottle.history.target import HistoryTarget

_PG_CONFIG_ERRORS = (
    "password authentication failed", "no password supplied", "does not exist", "pg_hba.conf",
    "permission denied", "authentication failed", "invalid dsn", "invalid connection option",
    "invalid integer value", "could not translate host name",
    # libpq options that can never work with this server or URL (retrying will not help): a malformed value,
    # a TLS, channel-binding, GSSAPI or authentication requirement the server cannot meet, an unknown setting
    "value: \"", "ssl was required", "ssl not in use", "no credential cache", "authentication method requirement",
    "unrecognized configuration parameter", "certificate",
)


def sqlite_read_uri(path: Path) -> str:
    """The SQLite URI a reader opens ``path`` with, writing nothing (see ``make_engine``)."""
    quoted = quote(str(path), safe="/")
    mine = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    if mine or Path(f"{path}-wal").exists():
        return f"file:{quoted}?mode=ro"
    return f"file:{quoted}?immutable=1"


KEEPALIVE_IDLE_S = 10
"""PostgreSQL: seconds a connection waits on a silent server before TCP keepalive probes start."""
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3
"""... probes KEEPALIVE_INTERVAL_S apart; after this many unanswered the connection is dead (~25 s)."""


def require_driver(target: HistoryTarget) -> None:
    """Raise HistoryDriverMissing (exit 5) for a PostgreSQL ``target`` without psycopg 3 (the ``fleet`` extra)."""
    if target.is_sqlite:
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise HistoryDriverMissing(f"history database {target.display}: PostgreSQL needs psycopg 3 "
                                   "(pip install 'polythrottle[fleet]')") from None


def make_engine(target: HistoryTarget, timeout_s: float, *, read_only: bool = False) -> sa.Engine:
    """An engine for ``target`` (nothing is connected yet).

    read_only (SQLite): the file is opened with ``mode=ro`` and nothing is ever written. A reader that may
    not write the file or its directory (a history owned by root read by a user) cannot make the
    write-ahead log's index (``-shm``) that ``mode=ro`` needs; when no writer is active (no ``-wal``
    file) it opens the file ``immutable`` instead, which creates nothing a later writer would trip on."""
    if target.is_sqlite:
        if read_only:
            assert target.path is not None
            path = target.path

            def connect() -> sqlite3.Connection:
                return sqlite3.connect(sqlite_read_uri(path), uri=True, timeout=float(timeout_s),
                                       check_same_thread=False)

            engine = sa.create_engine(target.url, creator=connect)
        else:
            engine = sa.create_engine(target.url, connect_args={"timeout": float(timeout_s)})
        return _sqlite_transactions(engine)
    require_driver(target)
    return sa.create_engine(
        target.url,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        connect_args={
            "connect_timeout": max(2, math.ceil(timeout_s)),
            "application_name": "polythrottle",
            # an established connection whose server stops answering (a unit's uplink drops mid-query)
            # fails in ~25 s instead of the kernel's ~15 min of TCP retransmissions: keepalives probe a
            # wait for a reply, tcp_user_timeout bounds unacknowledged data (ms)
            "keepalives": 1,
            "keepalives_idle": KEEPALIVE_IDLE_S,
            "keepalives_interval": KEEPALIVE_INTERVAL_S,
            "keepalives_count": KEEPALIVE_COUNT,
            "tcp_user_timeout": 1000 * max(KEEPALIVE_IDLE_S, math.ceil(timeout_s)),
        },
    )


def _sqlite_transactions(engine: sa.Engine) -> sa.Engine:
    """``engine`` (SQLite) with pysqlite's transaction handling off: BEGIN is ours (see the module docstring)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        dbapi_conn.execute("PRAGMA synchronous = FULL")
        dbapi_conn.execute("PRAGMA foreign_keys = ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}")

    return engine


def memory_engine() -> sa.Engine:
    """An empty SQLite database in memory, the same one for every connection: what a reader reads for a history
    file with no schema yet (a 0-byte file), which it leaves as it is."""
    from sqlalchemy.pool import StaticPool

    return _sqlite_transactions(sa.create_engine("sqlite://", poolclass=StaticPool,
                                                 connect_args={"check_same_thread": False}))


def writer(engine: sa.Engine) -> sa.Engine:
    """The engine to write with: on SQLite its transactions take the write lock at BEGIN (IMMEDIATE)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="IMMEDIATE")
    return engine



def is_disconnect(e: BaseException) -> bool:
    """Whether a PostgreSQL error means the server is out of reach (worth a retry or the spool)."""
    orig = getattr(e, "orig", None) or e
    if isinstance(e, sa.exc.DBAPIError) and e.connection_invalidated:
        return True
    if isinstance(e, (sa.exc.TimeoutError, sa.exc.DisconnectionError)):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - no PostgreSQL driver, so no PostgreSQL error either
        return False
    if not isinstance(orig, psycopg.OperationalError):
        return False
    state = getattr(orig, "sqlstate", None) or ""
    if state.startswith(("08", "57P")):
        return True
    if state.startswith("28") or state == "3D000":
        return False
    msg = str(orig).lower()
    return not any(p in msg for p in _PG_CONFIG_ERRORS)


def _unreadable(path: Path) -> bool:
    """Whether ``path`` is a file this process may not read (or in a directory it may not search)."""
    try:
        return path.exists() and not os.access(path, os.R_OK)
    except PermissionError:
        return True
    except OSError:
        return False


def translate(e: BaseException, target: HistoryTarget, what: str) -> HistoryError:
    """``e`` (a driver or SQLAlchemy error) as one line naming the database, password masked."""
    if isinstance(e, HistoryError):
        return e
    orig = getattr(e, "orig", None) or e
    msg = target.scrub(first_line(orig))
    where = f"history database {target.display}"
    if target.is_sqlite:
        low = msg.lower()
        if "locked" in low or "busy" in low:
            return HistoryLocked(f"{where} is locked by another process ({what})")
        if "not a database" in low or "malformed" in low or "corrupt" in low:
            return HistoryCorrupt(f"{where} is corrupt ({msg}); move it away to start a new history")
        if "unable to open" in low and target.path is not None and _unreadable(target.path):
            return HistoryError(f"{where} cannot be read (permission denied)")  # it said "cannot be written"
        if "readonly" in low or "read-only" in low or "unable to open" in low or "disk i/o" in low:
            return HistoryError(f"{where} cannot be written ({msg})")
        return HistoryError(f"{where}: {what} failed ({msg})")
    if is_disconnect(e):
        return HistoryUnavailable(f"{where} is unreachable ({what}: {msg})")
    if isinstance(orig, Exception) and type(orig).__name__ == "OperationalError":
        return HistoryError(f"{where} refused the connection ({msg})")
    return HistoryError(f"{where}: {what} failed ({msg})")


__all__ = ["is_disconnect", "make_engine", "sqlite_read_uri", "translate", "writer"]
