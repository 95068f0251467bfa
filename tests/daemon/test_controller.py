"""The controller, driven synchronously (no threads) on a sim device with a real history file: bring-up
(tune, or the stored best), model changes, a missing model, an infeasible SLO, reloads (checked before
anything is cancelled; a refused one resumes the interrupted job), crash recovery, the serving loop and
the final restore. Random search: no torch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from polythrottle.daemon.config import ConfigError, DaemonConfig, parse_config
from polythrottle.daemon.controller import Controller
from polythrottle.daemon.jobs import MODEL, RELOAD, START, Job
from polythrottle.daemon.sdnotify import Notifier
from polythrottle.daemon.statefile import read_state, state_path
from polythrottle.daemon.status import DaemonStatus
from polythrottle.errors import BadInputError

BASE: dict[str, Any] = dict(device="sim:jetson-tx2", workload="efficientnet-b0", slo_ms=1000, knobs=["gpu_mhz"],
                            optimizer="random", budget=3, retune_budget=2, seed=1, state_dir="state",
                            model_version="v1", monitor_interval_s=0, socket="ctl.sock", metrics=False)


def config(tmp_path: Path, **fields: Any) -> DaemonConfig:
    return parse_config({**BASE, **fields}, tmp_path / "daemon.yaml")


class Recorder(Notifier):
    """Records the systemd messages; ``cancel_next_tune`` cancels the next tune as it starts (as a reload does)."""

    def __init__(self) -> None:
        super().__init__("")
        self.sent: list[dict[str, Any]] = []
        self.controller: Controller | None = None
        self.cancel_next_tune = False

    def send(self, **fields: Any) -> bool:
        self.sent.append(fields)
        if self.cancel_next_tune and str(fields.get("STATUS", "")).startswith("tuning") and self.controller:
            self.cancel_next_tune = False
            self.controller.cancel.set()
        return True


def started(cfg: DaemonConfig) -> tuple[Controller, Recorder]:
    """A controller with its device and history open (what the worker thread does first)."""
    notifier = Recorder()
    c = Controller(cfg, DaemonStatus(cfg), notifier=notifier)
    notifier.controller = c
    c.open()
    c.open_store()
    return c, notifier


def job(kind: str, n: int = 1, **fields: Any) -> Job:
    return Job(n, kind, f"test {kind}", **fields)


def test_first_start_tunes_applies_the_best_and_a_restart_uses_the_history(tmp_path):
    cfg = config(tmp_path)
    c, notifier = started(cfg)
    try:
        c.run_job(job(START))
        s = c.status.to_dict()
        assert s["state"] == "serving" and s["applied_source"] == "tune" and s["model_version"] == "v1"
        assert s["tunes"] == 1 and s["last_tune"]["kind"] == "initial" and s["last_tune"]["measurements"] == 3
        assert s["applied"] == c.prepared.device.applied and s["current"]["meets_slo"]
        assert s["jobs"]["last_done"] == 1 and any(m.get("READY") == 1 for m in notifier.sent)
        assert read_state(cfg.resolved_state_dir())["state"] == "serving"
        applied = s["applied"]
    finally:
        c.stop.set()
        c.close()
    assert read_state(cfg.resolved_state_dir())["state"] == "stopped" and c.prepared.device.applied is None

    c2, _ = started(cfg)
    try:
        c2.run_job(job(START))
        s = c2.status.to_dict()
        assert s["applied_source"] == "history" and s["tunes"] == 0 and s["applied"] == applied
        assert s["recovered"] is None  # the first one stopped cleanly
    finally:
        c2.close()


def test_model_changes_retune_and_an_unchanged_model_is_left_alone(tmp_path):
    c, _ = started(config(tmp_path))
    try:
        c.run_job(job(START))
        c.run_job(job(MODEL, 2, model_version="v1"))
        assert c.status.snap.tunes == 1  # same version, applied: nothing to do
        c.run_job(job(MODEL, 3, model_version="v1", force=True))
        assert c.status.snap.applied_source == "history"  # forced: the stored best again, no tune
        c.run_job(job(MODEL, 4, model_version="v2"))
        s = c.status.to_dict()
        assert s["tunes"] == 2 and s["model_version"] == "v2" and s["last_tune"]["model_version"] == "v2"
        assert s["jobs"]["last_done"] == 4
    finally:
        c.close()


def test_a_missing_model_file_waits_then_the_file_brings_it_up(tmp_path):
    model = tmp_path / "model.bin"
    c, notifier = started(config(tmp_path, model_version=None, model_files=["model.bin"]))
    try:
        c.run_job(job(START))
        s = c.status.to_dict()
        assert s["state"] == "waiting" and "model.bin not found" in s["last_error"] and s["applied"] is None
        assert c.ready_sent and notifier.sent[0]["READY"] == 1
        model.write_bytes(b"v1")
        c.run_job(job(MODEL, 2))
        s = c.status.to_dict()
        assert s["state"] == "serving" and s["model_version"].startswith("sha256:") and s["last_error"] is None
    finally:
        c.close()


def test_an_infeasible_slo_restores_the_device_and_says_so(tmp_path):
    c, _ = started(config(tmp_path, slo_ms=0.001))
    try:
        c.run_job(job(START))
        s = c.status.to_dict()
        assert s["state"] == "error" and s["applied"] is None and c.prepared.device.applied is None
        assert "no config met the 0.001 ms SLO" in s["last_error"] and s["last_tune"]["feasible"] is False
        assert s["tunes"] == 1 and s["tuning"] is None
    finally:
        c.close()


def test_a_reload_is_checked_before_anything_is_cancelled(tmp_path):
    c, _ = started(config(tmp_path))
    try:
        c.run_job(job(START))
        before = (c.status.to_dict()["applied"], c.prepared.device.applied)
        with pytest.raises(BadInputError, match="fan_rpm"):
            c.check_reload(config(tmp_path, knobs=["gpu_mhz", "fan_rpm"]))
        assert not c.cancel.is_set() and (c.status.to_dict()["applied"], c.prepared.device.applied) == before
        new = config(tmp_path, slo_ms=900)
        c.check_reload(new)
        device = c.prepared.device
        c.run_job(job(RELOAD, 2, config=new))
        s = c.status.to_dict()
        assert c.config is new and s["slo_ms"] == 900 and s["state"] == "serving"
        assert c.prepared.device is device  # the same device: kept open
    finally:
        c.close()


def test_a_refused_reload_resumes_the_tune_it_interrupted(tmp_path):
    c, notifier = started(config(tmp_path))
    try:
        notifier.cancel_next_tune = True
        c.run_job(job(START))  # cancelled at its first measurement, as a reload cancels it
        s = c.status.to_dict()
        assert s["tunes"] == 0 and s["applied"] is None and s["tuning"] is None
        c.run_job(job(RELOAD, 2, config=config(tmp_path, device="sim:no-such-board")))
        s = c.status.to_dict()
        assert s["state"] == "serving" and s["device"] == "sim:jetson-tx2" and s["tunes"] == 1
        assert s["last_error"].startswith("reload refused") and "no-such-board" in s["last_error"]
        assert any(m.get("RELOADING") == 1 for m in notifier.sent)
        assert s["jobs"] == {"queued": 0, "last_done": 2, "last_failed": 2}  # `notify --wait` sees it was refused
        c.run_job(job(RELOAD, 3, config=config(tmp_path, slo_ms=900)))
        assert c.status.to_dict()["jobs"] == {"queued": 0, "last_done": 3, "last_failed": 2}
    finally:
        c.close()


def test_a_refused_reload_names_the_config_file(tmp_path):
    # an unknown knob or board profile in a reloaded config said what was wrong but not in which file
    c, _ = started(config(tmp_path))
    try:
        c.run_job(job(START))
        path = tmp_path / "daemon.yaml"
        with pytest.raises(ConfigError, match=f"^{path}: unknown knob 'fan_rpm'"):
            c.check_reload(config(tmp_path, knobs=["gpu_mhz", "fan_rpm"]))
        c.run_job(job(RELOAD, 2, config=config(tmp_path, device="sim:no-such-board")))
        assert c.status.to_dict()["last_error"].startswith(f"reload refused: {path}: unknown profile 'no-such-board'")
    finally:
        c.close()


@pytest.mark.parametrize("left, pid", [
    ({"pid": 999_999_999, "state": "serving", "applied": {"gpu_mhz": 624.75}}, 999_999_999),
    ({"pid": "not-a-pid", "state": "tuning", "applied": "x" * 10_000}, None),
])
def test_recovery_reports_what_a_crashed_run_left(tmp_path, left, pid):
    cfg = config(tmp_path)
    path = state_path(cfg.resolved_state_dir())
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(left))
    c, _ = started(cfg)
    try:
        c.run_job(job(START))
        rec = c.status.to_dict()["recovered"]
        assert rec["pid"] == pid and rec["restored"] == []
        assert rec["left_applied"] == (left["applied"] if pid else None)
        assert c.status.to_dict()["state"] == "serving"
    finally:
        c.close()
    assert read_state(cfg.resolved_state_dir())["pid"] == os.getpid()


def test_the_serving_loop_measures_the_applied_config(tmp_path):
    c, _ = started(config(tmp_path, monitor_interval_s=1))
    try:
        c.serve_once()  # nothing applied yet: nothing measured
        assert c.status.to_dict()["current"] is None
        c.run_job(job(START))
        c.serve_once()
        s = c.status.to_dict()
        assert s["current"]["power_w"] is not None and s["current"]["latency_ms"] > 0
        assert s["current"]["measured_at"] >= s["last_tune"]["finished_at"] and s["slo_violations"]["serving"] == 0
        assert "polythrottle_measurements_total{phase=\"serving\"} 1.0" in c.status.metrics.text()
    finally:
        c.close()
