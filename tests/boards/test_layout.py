"""A board's layout: its profile turned into clock and power paths; the board read from the device tree."""

from __future__ import annotations

import pytest

from polythrottle.boards.layout import (
    detect_layout,
    find_gpu_devfreq,
    layout_from_profile,
    profile_layout,
    read_model,
    read_serial,
)
from polythrottle.boards.profiles import list_profiles, load_profile
from polythrottle.clocks.sysfs import SysfsIO
from polythrottle.errors import DeviceNotFoundError, ProfileError
from tests import fake_jetson


def test_orin_layout_from_its_profile():
    layout = layout_from_profile(load_profile("jetson-agx-orin"))
    assert layout.profile == "jetson-agx-orin" and layout.gpu_unit == "Hz"
    assert layout.gpu_dirs[0] == "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b"
    assert set(layout.gpu_files) == {"available", "min", "max", "current"}  # governor, railgate are not clock files
    assert layout.gpu_steps_mhz[-1] == 1300.5 and layout.emc_steps_mhz == (204.0, 665.6, 2133.0, 3199.0)
    (emc,) = layout.emc
    assert emc.rate_path == "/sys/kernel/debug/bpmp/debug/clk/emc/rate" and emc.lock_first
    assert emc.lock_path.endswith("/mrq_rate_locked") and "/sys/kernel/nvpmodel_emc_cap/emc_iso_cap" in emc.cap_paths
    assert layout.cpu_root == "/sys/devices/system/cpu"
    assert layout.board_rails == ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0")


def test_nano_emc_through_the_clock_override():
    (emc,) = profile_layout("jetson-nano").emc
    assert emc.rate_path == "/sys/kernel/debug/clk/override.emc/clk_update_rate"
    assert emc.lock_path == "/sys/kernel/debug/clk/override.emc/clk_state" and not emc.lock_first
    assert emc.cur_rate_path == "/sys/kernel/debug/clk/emc/clk_rate"


@pytest.mark.parametrize("name", list_profiles())
def test_every_profile_gives_a_layout(name):
    layout = profile_layout(name)
    assert layout.profile == name and layout.gpu_dirs and layout.emc and layout.board_rails


@pytest.mark.parametrize("key", ["agx-orin-jp6", "nano"])
def test_detect_layout_reads_the_board(tmp_path, key):
    board = fake_jetson.build(tmp_path, key)
    io = SysfsIO(tmp_path)
    assert read_model(io) == board.model
    layout, model = detect_layout(io)
    assert layout.profile == board.profile and model == board.model
    assert find_gpu_devfreq(io) == board.gpu_dir
    assert read_serial(io) is None
    (tmp_path / "proc/device-tree/serial-number").write_text("1421020012345\x00")
    assert read_serial(io) == "1421020012345"


def test_forced_profile_and_no_board(tmp_path):
    fake_jetson.build(tmp_path, "nano")
    layout, model = detect_layout(SysfsIO(tmp_path), forced="jetson-tx2")
    assert layout.profile == "jetson-tx2" and model == "NVIDIA Jetson Nano Developer Kit"
    with pytest.raises(ProfileError, match="unknown profile 'jetson-foo'"):
        detect_layout(SysfsIO(tmp_path), forced="jetson-foo")
    (tmp_path / "proc/device-tree/model").write_text("Raspberry Pi 4 Model B\x00")
    with pytest.raises(DeviceNotFoundError, match="matches no profile; force one with jetson:PROFILE"):
        detect_layout(SysfsIO(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    io = SysfsIO(empty)
    assert read_model(io) is None and find_gpu_devfreq(io) is None
    with pytest.raises(DeviceNotFoundError, match="no Jetson found: /proc/device-tree/model does not exist"):
        detect_layout(io)
