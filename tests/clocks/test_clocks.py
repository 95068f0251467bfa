"""Clock controls on fake trees: write order the kernel accepts, validation, policies, EMC protocols."""

import pytest

from polythrottle.clocks import CpufreqControl, DevfreqControl, EmcControl, EmcProtocol, pair_writes
from polythrottle.clocks.base import Write
from polythrottle.clocks.sysfs import KernelRefusedError, SysfsIO
from polythrottle.errors import BadInputError, DeviceError, InvalidValueError, PermissionDeniedError
from tests import fake_jetson as fj


@pytest.fixture
def orin(tmp_path):
    root = tmp_path / "root"
    board = fj.build(root, "agx-orin-jp5")
    return root, board, fj.FakeKernelIO(root)


def test_pair_writes_order():
    # raising above the current max: max first
    assert pair_writes("lo", "hi", 900, 900, 100, 500) == [Write("hi", "900"), Write("lo", "900")]
    # lowering below the current min: min first
    assert pair_writes("lo", "hi", 100, 100, 500, 900) == [Write("lo", "100"), Write("hi", "100")]
    # inside the range: min first is always safe
    assert pair_writes("lo", "hi", 300, 600, 100, 900) == [Write("lo", "300"), Write("hi", "600")]
    # unchanged values are not written
    assert pair_writes("lo", "hi", 100, 600, 100, 900) == [Write("hi", "600")]
    assert pair_writes("lo", "hi", 100, 900, 100, 900) == []


def test_kernel_double_refuses_min_above_max(orin):
    root, board, io = orin
    with pytest.raises(KernelRefusedError, match="refused"):
        io.write(f"{board.gpu_dir}/min_freq", board.gpu_hz[-1] + 1)
    with pytest.raises(KernelRefusedError):
        io.write(f"{board.gpu_dir}/max_freq", board.gpu_hz[0] - 1)
    with pytest.raises(KernelRefusedError):
        io.write(f"{board.policy_dir(0)}/scaling_min_freq", "garbage")
    assert fj.write_log(root) == []


def test_kernel_double_refuses_writes_as_non_root(tmp_path):
    root = tmp_path / "root"
    board = fj.build(root, "tx2", nonroot=True)
    with pytest.raises(PermissionDeniedError, match="needs root"):
        fj.FakeKernelIO(root).write(f"{board.gpu_dir}/max_freq", board.gpu_hz[0])


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0,
                    reason="root ignores file modes; the kernel double covers this case")
def test_plain_files_refuse_writes_as_non_root(tmp_path):
    root = tmp_path / "root"
    board = fj.build(root, "tx2", nonroot=True)
    with pytest.raises(PermissionDeniedError, match="needs root"):
        SysfsIO(root).write(f"{board.gpu_dir}/max_freq", board.gpu_hz[0])


def test_devfreq_lock_raise_and_lower_in_kernel_order(orin):
    root, board, io = orin
    gpu = DevfreqControl(io, board.gpu_dir)
    assert gpu.steps_mhz()[0] == 114.75 and gpu.steps_mhz()[-1] == 1300.5
    # the boot state is min=114.75, max=1300.5: lock at 624.75 (min first), then raise to the top
    for mhz in (624.75, 1300.5, 114.75, 624.75):
        cur = gpu.read_state()
        for w in gpu.writes(gpu.target({"gpu_mhz": mhz}, cur), cur):
            io.write(w.path, w.value)  # the double raises if the order were wrong
        assert gpu.current_mhz()["gpu_mhz"] == mhz
    assert fj.read(root, f"{board.gpu_dir}/cur_freq") == "624750000"


def test_devfreq_validation(orin):
    root, board, io = orin
    gpu = DevfreqControl(io, board.gpu_dir)
    cur = gpu.read_state()
    with pytest.raises(InvalidValueError, match="not an available step.*114.75"):
        gpu.target({"gpu_mhz": 625}, cur)
    with pytest.raises(InvalidValueError):
        gpu.target({"gpu_mhz": "fast"}, cur)
    with pytest.raises(InvalidValueError, match="above"):
        gpu.target({"gpu_min_mhz": 1300.5, "gpu_max_mhz": 114.75}, cur)
    with pytest.raises(BadInputError, match="not both"):
        gpu.target({"gpu_mhz": 114.75, "gpu_min_mhz": 114.75}, cur)
    assert gpu.target({"gpu_max_mhz": "522.75"}, cur) == {f"{board.gpu_dir}/max_freq": "522750000"}


