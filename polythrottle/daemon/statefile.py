"""The daemon's state file (``STATE_DIR/daemon/state.json``): what it last applied, and whether it stopped cleanly.

Written atomically (temporary file, fsync, rename) on every change, so after a SIGKILL or a power
cut the next start knows what the previous daemon left applied (``state`` is not ``stopped``) and
``polythrottle status`` can say something when no daemon answers. The hardware originals themselves
live in the saved-originals store (``polythrottle.devices.originals``); this file only describes the daemon.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from polythrottle.atomicfile import atomic_write_text

FILENAME = "state.json"
MAX_BYTES = 1 << 20


def state_path(state_dir: Path) -> Path:
    """In a subdirectory: the saved-originals store owns ``STATE_DIR/*.json``."""
    return Path(state_dir) / "daemon" / FILENAME


def write_state(state_dir: Path, data: dict[str, Any]) -> None:
    """Replace the state file with ``data`` atomically. Raises OSError."""
    path = state_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n", mode=0o600)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The last state written, or None if there is none or it is unreadable."""
    try:
        with state_path(state_dir).open("rb") as f:
            data = json.loads(f.read(MAX_BYTES + 1) or b"null")
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (also one of another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["FILENAME", "pid_alive", "read_state", "state_path", "write_state"]
