"""INA3221 energy: rail discovery (hwmon and iio) and integration against an analytic integral."""

import math
import os
import threading
import time

import pytest

from polythrottle.energy.ina3221 import INA3221Meter, board_rails, find_rails
from polythrottle.energy.sampling import PowerSampler
from polythrottle.errors import DeviceError, UnsupportedError
from polythrottle.sysfs import SysfsIO
from tests import fake_jetson as fj


def test_hwmon_rails_skip_nc_and_shunt_sum(tmp_path):
    fj.build(tmp_path, "agx-orin-jp5")
    rails = find_rails(SysfsIO(tmp_path))
    assert sorted(rails) == ["VDDQ_VDD2_1V8AO", "VDD_CPU_CV", "VDD_GPU_SOC", "VIN_SYS_5V0"]
    assert rails["VDD_CPU_CV"].volt_path.endswith("/hwmon/hwmon1/in2_input")
    # 5000 mV x 400 mA = 2 W on channel 2 of the fake tree
    assert rails["VDD_CPU_CV"].read_w(SysfsIO(tmp_path)) == pytest.approx(2.0)


@pytest.mark.parametrize("board,total,watts", [("tx2", "VDD_IN", 1.0), ("nano", "POM_5V_IN", 1.0)])
def test_iio_rails_use_power_files(tmp_path, board, total, watts):
    fj.build(tmp_path, board)
    io = SysfsIO(tmp_path)
    rails = board_rails(io)  # no profile: the input rail is board power
    assert [r.name for r in rails] == [total]
    assert rails[0].power_path and rails[0].read_w(io) == pytest.approx(watts)


def test_missing_sensor_and_rail_are_clear(tmp_path):
    (tmp_path / "sys").mkdir()
    with pytest.raises(UnsupportedError, match="no INA3221 found"):
        board_rails(SysfsIO(tmp_path))
    fj.build(tmp_path / "nx", "xavier-nx")
    with pytest.raises(UnsupportedError, match="VDD_NOPE not found; found: .*VDD_IN"):
        board_rails(SysfsIO(tmp_path / "nx"), ["VDD_IN", "VDD_NOPE"])


# ----- integration against an analytic integral ------------------------------------------------------
RAILS = {  # channel -> (base mA, amplitude mA, period s, phase); every rail at 5000 mV
    1: (1200.0, 500.0, 0.37, 0.0),
    2: (800.0, 300.0, 0.23, 1.0),
    3: (400.0, 150.0, 0.91, 2.0),
}
VOLT_V = 5.0


def current_ma(ch: int, t: float) -> float:
    base, amp, period, phase = RAILS[ch]
    return base + amp * math.sin(2 * math.pi * t / period + phase)


def energy_j(t0: float, t1: float) -> float:
    """Analytic integral of the summed rail power over [t0, t1]."""
    total = 0.0
    for base, amp, period, phase in RAILS.values():
        w = 2 * math.pi / period
        integral_ma_s = base * (t1 - t0) - amp / w * (math.cos(w * t1 + phase) - math.cos(w * t0 + phase))
        total += VOLT_V * integral_ma_s / 1000.0
    return total


class RailWriter(threading.Thread):
    """Writes each rail's current as a function of time.monotonic() every ~1 ms (atomic renames);
    every ``garbage_every``-th update of rail 2 writes garbage, which the sampler must skip."""

    def __init__(self, hwmon_dir, garbage_every=40):
        super().__init__(daemon=True)
        self.dir, self.garbage_every = hwmon_dir, garbage_every
        self.stop = threading.Event()
        self.updates = 0

    def put(self, name, text):
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.dir / name)

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            self.updates += 1
            for ch in RAILS:
                garbage = ch == 2 and self.garbage_every and self.updates % self.garbage_every == 0
                self.put(f"curr{ch}_input", "oops\n" if garbage else f"{current_ma(ch, t):.3f}".split(".")[0] + "\n")
            time.sleep(0.001)


@pytest.fixture
def orin_live(tmp_path):
    fj.build(tmp_path, "agx-orin-jp5")
    hwmon = next(tmp_path.glob("sys/devices/platform/bus@0/*/i2c-1/1-0040/hwmon/hwmon*"))
    writer = RailWriter(hwmon)
    writer.start()
    time.sleep(0.05)
    yield tmp_path, writer
    writer.stop.set()
    writer.join()


def test_energy_matches_analytic_integral_within_2pct(orin_live):
    root, writer = orin_live
    meter = INA3221Meter(["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"], io=SysfsIO(root), period_s=0.02)
    errors = []
    for window_s in (0.6, 1.5):
        meter.begin()
        time.sleep(window_s)
        w = meter.end()
        t0, t1 = meter.last_span
        truth = energy_j(t0, t1)
        errors.append(abs(w.energy_j - truth) / truth)
        stats = meter.last_stats
        assert w.duration_s == pytest.approx(t1 - t0)
        assert stats.samples >= 0.5 * window_s / 0.02  # the sampler kept its ~20 ms period
        assert stats.overhead < 0.5
    meter.close()
    assert max(errors) < 0.02, errors
    assert writer.updates > 100


def test_failed_reads_are_skipped_and_counted(orin_live):
    root, writer = orin_live
    writer.garbage_every = 2  # half of rail 2's values are garbage
    meter = INA3221Meter(["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"], io=SysfsIO(root), period_s=0.01)
    meter.begin()
    time.sleep(0.8)
    w = meter.end()
    t0, t1 = meter.last_span
    assert meter.last_stats.failures > 0 and meter.last_stats.samples > 0
    assert w.energy_j == pytest.approx(energy_j(t0, t1), rel=0.03)


def test_every_read_failing_raises():
    def broken() -> float:
        raise OSError("i2c timeout")

    s = PowerSampler(broken, period_s=0.005)
    s.start()
    time.sleep(0.03)
    s.stop()
    with pytest.raises(DeviceError, match="every power read failed.*i2c timeout"):
        s.integrate(0.0, time.monotonic())


def test_injected_clock_gives_exact_trapezoid():
    t = [0.0]

    def clock() -> float:
        return t[0]

    def read() -> float:  # power ramps 1 W per second of the fake clock; each read takes 10 ms
        t[0] += 0.005
        p = t[0]
        t[0] += 0.005
        return p

    s = PowerSampler(read, period_s=1e9, clock=clock)  # only the explicit samples below
    s.start()
    for _ in range(99):
        s.sample()
    s.stop()
    t_end = t[0]
    # samples at t = 0.005, 0.015, ... ; the integral of p(t) = t over [0.005, t_end - 0.005]
    a, b = 0.005, t_end - 0.005
    assert s.integrate(a, b) == pytest.approx((b * b - a * a) / 2, rel=1e-9)
