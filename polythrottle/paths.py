"""Where PolyThrottle keeps its files: one rule for every face (CLI, Python API, daemon), root or not.

- State directory (saved hardware originals, the default history database, the daemon's state file):
  ``--state-dir`` / ``state_dir``, else ``$POLYTHROTTLE_STATE_DIR``, else ``/var/lib/polythrottle`` when
  running as root, else ``$XDG_STATE_HOME/polythrottle`` (``~/.local/state/polythrottle``).
- History database: ``--history`` / ``history``, else ``$POLYTHROTTLE_HISTORY_URL``, else
  ``STATE_DIR/history.sqlite``.
- Control socket: ``--socket`` / ``socket``, else ``$POLYTHROTTLE_SOCKET``, else
  ``/run/polythrottle/control.sock`` when running as root or when that socket exists (a user in the
  ``polythrottle`` group reaching the system daemon), else ``$XDG_RUNTIME_DIR/polythrottle/control.sock``
  (``STATE_DIR/control.sock`` where there is no runtime directory).

The systemd unit sets ``POLYTHROTTLE_STATE_DIR=/var/lib/polythrottle`` and
``POLYTHROTTLE_SOCKET=/run/polythrottle/control.sock``, which are also the root defaults, so a
``sudo polythrottle tune`` and the service share one history.
"""

from __future__ import annotations

import os
from pathlib import Path

from polythrottle.errors import clip

STATE_ENV = "POLYTHROTTLE_STATE_DIR"
HISTORY_ENV = "POLYTHROTTLE_HISTORY_URL"
SOCKET_ENV = "POLYTHROTTLE_SOCKET"
SYSTEM_STATE_DIR = Path("/var/lib/polythrottle")
SYSTEM_SOCKET = Path("/run/polythrottle/control.sock")
HISTORY_FILENAME = "history.sqlite"

PathArg = str | os.PathLike[str] | None


def is_root() -> bool:
    """Whether this process runs as uid 0."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _absolute_env(name: str) -> Path | None:
    value = os.environ.get(name, "")
    return Path(value).expanduser() if value and Path(value).expanduser().is_absolute() else None


def state_dir(override: PathArg = None) -> Path:
    """The state directory (see the module docstring). Not created here."""
    if override is not None and os.fspath(override):
        return Path(override).expanduser()
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env).expanduser()
    if is_root():
        return SYSTEM_STATE_DIR
    base = _absolute_env("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return base / "polythrottle"


def default_history(state: PathArg = None) -> str:
    """The history database when none is given: ``$POLYTHROTTLE_HISTORY_URL``, else
    ``STATE_DIR/history.sqlite`` (``state`` overrides the state directory)."""
    env = os.environ.get(HISTORY_ENV, "").strip()
    if env:
        return env
    return str(state_dir(state) / HISTORY_FILENAME)


MAX_SOCKET_PATH_BYTES = 107
"""Longest Unix socket path Linux takes (``sun_path`` is 108 bytes, its NUL included)."""


def socket_too_long(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be a Unix socket's path (longer than ``sun_path`` takes; a client cannot connect to
    it), or None."""
    n = len(os.fsencode(path))
    if n <= MAX_SOCKET_PATH_BYTES:
        return None
    return f"{clip(os.fsdecode(path), 80)} is {n} bytes long; a Unix socket path may have at most {MAX_SOCKET_PATH_BYTES}"


def socket_origin(override: PathArg = None) -> str:
    """Where ``socket_path(override)`` comes from, for a message naming it (``""``: it is ``override``)."""
    if override is not None and os.fspath(override):
        return ""
    if os.environ.get(SOCKET_ENV):
        return f"from ${SOCKET_ENV}"
    if is_root() or SYSTEM_SOCKET.exists():
        return "the system socket"
    if _absolute_env("XDG_RUNTIME_DIR") is not None:
        return "the default, in $XDG_RUNTIME_DIR"
    return "the default, in the state directory"


def socket_path(override: PathArg = None) -> Path:
    """The daemon's control socket (see the module docstring)."""
    if override is not None and os.fspath(override):
        return Path(override).expanduser()
    env = os.environ.get(SOCKET_ENV)
    if env:
        return Path(env).expanduser()
    if is_root() or SYSTEM_SOCKET.exists():
        return SYSTEM_SOCKET
    runtime = _absolute_env("XDG_RUNTIME_DIR")
    if runtime is not None:
        return runtime / "polythrottle" / "control.sock"
    return state_dir() / "control.sock"


__all__ = [
    "HISTORY_ENV",
    "HISTORY_FILENAME",
    "MAX_SOCKET_PATH_BYTES",
    "SOCKET_ENV",
    "STATE_ENV",
    "SYSTEM_SOCKET",
    "SYSTEM_STATE_DIR",
    "default_history",
    "is_root",
    "socket_origin",
    "socket_path",
    "socket_too_long",
    "state_dir",
]
