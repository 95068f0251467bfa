"""``open_history``: the one way the faces open a history from a path or URL."""

from __future__ import annotations

import math
import os

from polythrottle.checks import is_real
from polythrottle.errors import brief
from polythrottle.history.engine import require_driver
from polythrottle.history.errors import HistoryError
from polythrottle.history.spool import SpooledHistory
from polythrottle.history.store import HistoryStore
from polythrottle.history.target import default_history, parse_target


def open_history(target: str | os.PathLike[str] | None = None, *, spool_dir: str | os.PathLike[str] | None = None,
                 timeout_s: float = 10.0, create: bool = True, retry_s: float = 30.0,
                 read_only: bool = False) -> HistoryStore | SpooledHistory:
    """Open the history at ``target`` (None: ``default_history()``, i.e. ``$POLYTHROTTLE_HISTORY_URL`` or
    ``STATE_DIR/history.sqlite``): a plain path or ``sqlite:///PATH`` (embedded), or ``postgresql://...``.

    With ``spool_dir``, the history is a ``SpooledHistory``: it keeps working on a local spool in that
    directory while a PostgreSQL server is out of reach or a SQLite file stays locked by another process
    (longer than ``timeout_s``), and uploads it when the history answers again (a SQLite history's spool
    file is made only when needed). Without, a server out of reach raises HistoryUnavailable, a locked
    file HistoryLocked (both exit 6). ``create=False``: a missing SQLite file
    raises HistoryError instead of being created. ``read_only``: a plain ``HistoryStore`` that writes
    nothing (no spool; see ``HistoryStore``). Other errors: HistoryError (one line, no password).
    """
    if spool_dir is not None and (not isinstance(spool_dir, (str, os.PathLike))
                                  or not isinstance(os.fspath(spool_dir), str)):
        raise HistoryError(f"spool_dir must be a path, got {brief(spool_dir, 40)}")
    for name, value in (("timeout_s", timeout_s), ("retry_s", retry_s)):
        if not is_real(value) or not math.isfinite(value) or value < 0:  # ceil(NaN): a bare ValueError on PostgreSQL
            raise HistoryError(f"{name} must be a number of seconds >= 0, got {brief(value, 40)}")
    parsed = parse_target(default_history() if target is None else target)
    if spool_dir is not None and not read_only and (create or not parsed.is_sqlite):
        require_driver(parsed)  # before the spool's directory is made: a missing extra writes nothing
        return SpooledHistory(parsed, spool_dir, retry_s=retry_s, timeout_s=timeout_s)
    return HistoryStore(parsed, timeout_s=timeout_s, create=create, read_only=read_only)


__all__ = ["open_history"]
