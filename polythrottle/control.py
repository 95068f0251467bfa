"""Client side of the daemon's control socket: one JSON request, one JSON reply, each a line.

Request: ``{"command": "model-updated", ...fields}`` + newline over a Unix stream socket; the daemon
answers one line ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. The socket path is
``polythrottle.paths.socket_path`` unless given (``$POLYTHROTTLE_SOCKET``, else the system socket
``/run/polythrottle/control.sock`` as root or when it exists, else the user's runtime directory).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from polythrottle import paths
from polythrottle.errors import PolyThrottleError

DEFAULT_SOCKET = str(paths.SYSTEM_SOCKET)


class DaemonError(PolyThrottleError):
    """The daemon could not be reached, or answered with an error."""


class _Busy(Exception):
    pass


def socket_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else the default control socket (``polythrottle.paths.socket_path``)."""
    return paths.socket_path(path)


def send_command(command: str, path: str | os.PathLike[str] | None = None, *, timeout_s: float = 5.0,
                 **fields: Any) -> dict[str, Any]:
    """Send ``command`` with ``fields`` to the daemon; return its reply. A ``busy`` answer (every handler
    taken) is retried until ``timeout_s``. Raises DaemonError."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            reply = _send_once(command, path, max(deadline - time.monotonic(), 0.1), fields)
        except _Busy as e:  # the listen backlog is full (a flood of connections): like a busy answer
            reply = {"ok": False, "error": f"busy: {e}"}
        busy = not reply.get("ok", False) and str(reply.get("error", "")).startswith("busy:")
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not reply.get("ok", False):
        raise DaemonError(f"daemon refused {command!r}: {reply.get('error', 'no reason given')}")
    return reply


def _send_once(command: str, path: str | os.PathLike[str] | None, timeout_s: float,
               fields: dict[str, Any]) -> dict[str, Any]:
    where = socket_path(path)
    request = json.dumps({"command": command, **fields}, default=str) + "\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(where))
            try:
                s.sendall(request.encode())
            except (BrokenPipeError, ConnectionResetError):  # answered without reading (busy): read why
                pass
            buf = b""
            while not buf.endswith(b"\n"):
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                buf += chunk
    except BlockingIOError:
        raise _Busy(f"daemon control socket {where} is not accepting connections now") from None
    except FileNotFoundError:
        raise DaemonError(f"no daemon control socket at {where}") from None
    except PermissionError:
        raise DaemonError(f"no permission to use the daemon control socket {where}") from None
    except OSError as e:  # refused, timed out, ...
        raise DaemonError(f"daemon control socket {where}: {e.strerror or e}") from None
    try:
        reply = json.loads(buf.decode() or "null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DaemonError(f"daemon at {where} sent a malformed reply") from None
    if not isinstance(reply, dict):
        raise DaemonError(f"daemon at {where} sent no reply")
    return reply


def notify_model_updated(path: str | os.PathLike[str] | None = None, *, model_version: str | None = None,
                         model_files: list[str] | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
    """Tell the daemon the model changed (it re-tunes with a warm start). Raises DaemonError."""
    fields: dict[str, Any] = {}
    if model_version:
        fields["model_version"] = model_version
    if model_files:
        fields["model_files"] = [str(f) for f in model_files]
    return send_command("model-updated", path, timeout_s=timeout_s, **fields)


__all__ = ["DEFAULT_SOCKET", "DaemonError", "notify_model_updated", "send_command", "socket_path"]
