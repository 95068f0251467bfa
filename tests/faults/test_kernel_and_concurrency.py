"""The kernel refusing a write midway (EINVAL/EIO at the n-th write, also during the rollback and the
restore), and two processes changing the same board at once.

Documented outcomes: a refused apply exits 1 with one line (what the kernel refused, that it was rolled
back) and the board as before; a rollback or restore that cannot complete says so (exit 1) and keeps
the originals saved, and ``polythrottle restore`` completes it later; a second process never
interleaves its writes with a first one's: it waits for the first's apply, or is refused (exit 1,
"another polythrottle process") while a tune or the daemon holds the board.
"""

from __future__ import annotations

import json
import signal

import pytest

from tests import fake_jetson as fj
from tests.faults.conftest import (
    APPLY,
    APPLY_WRITES,
    cli_proc,
    finish,
    one_line,
    sets,
    spawn,
    wait_blocked,
    wait_measuring,
)
from tests.faults.test_signals import TUNE, TUNE_RESTORE_WRITES, TUNE_WRITES, hook

APPLY2 = {"gpu_mhz": 1300.5, "emc_mhz": 204, "cpu_mhz": 729.6}


def expected_files(board, config: dict) -> dict[str, str]:
    b = board.board
    out = {f"{b.gpu_dir}/min_freq": str(round(config["gpu_mhz"] * 1e6)),
           f"{b.gpu_dir}/max_freq": str(round(config["gpu_mhz"] * 1e6)),
           b.emc_files["rate"]: str(round(config["emc_mhz"] * 1e6)), b.emc_files["lock"]: "1"}
    for pd in b.online_policies:
        out[f"{pd}/scaling_min_freq"] = out[f"{pd}/scaling_max_freq"] = str(round(config["cpu_mhz"] * 1e3))
    return out


def assert_applied(board, config: dict) -> None:
    now = board.files()
    for p, v in expected_files(board, config).items():
        assert now[p] == v, p


# ----- kernel refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize("errno_name", ["EINVAL", "EIO"])
@pytest.mark.parametrize("at", range(APPLY_WRITES))
def test_apply_refused_at_every_write_rolls_back(board, cli_inproc, at, errno_name):
    fj.set_rules(board.root, hooks=[hook(at, errno_name)])
    rc, out, err = cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY))
    line = one_line(err)
    assert rc == 1 and out == ""
    assert ("refused" in line) if errno_name == "EINVAL" else ("Input/output error" in line)
    assert ("rolled back" in line) == (at > 0)
    board.assert_restored()


@pytest.mark.parametrize("at", [1, 4, 9])
def test_a_write_refused_once_during_the_rollback_is_retried(board, cli_inproc, at):
    fj.set_rules(board.root, hooks=[hook(at, "EINVAL"), hook(at + 1, "EIO")])
    rc, _, err = cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY))
    assert rc == 1 and "rolled back" in one_line(err)
    board.assert_restored()


@pytest.mark.parametrize("at", [1, 4, 9])
def test_rollback_refused_for_good_says_so_and_restore_completes_later(board, cli_inproc, at):
    fj.set_rules(board.root, hooks=[hook(at, "EINVAL")] + [hook(i, "EIO") for i in range(at + 1, at + 200)])
    rc, _, err = cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY))
    line = one_line(err)
    assert rc == 1 and "could not restore" in line.lower() and "polythrottle restore" in line
    assert board.changed() and board.saved_originals()  # the truth: something is still changed, and saved
    fj.set_rules(board.root)
    rc, out, err = cli_inproc(board, "restore", "--device", "jetson")
    assert rc == 0, err
    board.assert_restored()


@pytest.mark.parametrize("at", [0, 3, 5, 8, 12, 14, 20, 22])
def test_tune_refused_midway_restores(board, cli_inproc, at):
    fj.set_rules(board.root, hooks=[hook(at, "EINVAL")])
    rc, out, err = cli_inproc(board, *TUNE)
    assert rc == 1 and "refused" in one_line(err) and out == ""
    board.assert_restored()


@pytest.mark.parametrize("at", range(TUNE_WRITES, TUNE_WRITES + TUNE_RESTORE_WRITES, 3))
def test_tune_final_restore_refused_keeps_originals_for_restore(board, cli_inproc, at):
    fj.set_rules(board.root, hooks=[hook(at, "EIO")])
    rc, out, err = cli_inproc(board, *TUNE)
    line = one_line(err)
    assert rc == 1 and "could not restore" in line and "polythrottle restore" in line
    assert board.saved_originals()
    fj.set_rules(board.root)
    rc, _, err = cli_inproc(board, "restore", "--device", "jetson")
    assert rc == 0, err
    board.assert_restored()


@pytest.mark.parametrize("command, at", [("apply", 4), ("tune", 12), ("tune", 20)])
def test_a_refusal_whose_restore_fails_too_names_both(board, cli_inproc, command, at):
    """A write refused (EINVAL) and every write after it failing (EIO): the one line says why the command
    stopped (the kernel refused it) and that the restore failed (was only "could not restore ...": the
    cause was lost); exit 1, the originals stay saved and ``restore`` completes it later."""
    fj.set_rules(board.root, hooks=[hook(at, "EINVAL")] + [hook(i, "EIO") for i in range(at + 1, at + 200)])
    args = ["apply", "--device", "jetson", *sets(APPLY)] if command == "apply" else TUNE
    rc, _, err = cli_inproc(board, *args)
    line = one_line(err)
    assert rc == 1, err
    assert "the kernel refused" in line and "could not restore" in line and "polythrottle restore" in line, line
    assert board.changed() and board.saved_originals()
    fj.set_rules(board.root)
    rc, _, err = cli_inproc(board, "restore", "--device", "jetson")
    assert rc == 0, err
    board.assert_restored()


