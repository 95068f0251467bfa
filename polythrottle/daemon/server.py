"""The control socket's server: a Unix stream socket (mode 0660) answering one JSON line per request.

The protocol (commands, lines, limits) is ``polythrottle.daemon.protocol``; the client is
``polythrottle.daemon.client``. Requests that are not JSON objects, too long, nested too deeply, or that
the handler refuses get an error answer; the daemon keeps running. Each connection is served in its own
short-lived thread, at most ``MAX_CLIENTS`` at once (one more is answered ``busy`` at once; the client
retries), and the whole request must arrive within ``REQUEST_DEADLINE_S`` (a deadline for the request,
not per read: a client sending one byte every few seconds is cut off like one sending nothing). The
handler is the daemon's (``Daemon.handle_request``): it never touches the device.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import socket
import socketserver
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polythrottle.daemon.config import MAX_SOCKET_PATH_BYTES
from polythrottle.daemon.protocol import (
    BUSY,
    MAX_REQUEST_BYTES,
    REQUEST_DEADLINE_S,
    decode_request,
    encode_reply,
    refused,
)
from polythrottle.errors import BadInputError, PolyThrottleError, clip

MAX_CLIENTS = 32
SOCKET_MODE = 0o660

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def _read_request(sock: socket.socket, deadline: float) -> tuple[bytes | None, str]:
    """One line from ``sock`` before ``deadline`` (monotonic). Returns (line, "") or (None, the error)."""
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, f"request not complete within {REQUEST_DEADLINE_S:g} s"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return None, f"request not complete within {REQUEST_DEADLINE_S:g} s"
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST_BYTES:
            return None, f"request longer than {MAX_REQUEST_BYTES} bytes"
    line = buf.split(b"\n", 1)[0]
    if len(line) > MAX_REQUEST_BYTES:
        return None, f"request longer than {MAX_REQUEST_BYTES} bytes"
    return line, ""


class _RequestHandler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        deadline = time.monotonic() + REQUEST_DEADLINE_S
        try:
            line, problem = _read_request(sock, deadline)
        except OSError:
            return
        if problem:  # too long (the client's request: bad input), or not whole in time
            reply = refused(problem, BadInputError.exit_code if problem.startswith("request longer") else None)
        elif not line or not line.strip():
            reply = refused("empty request", BadInputError.exit_code)
        else:
            try:
                reply = self.server.dispatch(decode_request(line))
            except PolyThrottleError as e:
                reply = refused(clip(str(e), 1000), e.exit_code)
            except Exception as e:  # noqa: BLE001 - a bug must not kill the server thread; say what happened
                print(f"polythrottle: error: control request failed: {type(e).__name__}: {clip(str(e))}",
                      file=sys.stderr)
                reply = refused(f"internal error: {type(e).__name__}: {clip(str(e))}")
        _send(sock, reply, max(deadline - time.monotonic(), 1.0))


def _send(sock: socket.socket, reply: dict[str, Any], timeout_s: float) -> None:
    with contextlib.suppress(OSError):
        sock.settimeout(timeout_s)
        sock.sendall(encode_reply(reply))


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 256  # a full backlog makes a Unix-socket connect fail at once (EAGAIN)
    dispatch: Handler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # every handler busy: answer at once, keep no thread
            _send(request, refused(f"{BUSY} {MAX_CLIENTS} requests in progress; try again"), 0.2)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (another user's too); our own pid counts as alive."""
    if pid <= 0 or pid == os.getpid():
        return pid == os.getpid()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # EPERM: it exists, as another user; past pid_t: no pid of ours
        return True
    return True


