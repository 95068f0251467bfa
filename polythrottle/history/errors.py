"""Errors of the history store: one line each, never a password (see ``target.mask``)."""

from __future__ import annotations

from polythrottle.errors import BadInputError, MissingDependencyError


class HistoryError(BadInputError):
    """The history database cannot be used (corrupt, not ours, newer schema, locked, unwritable, refused
    the credentials). Exit 2."""


class HistoryCorrupt(HistoryError):
    """A SQLite history file that is corrupt or is not a PolyThrottle history. Exit 2."""


class HistoryUnavailable(HistoryError):
    """The history server cannot be reached now (refused, timed out, shut down mid-write). A spooled
    history (``SpooledHistory``) keeps working on its local spool instead. Exit 6."""

    exit_code = 6


class HistoryLocked(HistoryUnavailable):
    """A SQLite history another process holds locked longer than the store waits (``timeout_s``): transient,
    so a spooled history (``open_history`` with ``spool_dir``) keeps the writes on its local spool, as for a
    server out of reach. Exit 6."""


class HistoryDriverMissing(HistoryError, MissingDependencyError):
    """A PostgreSQL history without its driver (psycopg 3, the ``fleet`` extra). Exit 5, as every missing extra."""

    exit_code = 5


__all__ = ["HistoryCorrupt", "HistoryDriverMissing", "HistoryError", "HistoryLocked", "HistoryUnavailable"]
