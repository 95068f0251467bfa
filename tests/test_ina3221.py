"""INA3221 energy: rail discovery (hwmon and iio) and integration against an analytic integral."""

import time

import pytest

from polythrottle.clocks.sysfs import SysfsIO
from polythrottle.energy.ina3221 import INA3221Meter, board_rails, find_rails
from polythrottle.energy.sampling import PowerSampler
from polythrottle.errors import DeviceError, UnsupportedError
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


# ----- integration against an analytic integral (rails driven by fj.RailWriter) ----------------------
@pytest.fixture
def orin_live(tmp_path):
    fj.build(tmp_path, "agx-orin-jp5")
    hwmon = next(tmp_path.glob("sys/devices/platform/bus@0/*/i2c-1/1-0040/hwmon/hwmon*"))
    writer = fj.RailWriter(hwmon)
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
        truth = fj.rail_energy_j(t0, t1)
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
    assert w.energy_j == pytest.approx(fj.rail_energy_j(t0, t1), rel=0.03)


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
