"""The jetson device in-process on fake trees: sessions, kept settings, crash leftovers, reporting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from polythrottle.clocks.sysfs import KernelRefusedError, WritesDisabledError
from polythrottle.devices.jetson import open_device
from polythrottle.devices.originals import OriginalsStore
from polythrottle.devices.registry import DeviceOptions
from polythrottle.errors import BadInputError, DeviceError, InvalidValueError, UnsupportedError
from tests import fake_jetson as fj


@pytest.fixture
def orin(tmp_path, monkeypatch):
    root = tmp_path / "root"
    board = fj.build(root, "agx-orin-jp5")
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(root))
    monkeypatch.setattr("polythrottle.clocks.sysfs.IO_CLASS", fj.FakeKernelIO)
    opts = DeviceOptions(state_dir=tmp_path / "state")
    return root, board, opts


def gpu(root, board) -> tuple[str, str]:
    return fj.read(root, f"{board.gpu_dir}/min_freq"), fj.read(root, f"{board.gpu_dir}/max_freq")


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_session_restores_what_it_changed(orin):
    root, board, opts = orin
    before = gpu(root, board)
    with open_device("", opts) as dev:
        dev.apply({"gpu_mhz": 420.75, "cpu_mhz": 729.6})
        dev.apply({"gpu_mhz": 1300.5})
        assert gpu(root, board) == ("1300500000", "1300500000")
    assert gpu(root, board) == before
    assert fj.read(root, f"{board.policy_dir(4)}/scaling_max_freq") == "2201600"
    assert OriginalsStore(opts.state_dir).originals(dev.originals_location().device_id) == {}


def test_session_after_a_kept_apply_returns_to_the_applied_state(orin):
    root, board, opts = orin
    first = open_device("", opts)
    first.apply({"gpu_mhz": 624.75})
    first.keep()  # as `polythrottle apply` does
    with open_device("", opts) as dev:  # e.g. a tune
        dev.apply({"gpu_mhz": 114.75, "emc_mhz": 204})
    assert gpu(root, board) == ("624750000", "624750000")  # the kept setting, not the tune's last one
    assert fj.read(root, board.emc_files["lock"]) == "0"
    saved = OriginalsStore(opts.state_dir).load(dev.originals_location().device_id)
    assert saved.originals == {f"{board.gpu_dir}/min_freq": "114750000", f"{board.gpu_dir}/max_freq": "1300500000"}
    assert saved.meta["kept"] is True
    open_device("", opts).restore_saved()
    assert gpu(root, board) == ("114750000", "1300500000")


def test_leftovers_of_a_crashed_session_are_restored_before_a_new_one(orin, capsys):
    root, board, opts = orin
    crashed = open_device("", opts)
    crashed.apply({"gpu_mhz": 114.75, "cpu_mhz": 268.8})  # then the process dies without restoring
    store = OriginalsStore(opts.state_dir)
    device_id = crashed.originals_location().device_id
    store.record(device_id, {}, meta={"pid": dead_pid()})
    with open_device("", opts) as dev:
        dev.apply({"emc_mhz": 665.6})
        assert gpu(root, board) == ("114750000", "1300500000")  # the crash's GPU lock is gone
        assert "did not finish" in capsys.readouterr().err
    assert fj.read(root, f"{board.policy_dir(0)}/scaling_min_freq") == "115200"
    assert fj.read(root, board.emc_files["rate"]) == "3199000000"
    assert store.originals(device_id) == {}


def test_no_clock_control_writes_nothing(orin):
    root, board, opts = orin
    dev = open_device("", DeviceOptions(state_dir=opts.state_dir, no_clock_control=True))
    with pytest.raises(BadInputError, match="no-clock-control"):
        dev.apply({"gpu_mhz": 114.75})
    with pytest.raises(UnsupportedError, match="no-clock-control"):
        dev.space()
    with pytest.raises(BadInputError, match="no-clock-control"):
        dev.restore_saved()
    with pytest.raises(WritesDisabledError):  # the IO itself refuses, whoever asks
        dev.control.io.write(f"{board.gpu_dir}/max_freq", "114750000")
    assert fj.write_log(root) == []
    assert all(not k.available for k in dev.info().knobs)


def test_space_default_and_current(orin):
    root, board, opts = orin
    dev = open_device("", opts)
    space = dev.space()
    assert space.names == ["gpu_mhz", "emc_mhz", "cpu_mhz"]
    assert dev.default_config() == {"gpu_mhz": 1300.5, "emc_mhz": 3199.0, "cpu_mhz": 2201.6}
    assert dev.current()["emc_mhz"] == 3199.0
    dev.apply({"gpu_min_mhz": 420.75})
    assert dev.current()["gpu_min_mhz"] == 420.75 and dev.current()["gpu_max_mhz"] == 1300.5
    dev.close()


def test_unavailable_knobs_say_why(tmp_path, monkeypatch):
    root = tmp_path / "root"
    fj.build(root, "tx2")
    import shutil

    shutil.rmtree(root / "sys/kernel/debug")  # debugfs not mounted
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(root))
    dev = open_device("", DeviceOptions(state_dir=tmp_path / "state"))
    status = {k.name: k for k in dev.info().knobs}
    assert not status["emc_mhz"].available and "debugfs is not mounted" in status["emc_mhz"].reason
    assert status["gpu_mhz"].available
    with pytest.raises(UnsupportedError, match="emc_mhz cannot be set"):
        dev.apply({"emc_mhz": 1600})
    monkeypatch.setattr(dev.control.io, "writable", lambda path: False)  # as a user who is not root
    status = {k.name: k for k in dev.info().knobs}
    assert status["gpu_mhz"].reason.startswith("not root")


def test_an_unknown_knob_on_a_board_without_settable_clocks_names_the_unavailable_ones(tmp_path, monkeypatch):
    # jetson:PROFILE forced where none of its clocks exist: the message ended "this device offers: "
    root = tmp_path / "root"
    (root / "sys").mkdir(parents=True)
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(root))
    dev = open_device("jetson-agx-orin", DeviceOptions(state_dir=tmp_path / "state"))
    with pytest.raises(BadInputError) as e:
        dev.apply({"turbo": 1})
    assert str(e.value) == ("unknown knob 'turbo'; no knob can be set on this board here "
                            "(gpu_mhz, gpu_min_mhz, gpu_max_mhz, emc_mhz, cpu_mhz: see `polythrottle devices`)")


def test_every_profile_gives_a_usable_layout():
    from polythrottle.boards.layout import profile_layout
    from polythrottle.boards.profiles import list_profiles

    names = list_profiles()
    assert {"jetson-agx-orin", "jetson-xavier-nx", "jetson-tx2", "jetson-nano"} <= set(names)
    for name in names:
        layout = profile_layout(name)
        assert layout.gpu_dirs and all(d.startswith("/sys/") for d in layout.gpu_dirs), name
        assert layout.emc and layout.emc_steps_mhz, name
        assert layout.cpu_root == "/sys/devices/system/cpu" and layout.board_rails, name
        for proto in layout.emc:
            assert proto.rate_path.startswith("/sys/kernel/debug/") and proto.lock_path != proto.rate_path


def test_a_clock_file_linked_out_of_the_root_is_refused_before_anything_is_saved(orin):
    """A dry-run tree whose GPU directory links out of it (e.g. to the real board): one error before the first
    write; nothing saved (a saved entry behind such a link could never be restored), nothing written."""
    root, board, opts = orin
    outside = root.parent / "real-board-gpu"
    gpu_dir = root / board.gpu_dir.lstrip("/")
    gpu_dir.rename(outside)
    gpu_dir.symlink_to(outside)
    dev = open_device("", opts)
    with pytest.raises(DeviceError, match="outside"):
        dev.apply({"cpu_mhz": 729.6, "gpu_mhz": 624.75})
    assert (outside / "min_freq").read_text() == "114750000\n"
    assert fj.write_log(root) == []
    assert not list(opts.state_dir.glob("*.json"))
    dev.close()


@pytest.mark.parametrize("knob, value, clamped", [
    ("gpu_mhz", 1300.5, "*/devfreq/*/min_freq"),
    ("cpu_mhz", 2201.6, "*/policy4/scaling_min_freq"),
])
def test_a_value_the_kernel_silently_caps_is_refused_and_rolled_back(orin, knob, value, clamped):
    """The kernel takes a limit above a thermal or nvpmodel cap without an error but holds the cap: the apply
    reads back what it wrote, says which file holds what, and puts back what it had written."""
    root, board, opts = orin
    before = fj.snapshot(root)
    fj.set_rules(root, clamp={clamped: 1032750000 if knob == "gpu_mhz" else 1420800})
    dev = open_device("", opts)
    with pytest.raises(KernelRefusedError, match=r"holds \d+ in /sys/.* after \d+ was written.*rolled back"):
        dev.apply({"emc_mhz": 665.6, knob: value})
    assert {p: v.strip() for p, v in fj.snapshot(root).items() if not p.endswith("cur_freq")} == \
        {p: v.strip() for p, v in before.items() if not p.endswith("cur_freq")}
    assert not list(opts.state_dir.glob("*.json"))
    dev.close()


def test_a_cpu_step_beyond_the_hardware_limits_is_refused_before_any_write(orin):
    """A cpufreq table listing a step above ``cpuinfo_max_freq`` (a boost step with boost off): the step is not
    offered, and asking for it is an invalid value (exit 2) with nothing saved or written; it was offered and
    written, cpufreq held the limit at the hardware's, and the apply failed at the read-back (exit 1)."""
    root, board, opts = orin
    for pd in board.online_policies:
        (root / pd.lstrip("/") / "scaling_available_frequencies").write_text(
            " ".join(map(str, [*board.cpu_khz, 2304000])) + "\n")
    dev = open_device("", opts)
    assert dev.space().knob("cpu_mhz").values[-1] == 2201.6
    with pytest.raises(InvalidValueError, match="not an available step"):
        dev.apply({"gpu_mhz": 624.75, "cpu_mhz": 2304})
    assert fj.write_log(root) == [] and not list(opts.state_dir.glob("*.json"))
    dev.close()


