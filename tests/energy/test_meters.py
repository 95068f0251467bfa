"""Energy meters: NVML counter (step alignment, reset detection), sampled power, RAPL (wraparound)."""

from __future__ import annotations

from pathlib import Path

import pynvml
import pytest

from polythrottle.energy.base import CounterResetError, EnergyMeter, EnergyWindow
from polythrottle.energy.combined import CombinedMeter
from polythrottle.energy.nvml import NvmlEnergyMeter, NvmlPowerMeter, power_reader
from polythrottle.energy.rapl import RaplMeter, delta_uj, find_zones
from polythrottle.errors import UnsupportedError
from tests.fake_nvml import FakeGpu


class FakeTime:
    """A clock that only moves when slept on (or advanced by hand)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


# ----- NVML counter ------------------------------------------------------------------------------
def test_counter_windows_are_aligned_to_counter_steps(monkeypatch):
    """The counter steps every 100 ms; begin/end wait for a step, so energy = power x duration exactly."""
    clock = FakeTime()
    power_w, step_s = 300.0, 0.1

    def counter(h):
        return int((clock.t // step_s) * step_s * power_w * 1000)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", counter)
    meter = NvmlEnergyMeter(object(), poll_s=0.005, clock=clock, sleep=clock.sleep)
    clock.t = 100.037  # mid-period
    meter.begin()
    assert clock.t == pytest.approx(100.1, abs=0.006)  # waited for the next step
    clock.t += 1.234  # the workload runs
    w = meter.end()
    assert w.duration_s == pytest.approx(1.3, abs=0.011)
    assert w.energy_j == pytest.approx(power_w * 1.3, rel=1e-6)
    assert w.energy_j / w.duration_s == pytest.approx(power_w, rel=0.01)
    assert w.samples > 2


def test_counter_reads_are_bounded_when_it_never_moves(monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", lambda h: 42)
    meter = NvmlEnergyMeter(object(), poll_s=0.01, max_wait_s=0.2, clock=clock, sleep=clock.sleep)
    meter.begin()
    w = meter.end()
    assert w.energy_j == 0.0
    assert w.samples <= 2 * (0.2 / 0.01 + 2)  # never a tight loop


def test_counter_reset_is_detected(monkeypatch):
    # constructor probe, begin (2 reads: waits for a step), then the driver reloaded during the window
    values = iter([5_000_000, 5_000_000, 5_000_100, 10, 20])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", lambda h: next(values))
    clock = FakeTime()
    meter = NvmlEnergyMeter(object(), poll_s=0.01, clock=clock, sleep=clock.sleep)
    meter.begin()
    with pytest.raises(CounterResetError, match="backwards"):
        meter.end()


def test_missing_counter_is_unsupported(monkeypatch):
    gpu = FakeGpu(energy_counter=False)
    gpu.install(monkeypatch.setattr)
    with pytest.raises(UnsupportedError, match="energy counter"):
        NvmlEnergyMeter(object())


def test_cross_check_agrees_on_constant_power(monkeypatch):
    FakeGpu(power_w=250.0).install(monkeypatch.setattr)
    meter = NvmlEnergyMeter(object(), poll_s=0.002, cross_check=True, sample_interval_s=0.005)
    meter.begin()
    import time

    time.sleep(0.15)
    w = meter.end()
    meter.close()
    assert w.details["counter_vs_power"] == pytest.approx(1.0, abs=0.05)
    assert w.details["power_integral_j"] == pytest.approx(250.0 * w.duration_s, rel=0.05)


# ----- sampled power -------------------------------------------------------------------------------
def test_power_reader_falls_back_to_power_usage(monkeypatch):
    FakeGpu(power_w=123.0).install(monkeypatch.setattr)

    def no_field(*args):
        raise pynvml.NVMLError_NotSupported()

    monkeypatch.setattr(pynvml, "nvmlDeviceGetFieldValues", no_field)
    read, name = power_reader(object())
    assert name == "nvmlDeviceGetPowerUsage" and read() == pytest.approx(123.0)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", no_field)
    with pytest.raises(UnsupportedError, match="power readings unavailable"):
        power_reader(object())


def test_power_meter_measures_a_window(monkeypatch):
    FakeGpu(power_w=80.0).install(monkeypatch.setattr)
    meter = NvmlPowerMeter(object(), interval_s=0.005)
    meter.begin()
    import time

    time.sleep(0.1)
    w = meter.end()
    assert w.energy_j == pytest.approx(80.0 * w.duration_s, rel=0.02)
    assert w.samples >= 3


# ----- RAPL ------------------------------------------------------------------------------------------
def make_powercap(root: Path, zones: dict[str, tuple[int, int]]) -> Path:
    """zones: name -> (energy_uj, max_energy_range_uj); sub-zones are added to prove they are skipped."""
    for name, (e, mx) in zones.items():
        d = root / name
        d.mkdir(parents=True)
        (d / "name").write_text(f"package-{name[-1]}\n")
        (d / "energy_uj").write_text(f"{e}\n")
        (d / "max_energy_range_uj").write_text(f"{mx}\n")
        sub = root / f"{name}:0"
        sub.mkdir()
        (sub / "energy_uj").write_text("999999999\n")
        (sub / "max_energy_range_uj").write_text("1000000000\n")
    return root


def test_rapl_sums_packages_and_undoes_wraparound(tmp_path):
    mx = 262_143_328_850
    root = make_powercap(tmp_path, {"intel-rapl:0": (mx - 2_000_000, mx), "intel-rapl:1": (5_000_000, mx)})
    meter = RaplMeter(root)
    assert [z.name for z in meter.zones] == ["package-0", "package-1"]
    meter.begin()
    (root / "intel-rapl:0" / "energy_uj").write_text("3000000\n")  # wrapped: 2 J before + 3 J after
    (root / "intel-rapl:1" / "energy_uj").write_text("9000000\n")  # 4 J
    w = meter.end()
    assert w.energy_j == pytest.approx(2.0 + 3.0 + 4.0)
    assert delta_uj(10, 4, 100) == 94 and delta_uj(4, 10, 100) == 6


def test_rapl_unreadable_says_why(tmp_path, monkeypatch):
    root = make_powercap(tmp_path, {"intel-rapl:0": (1, 100)})
    real = Path.read_text

    def deny(self, *a, **k):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", deny)
    with pytest.raises(UnsupportedError, match="root-only since Linux 5.10"):
        find_zones(root)


def test_rapl_missing(tmp_path):
    with pytest.raises(UnsupportedError, match="does not exist"):
        RaplMeter(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnsupportedError, match="no RAPL package zones"):
        RaplMeter(tmp_path / "empty")


# ----- combined ----------------------------------------------------------------------------------------
class ConstMeter(EnergyMeter):
    def __init__(self, name: str, j: float, log: list[str]) -> None:
        self.name, self.j, self.log = name, j, log

    def begin(self) -> None:
        self.log.append(f"begin {self.name}")

    def end(self) -> EnergyWindow:
        self.log.append(f"end {self.name}")
        return EnergyWindow(self.j, 1.0, 1, {f"{self.name}_x": 1.0})


def test_combined_meter_nests_windows_and_sums():
    log: list[str] = []
    m = CombinedMeter([ConstMeter("gpu", 3.0, log), ConstMeter("cpu", 2.0, log)])
    m.begin()
    w = m.end()
    assert log == ["begin gpu", "begin cpu", "end cpu", "end gpu"]
    assert w.energy_j == 5.0 and w.details["gpu_energy_j"] == 3.0 and w.details["cpu_x"] == 1.0
