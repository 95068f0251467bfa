"""Prometheus metrics: values, CO2, knob labels."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from polythrottle.daemon.metrics import DaemonMetrics, co2_grams
from polythrottle.measure.measurement import Measurement


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

