"""SIGINT and SIGTERM at every write of ``apply``, ``tune`` and ``restore``, one signal and two.

In-process cases: the kernel double's hook makes the writing process signal itself exactly before or
after the n-th write (``fj.set_rules(hooks=...)``), so the signal lands at a known step. Subprocess
cases: a write blocks (a slow kernel write) while the test sends real signals from outside.
Each case: every clock file back to its original, nothing left in the saved originals, the documented
exit code (130 SIGINT, 143 SIGTERM) and one line that says the settings were restored.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests import fake_jetson as fj
from tests.faults.conftest import (
    APPLY,
    APPLY_WRITES,
    EXIT_SIGNAL,
    MESSAGE_SIGNAL,
    finish,
    last_line,
    sets,
    spawn,
    wait_blocked,
)

TUNE = ["tune", "--device", "jetson", "--workload", "builtin:fake", "--slo-ms", "1000", "--knobs",
        "gpu_mhz,emc_mhz,cpu_mhz", "--budget", "3", "--optimizer", "random", "--seed", "0", "--json",
        "--no-history"]
TUNE_WRITES = 23  # baseline 5 + two candidates x 9 (see test_tune_scenario_is_as_assumed)
TUNE_RESTORE_WRITES = 10
SIGNALS = ["SIGINT", "SIGTERM"]


def hook(at: int, do: str, when: str = "before") -> dict:
    return {"at": at, "when": when, "do": do}


def check_interrupted(board, rc: int, err: str, sig: str) -> None:
    assert rc == EXIT_SIGNAL[sig], err
    assert last_line(err) == MESSAGE_SIGNAL[sig]
    board.assert_restored()


# ----- apply ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("at", range(APPLY_WRITES))
def test_apply_one_signal_at_every_write(board, cli_inproc, at, when, sig):
    fj.set_rules(board.root, hooks=[hook(at, sig, when)])
    rc, out, err = cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY))
    check_interrupted(board, rc, err, sig)
    assert "applied" not in out


@pytest.mark.parametrize("at", range(APPLY_WRITES))
def test_apply_second_signal_during_the_rollback(board, cli_inproc, at):
    first, second = ("SIGINT", "SIGTERM") if at % 2 else ("SIGTERM", "SIGINT")
    fj.set_rules(board.root, hooks=[hook(at, first, "after"), hook(at + 1, second, "before"),
                                    hook(at + 2, second, "after")])
    rc, _, err = cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY))
    assert fj.writes_attempted(board.root) > at + 1  # the rollback ran past the second signal
    check_interrupted(board, rc, err, first)


def test_apply_without_signal_is_kept_and_the_suite_counts_right(board, cli_inproc):
    rc, _, err = cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY))
    assert rc == 0, err
    assert fj.writes_attempted(board.root) == APPLY_WRITES
    assert len(board.changed()) == APPLY_WRITES and board.saved_originals()
    rc, _, err = cli_inproc(board, "restore", "--device", "jetson")
    assert rc == 0, err
    board.assert_restored()


# ----- restore ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("at", range(APPLY_WRITES))
def test_restore_one_signal_at_every_write(board, cli_inproc, at, sig):
    assert cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY))[0] == 0
    fj.set_rules(board.root, hooks=[hook(at, sig, "before" if at % 2 else "after")])
    rc, _, err = cli_inproc(board, "restore", "--device", "jetson")
    assert fj.writes_attempted(board.root) == APPLY_WRITES  # the restore was not cut short
    check_interrupted(board, rc, err, sig)


@pytest.mark.parametrize("at", range(APPLY_WRITES - 1))
def test_restore_two_signals_cannot_cut_it_short(board, cli_inproc, at):
    assert cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY))[0] == 0
    fj.set_rules(board.root, hooks=[hook(at, "SIGTERM"), hook(at + 1, "SIGINT", "after")])
    rc, _, err = cli_inproc(board, "restore", "--device", "jetson")
    assert fj.writes_attempted(board.root) == APPLY_WRITES
    check_interrupted(board, rc, err, "SIGTERM")


# ----- tune (measures through the device; restores on exit) -----------------------------------------------
def test_tune_scenario_is_as_assumed(board, cli_inproc):
    rc, out, err = cli_inproc(board, *TUNE)
    assert rc == 0, err
    assert fj.writes_attempted(board.root) == TUNE_WRITES + TUNE_RESTORE_WRITES
    assert json.loads(out)["measurements"] == 3
    board.assert_restored()


@pytest.mark.parametrize("at", range(TUNE_WRITES + TUNE_RESTORE_WRITES))
def test_tune_one_signal_at_every_write(board, cli_inproc, at):
    sig = SIGNALS[at % 2]
    fj.set_rules(board.root, hooks=[hook(at, sig, "after" if at % 3 else "before")])
    rc, _, err = cli_inproc(board, *TUNE)
    check_interrupted(board, rc, err, sig)


@pytest.mark.parametrize("at", [0, 4, 5, 9, 13, 18, 22, 23, 27, 31])
def test_tune_second_signal_while_restoring(board, cli_inproc, at):
    fj.set_rules(board.root, hooks=[hook(at, "SIGINT", "after"), hook(at + 1, "SIGINT"),
                                    hook(at + 3, "SIGTERM", "after")])
    rc, _, err = cli_inproc(board, *TUNE)
    check_interrupted(board, rc, err, "SIGINT")


# ----- real signals from outside while a write is slow (subprocesses) ---------------------------------
@pytest.mark.parametrize("sig", SIGNALS)
def test_apply_slow_write_then_signal(board, sig):
    fj.set_rules(board.root, hooks=[hook(6, "block")])
    p = spawn(board, "apply", "--device", "jetson", *sets(APPLY))
    wait_blocked(board, 6, p)
    p.send_signal(getattr(signal, sig))
    rc, _, err = finish(p)  # the blocked write is interrupted; nothing to release
    check_interrupted(board, rc, err, sig)


@pytest.mark.parametrize("sig", SIGNALS)
def test_apply_signal_then_second_signal_during_a_slow_rollback(board, sig):
    fj.set_rules(board.root, hooks=[hook(4, "block"), hook(6, "block")])
    p = spawn(board, "apply", "--device", "jetson", *sets(APPLY))
    wait_blocked(board, 4, p)
    p.send_signal(getattr(signal, sig))
    wait_blocked(board, 6, p)  # write 5 is the first rollback write, 6 the second
    for s in (signal.SIGINT, signal.SIGTERM):
        p.send_signal(s)
    fj.release(board.root, 6)
    rc, _, err = finish(p)
    check_interrupted(board, rc, err, sig)


@pytest.mark.parametrize("sig", SIGNALS)
def test_restore_slow_write_two_signals(board, cli_inproc, sig):
    assert cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY))[0] == 0
    fj.set_rules(board.root, hooks=[hook(3, "block")])
    p = spawn(board, "restore", "--device", "jetson")
    wait_blocked(board, 3, p)
    p.send_signal(getattr(signal, sig))
    time.sleep(0.2)  # two signals pending at once are handled in signal-number order, not arrival order
    p.send_signal(signal.SIGINT)
    fj.release(board.root, 3)
    rc, _, err = finish(p)
    assert fj.writes_attempted(board.root) == APPLY_WRITES
    check_interrupted(board, rc, err, sig)


@pytest.mark.parametrize("at, sig", [(7, "SIGTERM"), (16, "SIGINT")])
def test_tune_slow_write_then_two_signals(board, at, sig):
    fj.set_rules(board.root, hooks=[hook(at, "block"), hook(at + 3, "block")])
    p = spawn(board, *TUNE)
    wait_blocked(board, at, p)
    p.send_signal(getattr(signal, sig))
    wait_blocked(board, at + 3, p)  # now restoring
    p.send_signal(signal.SIGTERM)
    p.send_signal(signal.SIGINT)
    fj.release(board.root, at + 3)
    rc, out, err = finish(p)
    assert out == ""
    check_interrupted(board, rc, err, sig)


def test_tune_slow_final_restore_two_signals(board):
    """The tune is done and restoring when both signals come: the restore completes, the exit says so."""
    fj.set_rules(board.root, hooks=[hook(TUNE_WRITES + 2, "block")])
    p = spawn(board, *TUNE)
    wait_blocked(board, TUNE_WRITES + 2, p)
    p.send_signal(signal.SIGINT)
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    fj.release(board.root, TUNE_WRITES + 2)
    rc, _, err = finish(p)
    assert fj.writes_attempted(board.root) == TUNE_WRITES + TUNE_RESTORE_WRITES
    check_interrupted(board, rc, err, "SIGINT")


def test_ctrl_c_while_the_cli_starts_is_one_line_not_a_traceback(monkeypatch, capsys):
    """SIGINT before the command's handlers are in place (importing the subcommands takes a moment): nothing
    was changed yet; exit 130 with one line."""
    import polythrottle.cli as cli

    def slow_imports():
        raise KeyboardInterrupt

    monkeypatch.setattr("polythrottle.cli.app.build_parser", slow_imports)
    with pytest.raises(SystemExit) as e:
        cli.run()
    assert e.value.code == 130
    assert capsys.readouterr().err == "polythrottle: interrupted\n"
