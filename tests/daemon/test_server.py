"""The control socket's server: the protocol end to end, mode 0660, stale sockets, concurrent clients."""

from __future__ import annotations

import contextlib
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



def _other_group() -> int | None:
    """A group this process may give a file that is not its own (effective) group, else None."""
    import grp
    import os

    mine = os.getegid()
    if os.geteuid() == 0:
        return next((g.gr_gid for g in grp.getgrall() if g.gr_gid != mine), None)
    return next((g for g in os.getgroups() if g != mine), None)


def test_the_socket_never_appears_at_its_path_with_another_mode_or_group(tmp_path, monkeypatch):
    """Bound at its path, then chmod/chown: it listened there for a moment with the daemon's own group (and
    the umask set around the bind was process-wide: the metrics thread runs by then)."""
    import grp
    import os

    gid = _other_group()
    if gid is None:
        pytest.skip("no second group this user may give a file")
    path = tmp_path / "run" / "ctl.sock"
    seen: list[tuple[str, int, int]] = []  # (after which call, mode, gid) while the path exists

    def probe(name, real):
        def call(*args, **kwargs):
            out = real(*args, **kwargs)
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(path)
                seen.append((name, st.st_mode & 0o7777, st.st_gid))
            return out
        return call

    for name in ("chmod", "chown", "link", "rename", "replace"):
        monkeypatch.setattr(os, name, probe(name, getattr(os, name)))
    monkeypatch.setattr(socket.socket, "bind", probe("bind", socket.socket.bind))
    umasks: list[int] = []
    real_umask = os.umask

    def umask(mask: int) -> int:
        umasks.append(mask)
        return real_umask(mask)

    monkeypatch.setattr(os, "umask", umask)
    server = ControlServer(path, lambda req: {"ok": True}, group=grp.getgrgid(gid).gr_name)
    server.start()
    try:
        assert seen and all((mode, g) == (0o660, gid) for _, mode, g in seen), seen
        assert umasks == []
        assert send_command("status", path)["ok"]
        assert os.listdir(path.parent) == ["ctl.sock"]  # the private directory is gone
    finally:
        server.stop()


def test_a_socket_path_as_long_as_allowed_with_a_short_name(tmp_path):
    """Bound first in a directory next to it: a longer path than its own, bound by /proc/self/fd."""
    parent = tmp_path / ("d" * (107 - len(str(tmp_path)) - 3))
    path = parent / "c"
    assert len(str(path)) == 107
    server = ControlServer(path, lambda req: {"ok": True})
    server.start()
    try:
        assert (path.stat().st_mode & 0o777) == 0o660
        assert send_command("status", path)["ok"]
        assert [p.name for p in parent.iterdir()] == ["c"]
    finally:
        server.stop()


def test_a_socket_that_appears_after_the_stale_check_is_refused_not_replaced(tmp_path, monkeypatch):
    path = tmp_path / "ctl.sock"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    real = ControlServer._clear_stale

    def clear_then_another_daemon_binds(self):
        real(self)
        other.bind(str(path))
        other.listen()

    monkeypatch.setattr(ControlServer, "_clear_stale", clear_then_another_daemon_binds)
    try:
        with pytest.raises(BadInputError, match=r"cannot listen on .*ctl\.sock: Address already in use"):
            ControlServer(path, lambda req: {"ok": True}).start()
        assert [p.name for p in tmp_path.iterdir()] == ["ctl.sock"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path))  # the other one's, still there
    finally:
        other.close()


_KILLED_WHILE_BINDING = """
import os, signal, sys
from pathlib import Path
from polythrottle.daemon.server import ControlServer

os.link = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # killed after the bind, before the socket is linked
ControlServer(Path(sys.argv[1]), lambda req: {"ok": True}).start()
"""


