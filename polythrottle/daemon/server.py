"""The control socket: a Unix stream socket (mode 0660) answering one JSON line per request.

Protocol (the client is ``polythrottle.control``): the client sends one line
``{"command": NAME, ...fields}``; the daemon answers one line ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}`` and closes. Requests that are not JSON objects, too long
(> 64 KiB), or name an unknown command get an error answer; the daemon keeps running.
Each connection is served in its own short-lived thread, so a slow client blocks nobody, and the
handler never touches the device (it reads the daemon's status snapshot or queues work).
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polythrottle.errors import BadInputError, PolyThrottleError

MAX_REQUEST_BYTES = 64 * 1024
SOCKET_MODE = 0o660

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def decode_request(line: bytes) -> dict[str, Any]:
    """Parse one request line. Raises BadInputError with the reason."""
    try:
        req = json.loads(line.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadInputError("request is not a JSON object on one line, e.g. {\"command\": \"status\"}") from None
    if not isinstance(req, dict):
        raise BadInputError("request must be a JSON object with a \"command\" field")
    if not isinstance(req.get("command"), str):
        raise BadInputError("request has no \"command\" (a string)")
    return req


class _RequestHandler(socketserver.StreamRequestHandler):
    timeout = 5.0
    server: _Server

    def handle(self) -> None:
        try:
            line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
        except OSError:
            return
        if not line.strip():
            reply: dict[str, Any] = {"ok": False, "error": "empty request"}
        elif len(line) > MAX_REQUEST_BYTES:
            reply = {"ok": False, "error": f"request longer than {MAX_REQUEST_BYTES} bytes"}
        else:
            try:
                reply = self.server.dispatch(decode_request(line))
            except PolyThrottleError as e:
                reply = {"ok": False, "error": str(e)}
            except Exception as e:  # noqa: BLE001 - a bug must not kill the server thread; say what happened
                print(f"polythrottle: error: control request failed: {type(e).__name__}: {e}", file=sys.stderr)
                reply = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
        with contextlib.suppress(OSError):
            self.wfile.write((json.dumps(reply, default=str) + "\n").encode())


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 128  # a full backlog makes a Unix-socket connect fail at once (EAGAIN)
    dispatch: Handler


class ControlServer:
    """Listens on ``path`` and answers with ``handler(request) -> reply``; ``start()`` runs it in a thread."""

    def __init__(self, path: Path, handler: Handler, *, group: str | None = None) -> None:
        self.path = Path(path)
        self.handler = handler
        self.group = group
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _gid(self) -> int:
        if self.group is None:
            return -1
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise BadInputError(f"socket_group {self.group!r}: no such group") from None

    def _clear_stale(self) -> None:
        """Remove a socket file left by a dead daemon; refuse if a live one listens there."""
        if not self.path.exists() and not self.path.is_symlink():
            return
        if not self.path.is_socket():
            raise BadInputError(f"control socket path {self.path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            try:
                s.connect(str(self.path))
            except OSError:
                self.path.unlink()  # nobody listens: stale
                return
        raise BadInputError(f"another daemon is already listening on {self.path}")

    def start(self) -> None:
        """Bind (mode 0660, group ``group``) and serve. Raises BadInputError / PermissionError."""
        gid = self._gid()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInputError(f"cannot create the control socket directory {self.path.parent}: {e.strerror}") from None
        self._clear_stale()
        old = os.umask(0o117)  # the socket is created 0660: never briefly wider
        try:
            server = _Server(str(self.path), _RequestHandler)
        except OSError as e:
            raise BadInputError(f"cannot listen on {self.path}: {e.strerror or e}") from None
        finally:
            os.umask(old)
        os.chmod(self.path, SOCKET_MODE)
        if gid >= 0:
            os.chown(self.path, -1, gid)
        server.dispatch = self.handler
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="control-socket", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


__all__ = ["MAX_REQUEST_BYTES", "SOCKET_MODE", "ControlServer", "decode_request"]
