"""Watch model files for changes by polling ``stat``.

Why polling rather than inotify: the standard library has no inotify binding (it would take a
dependency); polling works on every filesystem (overlay, NFS, bind mounts in containers) and sees
both in-place writes and the usual atomic replace (a new inode). A model update is rare and a re-tune
takes minutes, so a poll every couple of seconds (``watch_interval_s``) costs nothing that matters:
one ``stat`` per file. A change is reported once the file has stopped changing for one interval
(a file still being copied is not fingerprinted half-written).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

Signature = tuple[tuple[int, int, int, int] | None, ...]


def _stat(path: Path) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime ns) of ``path``; for a directory, of its newest file; None if missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    if not path.is_dir():
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    newest, total, count = st.st_mtime_ns, 0, 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                s = os.stat(os.path.join(root, f))
            except OSError:
                continue
            newest, total, count = max(newest, s.st_mtime_ns), total + s.st_size, count + 1
    return (st.st_dev, count, total, newest)


class ModelWatcher:
    """``poll()`` returns True once after the watched files changed and then stayed unchanged."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self._seen = self.signature()  # what the last reported (or initial) state was
        self._pending: Signature | None = None

    def signature(self) -> Signature:
        return tuple(_stat(p) for p in self.paths)

    @property
    def missing(self) -> list[Path]:
        return [p for p, s in zip(self.paths, self.signature(), strict=True) if s is None]

    def poll(self) -> bool:
        now = self.signature()
        if now == self._seen:
            self._pending = None
            return False
        if now != self._pending:  # changed (again) since the last poll: wait until it settles
            self._pending = now
            return False
        self._seen, self._pending = now, None
        return True


__all__ = ["ModelWatcher"]
