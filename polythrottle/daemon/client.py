"""The daemon's control-socket client: one request line, one reply line (``polythrottle.daemon.protocol``).

The socket path is ``polythrottle.paths.socket_path`` unless given (``$POLYTHROTTLE_SOCKET``, else the
system socket ``/run/polythrottle/control.sock`` as root or when it exists, else the user's runtime
directory). ``send_command`` sends any command and returns the reply; ``status``, ``reload`` and
``notify_model_updated`` are the daemon's commands as functions.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from polythrottle import paths
from polythrottle.daemon.protocol import (
    MODEL_UPDATED,
    RELOAD,
    STATUS,
    ModelUpdated,
    decode_reply,
    encode_request,
    exit_code_of,
    is_busy,
    refused,
)
from polythrottle.errors import BadInputError, PolyThrottleError, brief

DEFAULT_SOCKET = str(paths.SYSTEM_SOCKET)
RETRY_S = 0.1
"""Pause between tries while the daemon answers ``busy``."""
MAX_REPLY_BYTES = 16 * 2**20
"""Largest reply accepted (a status is a few KiB): more is a hostile or broken server."""


class DaemonError(PolyThrottleError):
    """The daemon could not be reached, or answered with an error. Exit 1, or the exit code the daemon's refusal
    carries (2: it refused the request or the config it re-read; ``protocol.exit_code_of``)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Busy(Exception):
    pass


def socket_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else the default control socket (``polythrottle.paths.socket_path``). BadInputError if
    ``path`` is not a path, or one no Unix socket can have (too long to connect to)."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise BadInputError(f"the daemon's control socket path must be a path, got {brief(path, 40)}")
    where = paths.socket_path(path)
    why = paths.socket_too_long(where)
    if why:
        origin = paths.socket_origin(path)
        raise BadInputError(f"daemon control socket {why}{f' ({origin})' if origin else ''}: choose a shorter path")
    return where


def send_command(command: str, path: str | os.PathLike[str] | None = None, *, timeout_s: float = 5.0,
                 **fields: Any) -> dict[str, Any]:
    """Send ``command`` with ``fields`` to the daemon; return its reply. A ``busy`` answer (every handler
    taken) is retried until ``timeout_s``. Raises DaemonError."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            reply = _send_once(command, path, max(deadline - time.monotonic(), 0.1), fields)
        except _Busy as e:  # the listen backlog is full (a flood of connections): like a busy answer
            reply = refused(f"busy: {e}")
        if not is_busy(reply) or time.monotonic() > deadline:
            break
        time.sleep(RETRY_S)
    if not reply.get("ok", False):
        raise DaemonError(f"daemon refused {command!r}: {reply.get('error', 'no reason given')}", exit_code_of(reply))
    return reply


def _send_once(command: str, path: str | os.PathLike[str] | None, timeout_s: float,
               fields: dict[str, Any]) -> dict[str, Any]:
    where = socket_path(path)
    request = encode_request(command, **fields)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(where))
            try:
                s.sendall(request)
            except (BrokenPipeError, ConnectionResetError):  # answered without reading (busy): read why
                pass
            buf = b""
            deadline = time.monotonic() + timeout_s  # for the whole reply: a server dripping bytes cannot hold us
            late = f"daemon at {where} sent no complete reply within {timeout_s:g} s"
            while not buf.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:  # (a timeout of 0 would make the socket non-blocking)
                    raise DaemonError(late)
                s.settimeout(left)
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                except TimeoutError:
                    raise DaemonError(late) from None
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_REPLY_BYTES:
                    raise DaemonError(f"daemon at {where} sent a reply over {MAX_REPLY_BYTES // 2**20} MiB")
    except BlockingIOError:
        raise _Busy(f"daemon control socket {where} is not accepting connections now") from None
    except FileNotFoundError:
        raise DaemonError(f"no daemon control socket at {where}") from None
    except PermissionError:
        raise DaemonError(f"no permission to use the daemon control socket {where}") from None
    except OSError as e:  # refused, timed out, ...
        raise DaemonError(f"daemon control socket {where}: {e.strerror or e}") from None
    if not buf.strip():
        raise DaemonError(f"daemon at {where} sent no reply")
    reply = decode_reply(buf)
    if reply is None:
        raise DaemonError(f"daemon at {where} sent a malformed reply")
    return reply


def status(path: str | os.PathLike[str] | None = None, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """The daemon's status (what ``polythrottle status --json`` prints). Raises DaemonError."""
    snap = send_command(STATUS, path, timeout_s=timeout_s).get("status")
    if not isinstance(snap, dict):  # dict() of a list said "cannot convert dictionary update sequence ..."
        raise DaemonError(f"daemon at {socket_path(path)} sent a malformed reply (its status is not an object)")
    return snap


def reload(path: str | os.PathLike[str] | None = None, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """Ask the daemon to re-read its config; the reply names the queued job. Raises DaemonError (a
    refused config: the reason)."""
    return send_command(RELOAD, path, timeout_s=timeout_s)


def notify_model_updated(path: str | os.PathLike[str] | None = None, *, model_version: str | None = None,
                         model_files: list[str] | None = None, force: bool = False,
                         timeout_s: float = 5.0) -> dict[str, Any]:
    """Tell the daemon the model changed (it re-tunes with a warm start). Raises DaemonError."""
    request = ModelUpdated(model_version or None, [str(f) for f in model_files] if model_files else None, force)
    return send_command(MODEL_UPDATED, path, timeout_s=timeout_s, **request.fields())


__all__ = ["DEFAULT_SOCKET", "DaemonError", "notify_model_updated", "reload", "send_command", "socket_path", "status"]