@pytest.mark.parametrize("at", [0, 5, 9])
def test_restore_refused_midway_keeps_the_rest_saved(board, cli_inproc, at):
    assert cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY))[0] == 0
    fj.set_rules(board.root, hooks=[hook(at, "EIO")])
    rc, _, err = cli_inproc(board, "restore", "--device", "jetson")
    assert rc == 1 and "could not restore" in one_line(err)
    assert len(board.changed()) == 1 and board.saved_originals()
    fj.set_rules(board.root)
    rc, _, err = cli_inproc(board, "restore", "--device", "jetson")
    assert rc == 0, err
    board.assert_restored()


def test_unwritable_state_dir_refused_before_any_write(board, cli_inproc, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, _, err = cli_inproc(board, "apply", "--device", "jetson", "--state-dir", str(blocker / "sub"),
                            *sets(APPLY))
    assert rc == 1 and "state directory" in one_line(err)
    assert fj.writes_attempted(board.root) == 0
    board.assert_restored()


# ----- two processes ----------------------------------------------------------------------------------
def test_two_applies_at_once_are_serialised(board):
    fj.set_rules(board.root, hooks=[hook(2, "block")])
    a = spawn(board, "apply", "--device", "jetson", *sets(APPLY))
    wait_blocked(board, 2, a)
    b = spawn(board, "apply", "--device", "jetson", *sets(APPLY2))  # waits for a's lock
    fj.release(board.root, 2)
    ra, rb = finish(a), finish(b)
    assert ra[0] == 0 and rb[0] == 0, (ra, rb)
    assert_applied(board, APPLY2)  # the second one's, whole; never a mix
    r = cli_proc(board, "restore", "--device", "jetson")
    assert r.returncode == 0, r.stderr
    board.assert_restored()  # the true originals, not the first apply's values


@pytest.mark.parametrize("second", [["apply", "--device", "jetson", *sets(APPLY2)], ["restore", "--device", "jetson"],
                                    TUNE])
def test_a_second_writer_is_refused_while_a_tune_holds_the_board(board, second):
    fj.set_rules(board.root, hooks=[{"measure": 1, "do": "block"}])
    tune = spawn(board, *TUNE)
    wait_measuring(board, 1, tune)  # the tune holds the board (a candidate applied), outside any write
    written = fj.writes_attempted(board.root)
    r = cli_proc(board, *second)
    line = one_line(r.stderr)
    assert r.returncode == 1 and "another polythrottle process (pid" in line, r.stderr
    assert fj.writes_attempted(board.root) == written  # the refused one wrote nothing
    fj.release_measure(board.root, 1)
    rc, out, err = finish(tune)
    assert rc == 0, err
    board.assert_restored()


def test_a_tune_after_a_kept_apply_puts_back_the_applied_config(board, cli_inproc):
    assert cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY2))[0] == 0
    rc, _, err = cli_inproc(board, *TUNE)
    assert rc == 0, err
    assert_applied(board, APPLY2)
    assert cli_inproc(board, "restore", "--device", "jetson")[0] == 0
    board.assert_restored()


def test_an_apply_killed_midway_is_restored_by_the_next_one(board):
    fj.set_rules(board.root, hooks=[hook(4, "block")])
    a = spawn(board, "apply", "--device", "jetson", *sets(APPLY))
    wait_blocked(board, 4, a)
    a.send_signal(signal.SIGKILL)  # no handler, no finally: a crash with 4 files written
    finish(a)
    assert board.changed()
    r = cli_proc(board, "apply", "--device", "jetson", *sets(APPLY2))
    assert r.returncode == 0, r.stderr
    assert "left by a run that did not finish" in r.stderr
    assert_applied(board, APPLY2)
    r = cli_proc(board, "restore", "--device", "jetson")
    assert r.returncode == 0, r.stderr
    board.assert_restored()


def test_a_tune_killed_after_a_kept_apply_leaves_the_kept_config_at_the_next_start(board, cli_inproc):
    assert cli_inproc(board, "apply", "--device", "jetson", *sets(APPLY2))[0] == 0  # the user's kept config A
    fj.set_rules(board.root, hooks=[{"measure": 1, "do": "block"}])
    tune = spawn(board, *TUNE)
    wait_measuring(board, 1, tune)  # the tune holds the board at a candidate B
    tune.send_signal(signal.SIGKILL)  # no handler, no finally
    finish(tune)
    fj.set_rules(board.root)
    rc, _, err = cli_inproc(board, *TUNE)  # the next start puts back what the killed run changed
    assert rc == 0, err
    assert "left by a run that did not finish" in err
    assert_applied(board, APPLY2)  # back to the kept config A: not to the originals, not to B
    saved = json.loads(board.saved_originals()[0].read_text())
    assert saved["meta"]["kept"] is True  # still the user's choice: `restore` undoes it
    assert cli_inproc(board, "restore", "--device", "jetson")[0] == 0
    board.assert_restored()
