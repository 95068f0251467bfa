"""Run ``polythrottle daemon`` as a real subprocess: a systemd-style notify socket, config files, polling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from polythrottle.daemon.client import send_command

ROOT = Path(__file__).resolve().parents[2]


class NotifyListener:
    """An AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET; collects every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def seen(self, key: str, value: str | None = None) -> bool:
        return any(key in m and (value is None or m[key] == value) for m in self.messages)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def wait_for(pred: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> Any:
    """Poll ``pred`` until truthy; fail with ``what`` (and the daemon's log) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    rc = proc.poll() if proc is not None else None
    raise AssertionError(f"timed out waiting for {what} (daemon exit code {rc})\n{tail}")


class DaemonProcess:
    """One daemon subprocess. ``module``: ``polythrottle`` or ``tests.fake_jetson`` (with the kernel double)."""

    def __init__(self, config: Path, notify: NotifyListener, log: Path, *, module: str = "polythrottle",
                 env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log = log
        self.socket = Path(yaml.safe_load(config.read_text())["socket"])
        if not self.socket.is_absolute():
            self.socket = config.parent / self.socket
        full_env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), PYTHONUNBUFFERED="1", **(env or {}))
        full_env.pop("POLYTHROTTLE_SOCKET", None)
        self._log_file = log.open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", module, "daemon", "--config", str(config)],
                                     cwd=ROOT, env=full_env, stdout=self._log_file, stderr=subprocess.STDOUT)

    def request(self, command: str, **fields: Any) -> dict[str, Any]:
        return send_command(command, self.socket, timeout_s=10.0, **fields)

    def status(self) -> dict[str, Any]:
        return self.request("status")["status"]

    def try_status(self) -> dict[str, Any] | None:
        try:
            return self.status()
        except Exception:  # noqa: BLE001 - not answering yet, for any reason
            return None

    def wait(self, pred: Callable[[dict[str, Any]], Any], timeout: float, what: str) -> dict[str, Any]:
        def check() -> Any:
            s = self.try_status()
            return s if s is not None and pred(s) else None

        return wait_for(check, timeout, what, self.proc, self.log)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log_file.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log_file.close()


def write_config(path: Path, **fields: Any) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path
