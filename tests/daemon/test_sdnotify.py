"""systemd notifications over $NOTIFY_SOCKET and the watchdog interval."""

from __future__ import annotations

import os
import socket

from polythrottle.daemon.sdnotify import Notifier, watchdog_interval_s


def test_notifier_sends_datagrams_and_is_a_noop_without_socket(tmp_path, monkeypatch):
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        s.settimeout(2)
        n = Notifier(str(path))
        assert n.ready("up")
        msg = dict(line.split("=", 1) for line in s.recv(4096).decode().splitlines())
        assert msg["READY"] == "1" and msg["STATUS"] == "up" and msg["MAINPID"] == str(os.getpid())
        assert n.send(STATUS="two\nlines") and s.recv(4096) == b"STATUS=two lines"
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().enabled and not Notifier().watchdog()
    assert not Notifier(str(tmp_path / "gone.sock")).send(READY=1)  # a send error never raises


def test_abstract_notify_socket():
    name = f"polythrottle-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(2)
        assert Notifier("@" + name).watchdog()
        assert s.recv(100) == b"WATCHDOG=1"


def test_watchdog_interval(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_s() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval_s() is None