def test_an_emc_step_below_the_firmware_minimum_is_refused_before_any_write(tmp_path, monkeypatch):
    """The TX2 profile lists EMC steps below the clock's ``min_rate`` (204 MHz on this tree): they are not
    offered, and asking for one is an invalid value (exit 2) with nothing saved or written; it was written, the
    firmware held the rate at min_rate and the apply failed at the read-back (exit 1)."""
    root = tmp_path / "root"
    fj.build(root, "tx2")
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(root))
    monkeypatch.setattr("polythrottle.clocks.sysfs.IO_CLASS", fj.FakeKernelIO)
    opts = DeviceOptions(state_dir=tmp_path / "state")
    dev = open_device("", opts)
    assert dev.space().knob("emc_mhz").values[0] == 204
    with pytest.raises(InvalidValueError, match="not an available step"):
        dev.apply({"emc_mhz": 40.8})
    assert fj.write_log(root) == [] and not list(opts.state_dir.glob("*.json"))
    dev.close()


def test_cpu_steps_stop_at_the_power_mode_cap(orin):
    """nvpmodel caps the CPU in ``scaling_max_freq`` of each cluster, as it caps the GPU in ``max_freq``: a tune
    never lifts the CPU above the power mode the user chose (the lowest cluster's cap, as the original saved
    before any run of ours); it offered, and wrote, every step up to cpuinfo_max_freq."""
    root, board, opts = orin
    caps = {0: 1420800, 4: 1420800, 8: 1113600}
    for first, khz in caps.items():
        (root / board.policy_dir(first).lstrip("/") / "scaling_max_freq").write_text(f"{khz}\n")
    dev = open_device("", opts)
    assert dev.space().knob("cpu_mhz").values[-1] == 1113.6
    with pytest.raises(InvalidValueError, match="not an available step"):
        dev.apply({"cpu_mhz": 1420.8})
    assert fj.write_log(root) == []
    dev.apply({"cpu_mhz": 268.8})
    dev.keep()  # as `polythrottle apply` does: the next run judges the cap by the saved originals
    dev.close()
    again = open_device("", opts)
    assert again.space().knob("cpu_mhz").values[-1] == 1113.6
    again.restore_saved()
    assert {f: fj.read(root, f"{board.policy_dir(f)}/scaling_max_freq") for f in caps} == \
        {f: str(k) for f, k in caps.items()}
    again.close()


