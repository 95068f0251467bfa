"""LiveMeasurer: a workload, a meter and the harness, with what the hardware reports merged in."""

from __future__ import annotations

import pytest

from polythrottle.energy.base import EnergyWindow
from polythrottle.errors import DeviceError
from polythrottle.measure.harness import HarnessSettings
from polythrottle.measure.live import LiveMeasurer, harness_settings, observed
from polythrottle.space import Knob, KnobStatus

FAST = HarnessSettings(window_s=0.001, warmup_s=0.0, warmup_batches=0, repeats=2, min_batches=2)


class Runner:
    batch_size = 2

    def run_batch(self) -> None:
        pass

    def synchronize(self) -> None:
        pass


class Workload:
    device = "cpu"
    spec = type("Spec", (), {"name": "builtin:noop"})()

    def __init__(self) -> None:
        self.knobs = [Knob("batch_size", (2, 4))]
        self.knob_status = [KnobStatus("batch_size", True)]
        self.config: dict = {}
        self.closed = False
        self.runner = Runner()

    def default_config(self) -> dict:
        return {"batch_size": 2}

    def details(self) -> dict:
        return {"runtime": "none"}

    def set_config(self, config) -> None:
        self.config = dict(config)

    def close(self) -> None:
        self.closed = True


class Meter:
    name = "fake"
    last_stats = type("Stats", (), {"overhead": 0.012345, "failures": 1})()

    def __init__(self) -> None:
        self.closed = False

    def begin(self) -> None:
        pass

    def end(self) -> EnergyWindow:
        return EnergyWindow(energy_j=4.0, duration_s=0.01)

    def close(self) -> None:
        self.closed = True


def test_measures_with_the_meter_and_merges_what_the_hardware_says():
    wl, meter = Workload(), Meter()
    m = LiveMeasurer(wl, meter, FAST, energy="fake meter", notes={"cpu energy": "none"},
                     observe=lambda: observed({"gpu_mhz": 624.75}))
    assert m.workload_name == "builtin:noop" and m.space().names == ["batch_size"] and m.default_config() == {
        "batch_size": 2}
    m.set_config({"batch_size": 4, "gpu_mhz": 1})
    assert wl.config == {"batch_size": 4, "gpu_mhz": 1}  # the workload picks its own knobs
    r = m.measure()
    assert r.energy_j > 0 and r.extra["observed_gpu_mhz"] == 624.75
    assert r.extra["meter_overhead"] == 0.0123 and r.extra["meter_failed_reads"] == 1
    assert m.details() == {"energy": "fake meter", "cpu energy": "none", "window": "0.001 s x 2",
                           "workload": "builtin:noop", "torch device": "cpu", "runtime": "none"}
    m.close()
    m.close()
    assert wl.closed and meter.closed and m.details() == {} and m.statuses() == wl.knob_status
    with pytest.raises(DeviceError, match="closed"):
        m.measure()


def test_harness_settings_take_the_defaults_for_what_is_not_given():
    assert harness_settings() == HarnessSettings()
    assert harness_settings(0.5, 90.0, 5) == HarnessSettings(window_s=0.5, percentile=90.0, repeats=5)
