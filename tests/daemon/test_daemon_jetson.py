"""The daemon as a real subprocess on a fake AGX Orin tree (the kernel double refuses what the kernel
refuses and logs every write): applies, re-tunes on a model change, restores every file on SIGTERM,
and after a SIGKILL a restart restores the originals first, then re-applies the stored best."""

from __future__ import annotations

import os
import signal

import pytest

pytest.importorskip("polythrottle.devices.jetson")
pytest.importorskip("polythrottle.measure.harness")
fj = pytest.importorskip("tests.fake_jetson")

from tests.daemon.helpers import DaemonProcess, NotifyListener, wait_for, write_config  # noqa: E402

BOARD = "agx-orin-jp5"


def settings(snap: dict[str, str]) -> dict[str, str]:
    """The tree without the files the kernel owns (current clocks follow the limits by themselves)."""
    return {p: v.strip() for p, v in snap.items() if not p.endswith("cur_freq")}


def assert_applied(root, board, config: dict) -> None:
    hz = str(round(config["gpu_mhz"] * 1e6))
    assert fj.read(root, f"{board.gpu_dir}/min_freq") == hz
    assert fj.read(root, f"{board.gpu_dir}/max_freq") == hz
    assert fj.read(root, board.emc_files["rate"]) == str(round(config["emc_mhz"] * 1e6))
    assert fj.read(root, board.emc_files["lock"]) == "1"


def test_daemon_on_a_fake_jetson(tmp_path):
    root, state = tmp_path / "root", tmp_path / "state"
    board = fj.build(root, BOARD)
    original = settings(fj.snapshot(root))
    model = tmp_path / "model.pt"
    model.write_bytes(b"v1")
    cfg = write_config(
        tmp_path / "daemon.yaml",
        device="jetson", workload="builtin:mlp", slo_ms=1000, knobs=["gpu_mhz", "emc_mhz"],
        budget=3, retune_budget=3, seed=0, window_s=0.2, repeats=1, state_dir=str(state),
        model_files=[str(model)], socket=str(tmp_path / "ctl.sock"), monitor_interval_s=0,
        watch_interval_s=0.2, metrics=False,
    )
    env = {"POLYTHROTTLE_ROOT": str(root)}
    notify = NotifyListener(tmp_path / "notify.sock")
    d = DaemonProcess(cfg, notify, tmp_path / "daemon1.log", module="tests.fake_jetson", env=env)
    try:
        wait_for(lambda: notify.seen("READY", "1"), 60, "READY=1", d.proc, d.log)
        s = d.wait(lambda s: s["state"] == "serving", 120, "the initial tune to be applied")
        assert s["last_tune"]["measurements"] <= 3
        assert_applied(root, board, s["applied"])

        model.write_bytes(b"v2")
        s = d.wait(lambda s: s["tunes"] == 2 and s["state"] == "serving", 120, "the re-tune")
        lt = s["last_tune"]
        assert lt["kind"] == "retune" and lt["measurements"] <= 3 and lt["warm_start"] is not None
        assert_applied(root, board, s["applied"])
        applied = s["applied"]
        d.stop(signal.SIGKILL)
    finally:
        d.kill()
    killed = settings(fj.snapshot(root))
    changed = {p for p in original if killed[p] != original[p]}
    assert changed, "the killed daemon left its config applied"
    assert list(state.glob("*.json")), "the saved originals must survive a SIGKILL"
    writes_before = len(fj.write_log(root))

    d2 = DaemonProcess(cfg, notify, tmp_path / "daemon2.log", module="tests.fake_jetson", env=env)
    try:
        s = d2.wait(lambda s: s["state"] == "serving", 60, "the restart to re-apply")
        assert s["applied_source"] == "history" and s["tunes"] == 0 and s["applied"] == applied
        assert s["recovered"]["restored"], "the restart must restore what the killed daemon left"
        assert_applied(root, board, applied)
        # every file the killed daemon had changed was first written back to its original value,
        # then set again to the stored config
        after = fj.write_log(root)[writes_before:]
        for p in changed:
            values = [v for path, v in after if path == p]
            assert values[0] == original[p] and values[-1] == killed[p], (p, values)
        assert d2.stop(signal.SIGTERM) == 0
    finally:
        d2.kill()
        notify.close()
    assert settings(fj.snapshot(root)) == original
    assert not list(state.glob("*.json"))
    assert os.path.exists(state / "daemon" / "state.json")