def _remove_private(parent: int, name: str) -> None:
    """Remove the directory ``name`` in the directory open as ``parent`` if it is a private bind directory: a
    real directory (not a link) owned by this user, holding nothing or only the socket ``s``. Raises OSError."""
    st = os.lstat(name, dir_fd=parent)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    try:
        if os.fstat(fd).st_ino != st.st_ino:  # replaced between the two looks
            return
        inside = os.listdir(fd)
        if inside not in ([], ["s"]):
            return
        if inside and not stat.S_ISSOCK(os.lstat("s", dir_fd=fd).st_mode):
            return
        if inside:
            os.unlink("s", dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


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

    def _private_prefix(self) -> str:
        """What the names of this socket's private bind directories start with; the pid of the daemon that made
        one and a random part follow (``.control.sock.1234.k2j_x9ab``)."""
        return f".{self.path.name}."

    def _clear_stale_private(self) -> None:
        """Remove the private bind directories of this socket that a daemon killed while binding left (SIGKILL
        between ``mkdtemp`` and the rename: one more ``.xxxxxxxx`` at every such start). Only this socket's,
        named by a process no longer alive, owned by this user and a real directory holding nothing but the
        socket ``s``; never through a link (``lstat``, ``O_NOFOLLOW``, names relative to the opened directory).
        Anything else is left alone."""
        prefix = self._private_prefix()
        try:
            parent = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            for name in os.listdir(parent):
                pid_text, dot, rest = name.removeprefix(prefix).partition(".")
                if (not name.startswith(prefix) or not dot or not rest or "." in rest or not pid_text.isascii()
                        or not pid_text.isdigit() or _alive(int(pid_text))):  # ("." in rest: another socket's,
                    # named SOCKET.N; a pid only as mkdtemp's prefix writes it, ASCII digits: '²' is no int)
                    continue
                with contextlib.suppress(OSError):
                    _remove_private(parent, name)
        finally:
            os.close(parent)

    def start(self) -> None:
        """Bind (mode 0660, group ``group``) and serve. Raises BadInputError / PermissionError.

        The socket listens from the moment it is bound, so it is bound in a fresh 0700 directory next to
        ``path`` (no other user can reach it there), given its mode and group, and only then linked to
        ``path``: at ``path`` it never has another mode or group. The process umask is left alone (it is
        process-wide, and the metrics thread already runs). ``link`` rather than ``rename``: a socket that
        appeared at ``path`` since the stale check is refused as ``bind`` refused it, not replaced."""
        gid = self._gid()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInputError(f"cannot create the control socket directory {self.path.parent}: {e.strerror}") from None
        self._clear_stale()
        self._clear_stale_private()
        try:
            private = Path(tempfile.mkdtemp(prefix=f"{self._private_prefix()}{os.getpid()}.", dir=self.path.parent))
        except OSError as e:
            raise BadInputError(f"cannot listen on {self.path}: {e.strerror or e}") from None
        try:
            server = self._bind_privately(private, gid)
        finally:
            with contextlib.suppress(OSError):
                (private / "s").unlink()
            with contextlib.suppress(OSError):
                private.rmdir()
        server.dispatch = self.handler
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="control-socket", daemon=True)
        self._thread.start()

    def _bind_privately(self, private: Path, gid: int) -> _Server:
        """A server listening on ``private``/s, given its mode and group, then linked to ``path``."""
        os.chmod(private, 0o700)  # mkdtemp asks 0700; a umask could only have narrowed it
        tmp = private / "s"
        fd = -1
        try:
            address = str(tmp)
            if len(os.fsencode(address)) > MAX_SOCKET_PATH_BYTES:  # longer than path itself may be: by the fd
                fd = os.open(private, os.O_RDONLY | os.O_DIRECTORY)
                address = f"/proc/self/fd/{fd}/s"
            server = _Server(address, _RequestHandler)
        except OSError as e:
            raise BadInputError(f"cannot listen on {self.path}: {e.strerror or e}") from None
        finally:
            if fd >= 0:
                os.close(fd)
        try:
            os.chmod(tmp, SOCKET_MODE)
            if gid >= 0:
                try:
                    os.chown(tmp, -1, gid)
                except PermissionError as e:  # a group this user is not in: the config's, not a file given
                    raise BadInputError(f"socket_group {self.group!r}: this user may not give the control socket "
                                        f"that group ({e.strerror})") from None
            try:
                os.link(tmp, self.path)  # fails if anything is at path (as bind did)
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                    why = os.strerror(errno.EADDRINUSE) if isinstance(e, FileExistsError) else e.strerror or e
                    raise BadInputError(f"cannot listen on {self.path}: {why}") from None
                os.rename(tmp, self.path)  # a filesystem without hard links
        except BaseException:
            server.server_close()
            raise
        server.server_address = str(self.path)
        return server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


__all__ = ["MAX_CLIENTS", "MAX_REQUEST_BYTES", "REQUEST_DEADLINE_S", "SOCKET_MODE", "ControlServer"]