def test_cpufreq_policies_follow_links_and_skip_offline(tmp_path):
    root = tmp_path / "root"
    board = fj.build(root, "xavier-nx")  # cpus 4-5 offline: policy4 not written
    cpu = CpufreqControl(fj.FakeKernelIO(root))
    assert [p.directory for p in cpu.policies] == board.online_policies
    assert [p.cpus for p in cpu.policies] == [(0, 1), (2, 3)]
    root2 = tmp_path / "tx2"
    fj.build(root2, "tx2")
    cpu2 = CpufreqControl(fj.FakeKernelIO(root2))
    assert [p.cpus for p in cpu2.policies] == [(0, 3, 4, 5), (1, 2)]  # Denver cluster is policy1
    assert cpu2.steps_mhz()[0] == 345.6


def list_cpu_steps(root, board, steps_khz) -> None:
    """Every online policy's ``scaling_available_frequencies`` lists ``steps_khz`` (the hardware limits stay)."""
    for pd in board.online_policies:
        (root / pd.lstrip("/") / "scaling_available_frequencies").write_text(" ".join(map(str, steps_khz)) + "\n")


def test_cpufreq_steps_outside_the_hardware_limits_are_not_offered(orin):
    """``scaling_available_frequencies`` is the driver's table; a step outside the policy's hardware limits
    (``cpuinfo_min_freq``/``cpuinfo_max_freq``: a boost step with boost off, an entry above the chip's bin) is
    neither offered nor accepted: cpufreq would hold the limit at the hardware's, not at the step asked for."""
    root, board, io = orin
    list_cpu_steps(root, board, [102000, *board.cpu_khz, 2304000])
    cpu = CpufreqControl(io)
    assert cpu.steps_mhz()[0] == 115.2 and cpu.steps_mhz()[-1] == 2201.6
    for value in (2304, 102):
        with pytest.raises(InvalidValueError, match="not an available step"):
            cpu.target({"cpu_mhz": value}, cpu.read_state())


def test_cpufreq_without_a_step_within_the_hardware_limits_is_unavailable(orin):
    root, board, io = orin
    list_cpu_steps(root, board, [2304000, 2400000])
    with pytest.raises(DeviceError, match="cpuinfo_max_freq"):
        CpufreqControl(io)


def test_emc_steps_below_the_firmware_minimum_are_not_offered(tmp_path):
    """The profile's EMC steps are not trusted below the clock's ``min_rate`` (the BPMP firmware holds the rate
    within its range: a lower step would run at min_rate while a tune recorded the step)."""
    root = tmp_path / "root"
    fj.build(root, "tx2")  # min_rate 204 MHz; the profile lists 40.8, 68 and 102 below it
    d = "/sys/kernel/debug/bpmp/debug/clk/emc"
    emc = EmcControl(fj.FakeKernelIO(root), EmcProtocol(f"{d}/rate", f"{d}/mrq_rate_locked", cap_paths=(f"{d}/max_rate",),
                                                        floor_paths=(f"{d}/min_rate",)), [40.8, 68, 102, 204, 1866])
    assert emc.steps_mhz() == (204, 1866)
    with pytest.raises(InvalidValueError, match="not an available step"):
        emc.target({"emc_mhz": 40.8}, emc.read_state())


def test_emc_bpmp_locks_before_rate_and_unlocks_after(orin):
    root, board, io = orin
    d = "/sys/kernel/debug/bpmp/debug/clk/emc"
    emc = EmcControl(io, EmcProtocol(f"{d}/rate", f"{d}/mrq_rate_locked", cap_paths=(f"{d}/max_rate",)),
                     [204, 665.6, 2133, 3199])
    cur = emc.read_state()
    assert emc.writes(emc.target({"emc_mhz": 665.6}, cur), cur) == [
        Write(f"{d}/mrq_rate_locked", "1"), Write(f"{d}/rate", "665600000")]
    locked = {f"{d}/rate": "665600000", f"{d}/mrq_rate_locked": "1"}
    assert emc.writes(cur, locked) == [Write(f"{d}/rate", "3199000000"), Write(f"{d}/mrq_rate_locked", "0")]
    with pytest.raises(InvalidValueError, match="204, 665.6, 2133, 3199"):
        emc.target({"emc_mhz": 1600}, cur)


def test_emc_cap_hides_steps_above_firmware_max(tmp_path):
    root = tmp_path / "root"
    fj.build(root, "xavier-nx")  # max_rate 1866 MHz
    d = "/sys/kernel/debug/bpmp/debug/clk/emc"
    emc = EmcControl(fj.FakeKernelIO(root), EmcProtocol(f"{d}/rate", f"{d}/mrq_rate_locked",
                                                       cap_paths=(f"{d}/max_rate", "/nonexistent")),
                     [204, 1866, 2133, 3199])
    assert emc.steps_mhz() == (204, 1866)


