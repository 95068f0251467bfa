"""The control-socket client against a stand-in daemon: replies, errors, and retrying a busy daemon."""

from __future__ import annotations

import json
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from polythrottle.daemon import client
from polythrottle.daemon.client import DaemonError, notify_model_updated, send_command


class StandIn:
    """Answers each connection with the next of ``replies`` (raw bytes), recording the requests."""

    def __init__(self, path: Path, *replies: bytes) -> None:
        self.replies, self.requests = list(replies), []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                buf = b""
                while not buf.endswith(b"\n"):
                    buf += conn.recv(4096)
                self.requests.append(json.loads(buf))
                conn.sendall(self.replies.pop(0) if len(self.replies) > 1 else self.replies[0])

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sock() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir="/tmp") as d:  # AF_UNIX paths must be short
        yield Path(d) / "c.sock"


def test_status_reload_and_model_updated(sock):
    d = StandIn(sock, b'{"ok": true, "status": {"state": "serving"}}\n', b'{"ok": true, "job": 4}\n')
    try:
        assert client.status(sock) == {"state": "serving"}
        assert client.reload(sock)["job"] == 4
        notify_model_updated(sock, model_files=["/m/a.bin"], force=True)
        assert d.requests == [{"command": "status"}, {"command": "reload"},
                              {"command": "model-updated", "model_files": ["/m/a.bin"], "force": True}]
    finally:
        d.close()


def test_a_busy_daemon_is_asked_again(sock):
    d = StandIn(sock, b'{"ok": false, "error": "busy: 32 requests in progress; try again"}\n',
                b'{"ok": false, "error": "busy: again"}\n', b'{"ok": true, "status": {}}\n')
    try:
        assert send_command("status", sock, timeout_s=5)["ok"] and len(d.requests) == 3
    finally:
        d.close()


@pytest.mark.parametrize("reply, words", [
    (b'{"ok": false, "error": "unknown command"}\n', "daemon refused 'status': unknown command"),
    (b"not json\n", "malformed reply"), (b"\n", "sent no reply"), (b'{"ok": false}\n', "no reason given"),
])
def test_refusals_and_garbage_are_daemon_errors(sock, reply, words):
    d = StandIn(sock, reply)
    try:
        with pytest.raises(DaemonError, match=words):
            send_command("status", sock)
    finally:
        d.close()


@pytest.mark.parametrize("snap", [b'[1, 2, 3]', b'"serving"', b'null'])
def test_a_status_that_is_not_an_object_is_a_malformed_reply(sock, snap):
    """`{"ok": true, "status": [1, 2, 3]}` said "TypeError: cannot convert dictionary update sequence ..."."""
    d = StandIn(sock, b'{"ok": true, "status": ' + snap + b'}\n')
    try:
        with pytest.raises(DaemonError, match=r"sent a malformed reply \(its status is not an object\)"):
            client.status(sock)
    finally:
        d.close()
    d = StandIn(sock.with_name("d.sock"), b'{"ok": true}\n')
    try:
        with pytest.raises(DaemonError, match="malformed reply"):
            client.status(sock.with_name("d.sock"))
    finally:
        d.close()


def test_no_daemon(sock):
    with pytest.raises(DaemonError, match="no daemon control socket"):
        send_command("status", sock)
    assert client.socket_path(sock) == sock


def _dripping_server(path: Path, stop: threading.Event, chunk: bytes) -> socket.socket:
    """Accepts one connection, reads the request, then sends ``chunk`` every 50 ms, never a newline."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)
            while not stop.wait(0.05):
                try:
                    conn.sendall(chunk)
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    return srv


@pytest.mark.parametrize("chunk", [b"x", b"y" * 2**20])
def test_a_server_that_never_finishes_its_reply_is_one_error_not_a_hang(sock, chunk):
    # a wedged or hostile server dripping bytes (or flooding them) without a newline: the timeout holds
    # for the whole reply (it was per read: a byte every 50 ms held the client for ever), and a reply over
    # the size cap is refused
    stop = threading.Event()
    srv = _dripping_server(sock, stop, chunk)
    try:
        with pytest.raises(DaemonError, match="no complete reply within|sent a reply over"):
            send_command("status", sock, timeout_s=1.0)
    finally:
        stop.set()
        srv.close()


@pytest.mark.parametrize("path", [5, b"/run/polythrottle/control.sock", ["/tmp/x.sock"]])
def test_a_socket_path_of_the_wrong_type_is_bad_input_not_a_type_error(path) -> None:
    from polythrottle.errors import BadInputError
    from polythrottle.integrations import CheckpointRetuner

    with pytest.raises(BadInputError, match="socket path must be a path"):
        notify_model_updated(path, model_version="v2")
    with pytest.raises(BadInputError, match="socket path must be a path"):  # refused when the callback is made
        CheckpointRetuner(notify=True, socket_path=path)
