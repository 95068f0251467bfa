"""INA3221 energy: rail discovery (hwmon and iio) and integration against an analytic integral."""

import time

import pytest

from polythrottle.clocks.sysfs import SysfsIO
from polythrottle.energy.ina3221 import INA3221Meter, RailPlace, board_rails, find_rails, placed_rail
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


# ----- where the board profile's power section puts the rails -------------------------------------------
def _places(profile: str):
    from polythrottle.boards.layout import profile_layout

    layout = profile_layout(profile)
    return layout.board_rails, layout.rail_places


@pytest.mark.parametrize("board", sorted(fj.BOARDS))
def test_every_board_rail_is_where_its_profile_puts_it(tmp_path, board):
    b = fj.build(tmp_path, board)
    io = SysfsIO(tmp_path)
    rails, places = _places(b.profile)
    placed = [placed_rail(io, name, places) for name in rails]
    assert all(r is not None for r in placed), (board, rails)
    driver = "ina3221" if b.power == "hwmon" else "ina3221x"
    for r in placed:
        assert (r.power_path or r.volt_path).startswith(f"/sys/bus/i2c/drivers/{driver}/")  # the profile's glob
    by_label = find_rails(io)
    assert [r.read_w(io) for r in placed] == [by_label[n].read_w(io) for n in rails]


def test_the_profile_address_wins_over_another_ina3221_with_the_same_label(tmp_path):
    """A second monitor (a carrier board's, at 0x45 on another bus) labels a channel VDD_IN too: the search
    by label took whichever it listed last; the profile names the module's sensor (0x40)."""
    fj.build(tmp_path, "xavier-nx")
    decoy = tmp_path / "sys/devices/9-0045"
    (decoy / "hwmon/hwmon9").mkdir(parents=True)
    (decoy / "name").write_text("ina3221\n")
    for name, text in {"name": "ina3221", "in1_label": "VDD_IN", "in1_input": "19000", "curr1_input": "5000"}.items():
        (decoy / "hwmon/hwmon9" / name).write_text(text + "\n")
    (tmp_path / "sys/bus/i2c/devices/9-0045").symlink_to("../../../devices/9-0045")
    io = SysfsIO(tmp_path)
    assert board_rails(io, ["VDD_IN"])[0].read_w(io) == pytest.approx(95.0)  # the decoy
    rails, places = _places("jetson-xavier-nx")
    (rail,) = board_rails(io, rails, places=places)
    assert rail.volt_path == "/sys/bus/i2c/drivers/ina3221/7-0040/hwmon/hwmon1/in1_input"
    assert rail.read_w(io) == pytest.approx(1.0)  # 5000 mV x 200 mA on the module's channel 1
    meter = INA3221Meter(rails, io=io, places=places)
    assert meter.rails == [rail]
    meter.close()


def test_a_rail_not_where_the_profile_says_is_found_by_label(tmp_path):
    fj.build(tmp_path, "xavier-nx")
    io = SysfsIO(tmp_path)
    wrong = [RailPlace("VDD_IN", "/sys/bus/i2c/drivers/ina3221/*-0040/hwmon/hwmon*", "in2_label", "in2_input",
                       "curr2_input"),  # channel 2 is VDD_CPU_GPU_CV: its label says so, it is not read as VDD_IN
             RailPlace("VDD_IN", "/sys/bus/i2c/drivers/ina3999/*-0040/hwmon/hwmon*", "in1_label", "in1_input",
                       "curr1_input")]  # no such driver here
    assert placed_rail(io, "VDD_IN", wrong) is None
    (rail,) = board_rails(io, ["VDD_IN"], places=wrong)
    assert rail == find_rails(io)["VDD_IN"] and rail.read_w(io) == pytest.approx(1.0)
    with pytest.raises(UnsupportedError, match="VDD_NOPE not found"):
        board_rails(io, ["VDD_IN", "VDD_NOPE"], places=_places("jetson-xavier-nx")[1])


def test_the_layout_numbers_channels_as_each_interface_does():
    _, places = _places("jetson-agx-xavier")
    cv = [p for p in places if p.name == "CV"]  # 0x41, channel 1
    assert cv == [
        RailPlace("CV", "/sys/bus/i2c/drivers/ina3221x/*-0041/iio:device*", "rail_name_0", "in_voltage0_input",
                  "in_current0_input", "in_power0_input"),
        RailPlace("CV", "/sys/bus/i2c/drivers/ina3221/*-0041/hwmon/hwmon*", "in1_label", "in1_input", "curr1_input"),
    ]


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