def test_emc_tegra210_override_order_and_no_zero_rate(tmp_path):
    root = tmp_path / "root"
    fj.build(root, "nano")
    d = "/sys/kernel/debug/clk/override.emc"
    proto = EmcProtocol(f"{d}/clk_update_rate", f"{d}/clk_state", lock_first=False)
    emc = EmcControl(fj.FakeKernelIO(root), proto, [204, 1600])
    cur = emc.read_state()
    assert emc.writes(emc.target({"emc_mhz": 204}, cur), cur) == [
        Write(f"{d}/clk_update_rate", "204000000"), Write(f"{d}/clk_state", "1")]
    # restoring an override that was never set (rate 0): unlock only, never ask for rate 0
    applied = {f"{d}/clk_update_rate": "204000000", f"{d}/clk_state": "1"}
    never_set = {f"{d}/clk_update_rate": "0", f"{d}/clk_state": "0"}
    assert emc.writes(never_set, applied) == [Write(f"{d}/clk_state", "0")]


def test_fail_rule_raises_given_errno(orin):
    root, board, io = orin
    fj.set_rules(root, fail={f"{board.gpu_dir}/max_freq": "EIO"})
    with pytest.raises(DeviceError, match="Input/output error"):
        io.write(f"{board.gpu_dir}/max_freq", board.gpu_hz[-1])


# ----- writes stay inside the board's kernel files ----------------------------------------------------
@pytest.mark.parametrize("io_class", [SysfsIO, fj.FakeKernelIO])
def test_a_write_never_follows_a_link_out_of_the_root(tmp_path, io_class):
    """A dry-run tree whose GPU directory (or one file) is a link to somewhere else (e.g. the real board's
    /sys, as a hand-made copy may hold): the write is refused, the file behind the link untouched."""
    root = tmp_path / "root"
    board = fj.build(root, "agx-orin-jp5")
    outside = tmp_path / "real-board-gpu"
    gpu_dir = root / board.gpu_dir.lstrip("/")
    gpu_dir.rename(outside)
    gpu_dir.symlink_to(outside)  # absolute: it leaves the root
    secret = tmp_path / "secret"
    secret.write_text("114750000\n")
    cpu_min = root / board.policy_dir(0).lstrip("/") / "scaling_min_freq"
    cpu_min.unlink()
    cpu_min.symlink_to(secret)
    io = io_class(root)
    with pytest.raises(DeviceError, match="outside"):
        io.write(f"{board.gpu_dir}/min_freq", "624750000")
    with pytest.raises(DeviceError, match="outside"):
        io.write(f"{board.policy_dir(0)}/scaling_min_freq", "1036800")
    assert (outside / "min_freq").read_text() == "114750000\n"
    assert secret.read_text() == "114750000\n"


@pytest.mark.parametrize("path", ["/sys/../victim/min_freq", "/sys/devices/x/../../../victim/min_freq",
                                  "/proc/device-tree/model", "/etc/passwd", "sys/devices/min_freq", "/sys//x"])
def test_a_write_outside_sys_or_not_a_plain_path_is_refused(tmp_path, path):
    root = tmp_path / "root"
    fj.build(root, "agx-orin-jp5")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "min_freq").write_text("114750000\n")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0\n")
    before = fj.snapshot(root)
    with pytest.raises(DeviceError, match="refusing to write"):
        SysfsIO(root).write(path, "624750000")
    assert (victim / "min_freq").read_text() == "114750000\n"
    assert fj.snapshot(root) == before


@pytest.mark.parametrize("as_root", [True, False])
def test_a_write_refused_to_root_does_not_just_say_run_as_root(orin, monkeypatch, as_root):
    """EACCES/EPERM for root is the kernel refusing the file itself (read-only attribute, lockdown, read-only
    mount): the line says so instead of only "run as root"."""
    root, board, io = orin
    monkeypatch.setattr("polythrottle.clocks.sysfs.is_root_user", lambda: as_root)
    fj.set_rules(root, fail={f"{board.gpu_dir}/max_freq": "EPERM"})
    with pytest.raises(PermissionDeniedError, match="needs root") as e:
        io.write(f"{board.gpu_dir}/max_freq", board.gpu_hz[-1])
    assert ("already root" in str(e.value)) == as_root
