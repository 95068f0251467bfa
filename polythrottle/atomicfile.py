"""Atomic file replacement: write a temporary file beside the target, fsync it, rename it over the target
(and optionally fsync the directory), so a crash, a power cut or an error never leaves half a file. Used
by every face that writes a file: ``--out`` results, history exports, the daemon's state file, the saved
originals of a device, the installed service files."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


def _umask_mode() -> int:
    """The mode a new regular file gets under the current umask (as ``open`` would create it)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(directory: Path) -> None:
    """fsync ``directory`` so that a rename in it survives a power cut; errors are ignored (some file
    systems refuse to fsync a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int | None = None, gid: int = -1, newline: str | None = None,
                  sync_dir: bool = False) -> Iterator[TextIO]:
    """A text stream whose content replaces ``path`` when the block ends without an exception; on an
    exception the temporary file is removed and ``path`` is untouched.

    ``mode``: the file's permission bits (None: those of the file it replaces, else what the umask gives
    a new file); ``gid`` >= 0: chown the file to root:gid (needs root); ``sync_dir``: fsync the directory
    after the rename. Raises OSError (e.g. PermissionError when the directory is not writable).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except OSError:
            mode = _umask_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if gid >= 0:
            os.chown(tmp, 0, gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        fsync_dir(directory)


def atomic_write_text(path: Path, text: str, *, mode: int | None = None, gid: int = -1,
                      sync_dir: bool = False) -> None:
    """Replace ``path`` with ``text`` atomically (see ``atomic_writer``). Raises OSError."""
    with atomic_writer(path, mode=mode, gid=gid, sync_dir=sync_dir) as f:
        f.write(text)


__all__ = ["atomic_write_text", "atomic_writer", "fsync_dir"]