def test_no_clock_control_says_when_a_crashed_run_left_clocks_changed(orin, capsys):
    """--no-clock-control restores nothing (a restore is a write), so it must say that the board still runs
    at a crashed run's clocks (its measurements would be made there), and how to put them back."""
    root, board, opts = orin
    crashed = open_device("", opts)
    crashed.apply({"gpu_mhz": 114.75, "cpu_mhz": 268.8})
    store = OriginalsStore(opts.state_dir)
    store.record(crashed.originals_location().device_id, {}, meta={"pid": dead_pid()})
    written = len(fj.write_log(root))
    capsys.readouterr()
    dev = open_device("", DeviceOptions(state_dir=opts.state_dir, no_clock_control=True))
    err = capsys.readouterr().err
    assert "did not finish" in err and "polythrottle restore --device jetson" in err and err.count("\n") == 1
    assert len(fj.write_log(root)) == written  # nothing restored, nothing written
    dev.close()
    # a kept apply is the user's choice, not a crash's leftover: no warning
    kept = open_device("", opts)
    kept.restore_saved()
    kept.apply({"gpu_mhz": 624.75})
    kept.keep()
    capsys.readouterr()
    open_device("", DeviceOptions(state_dir=opts.state_dir, no_clock_control=True)).close()
    assert capsys.readouterr().err == ""


