"""Writes go only to clock files: a board profile naming any other /sys file is refused when it is loaded,
and the write guard refuses it again at run time (also behind a link, and for the files profiles name to read)."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
import yaml

from polythrottle.boards.profiles import PROFILE_DIR, list_profiles, load_profile
from polythrottle.clocks.sysfs import SysfsIO
from polythrottle.errors import DeviceError, ProfileError
from tests import fake_jetson as fj


def _profile(tmp_path: Path, name: str, mutate) -> Path:
    data = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())
    data["name"] = "bad"
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _set_variant(clock: str, path: str):
    return lambda d: d["control"][clock]["variants"][0].__setitem__("path", path)


def _set_path(role: str, path: str):
    return lambda d: d["control"]["emc"]["paths"].__setitem__(role, path)


@pytest.mark.parametrize("board, mutate, field, path", [
    ("jetson-agx-orin", _set_variant("gpu", "/sys/power"), "control.gpu.variants[0].path", "/sys/power"),
    ("jetson-agx-orin", _set_variant("gpu", "/sys/class/gpio/gpio12"), "control.gpu.variants[0].path",
     "/sys/class/gpio/gpio12"),
    ("jetson-agx-orin", _set_variant("gpu", "/sys/devices/platform/gpio-keys"), "control.gpu.variants[0].path",
     "/sys/devices/platform/gpio-keys"),
    ("jetson-agx-orin", _set_variant("emc", "/sys/kernel/debug/bpmp/debug/clk/vdd_cpu"),
     "control.emc.variants[0].path", "/sys/kernel/debug/bpmp/debug/clk/vdd_cpu"),
    ("jetson-agx-orin", _set_variant("cpu", "/sys/class/thermal"), "control.cpu.variants[0].path",
     "/sys/class/thermal"),
    ("jetson-nano", _set_path("override_state", "/sys/power/state"), "control.emc.paths.override_state",
     "/sys/power/state"),
    ("jetson-nano", _set_path("override_rate", "/sys/kernel/debug/tegra_bwmgr/emc_max_rate"),
     "control.emc.paths.override_rate", "/sys/kernel/debug/tegra_bwmgr/emc_max_rate"),
])
def test_a_profile_naming_a_non_clock_file_to_write_is_refused_at_load(tmp_path, board, mutate, field, path):
    bad = _profile(tmp_path, board, mutate)
    with pytest.raises(ProfileError) as e:
        load_profile(bad)
    msg = str(e.value)
    assert msg.startswith(f"profile {bad}: field {field}: {path!r} is not ") and "\n" not in msg, msg


def test_every_shipped_profile_names_only_clock_files_to_write():
    for name in list_profiles():
        load_profile(name)  # raises ProfileError if a written path lies outside CLOCK_SUBTREES


@pytest.fixture
def orin(tmp_path):
    root = tmp_path / "root"
    return root, fj.build(root, "agx-orin-jp5")


@pytest.mark.parametrize("path", [
    "/sys/power/state", "/sys/class/gpio/export", "/sys/kernel/nvpmodel_emc_cap/emc_iso_cap",
    "/sys/class/thermal/thermal_zone0/trip_point_0_temp", "/sys/devices/17000000.ga10b/railgate_enable",
    "/sys/kernel/debug/bpmp/debug/clk/gpc0/rate", "/sys/devices/system/cpu/cpu1/online",
])
def test_the_guard_refuses_a_non_clock_file(orin, path):
    root, _ = orin
    fj._write(root, path, "orig\n")  # the file exists and is writable: only the guard stands in the way
    before = fj.snapshot(root)
    with pytest.raises(DeviceError, match="refusing to write .*not a clock file"):
        SysfsIO(root).write(path, "1")
    assert fj.snapshot(root) == before


def test_the_guard_refuses_a_link_from_a_clock_directory_to_another_file(orin):
    root, board = orin
    fj._write(root, "/sys/power/state", "freeze\n")
    fj._link(root, f"{board.gpu_dir}/state", "/sys/power/state")
    with pytest.raises(DeviceError, match="leads to .*/sys/power/state.*not a clock file"):
        SysfsIO(root).write(f"{board.gpu_dir}/state", "mem")
    assert fj.read(root, "/sys/power/state") == "freeze"


@pytest.mark.parametrize("name", ["jetson-agx-orin", "jetson-nano", "jetson-tx2"])
def test_paths_profiles_name_for_reading_are_never_writable(tmp_path, name):
    """Power monitors (the INA3221 globs), the nvpmodel EMC cap, the current EMC rate and the bwmgr limits
    are read; the guard refuses each of them before a write."""
    profile = load_profile(name)
    io = SysfsIO(tmp_path)
    read_only = [p for c in profile.control.values() for role, p in c.paths.items() if role in ("emc_cap", "current")]
    read_only += [v.path for c in profile.control.values() if c.interface == "tegra-bwmgr" for v in c.variants]
    for iface in profile.power.interfaces:
        for rail in profile.power.rails:
            d = iface.sensor_glob(rail).replace("*", "1")  # e.g. .../ina3221/1-0040/hwmon/hwmon1
            read_only += [f"{d}/{iface.file(role, rail)}" for role in iface.files]
    assert read_only
    for path in read_only:
        assert not glob.has_magic(path), path
        with pytest.raises(DeviceError, match="refusing to write"):
            io.check_write_target(path)


def test_board_clock_files_are_still_writable(orin):
    root, board = orin
    io = SysfsIO(root)
    for path in (f"{board.gpu_dir}/min_freq", f"/sys/class/devfreq/{board.gpu_dir.rsplit('/', 1)[1]}/max_freq",
                 f"{board.policy_dir(0)}/scaling_min_freq", "/sys/devices/system/cpu/cpu4/cpufreq/scaling_max_freq",
                 "/sys/kernel/debug/bpmp/debug/clk/emc/rate", "/sys/kernel/debug/bpmp/debug/clk/emc/mrq_rate_locked"):
        io.check_write_target(path)
