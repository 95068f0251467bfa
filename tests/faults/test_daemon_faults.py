"""The daemon under faults: reloads that race a tune (a refused config, an alias bomb, another device
that fails to open), a tampered ``state.json``, and workloads it must not execute or import.

The daemon runs as a subprocess on a fake AGX Orin (``python -m tests.fake_jetson daemon``) with the
torch-free ``builtin:fake`` workload; a ``{"measure": N, "do": "block"}`` hook holds the N-th
measurement so a reload lands while a tune is in progress. Every case ends with SIGTERM: exit 0 and every
clock file back to its original, nothing left in the saved originals.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from polythrottle.daemon.supervisor import STOP_TIMEOUT_S
from tests import fake_jetson as fj
from tests.daemon.helpers import DaemonProcess, NotifyListener, wait_for, write_config
from tests.faults.conftest import one_line
from tests.faults.test_config_bombs import laughs

BASE = dict(device="jetson", workload="builtin:fake", slo_ms=1000, knobs=["gpu_mhz", "emc_mhz", "cpu_mhz"],
            budget=5, retune_budget=3, optimizer="random", seed=0, model_version="v1", monitor_interval_s=0,
            watch_interval_s=0.2, metrics=False)


class Running:
    """A daemon subprocess on ``board`` with config ``fields``."""

    def __init__(self, board, tmp_path: Path, name: str = "d", **fields) -> None:
        self.board = board
        self.cfg_path = tmp_path / f"{name}.yaml"
        self.fields = {**BASE, "state_dir": str(board.state), "socket": str(tmp_path / f"{name}.sock"), **fields}
        write_config(self.cfg_path, **self.fields)
        self.notify = NotifyListener(tmp_path / f"{name}.notify")
        self.d = DaemonProcess(self.cfg_path, self.notify, tmp_path / f"{name}.log", module="tests.fake_jetson",
                               env={"POLYTHROTTLE_ROOT": str(board.root)})

    def status(self) -> dict:
        return self.d.status()

    def wait(self, pred, what: str, timeout: float = 30) -> dict:
        return self.d.wait(pred, timeout, what)

    def write(self, text: str | None = None, **fields) -> None:
        if text is not None:
            self.cfg_path.write_text(text)
        else:
            write_config(self.cfg_path, **{**self.fields, **fields})

    def hup(self) -> None:
        self.d.proc.send_signal(signal.SIGHUP)

    def stop_and_check(self) -> None:
        try:
            # the daemon gives a busy worker STOP_TIMEOUT_S before it restores from the main thread
            assert self.d.stop(signal.SIGTERM, timeout=STOP_TIMEOUT_S + 40) == 0, self.d.log.read_text()[-2000:]
        finally:
            self.d.kill()
            self.notify.close()
        self.board.assert_restored()

    def log(self) -> str:
        return self.d.log.read_text()


def tuning_held(run: Running, at: int = 2) -> dict:
    """Wait until the initial tune is held in measurement ``at``; returns the status then."""
    wait_for(lambda: at in fj.measures_blocked(run.board.root), 30, f"measurement {at}", run.d.proc, run.d.log)
    return run.wait(lambda s: s["state"] == "tuning", "state tuning")


# ----- reloads racing a tune ------------------------------------------------------------------------------
REFUSED = {
    "yaml-syntax": "device: [unclosed\n",
    "alias-bomb": laughs(field="knobs"),
    "self-alias": "&t {device: jetson, slo_ms: 5, t: *t}\n",
    "deep": "knobs: " + "[" * 100_000 + "\n",
    "unknown-knob": None,  # same device, a knob it does not have (refused by the device, before any cancel)
    "bad-slo": None,
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_sighup_with_a_refused_config_while_tuning_leaves_the_tune_alone(board, tmp_path, case):
    fj.set_rules(board.root, hooks=[{"measure": 2, "do": "block"}])
    run = Running(board, tmp_path)
    try:
        tuning_held(run)
        if case == "unknown-knob":
            run.write(knobs=["gpu_mhz", "fan_rpm"])
        elif case == "bad-slo":
            run.write(slo_ms=-1)
        else:
            run.write(REFUSED[case])
        run.hup()
        s = run.wait(lambda s: (s["last_error"] or "").startswith("reload refused"), "the refusal")
        assert s["state"] == "tuning" and s["tuning"] is not None  # untouched: the same tune goes on
        assert "\n" not in s["last_error"] and len(s["last_error"]) < 1500
        fj.release_measure(board.root, 2)
        s = run.wait(lambda s: s["state"] == "serving", "the tune to finish")
        assert s["tunes"] == 1 and s["last_tune"]["measurements"] == 5
        assert run.status()["slo_ms"] == 1000  # the running config stayed
    finally:
        run.stop_and_check()


def test_reload_request_with_a_refused_config_is_one_line_and_the_tune_goes_on(board, tmp_path):
    from polythrottle.daemon.client import DaemonError

    fj.set_rules(board.root, hooks=[{"measure": 2, "do": "block"}])
    run = Running(board, tmp_path)
    try:
        tuning_held(run)
        run.write(laughs(field="knobs"))
        with pytest.raises(DaemonError) as e:
            run.d.request("reload")
        assert "alias" in str(e.value) and "\n" not in str(e.value)
        assert run.status()["state"] == "tuning"
        fj.release_measure(board.root, 2)
        run.wait(lambda s: s["state"] == "serving", "the tune to finish")
    finally:
        run.stop_and_check()


def test_sighup_to_another_device_that_fails_to_open_resumes_the_tune(board, tmp_path):
    """A config naming another device must cancel the tune before it can be tried; when it then fails,
    the device is restored and the running config brought up again (never left mid-tune)."""
    fj.set_rules(board.root, hooks=[{"measure": 2, "do": "block"}])
    run = Running(board, tmp_path)
    try:
        tuning_held(run)
        run.write(device="jetson:no-such-board")
        run.hup()
        fj.release_measure(board.root, 2)
        s = run.wait(lambda s: s["state"] == "serving" and (s["last_error"] or "").startswith("reload refused"),
                     "the resumed config to serve")
        assert s["applied_source"] in ("tune", "history") and s["device"] == "jetson"
        assert "no-such-board" in s["last_error"]
    finally:
        run.stop_and_check()


def test_sighup_with_a_good_config_while_tuning_retunes_under_it(board, tmp_path):
    fj.set_rules(board.root, hooks=[{"measure": 2, "do": "block"}])
    run = Running(board, tmp_path)
    try:
        tuning_held(run)
        run.write(slo_ms=900)
        run.hup()
        fj.release_measure(board.root, 2)
        s = run.wait(lambda s: s["state"] == "serving" and s["slo_ms"] == 900, "the re-tune under the new config")
        assert s["last_error"] is None
    finally:
        run.stop_and_check()


# ----- a tampered state.json ---------------------------------------------------------------------------------
STATE_FILES = {
    "pid-text": {"pid": "not-a-pid", "state": "serving", "applied": {"gpu_mhz": 624.75}},
    "pid-list": {"pid": [1, 2], "state": "tuning"},
    "pid-negative": {"pid": -1, "state": "serving"},
    "state-object": {"pid": 999_999_999, "state": {"a": 1}, "applied": "x" * 100_000},
    "not-json": "{oops",
    "json-array": [1, 2, 3],
    "deep": "[" * 100_000,
}


@pytest.mark.parametrize("case", sorted(STATE_FILES))
def test_a_tampered_state_file_does_not_stop_the_daemon(board, tmp_path, case):
    d = board.state / "daemon"
    d.mkdir(parents=True)
    doc = STATE_FILES[case]
    (d / "state.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    run = Running(board, tmp_path)
    try:
        s = run.wait(lambda s: s["state"] == "serving", "the daemon to serve", timeout=60)
        rec = s["recovered"]
        assert rec is None or (rec["left_applied"] is None or len(json.dumps(rec["left_applied"])) < 4096)
    finally:
        run.stop_and_check()


# ----- workloads the daemon must not execute (or, under --check, import) ----------------------------------------
MARKER_CODE = ("import pathlib\npathlib.Path({marker!r}).write_text('imported')\n\n"
               "def make():\n    raise SystemExit(9)\n")


def workload_file(path: Path, marker: Path, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MARKER_CODE.format(marker=str(marker)))
    path.chmod(mode)
    return path


def check_config(board, tmp_path: Path, workload: str, **extra) -> Path:
    fields = {**BASE, "workload": workload, "state_dir": str(board.state), "socket": str(tmp_path / "c.sock"), **extra}
    return write_config(tmp_path / "conf" / "daemon.yaml", **fields) if (tmp_path / "conf").is_dir() else \
        write_config(tmp_path / "daemon.yaml", **fields)


def test_check_imports_no_user_workload(board, tmp_path, cli_inproc):
    marker = tmp_path / "imported"
    wl = workload_file(tmp_path / "wl.py", marker)
    cfg = check_config(board, tmp_path, f"{wl}:make", knobs=["gpu_mhz", "batch_size"])
    rc, out, err = cli_inproc(board, "daemon", "--config", str(cfg), "--check")
    assert rc == 0, err
    assert "not imported" in out and "batch_size" in out
    assert not marker.exists() and fj.writes_attempted(board.root) == 0


def test_check_imports_no_user_module(board, tmp_path, cli_inproc, monkeypatch):
    marker = tmp_path / "imported"
    workload_file(tmp_path / "mods" / "evil_pkg" / "__init__.py", marker)
    workload_file(tmp_path / "mods" / "evil_pkg" / "wl.py", marker)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    cfg = check_config(board, tmp_path, "evil_pkg.wl:make", knobs=["gpu_mhz"])
    rc, out, err = cli_inproc(board, "daemon", "--config", str(cfg), "--check")
    assert rc == 0, err
    assert not marker.exists()


def test_relative_workload_resolves_against_the_config_directory(board, tmp_path, cli_inproc, monkeypatch):
    (tmp_path / "conf").mkdir()
    marker = tmp_path / "imported"
    workload_file(tmp_path / "conf" / "wl.py", marker)
    elsewhere = tmp_path / "cwd"
    workload_file(elsewhere / "wl.py", tmp_path / "wrong")
    monkeypatch.chdir(elsewhere)
    cfg = check_config(board, tmp_path, "wl.py:make", knobs=["gpu_mhz"])
    rc, out, err = cli_inproc(board, "daemon", "--config", str(cfg), "--check")
    assert rc == 0, err
    assert str(tmp_path / "conf" / "wl.py") in out and not marker.exists() and not (tmp_path / "wrong").exists()


UNTRUSTED = {
    "group-writable-file": lambda p: p.chmod(0o664),
    "world-writable-file": lambda p: p.chmod(0o646),
    "not-root-owned": lambda p: os.chown(p, 1000, 1000),
    "world-writable-dir": lambda p: p.parent.chmod(0o777),
}


@pytest.mark.skipif(os.geteuid() != 0, reason="the ownership rule applies to a daemon running as root")
@pytest.mark.parametrize("case", sorted(UNTRUSTED))
def test_an_untrusted_workload_file_is_refused_as_root(board, tmp_path, cli_inproc, case):
    marker = tmp_path / "imported"
    wl = workload_file(tmp_path / "wl" / "wl.py", marker)
    UNTRUSTED[case](wl)
    cfg = check_config(board, tmp_path, f"{wl}:make")
    rc, out, err = cli_inproc(board, "daemon", "--config", str(cfg), "--check")
    line = one_line(err)
    assert rc == 2 and "refusing to run" in line and "as root" in line
    assert not marker.exists() and fj.writes_attempted(board.root) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="the ownership rule applies to a daemon running as root")
def test_the_daemon_refuses_to_start_with_an_untrusted_workload(board, tmp_path):
    marker = tmp_path / "imported"
    wl = workload_file(tmp_path / "wl" / "wl.py", marker, mode=0o666)
    run = Running(board, tmp_path, workload=f"{wl}:make")
    try:
        rc = run.d.proc.wait(60)
    finally:
        run.d.kill()
        run.notify.close()
    assert rc == 2 and "refusing to run" in run.log()
    assert not marker.exists() and fj.writes_attempted(board.root) == 0
    board.assert_restored()


@pytest.mark.skipif(os.geteuid() != 0, reason="the ownership rule applies to a daemon running as root")
def test_a_reload_to_an_untrusted_workload_is_refused(board, tmp_path):
    marker = tmp_path / "imported"
    wl = workload_file(tmp_path / "wl" / "wl.py", marker, mode=0o666)
    run = Running(board, tmp_path)
    try:
        run.wait(lambda s: s["state"] == "serving", "the daemon to serve")
        run.write(workload=f"{wl}:make")
        run.hup()
        s = run.wait(lambda s: (s["last_error"] or "").startswith("reload refused"), "the refusal")
        assert "refusing to run" in s["last_error"] and s["state"] == "serving"
        assert not marker.exists()
    finally:
        run.stop_and_check()


# ----- signals to the daemon at a write, in a measurement, and twice during its final restore -------------------
@pytest.mark.parametrize("sig, at", [("SIGTERM", 0), ("SIGINT", 3), ("SIGTERM", 7), ("SIGINT", 12)])
def test_signal_while_a_write_is_slow(board, tmp_path, sig, at):
    fj.set_rules(board.root, hooks=[{"at": at, "when": "before", "do": "block"}])
    run = Running(board, tmp_path)
    try:
        wait_for(lambda: at in fj.blocked(board.root), 30, f"write {at}", run.d.proc, run.d.log)
        run.d.proc.send_signal(getattr(signal, sig))
        fj.release(board.root, at)
    finally:
        run.stop_and_check()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_during_a_measurement_of_the_tune(board, tmp_path, sig):
    fj.set_rules(board.root, hooks=[{"measure": 2, "do": "block"}])
    run = Running(board, tmp_path)
    try:
        tuning_held(run)
        run.d.proc.send_signal(getattr(signal, sig))
        fj.release_measure(board.root, 2)
    finally:
        run.stop_and_check()


def test_two_signals_during_the_final_restore(board, tmp_path):
    run = Running(board, tmp_path)
    try:
        run.wait(lambda s: s["state"] == "serving", "the daemon to serve")
        fj.set_rules(board.root, hooks=[{"at": 2, "when": "before", "do": "block"}])  # counts from 0 again
        run.d.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: 2 in fj.blocked(board.root), 30, "the restore's third write", run.d.proc, run.d.log)
        run.d.proc.send_signal(signal.SIGINT)
        run.d.proc.send_signal(signal.SIGTERM)
        fj.release(board.root, 2)
    finally:
        run.stop_and_check()
    assert fj.writes_attempted(board.root) > 3