def test_tuning_a_clock_this_user_cannot_write_says_so(tmp_path, monkeypatch):
    from polythrottle.errors import PermissionDeniedError
    from polythrottle.tuning.tuner import Tuner

    root = tmp_path / "root"
    fj.build(root, "agx-orin-jp5")
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(root))
    monkeypatch.setattr("polythrottle.clocks.sysfs.SysfsIO.writable", lambda self, p: "/cpufreq/" in p)
    dev = open_device("", DeviceOptions(state_dir=tmp_path / "state"))
    assert dev.space().names == ["cpu_mhz"]
    with pytest.raises(PermissionDeniedError, match="gpu_mhz cannot be set here: not root"):
        Tuner(dev, slo_ms=1e4, budget=3, optimizer="random", knobs=["gpu_mhz", "cpu_mhz"])


def test_gpu_steps_stop_at_the_power_modes_cap(orin):
    # nvpmodel caps the GPU by writing max_freq (a 15 W mode: 624.75 MHz on this board); a tune must not lift
    # the GPU above the mode the user chose (and a kernel holding the cap refused the first apply above it)
    root, board, opts = orin
    (root / f"{board.gpu_dir}/max_freq".lstrip("/")).write_text("624750000\n")
    with open_device("", opts) as dev:
        steps = dev.space().knob("gpu_mhz").values
        assert max(steps) == 624.75 and 114.75 in steps
        with pytest.raises(BadInputError):
            dev.apply({"gpu_mhz": 1300.5})
        dev.apply({"gpu_mhz": 624.75})
    assert gpu(root, board)[1] == "624750000"
    # a run that kept a lower clock does not become the cap: the saved original is
    (root / f"{board.gpu_dir}/max_freq".lstrip("/")).write_text("1300500000\n")
    first = open_device("", opts)
    first.apply({"gpu_mhz": 420.75})
    first.keep()
    with open_device("", opts) as dev:
        assert max(dev.space().knob("gpu_mhz").values) == 1300.5


CAP_HZ = 1032750000  # a thermal cap that appears while a run holds the GPU lower


def capped_restore_warning(err: str, board) -> None:
    lines = [ln for ln in err.splitlines() if "holds" in ln]
    assert len(lines) == 1, err
    assert f"restored 1300500000 to {board.gpu_dir}/max_freq but it holds {CAP_HZ}" in lines[0]
    assert "polythrottle restore --device jetson" in lines[0]


