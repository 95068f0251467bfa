"""Hostile control-socket clients against one running daemon (on a fake AGX Orin, serving): unknown
commands, garbage, oversized and deeply nested requests, model files outside the config, slow clients
(one byte at a time) and floods of idle connections.

Each is answered with ``{"ok": false, "error": ONE LINE}`` (or cut off at the request deadline), the
daemon keeps answering ``status``, its handler threads stay bounded, and the request changes nothing on
the board. The daemon is stopped at the end: exit 0 and every clock file back to its original.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from polythrottle.daemon.server import MAX_CLIENTS, REQUEST_DEADLINE_S
from tests.faults.conftest import make_board
from tests.faults.test_daemon_faults import Running

# pytest-xdist (--dist loadgroup): every test here on one worker, so that the module-scoped `daemon` fixture is made once
pytestmark = pytest.mark.xdist_group("test_socket_clients")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sock")
    board = make_board(tmp)
    models = tmp / "models"
    (models / "dir").mkdir(parents=True)
    (models / "model.bin").write_bytes(b"weights v1")
    (models / "dir" / "part.bin").write_bytes(b"part")
    (tmp / "secret").write_text("root:secret-hash\n")
    (models / "dir" / "link").symlink_to(tmp / "secret")
    run = Running(board, tmp, model_version=None, model_files=[str(models / "model.bin"), str(models / "dir")])
    run.wait(lambda s: s["state"] == "serving", "the daemon to serve", timeout=60)
    run.tmp, run.models = tmp, models
    yield run
    run.stop_and_check()


def raw(run: Running, payload: bytes, *, close_write: bool = True, timeout: float = 15) -> dict:
    """Send ``payload`` as is; the one reply line, parsed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(run.d.socket))
        try:
            s.sendall(payload)
            if close_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon stopped reading (request too long): its answer is still there
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


def check_refused(run: Running, reply: dict, words: str = "") -> None:
    assert reply["ok"] is False and "\n" not in reply["error"] and len(reply["error"]) < 1200, reply
    assert words in reply["error"], reply
    s = run.status()  # still answering, still serving, nothing changed
    assert s["state"] == "serving"


@pytest.fixture
def unchanged(daemon):
    """The board, the applied config and the model version are the same before and after the case."""
    before = (daemon.board.files(), daemon.status()["applied"], daemon.status()["model_version"])
    yield
    after = (daemon.board.files(), daemon.status()["applied"], daemon.status()["model_version"])
    assert after == before


