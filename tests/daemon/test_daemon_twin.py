"""The daemon as a real subprocess against the AGX Orin twin: READY over a real notify socket, apply,
re-tune on a model-file change with a warm start, status, bad requests, SIGTERM, SIGKILL + restart."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from polythrottle.carbon import WORLD_AVERAGE
from polythrottle.daemon.client import DaemonError
from polythrottle.daemon.statefile import read_state
from polythrottle.fingerprint import fingerprint_files
from tests.conftest import ROOT
from tests.daemon.helpers import DaemonProcess, NotifyListener, wait_for, write_config


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polythrottle", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def raw_request(path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(payload)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


@pytest.fixture
def twin_setup(tmp_path):
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights v1")
    cfg = write_config(
        tmp_path / "daemon.yaml",
        device="sim:jetson-agx-orin", workload="efficientnet-b0", slo_ms=25,
        knobs=["gpu_mhz", "emc_mhz", "batch_size"], budget=5, retune_budget=5, seed=0, noise=0.02,
        state_dir="state", model_files=["model.bin"], socket="ctl.sock", monitor_interval_s=0.2,
        watch_interval_s=0.2, metrics={"address": "127.0.0.1", "port": 0},
    )
    notify = NotifyListener(tmp_path / "notify.sock")
    yield tmp_path, cfg, model, notify
    notify.close()


def test_daemon_lifecycle_on_the_twin(twin_setup):
    tmp, cfg, model, notify = twin_setup
    v1 = fingerprint_files([model])
    d = DaemonProcess(cfg, notify, tmp / "daemon1.log", env={"WATCHDOG_USEC": "1000000"})
    try:
        wait_for(lambda: notify.seen("READY", "1"), 60, "READY=1", d.proc, d.log)
        s = d.wait(lambda s: s["state"] == "serving", 90, "the initial tune to be applied")
        assert notify.seen("WATCHDOG", "1")
        assert s["model_version"] == v1 and s["applied_source"] == "tune"
        lt = s["last_tune"]
        assert lt["kind"] == "initial" and lt["measurements"] <= 5 and lt["warm_start"] is None
        assert s["applied"] == lt["best"]["config"] and lt["best"]["latency_ms"] <= 25
        assert s["tunes"] == 1 and s["current"]["meets_slo"]

        # the serving loop measures the applied config; metrics expose it
        s = d.wait(lambda s: s["current"] and s["current"].get("power_w"), 10, "a serving measurement")
        text = urllib.request.urlopen(s["metrics_url"], timeout=10).read().decode()
        assert f'polythrottle_knob_value{{knob="gpu_mhz"}} {float(s["applied"]["gpu_mhz"])}' in text
        world = f'{{country="",source="{WORLD_AVERAGE.source}",year="2023"}} 481.0'
        assert "polythrottle_co2_per_inference_grams" in text
        assert "polythrottle_grid_carbon_intensity_grams_per_kwh" + world in text
        assert 'polythrottle_tunes_total{kind="initial",outcome="feasible"} 1.0' in text

        # bad requests get clear errors; the daemon keeps running
        assert "JSON" in raw_request(d.socket, b"garbage\n")["error"]
        r = raw_request(d.socket, b'{"command": "frobnicate"}\n')
        assert not r["ok"] and "unknown command 'frobnicate'" in r["error"]
        r = cli("notify", "model-updated", "--model-file", str(tmp / "missing.bin"), "--config", str(cfg))
        assert r.returncode == 2 and r.stderr.count("\n") == 1  # a client names only files of the config (bad input)
        assert "missing.bin' is not one of the daemon config's model_files" in r.stderr
        assert d.status()["state"] == "serving"

        # a reload with a broken config is refused with the reason; a good one (SIGHUP) is applied
        good = cfg.read_text()
        cfg.write_text(good + "slo_ms: [\n")
        with pytest.raises(DaemonError, match="not valid YAML"):
            d.request("reload")
        r = cli("notify", "reload", "--socket", str(d.socket))  # (--config would fail here, reading the bad file)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not valid YAML" in r.stderr  # bad input, not 1
        cfg.write_text(good + "carbon_intensity_g_per_kwh: 100\n")
        d.proc.send_signal(signal.SIGHUP)
        s = d.wait(lambda s: s["carbon_intensity_g_per_kwh"] == 100 and s["state"] == "serving", 30, "the reload")
        assert s["tunes"] == 1 and s["applied_source"] == "history"  # same key: the stored best, no tune
        assert s["carbon"] == {"country": None, "intensity_g_per_kwh": 100, "year": None, "source": "given"}
        text = urllib.request.urlopen(s["metrics_url"], timeout=10).read().decode()
        assert 'polythrottle_grid_carbon_intensity_grams_per_kwh{country="",source="given",year=""} 100.0' in text
        assert world not in text  # the old intensity's series is gone
        assert notify.seen("RELOADING", "1")

        # a model-file change: warm-started re-tune with at most 5 new measurements
        model.write_bytes(b"weights v2, fine-tuned")
        v2 = fingerprint_files([model])
        seen = []  # status keeps answering, quickly, while the re-tune runs

        def retuned(s):
            seen.append(s["state"])
            return s["tunes"] == 2 and s["state"] == "serving"

        s = d.wait(retuned, 90, "the re-tune after a model change")
        assert "tuning" in seen
        lt = s["last_tune"]
        assert lt["kind"] == "retune" and lt["model_version"] == v2 and s["model_version"] == v2
        assert lt["measurements"] <= 5
        assert lt["warm_start"]["from_version"] == v1
        assert s["applied"] == lt["best"]["config"]

        # the status CLI (a separate process) answers too
        out = cli("status", "--json", "--config", str(cfg))
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["applied"] == s["applied"]

        # SIGKILL: nothing restored; a restart restores what was left and re-applies the stored best (no tune)
        old_pid = d.proc.pid
        d.stop(signal.SIGKILL)
        assert read_state(tmp / "state")["state"] == "serving"
    finally:
        d.kill()
    notify.messages.clear()
    d2 = DaemonProcess(cfg, notify, tmp / "daemon2.log")
    try:
        wait_for(lambda: notify.seen("READY", "1"), 60, "READY=1 after the restart", d2.proc, d2.log)
        s = d2.wait(lambda s: s["state"] == "serving", 30, "the stored config to be re-applied")
        assert s["applied_source"] == "history" and s["tunes"] == 0 and s["last_tune"] is None
        assert s["applied"] == lt["best"]["config"]
        assert s["recovered"]["pid"] == old_pid
        t0 = time.monotonic()
        assert d2.stop(signal.SIGTERM) == 0
        assert time.monotonic() - t0 < 5
    finally:
        d2.kill()
    state = read_state(tmp / "state")
    assert state["state"] == "stopped" and state["applied"] is None
    assert notify.seen("STOPPING", "1")
    assert "original settings restored" in (tmp / "daemon2.log").read_text()
    assert not (tmp / "ctl.sock").exists()
