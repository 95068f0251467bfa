"""The SQLite file of an embedded history: made (or refused) before it is opened, checked once it is."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from polythrottle.history.errors import HistoryCorrupt, HistoryError
from polythrottle.history.version import APPLICATION_ID, SCHEMA_VERSION


def prepare(path: Path, create: bool) -> None:
    """Refuse a path that is not a regular file; make the directory of a missing file (``create``) or
    refuse it. Raises HistoryError."""
    if path.exists() and not path.is_file():
        raise HistoryError(f"history database {path} is not a regular file")
    if not path.exists():
        if not create:
            raise HistoryError(f"no history database at {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            # a file where a directory should be said "(File exists)" or "(Not a directory)": name the file
            blocker = next((p for p in path.parents if p.exists()), None)
            why = f"{blocker} is not a directory" if blocker is not None and not blocker.is_dir() else e.strerror
            raise HistoryError(f"history database {path}: cannot create its directory ({why})") from None


def check(engine: sa.Engine, url: str, *, read_only: bool = False) -> int:
    """Refuse a file that is not ours, newer or corrupt; switch on WAL (unless ``read_only``: a reader
    writes nothing). Returns its ``user_version``."""
    raw = engine.raw_connection()
    try:
        c = raw.driver_connection
        assert c is not None
        app_id = c.execute("PRAGMA application_id").fetchone()[0]
        version = c.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app_id != APPLICATION_ID and (tables or version):
            raise HistoryCorrupt(f"{url} is not a PolyThrottle history database")
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"history database {url} has schema version {version}, newer than this PolyThrottle "
                f"supports ({SCHEMA_VERSION}); upgrade PolyThrottle or use another history file"
            )
        quick = c.execute("PRAGMA quick_check").fetchone()[0]
        if quick != "ok":
            raise HistoryCorrupt(f"history database {url} is corrupt ({quick}); move it away to start a new history")
        if read_only:
            return int(version)
        mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise HistoryError(f"history database {url}: cannot enable write-ahead logging (got {mode})")
        return int(version)
    finally:
        raw.close()


__all__ = ["check", "prepare"]
