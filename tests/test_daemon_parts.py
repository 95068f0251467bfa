"""The daemon's parts in-process (config validation, watcher, sd_notify, control socket, metrics) and
its refusals as a subprocess (a garbage config: one line, exit 2, nothing started)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from polythrottle.daemon.client import DaemonError, send_command
from polythrottle.daemon.config import DEFAULT_CARBON_G_PER_KWH, ConfigError, load_config
from polythrottle.daemon.metrics import DaemonMetrics, co2_grams
from polythrottle.daemon.sdnotify import Notifier, watchdog_interval_s
from polythrottle.daemon.server import ControlServer
from polythrottle.daemon.watcher import ModelWatcher
from polythrottle.errors import BadInputError
from polythrottle.measurement import Measurement
from tests.conftest import ROOT

GOOD = "device: sim:jetson-agx-orin\nworkload: efficientnet-b0\nslo_ms: 25\n"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "daemon.yaml"
    p.write_text(text)
    return p


# ----- config -------------------------------------------------------------------------------------
def test_config_defaults_and_relative_paths(tmp_path):
    cfg = load_config(write(tmp_path, GOOD + "model_files: [m.bin]\nstate_dir: st\nknobs: gpu_mhz,emc_mhz\n"))
    assert cfg.slo_ms == 25.0 and cfg.budget == 15 and cfg.retune_budget == 5
    assert cfg.model_files == (tmp_path / "m.bin",) and cfg.state_dir == tmp_path / "st"
    assert cfg.history_path() == str(tmp_path / "st" / "history.sqlite")
    assert cfg.knobs == ("gpu_mhz", "emc_mhz")
    assert cfg.carbon_intensity_g_per_kwh == DEFAULT_CARBON_G_PER_KWH
    assert cfg.metrics is not None and cfg.metrics.address == "127.0.0.1"
    assert load_config(write(tmp_path, GOOD + "metrics: false\n")).metrics is None


@pytest.mark.parametrize("text, message", [
    ("device: [unclosed\n", "not valid YAML at line 2"),
    ("- a\n- b\n", "expected a mapping of fields"),
    ("", "got an empty file"),
    ("workload: x\nslo_ms: 25\n", "device: is required"),
    (GOOD.replace("25", "fast"), "slo_ms: must be a number, got 'fast'"),
    (GOOD.replace("25", "-3"), "slo_ms: must be > 0"),
    (GOOD + "slo: 20\n", "unknown field 'slo' (did you mean 'slo_ms'?)"),
    (GOOD + "budget: 4\nretune_budget: 6\n", "retune_budget: must be <= budget (4)"),
    (GOOD + "budget: 1.5\n", "budget: must be an integer"),
    (GOOD + "optimizer: magic\n", "optimizer: must be one of cbo, random"),
    (GOOD + "metrics: {port: 99999}\n", "metrics.port: must be <= 65535"),
    (GOOD + "metrics: {prt: 1}\n", "metrics.unknown field 'prt'"),
    (GOOD + "model_files: [a]\nmodel_version: v1\n", "give model_files or model_version, not both"),
    (GOOD + "knobs: [gpu_mhz, gpu_mhz]\n", "knobs: lists a name twice"),
    (GOOD + "no_clock_control: maybe\n", "no_clock_control: must be true or false"),
])
def test_config_errors_name_file_and_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def run_daemon(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    return subprocess.run([sys.executable, "-m", "polythrottle", "daemon", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=env)


@pytest.mark.parametrize("text, message", [
    ("device: sim:jetson-agx-orin\nslo_ms: [25\n", "not valid YAML"),
    (GOOD + "knobs: [gpu_mhz, turbo]\n", "turbo"),
    (GOOD.replace("efficientnet-b0", "no-such-model"), "unknown workload 'no-such-model'"),
])
def test_garbage_config_refuses_to_start_with_one_line(tmp_path, text, message):
    cfg = write(tmp_path, text + f"socket: {tmp_path}/ctl.sock\nstate_dir: {tmp_path}/state\nmetrics: false\n")
    r = run_daemon("--config", str(cfg))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "ctl.sock").exists()  # nothing started


def test_check_validates_without_starting(tmp_path):
    cfg = write(tmp_path, GOOD + f"socket: {tmp_path}/ctl.sock\nstate_dir: {tmp_path}/state\n")
    r = run_daemon("--config", str(cfg), "--check")
    assert r.returncode == 0 and "OK" in r.stdout
    assert not (tmp_path / "ctl.sock").exists() and not (tmp_path / "state").exists()


# ----- model watcher ------------------------------------------------------------------------------
def test_watcher_reports_a_change_once_it_settles(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"a")
    w = ModelWatcher([f])
    assert not w.poll()
    f.write_bytes(b"bb")
    assert not w.poll()  # changed: wait one interval for it to settle
    assert w.poll()
    assert not w.poll()  # reported once
    f.unlink()
    assert not w.poll() and w.poll() and w.missing == [f]
    tmp = tmp_path / "new"
    tmp.write_bytes(b"ccc")
    os.replace(tmp, f)  # atomic replace: a new inode
    assert not w.poll() and w.poll() and not w.missing


# ----- sd_notify ----------------------------------------------------------------------------------
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


# ----- control socket -----------------------------------------------------------------------------
def test_control_socket_protocol_and_mode(tmp_path):
    path = tmp_path / "run" / "ctl.sock"

    def handler(req):
        if req["command"] == "boom":
            raise RuntimeError("bug")
        if req["command"] != "status":
            raise BadInputError(f"unknown command {req['command']!r}")
        return {"ok": True, "status": {"state": "serving"}}

    server = ControlServer(path, handler)
    server.start()
    try:
        assert (path.stat().st_mode & 0o777) == 0o660
        assert send_command("status", path)["status"]["state"] == "serving"
        with pytest.raises(DaemonError, match="unknown command 'nope'"):
            send_command("nope", path)
        with pytest.raises(DaemonError, match="internal error: RuntimeError"):
            send_command("boom", path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # a client that never sends a line
            s.connect(str(path))
            with pytest.raises(BadInputError, match="already listening"):
                ControlServer(path, handler).start()
        assert send_command("status", path)["ok"]
    finally:
        server.stop()
    assert not path.exists()
    path.parent.mkdir(exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on: taken over
    server = ControlServer(path, handler)
    server.start()
    server.stop()


def test_many_clients_at_once(tmp_path):
    path = tmp_path / "ctl.sock"
    gate = threading.Event()

    def handler(req):
        gate.wait(2)  # a slow answer must not block the others
        return {"ok": True}

    server = ControlServer(path, handler)
    server.start()
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(send_command("status", path))) for _ in range(8)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.2)
        gate.set()
        for t in threads:
            t.join(5)
        assert len(results) == 8 and time.monotonic() - t0 < 3
    finally:
        server.stop()


# ----- metrics ------------------------------------------------------------------------------------
def sample(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` in Prometheus text ``text``."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise KeyError(name)


def test_metrics_values_and_co2():
    m = DaemonMetrics(slo_ms=20, carbon_g_per_kwh=400, monitor_interval_s=1)
    meas = Measurement(energy_j=0.36, latency_ms=25.0, throughput_ips=100.0)  # 36 W, over the SLO
    m.observe(meas, 20, "serving", now=0.0)
    m.observe(meas, 20, "serving", now=1.0)
    m.set_applied({"gpu_mhz": 624.75, "precision": "fp16"})
    m.tune_finished("retune", "feasible", 12.5)
    text = m.text()
    assert co2_grams(3.6e6, 400) == 400
    assert sample(text, "polythrottle_co2_per_inference_grams") == pytest.approx(0.36 / 3.6e6 * 400)
    assert sample(text, "polythrottle_energy_joules_total") == pytest.approx(36.0)  # 36 W for 1 s
    assert sample(text, "polythrottle_co2_grams_total") == pytest.approx(36.0 / 3.6e6 * 400)
    assert sample(text, "polythrottle_slo_violations_total", phase="serving") == 2
    assert sample(text, "polythrottle_knob_value", knob="gpu_mhz") == 624.75
    assert sample(text, "polythrottle_knob_info", knob="precision", value="fp16") == 1
    assert sample(text, "polythrottle_last_tune_saving_ratio") == 0.125
    assert sample(text, "polythrottle_slo_seconds") == 0.02
    assert sample(text, "polythrottle_tunes_total", kind="retune", outcome="feasible") == 1
    m.set_applied(None)
    text = m.text()
    assert "knob_value{" not in text and sample(text, "polythrottle_config_applied") == 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path):
    exe = tmp_path / "polythrottle"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m polythrottle \"$@\"\n")
    exe.chmod(0o755)
    unit = subprocess.run([sys.executable, "-m", "polythrottle", "install-service", "--exe", str(exe), "--print-unit"],
                          capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert f"ExecStart={exe} daemon --config /etc/polythrottle/daemon.yaml" in unit
    path = tmp_path / "polythrottle.service"
    path.write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "polythrottle.service" in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
    for key in ("Type=notify", "WatchdogSec=", "NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=on-failure",
                "CapabilityBoundingSet=\n", "ReadWritePaths=/sys/devices"):
        assert key in unit


# ----- the daemon without torch (random search): waiting for a model, infeasible SLO --------------
def test_waits_for_a_missing_model_then_reports_an_infeasible_slo(tmp_path):
    from tests.daemon_helpers import DaemonProcess, NotifyListener, wait_for, write_config

    model = tmp_path / "model.bin"
    fields = dict(device="sim:jetson-tx2", workload="efficientnet-b0", slo_ms=1000, knobs=["gpu_mhz"],
                  optimizer="random", budget=3, retune_budget=2, seed=1, state_dir="state",
                  model_files=["model.bin"], socket="ctl.sock", monitor_interval_s=0, watch_interval_s=0.1,
                  metrics=False)
    cfg = write_config(tmp_path / "daemon.yaml", **fields)
    notify = NotifyListener(tmp_path / "notify.sock")
    d = DaemonProcess(cfg, notify, tmp_path / "daemon.log")
    try:
        s = d.wait(lambda s: s["state"] == "waiting", 30, "the daemon to wait for its model file")
        assert "model.bin not found" in s["last_error"] and s["applied"] is None
        wait_for(lambda: notify.seen("READY", "1"), 30, "READY=1 (up and answering, nothing applied)")
        model.write_bytes(b"v1")
        s = d.wait(lambda s: s["state"] == "serving", 30, "a tune once the model file appeared")
        assert s["last_tune"]["measurements"] == 3 and s["last_error"] is None

        write_config(cfg, **{**fields, "slo_ms": 0.001})  # nothing can meet this
        assert d.request("reload")["ok"]
        s = d.wait(lambda s: s["state"] == "error", 30, "the infeasible tune")
        assert s["applied"] is None and "no config met the 0.001 ms SLO" in s["last_error"]
        assert s["last_tune"]["feasible"] is False
        assert d.request("status")["ok"]  # still answering
        assert d.stop() == 0
    finally:
        d.kill()
        notify.close()
