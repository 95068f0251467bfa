"""The history: every measurement of every tune, in SQLite (embedded default) or PostgreSQL (a fleet).

Light names (keys, records, errors, paths) import nothing heavy; ``HistoryStore``, ``SpooledHistory``
and ``open_history`` load SQLAlchemy on first use (so ``import polythrottle`` and ``--help`` stay fast).

    from polythrottle.history import open_history, HistoryKey
    with open_history("postgresql://tuner@db.example/fleet", spool_dir="/var/lib/polythrottle") as h:
        ...

Modules: ``records`` (key and row types), ``target`` (paths, URLs, password masking), ``schema`` and
``migrations/`` (tables, Alembic revisions), ``migrate``, ``engine``, ``store`` (``HistoryStore``),
``spool`` (``SpooledHistory``), ``connect`` (``open_history``), ``fleet_summary``, ``export``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from polythrottle.history.errors import HistoryError, HistoryUnavailable
from polythrottle.history.records import (
    ExportedMeasurement,
    HistoryKey,
    StoredBest,
    StoredMeasurement,
    StoredTune,
    VersionSummary,
    space_fingerprint,
)
from polythrottle.history.target import (
    DEFAULT_FILENAME,
    default_history,
    default_history_path,
    mask,
    parse_target,
)
from polythrottle.history.version import SCHEMA_VERSION

if TYPE_CHECKING:
    from polythrottle.history.connect import open_history
    from polythrottle.history.spool import SpooledHistory
    from polythrottle.history.store import HistoryStore

_LAZY = {
    "HistoryStore": "polythrottle.history.store",
    "SpooledHistory": "polythrottle.history.spool",
    "open_history": "polythrottle.history.connect",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_FILENAME",
    "SCHEMA_VERSION",
    "ExportedMeasurement",
    "HistoryError",
    "HistoryKey",
    "HistoryStore",
    "HistoryUnavailable",
    "SpooledHistory",
    "StoredBest",
    "StoredMeasurement",
    "StoredTune",
    "VersionSummary",
    "default_history",
    "default_history_path",
    "mask",
    "open_history",
    "parse_target",
    "space_fingerprint",
]