GARBAGE = {
    "unknown-command": (b'{"command": "format-disk"}\n', "unknown command"),
    "not-json": (b"hello\n", "not a JSON object"),
    "json-array": (b'["status"]\n', "JSON object"),
    "command-number": (b'{"command": 7}\n', "command"),
    "empty-line": (b"\n", "empty request"),
    "oversized": (b'{"command": "status", "x": "' + b"a" * 70_000 + b'"}\n', "longer than"),
    "deep-nesting": (b'{"command": "status", "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}\n", "JSON object"),
    "invalid-utf8": (b'{"command": "\xff\xfe"}\n', "not a JSON object"),
    "nul-bytes": (b'{"command": "status\x00"}\n', "not a JSON object"),
    "nul-escaped": (b'{"command": "status\\u0000"}\n', "unknown command"),
    "long-command": (b'{"command": "' + b"x" * 60_000 + b'"}\n', "unknown command"),
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_garbage_requests_are_one_line(daemon, unchanged, case):
    payload, words = GARBAGE[case]
    check_refused(daemon, raw(daemon, payload), words)


def model_updated(**fields) -> bytes:
    return (json.dumps({"command": "model-updated", **fields}) + "\n").encode()


def test_model_files_outside_the_config_are_refused(daemon, unchanged):
    for f in ["/etc/shadow", str(daemon.tmp / "secret"), "relative/model.bin",
              str(daemon.models / "dir" / ".." / ".." / "secret"), str(daemon.models / "other.bin"),
              str(daemon.models / "dir" / "link")]:
        reply = raw(daemon, model_updated(model_files=[f]))
        check_refused(daemon, reply, "model_files")
    assert "secret" not in json.dumps(daemon.status())


@pytest.mark.parametrize("fields, words", [
    ({"model_files": "/etc/shadow"}, "model_files"), ({"model_files": [1, 2]}, "model_files"),
    ({"model_files": []}, "model_files"), ({"model_files": ["/x"] * 5000}, "model_files"),
    ({"model_version": "v" * 10_000}, "model_version"), ({"model_version": "v1\nv2"}, "model_version"),
    ({"model_version": 3}, "model_version"), ({"model_version": ""}, "model_version"),
    ({"force": "yes"}, "force"), ({"force": [True]}, "force"),
])
def test_malformed_model_updated_fields(daemon, unchanged, fields, words):
    check_refused(daemon, raw(daemon, model_updated(**fields)), words)


def test_a_configured_model_file_may_be_named(daemon):
    reply = raw(daemon, model_updated(model_files=[str(daemon.models / "model.bin")]))
    assert reply["ok"] is True
    reply = raw(daemon, model_updated(model_files=[str(daemon.models / "dir" / "part.bin")]))
    assert reply["ok"] is True
    daemon.wait(lambda s: s["jobs"]["queued"] == 0 and s["state"] == "serving", "the checks to finish")


def test_a_request_without_newline_then_eof_is_answered(daemon, unchanged):
    assert raw(daemon, b'{"command": "status"}')["ok"] is True


def threads_of(run: Running) -> int:
    for line in Path(f"/proc/{run.d.proc.pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def test_slow_clients_are_cut_off_at_the_request_deadline(daemon, unchanged):
    """Clients sending one byte every second: each gets an error by the deadline (a deadline for the
    whole request), the handler threads stay bounded, and status is answered meanwhile."""
    n = 40
    replies: list[dict | None] = [None] * n

    def slow(i: int) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(REQUEST_DEADLINE_S + 10)
            s.connect(str(daemon.d.socket))
            t0 = time.monotonic()
            try:
                for b in b'{"command": "status"}\n':
                    s.sendall(bytes([b]))
                    time.sleep(1.0)
                    if time.monotonic() - t0 > REQUEST_DEADLINE_S + 5:
                        break
            except OSError:
                pass
            buf = b""
            try:
                while not buf.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
            except OSError:
                pass
            replies[i] = json.loads(buf) if buf else {"ok": False, "error": "closed"}

    base = threads_of(daemon)
    workers = [threading.Thread(target=slow, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    time.sleep(1.5)
    assert threads_of(daemon) <= base + MAX_CLIENTS + 2
    assert daemon.status()["state"] == "serving"  # answered while the slow ones hold their handlers
    for w in workers:
        w.join(REQUEST_DEADLINE_S + 15)
    assert time.monotonic() - t0 < REQUEST_DEADLINE_S + 12
    assert all(r is not None and r["ok"] is False for r in replies)
    assert any("within" in r["error"] for r in replies) and any("busy" in r["error"] for r in replies)


def test_a_flood_of_idle_connections(daemon, unchanged):
    socks = []
    base = threads_of(daemon)
    try:
        for _ in range(150):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            try:
                s.connect(str(daemon.d.socket))
            except BlockingIOError:  # the backlog is full for a moment: an attacker just goes on
                s.close()
                continue
            socks.append(s)
        time.sleep(0.5)
        assert threads_of(daemon) <= base + MAX_CLIENTS + 2
        t0 = time.monotonic()
        assert daemon.status()["state"] == "serving"  # a client that retries on "busy" gets through
        assert time.monotonic() - t0 < REQUEST_DEADLINE_S + 5
    finally:
        for s in socks:
            s.close()