def test_a_start_removes_the_bind_directories_a_killed_daemon_left_and_nothing_else(tmp_path):
    """A daemon SIGKILLed while binding left its private directory (`.xxxxxxxx/s`) next to the socket, and one
    more at every such start: the next start removes those (a dead pid's, this socket's, holding only its
    socket), never another's, a live one's, or anything through a link."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    run = tmp_path / "run"
    run.mkdir()
    path = run / "ctl.sock"
    for _ in range(3):  # each killed start leaves one; the next start (killed too) removes the one before
        r = subprocess.run([sys.executable, "-c", _KILLED_WHILE_BINDING, str(path)], cwd=ROOT, timeout=60)
        assert r.returncode == -9
        left = os.listdir(run)
        assert len(left) == 1 and left[0].startswith(".ctl.sock.") and os.listdir(run / left[0]) == ["s"], left

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=60)
    dead_pid = int(dead.stdout)
    kept = {
        f".ctl.sock.{os.getppid()}.live_one": "dir",         # a live process's (binding now)
        f".ctl.sock.{dead_pid}.with_more": "dir+file",       # holds something else
        f".ctl.sock.{dead_pid}.a_link": "link",              # a link to a directory holding a socket
        f".ctl.sock.2.{dead_pid}.other": "dir",              # socket ctl.sock.2's, not this one's
        f".other.sock.{dead_pid}.abcdef": "dir",             # another socket's
        f".ctl.sock.{dead_pid}.sfile": "dir+s-not-socket",   # its `s` is no socket
    }
    target = tmp_path / "elsewhere"
    target.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(target / "s"))
    for name, kind in kept.items():
        if kind == "link":
            (run / name).symlink_to(target)
            continue
        (run / name).mkdir(mode=0o700)
        if kind == "dir+file":
            (run / name / "notes").write_text("x")
        elif kind == "dir+s-not-socket":
            (run / name / "s").write_text("x")
    server = ControlServer(path, lambda req: {"ok": True})
    server.start()
    try:
        assert send_command("status", path)["ok"]
        assert sorted(os.listdir(run)) == sorted([*kept, "ctl.sock"])  # both leftovers gone, the rest untouched
        assert os.listdir(target) == ["s"] and (run / f".ctl.sock.{dead_pid}.with_more" / "notes").exists()
    finally:
        server.stop()


@pytest.mark.parametrize("pid_text", ["\u00b2", "\u0669" * 7, "99999999999999999999", "2147483648"])
def test_a_bind_directory_name_with_a_pid_no_process_can_have_is_left_alone(tmp_path, pid_text):
    """An entry beside the socket named like a bind directory whose pid part is no pid (a superscript or other
    non-ASCII digit, a number past pid_t) is someone else's: left alone, and the daemon starts (it raised
    ValueError / OverflowError, and any user who may write the socket's directory kept the daemon down)."""
    import os

    run = tmp_path / "run"
    run.mkdir()
    path = run / "ctl.sock"
    odd = run / f".ctl.sock.{pid_text}.abcdefgh"
    odd.mkdir(mode=0o700)
    server = ControlServer(path, lambda req: {"ok": True})
    server.start()
    try:
        assert send_command("status", path)["ok"]
        assert odd.is_dir() and sorted(os.listdir(run)) == sorted([odd.name, "ctl.sock"])
    finally:
        server.stop()


def test_a_socket_group_this_user_may_not_give_is_one_line_naming_it(tmp_path, monkeypatch):
    """socket_group naming a group the daemon's user is not in: chown says EPERM. It went out as a bare
    PermissionError naming the private bind path ('.../.ctl.sock.PID.x/s: permission denied', a file that is
    gone by then, read as a file given); it is the config's socket_group, named, exit 2, nothing left behind."""
    import errno
    import grp
    import os

    def chown(path, uid, gid):
        raise PermissionError(errno.EPERM, "Operation not permitted", os.fspath(path))

    monkeypatch.setattr("polythrottle.daemon.server.os.chown", chown)
    run = tmp_path / "run"
    run.mkdir()
    group = grp.getgrgid(os.getgid()).gr_name
    server = ControlServer(run / "ctl.sock", lambda req: {"ok": True}, group=group)
    with pytest.raises(BadInputError, match=rf"socket_group {group!r}: .*not permitted"):
        server.start()
    assert os.listdir(run) == []
