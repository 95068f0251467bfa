"""The control socket's server: the protocol end to end, mode 0660, stale sockets, concurrent clients."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from polythrottle.daemon.client import DaemonError, send_command
from polythrottle.daemon.server import ControlServer
from polythrottle.errors import BadInputError


def test_control_socket_protocol_and_mode(tmp_path):
    path = tmp_path / "run" / "ctl.sock"

    def handler(req):
        if req["command"] == "boom":
            raise RuntimeError("bug")
        if req["command"] != "status":
            raise BadInputError(f"unknown command {req['command']!r}")
        return {"ok": True, "status": {"state": "serving"}}

    server = ControlServer(path, handler)
    server.start()
    try:
        assert (path.stat().st_mode & 0o777) == 0o660
        assert send_command("status", path)["status"]["state"] == "serving"
        with pytest.raises(DaemonError, match="unknown command 'nope'"):
            send_command("nope", path)
        with pytest.raises(DaemonError, match="internal error: RuntimeError"):
            send_command("boom", path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # a client that never sends a line
            s.connect(str(path))
            with pytest.raises(BadInputError, match="already listening"):
                ControlServer(path, handler).start()
        assert send_command("status", path)["ok"]
    finally:
        server.stop()
    assert not path.exists()
    path.parent.mkdir(exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on: taken over
    server = ControlServer(path, handler)
    server.start()
    server.stop()


def test_many_clients_at_once(tmp_path):
    path = tmp_path / "ctl.sock"
    gate = threading.Event()

    def handler(req):
        gate.wait(2)  # a slow answer must not block the others
        return {"ok": True}

    server = ControlServer(path, handler)
    server.start()
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(send_command("status", path))) for _ in range(8)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.2)
        gate.set()
        for t in threads:
            t.join(5)
        assert len(results) == 8 and time.monotonic() - t0 < 3
    finally:
        server.stop()

