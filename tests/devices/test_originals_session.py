"""The originals session every control shares, on an in-memory board: originals saved before the first
write, rollback on any exception, restore, keep and hand-back, a crashed run's leftovers, a busy board."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest

from polythrottle import interrupts
from polythrottle.devices.originals import OriginalsStore, SavedStateError, process_start
from polythrottle.devices.originals_session import OriginalsSession, PutBack
from polythrottle.errors import DeviceBusyError, DeviceError

ORIGINAL = {"a": "1", "b": "2"}


class Board:
    """Settings in a dict; ``refuse`` names settings whose writes fail (a kernel refusing them)."""

    def __init__(self, store: OriginalsStore) -> None:
        self.values = dict(ORIGINAL)
        self.refuse: set[str] = set()
        self.session = OriginalsSession(store, "board", self, device_arg="board", meta={"profile": "test"})

    def set(self, key: str, value: str) -> None:
        if key in self.refuse:
            raise DeviceError(f"cannot write {key}")
        self.values[key] = value

    def apply(self, settings: Mapping[str, str]) -> int:
        before = {k: self.values[k] for k in settings}
        steps = [lambda k=k, v=v: self.set(k, v) for k, v in settings.items()]
        with self.session.claimed():
            return self.session.write(before, steps, lambda done: list(self.put_back(self.changed(before)).failed))

    def changed(self, before: Mapping[str, str]) -> dict[str, str]:
        """What differs from ``before`` now (a rollback writes only that, as the kernel's files say)."""
        return {k: v for k, v in before.items() if self.values[k] != v}

    # --- what the session needs ---
    def restore(self) -> None:
        self.session.restore()

    def checked_originals(self, saved: Mapping[str, Any]) -> dict[str, Any]:
        for k, v in saved.items():
            if k not in ORIGINAL or not str(v).isdigit():
                raise SavedStateError(f"saved originals: entry {k!r} is not a setting of the board")
        return dict(saved)

    def put_back(self, values: Mapping[str, Any]) -> PutBack:
        out = PutBack()
        for k, v in values.items():
            try:
                self.set(k, str(v))
                out.restored.append(k)
            except DeviceError:
                out.failed[k] = "refused"
        return out


@pytest.fixture
def store(tmp_path) -> OriginalsStore:
    interrupts.reset()
    return OriginalsStore(tmp_path / "state")


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_originals_are_saved_before_the_first_write_and_restored(store):
    board = Board(store)
    seen = []
    board.set = lambda k, v, set=board.set: (seen.append(dict(store.originals("board"))), set(k, v))[1]
    assert board.apply({"a": "10", "b": "20"}) == 2
    assert seen[0] == ORIGINAL  # saved whole before the first write
    assert board.values == {"a": "10", "b": "20"} and board.session.holds_changes
    assert store.load("board").meta["profile"] == "test" and store.load("board").meta["kept"] is False
    board.apply({"a": "11"})
    assert store.originals("board") == ORIGINAL  # the first value seen stays the original
    board.restore()
    assert board.values == ORIGINAL and store.originals("board") == {} and not board.session.holds_changes


def test_an_interrupted_write_is_rolled_back_and_forgotten(store):
    board = Board(store)

    def interrupt(k, v):
        raise KeyboardInterrupt

    board.set = lambda k, v, set=board.set: interrupt(k, v) if k == "b" else set(k, v)
    with pytest.raises(KeyboardInterrupt):
        board.apply({"a": "10", "b": "20"})
    assert board.values == ORIGINAL and store.originals("board") == {} and not board.session.holds_changes


def test_a_refused_write_says_what_was_rolled_back_or_not(store):
    board = Board(store)
    board.refuse = {"b"}
    with pytest.raises(DeviceError, match="rolled back the 1 value"):
        board.apply({"a": "10", "b": "20"})
    assert board.values == ORIGINAL and store.originals("board") == {}
    board.refuse = set()
    write = board.set

    def lock_up(k: str, v: str) -> None:  # b is refused, and from then on a too (the rollback's write)
        if k == "b":
            board.refuse = {"a", "b"}
        write(k, v)

    board.set = lock_up
    with pytest.raises(DeviceError, match="ROLLBACK FAILED for a"):
        board.apply({"a": "10", "b": "20"})
    assert board.values["a"] == "10" and store.originals("board") == {"a": "1"}  # not put back: stays saved


def test_kept_settings_survive_a_later_session_and_restore_saved_puts_them_back(store):
    first = Board(store)
    first.session.keep()
    first.apply({"a": "10"})
    assert store.load("board").meta["kept"] is True and not first.session.holds_changes
    first.restore()
    assert first.values["a"] == "10"  # kept: close does not restore it

    later = Board(store)  # e.g. a tune on a board where `apply` kept settings
    later.values = first.values
    later.apply({"a": "30", "b": "40"})
    later.restore()
    assert later.values == {"a": "10", "b": "2"}  # back to the kept state, not to the originals
    assert store.load("board").meta["kept"] is True and store.originals("board") == {"a": "1"}  # handed back
    assert later.session.restore_saved() == ["a"] and later.values == ORIGINAL


def test_a_crashed_runs_leftovers_are_restored_before_the_first_write(store, capsys):
    store.record("board", {"a": "1"}, meta={"pid": dead_pid()})
    board = Board(store)
    board.values["a"] = "99"  # what the crashed run left
    board.apply({"b": "20"})
    assert "did not finish" in capsys.readouterr().err
    assert board.values == {"a": "1", "b": "20"} and store.originals("board") == {"b": "2"}


def test_a_live_owner_makes_the_board_busy(store):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        store.record("board", {"a": "1"}, meta={"pid": owner.pid, "started": process_start(owner.pid)})
        board = Board(store)
        with pytest.raises(DeviceBusyError, match=f"pid {owner.pid}"):
            board.apply({"b": "20"})
        with pytest.raises(DeviceBusyError):
            board.session.restore_saved()
        assert board.values == ORIGINAL
    finally:
        owner.kill()
        owner.wait()


def test_a_tampered_entry_is_refused_whole(store):
    store.record("board", {"a": "5", "/etc/shadow": "x"}, meta={"pid": dead_pid()})
    board = Board(store)
    with pytest.raises(SavedStateError):
        board.session.restore_saved()
    assert board.values == ORIGINAL and store.originals("board") == {"a": "5", "/etc/shadow": "x"}


def test_a_restore_that_fails_says_so_and_keeps_the_originals(store):
    board = Board(store)
    board.apply({"a": "10", "b": "20"})
    board.refuse = {"a"}
    with pytest.raises(DeviceError, match="could not restore a .refused.*polythrottle restore --device board"):
        board.restore()
    assert board.values == {"a": "10", "b": "2"} and store.originals("board") == {"a": "1"}
    board.refuse = set()
    board.restore()  # still tracked: a later restore completes it
    assert board.values == ORIGINAL and store.originals("board") == {}


def test_a_signal_while_a_crashed_runs_leftovers_are_restored_waits_for_the_restore(store, capsys):
    """A restore defers signals, the one the next start makes of a crashed run's leftovers too: SIGINT
    arriving after the first leftover is back still lets the others come back before it is handled."""
    import os
    import signal

    store.record("board", {"a": "1", "b": "2"}, meta={"pid": dead_pid()})
    board = Board(store)
    board.values = {"a": "99", "b": "98"}  # what the crashed run left
    write = board.set

    def signalled(k: str, v: str) -> None:
        write(k, v)
        if k == "a" and v == "1":
            os.kill(os.getpid(), signal.SIGINT)

    board.set = signalled
    with interrupts.command_signals(), pytest.raises(KeyboardInterrupt):
        board.apply({"b": "20"})
    assert board.values == ORIGINAL and store.originals("board") == {}  # both back; the apply never started
