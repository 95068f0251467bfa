"""Shared pieces of the fault-injection suite: fake boards, the CLI in-process and as a subprocess, and the
checks every case makes (the board's clock files back to their originals, the exit code, one line).

Every clock file of a fake tree is compared to a snapshot taken before the case (``cur_freq`` files are
left out: the kernel moves them with the limits, nobody writes them). The CLI runs in-process where no
real signal from outside is needed (``cli_inproc``; a fault hook of the kernel double makes the writing
process signal itself at an exact write) and as a subprocess otherwise (``cli_proc``/``spawn``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import fake_jetson as fj
from tests.conftest import ROOT

# agx-orin-jp5: gpu 2 writes, emc 2 writes, cpu 3 clusters x 2 = 10 writes, each file changed
APPLY = {"gpu_mhz": 624.75, "emc_mhz": 665.6, "cpu_mhz": 1036.8}
APPLY_WRITES = 10
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}
MESSAGE_SIGNAL = {"SIGINT": "polythrottle: interrupted (settings restored)",
                  "SIGTERM": "polythrottle: terminated (settings restored)"}


def sets(config: dict) -> list[str]:
    return [a for k, v in config.items() for a in ("--set", f"{k}={v}")]


def clock_files(snap: dict[str, str]) -> dict[str, str]:
    """Every file of the tree but the ones the kernel owns (current clocks follow the limits)."""
    return {p: v.strip() for p, v in snap.items() if not p.endswith("cur_freq")}


@dataclass
class Board:
    root: Path
    state: Path
    board: fj.FakeBoard
    original: dict[str, str]

    def files(self) -> dict[str, str]:
        return clock_files(fj.snapshot(self.root))

    def changed(self) -> dict[str, tuple[str, str]]:
        now = self.files()
        return {p: (self.original.get(p, ""), v) for p, v in now.items() if self.original.get(p) != v}

    def saved_originals(self) -> list[Path]:
        return sorted(self.state.glob("*.json")) if self.state.exists() else []

    def assert_restored(self) -> None:
        """Every clock file as before, and no saved originals left behind (nothing left to restore)."""
        assert self.changed() == {}
        assert self.saved_originals() == []

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, POLYTHROTTLE_ROOT=str(self.root), POLYTHROTTLE_STATE_DIR=str(self.state),
                   PYTHONUNBUFFERED="1")
        env.pop("POLYTHROTTLE_SOCKET", None)
        env.update(extra)
        return env


def make_board(tmp_path: Path, key: str = "agx-orin-jp5") -> Board:
    root = tmp_path / "root"
    b = fj.build(root, key)
    fj.set_rules(root)
    return Board(root, tmp_path / "state", b, clock_files(fj.snapshot(root)))


@pytest.fixture
def board(tmp_path: Path) -> Board:
    return make_board(tmp_path)


def messages(err: str) -> list[str]:
    """The lines a command says on stderr as ``polythrottle: ...`` (the live view of a tune also writes its
    progress there; that is not a message). Fails on a traceback."""
    assert "Traceback" not in err, err
    return [ln for ln in err.strip().splitlines() if ln.startswith("polythrottle:")]


def one_line(err: str) -> str:
    """The single line a refused command prints; fails if there is a traceback or more than one message."""
    lines = messages(err)
    assert len(lines) == 1, err
    return lines[0]


def message_length(line: str, tmp: Path) -> int:
    """``len(line)`` with the test's temporary directory ``tmp`` counted as one character, also where a file name
    spells it (the saved originals of a board under it: ``jetson_tmp_..._root.json``). A bound on a message's
    length is on what the command says, not on how deep pytest made the directory (pytest-xdist adds a level)."""
    spelled = re.sub(r"[^A-Za-z0-9._-]+", "_", str(tmp)).strip("._")
    return len(line.replace(str(tmp), "T").replace(spelled, "T"))


def last_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


@pytest.fixture
def cli_inproc(monkeypatch, capsys, tmp_path):
    """``run(board, *args) -> (exit code, stdout, stderr)``: the CLI in this process, kernel double installed.

    Signal handlers are checked to be put back as they were (the CLI is also a library entry point)."""
    from polythrottle.cli import main

    fj.install(monkeypatch.setattr)  # undone after the test
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))

    def run(b: Board | None, *args: str) -> tuple[int, str, str]:
        if b is not None:
            monkeypatch.setenv("POLYTHROTTLE_ROOT", str(b.root))
            monkeypatch.setenv("POLYTHROTTLE_STATE_DIR", str(b.state))
        else:  # never the user's own state directory or board
            monkeypatch.setenv("POLYTHROTTLE_ROOT", str(tmp_path / "no-board"))
            monkeypatch.setenv("POLYTHROTTLE_STATE_DIR", str(tmp_path / "state"))
        capsys.readouterr()
        try:
            rc = main(list(args))
        except SystemExit as e:  # argparse refusals
            rc = int(e.code or 0)
        out, err = capsys.readouterr()
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
        return rc, out, err

    yield run
    signal.signal(signal.SIGINT, before[0])
    signal.signal(signal.SIGTERM, before[1])


def cli_proc(b: Board, *args: str, timeout: float = 60, env: dict[str, str] | None = None,
             module: str = "tests.fake_jetson") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env or b.env(), timeout=timeout)


def spawn(b: Board, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.fake_jetson", *args], cwd=ROOT, env=env or b.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_blocked(b: Board, at: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until the writer of ``proc`` is held by a ``block`` hook at write ``at``."""
    deadline = time.monotonic() + timeout
    while at not in fj.blocked(b.root):
        if proc.poll() is not None:
            _out, err = proc.communicate()
            raise AssertionError(f"exited {proc.returncode} before write {at}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no write {at} within {timeout} s")
        time.sleep(0.01)


def wait_measuring(b: Board, at: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until ``proc`` is held in its ``at``-th measurement (a ``{"measure": at, "do": "block"}`` hook)."""
    deadline = time.monotonic() + timeout
    while at not in fj.measures_blocked(b.root):
        if proc.poll() is not None:
            _out, err = proc.communicate()
            raise AssertionError(f"exited {proc.returncode} before measurement {at}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no measurement {at} within {timeout} s")
        time.sleep(0.01)


def finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err
