"""The status: the snapshot's transitions, the "current" numbers, the state file and the metrics in step."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from polythrottle.daemon.config import DaemonConfig, parse_config
from polythrottle.daemon.statefile import read_state
from polythrottle.daemon.status import STATE_FILE_KEYS, DaemonStatus, current_numbers
from polythrottle.errors import BadInputError
from polythrottle.measure.measurement import Measurement


def config(tmp_path: Path, **fields) -> DaemonConfig:
    raw = dict(device="sim:jetson-tx2", slo_ms=20, knobs="gpu_mhz", state_dir="state", socket="ctl.sock",
               carbon_intensity_g_per_kwh=400, metrics=False)
    return parse_config({**raw, **fields}, tmp_path / "daemon.yaml")


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise KeyError(name)


def test_current_numbers():
    cur = current_numbers(0.36, 25.0, slo_ms=20, carbon_g_per_kwh=400, power_w=36.0, measured_at=5.0)
    assert cur == {"energy_j": 0.36, "latency_ms": 25.0, "power_w": 36.0, "meets_slo": False,
                   "co2_per_inference_g": pytest.approx(0.36 / 3.6e6 * 400), "measured_at": 5.0}
    assert current_numbers(0.1, 20.0, slo_ms=20, carbon_g_per_kwh=0)["meets_slo"]


def test_applied_and_cleared_move_the_snapshot_the_state_file_and_the_metrics(tmp_path):
    cfg = config(tmp_path)
    st = DaemonStatus(cfg, queued=lambda: 2)
    assert st.to_dict()["state"] == "starting" and st.line() == "starting"
    st.applied({"gpu_mhz": 624.75}, "history", "v1", energy_j=0.2, latency_ms=10.0, measured_at=1.0)
    s = st.to_dict()
    assert (s["state"], s["applied_source"], s["model_version"]) == ("serving", "history", "v1")
    assert s["current"]["measured_at"] == 1.0 and s["current"]["meets_slo"] and s["jobs"]["queued"] == 2
    assert st.line() == "serving model v1 with history config"
    text = st.metrics.text()
    assert sample(text, "polythrottle_config_applied") == 1 and sample(text, "polythrottle_knob_value", knob="gpu_mhz")
    assert sample(text, "polythrottle_energy_per_inference_joules") == 0.2
    saved = read_state(cfg.resolved_state_dir())
    assert set(saved) == set(STATE_FILE_KEYS) and saved["applied"] == {"gpu_mhz": 624.75}
    st.cleared(state="error", last_error="boom")
    assert st.to_dict()["applied"] is None and sample(st.metrics.text(), "polythrottle_config_applied") == 0
    assert st.line() == "error: boom" and read_state(cfg.resolved_state_dir())["state"] == "error"


def test_a_tune_in_progress(tmp_path):
    st = DaemonStatus(config(tmp_path))
    st.tune_started("retune", "model changed", "v2", 5)
    assert st.line() == "tuning (retune, model v2)" and sample(st.metrics.text(), "polythrottle_tuning") == 1
    st.tune_measured(0, Measurement(energy_j=0.3, latency_ms=30.0), feasible=False)
    st.tune_measured(1, Measurement(energy_j=0.2, latency_ms=15.0), feasible=True)
    s = st.to_dict()
    assert s["tuning"]["measurements"] == 2 and s["tuning"]["budget"] == 5 and s["slo_violations"]["tuning"] == 1
    st.tune_ended("retune", "cancelled")
    text = st.metrics.text()
    assert st.to_dict()["tuning"] is None and sample(text, "polythrottle_tuning") == 0
    assert sample(text, "polythrottle_tunes_total", kind="retune", outcome="cancelled") == 1
    assert sample(text, "polythrottle_measurements_total", phase="tuning") == 2
    st.tune_ended("initial", "feasible", 12.5)
    assert sample(st.metrics.text(), "polythrottle_last_tune_saving_ratio") == 0.125


def test_serving_measurements(tmp_path):
    st = DaemonStatus(config(tmp_path))
    st.served(Measurement(energy_j=0.36, latency_ms=25.0, throughput_ips=100.0))
    s = st.to_dict()
    assert s["current"]["power_w"] == pytest.approx(36.0) and not s["current"]["meets_slo"]
    assert s["slo_violations"] == {"serving": 1, "tuning": 0}
    st.job_done(7)
    st.job_done(3)
    assert st.to_dict()["jobs"]["last_done"] == 7


def test_a_new_config_moves_slo_carbon_and_knobs(tmp_path):
    st = DaemonStatus(config(tmp_path))
    assert st.to_dict()["knobs"] == ["gpu_mhz"]
    new = config(tmp_path, slo_ms=30, carbon_country="FRA", carbon_intensity_g_per_kwh=None)
    st.use_config(new, ["gpu_mhz", "emc_mhz"])
    s = st.to_dict()
    assert s["slo_ms"] == 30 and s["knobs"] == ["gpu_mhz", "emc_mhz"] and s["carbon"]["country"] == "FRA"
    assert s["carbon_intensity_g_per_kwh"] == new.carbon.intensity_g_per_kwh != 400
    assert sample(st.metrics.text(), "polythrottle_slo_seconds") == 0.03
    json.dumps(s)  # JSON-ready


def test_metrics_endpoint(tmp_path):
    st = DaemonStatus(config(tmp_path, metrics={"address": "127.0.0.1", "port": 0}))
    st.serve_metrics()
    try:
        url = st.to_dict()["metrics_url"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            other = DaemonStatus(config(tmp_path, metrics={"address": "127.0.0.1", "port": port}))
            with pytest.raises(BadInputError, match=f"metrics: cannot serve on 127.0.0.1:{port}"):
                other.serve_metrics()
    finally:
        st.stop_metrics()
    assert DaemonStatus(config(tmp_path)).to_dict()["metrics_url"] is None


def test_an_unwritable_state_directory_is_only_logged(tmp_path, caplog):
    (tmp_path / "state").write_text("a file where the directory should be")
    st = DaemonStatus(config(tmp_path))
    st.set(state="serving")
    assert st.to_dict()["state"] == "serving" and "cannot write the daemon state file" in caplog.text