def test_a_restore_the_kernel_caps_warns_and_keeps_the_original_for_a_later_restore(orin, capsys):
    """The end of a run writes the originals back; a kernel holding a cap takes max_freq without an error but
    keeps it lower: one warning line naming the file, the value wanted and the value read; the original stays
    saved (kept: no later run refuses or takes it for a crash's leftovers) until `polythrottle restore` can
    finish. It said nothing and forgot the original."""
    root, board, opts = orin
    with open_device("", opts) as dev:
        dev.apply({"gpu_mhz": 624.75})
        fj.set_rules(root, clamp={"*/devfreq/*/max_freq": CAP_HZ})
    capped_restore_warning(capsys.readouterr().err, board)
    assert gpu(root, board) == ("114750000", str(CAP_HZ))
    device_id = dev.originals_location().device_id
    saved = OriginalsStore(opts.state_dir).load(device_id)
    assert saved.originals == {f"{board.gpu_dir}/max_freq": "1300500000"} and saved.meta["kept"] is True
    with open_device("", opts) as later:  # a later run starts: no refusal, no crash warning
        later.apply({"cpu_mhz": 729.6})
    assert "did not finish" not in capsys.readouterr().err
    assert gpu(root, board) == ("114750000", str(CAP_HZ))
    open_device("", opts).restore_saved()  # still capped: the same warning, still saved
    capped_restore_warning(capsys.readouterr().err, board)
    assert OriginalsStore(opts.state_dir).originals(device_id) == {f"{board.gpu_dir}/max_freq": "1300500000"}
    fj.set_rules(root)  # the cap is gone: restore finishes
    assert open_device("", opts).restore_saved() == [f"{board.gpu_dir}/max_freq"]
    assert gpu(root, board) == ("114750000", "1300500000")
    assert OriginalsStore(opts.state_dir).originals(device_id) == {}
    assert "holds" not in capsys.readouterr().err


def test_a_crashed_runs_leftovers_restored_under_a_cap_stay_saved(orin, capsys):
    root, board, opts = orin
    crashed = open_device("", opts)
    crashed.apply({"gpu_mhz": 624.75})
    store = OriginalsStore(opts.state_dir)
    device_id = crashed.originals_location().device_id
    store.record(device_id, {}, meta={"pid": dead_pid()})
    fj.set_rules(root, clamp={"*/devfreq/*/max_freq": CAP_HZ})
    with open_device("", opts) as dev:
        dev.apply({"gpu_mhz": 420.75})
    capped_restore_warning(capsys.readouterr().err, board)
    assert gpu(root, board) == ("114750000", str(CAP_HZ))  # this run put back what it started from
    assert store.originals(device_id) == {f"{board.gpu_dir}/max_freq": "1300500000"}
    assert store.load(device_id).meta["kept"] is True


def test_a_user_who_may_not_search_debugfs_sees_emc_unavailable_not_an_error(orin, monkeypatch):
    """debugfs is mode 0700 on a Jetson: a user looking up its EMC files gets EACCES from stat(), which
    ``Path.exists()`` raises (PermissionError). `polythrottle devices` / a --no-clock-control tune as a user
    said 'error: /sys/kernel/debug/...: permission denied' (exit 2, as if a file given were bad); EMC is one
    knob this user cannot set (not root), the others are listed."""
    import pathlib

    root, board, opts = orin
    debug = root / "sys/kernel/debug"
    debug.chmod(0o700)
    real_stat = pathlib.Path.stat

    def stat(self, *args, **kwargs):  # as the kernel answers a user (the tests run as root, which passes)
        if str(self).startswith(f"{debug}/"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", stat)
    monkeypatch.setattr("polythrottle.devices.jetson.is_root_user", lambda: False)
    with open_device("", opts) as dev:
        status = {k.name: k for k in dev.info().knobs}
    assert not status["emc_mhz"].available and "not root" in status["emc_mhz"].reason
    assert status["gpu_mhz"].available and status["cpu_mhz"].available
