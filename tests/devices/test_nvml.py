"""The nvml device with NVML mocked at the pynvml boundary (tests/fake_nvml.py), workloads on the CPU.

Covers: which setters are called and in what order, restores on close / errors / SIGTERM / the next
start after a crash, NotSupported and NoPermission, and --no-clock-control being airtight.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pynvml
import pytest
import torch

from polythrottle.devices import DeviceOptions
from polythrottle.devices.guard import ClockControlDisabledError, WriteGuard
from polythrottle.devices.nvml import open_device
from polythrottle.devices.nvml_settings import GPU_LOCK, MEM_LOCK, POWER_LIMIT
from polythrottle.errors import BadInputError, DeviceError, UnsupportedError
from polythrottle.tuning.tuner import Tuner
from tests.conftest import ROOT
from tests.devices.nvml_helpers import DRIVER, open_gpu
from tests.fake_nvml import FakeGpu

pytestmark = pytest.mark.usefixtures("fake_sysfs_root")  # never the real /sys

torch.set_num_threads(1)
UUID = "GPU-00000000-1111-2222-3333-444444444444"


def state_file(tmp_path: Path) -> Path:
    files = list((tmp_path / "state").glob("*.json")) if (tmp_path / "state").exists() else []
    return files[0] if files else tmp_path / "state" / "absent.json"


def make_cpufreq(root: Path, steps_khz=(800000, 1600000, 2400000, 3200000), cur=(800000, 3200000),
                 hardware: tuple[int, int] | None = None) -> None:
    """Two CPUs sharing policy0, as the kernel lays it out (cpuN/cpufreq -> ../cpufreq/policy0); ``hardware``:
    its cpuinfo_min_freq/cpuinfo_max_freq."""
    pol = root / "sys/devices/system/cpu/cpufreq/policy0"
    pol.mkdir(parents=True)
    (pol / "scaling_available_frequencies").write_text(" ".join(map(str, steps_khz)) + "\n")
    if hardware is not None:
        (pol / "cpuinfo_min_freq").write_text(f"{hardware[0]}\n")
        (pol / "cpuinfo_max_freq").write_text(f"{hardware[1]}\n")
    (pol / "scaling_min_freq").write_text(f"{cur[0]}\n")
    (pol / "scaling_max_freq").write_text(f"{cur[1]}\n")
    for n in (0, 1):
        d = root / f"sys/devices/system/cpu/cpu{n}"
        d.mkdir(parents=True)
        (d / "cpufreq").symlink_to("../cpufreq/policy0")


# ----- clock control: order of writes and restores --------------------------------------------------
def test_probe_apply_and_restore_order(gpu, tmp_path):
    dev = open_gpu(tmp_path)
    probe = [
        ("nvmlDeviceSetGpuLockedClocks", (345, 1980)), ("nvmlDeviceResetGpuLockedClocks", ()),
        ("nvmlDeviceSetMemoryLockedClocks", (1593, 2619)), ("nvmlDeviceResetMemoryLockedClocks", ()),
        ("nvmlDeviceSetPowerManagementLimit", (700_000,)),
    ]
    assert gpu.setter_calls() == probe  # each knob probed with a write that changes nothing
    space = dev.space()
    assert space.names[:3] == ["gpu_mhz", "mem_mhz", "power_limit_w"]
    gpu_steps = space.knob("gpu_mhz").values
    assert len(gpu_steps) <= 16 and gpu_steps[0] == 345 and gpu_steps[-1] == 1980
    # gpu clocks above the low memory clock's maximum are not valid with it
    assert not space.contains({**dev.default_config(), "mem_mhz": 1593, "gpu_mhz": 1980})
    assert dev.default_config() == {"gpu_mhz": 1980, "mem_mhz": 2619, "power_limit_w": 700, "batch_size": 1,
                                    "precision": "fp32"}
    gpu.calls.clear()
    target = {"gpu_mhz": 1005, "mem_mhz": 1593, "power_limit_w": 400, "batch_size": 4, "precision": "bf16"}
    dev.apply(target)
    assert gpu.setter_calls() == [("nvmlDeviceSetPowerManagementLimit", (400_000,)),
                                  ("nvmlDeviceSetMemoryLockedClocks", (1593, 1593)),
                                  ("nvmlDeviceSetGpuLockedClocks", (1005, 1005))]
    saved = json.loads(state_file(tmp_path).read_text())["originals"]
    assert saved == {POWER_LIMIT: 700_000, MEM_LOCK: "reset", GPU_LOCK: "reset"}  # recorded before writing
    m = dev.measure()
    assert m.energy_j > 0 and m.extra["observed_gpu_mhz"] == 1980
    gpu.calls.clear()
    dev.apply(target)  # nothing changed: no hardware write
    assert gpu.setter_calls() == []
    dev.close()
    assert gpu.setter_calls() == [("nvmlDeviceResetGpuLockedClocks", ()),
                                  ("nvmlDeviceResetMemoryLockedClocks", ()),
                                  ("nvmlDeviceSetPowerManagementLimit", (700_000,))]  # reverse order
    assert gpu.locked_gpu is None and gpu.locked_mem is None and gpu.power_limit_mw == 700_000
    assert not state_file(tmp_path).exists()


def test_cpu_clock_through_cpufreq(gpu, tmp_path, fake_sysfs_root):
    make_cpufreq(fake_sysfs_root)
    pol = fake_sysfs_root / "sys/devices/system/cpu/cpufreq/policy0"
    dev = open_gpu(tmp_path)
    assert dev.space().knob("cpu_mhz").values == (800, 1600, 2400, 3200)
    assert dev.default_config()["cpu_mhz"] == 3200
    dev.apply({**dev.default_config(), "cpu_mhz": 1600})
    assert (pol / "scaling_min_freq").read_text().strip() == "1600000"
    assert (pol / "scaling_max_freq").read_text().strip() == "1600000"
    saved = json.loads(state_file(tmp_path).read_text())["originals"]
    assert saved["/sys/devices/system/cpu/cpufreq/policy0/scaling_min_freq"] == "800000"
    dev.apply({**dev.default_config(), "cpu_mhz": 3200})  # raising: max first, then min
    dev.close()
    assert (pol / "scaling_min_freq").read_text().strip() == "800000"
    assert (pol / "scaling_max_freq").read_text().strip() == "3200000"
    assert not state_file(tmp_path).exists()


def test_host_cpu_steps_beyond_the_hardware_limits_are_not_offered(gpu, tmp_path, fake_sysfs_root):
    """An x86 host whose cpufreq table lists a boost step above ``cpuinfo_max_freq`` (boost off): that step is
    not offered, nor the baseline; it was, and the host ran at cpuinfo_max_freq while the tune recorded 3200."""
    make_cpufreq(fake_sysfs_root, cur=(800000, 2400000), hardware=(800000, 2400000))
    dev = open_gpu(tmp_path)
    assert dev.space().knob("cpu_mhz").values == (800, 1600, 2400)
    assert dev.default_config()["cpu_mhz"] == 2400
    with pytest.raises(BadInputError):
        dev.apply({**dev.default_config(), "cpu_mhz": 3200})
    dev.close()


def test_a_host_cpu_limit_the_kernel_silently_caps_is_refused_and_rolled_back(gpu, tmp_path, fake_sysfs_root,
                                                                             monkeypatch):
    """The kernel takes a cpufreq limit above a thermal cap without an error but holds the cap: the apply reads
    back what it wrote, says which file holds what, and puts every file back (as on a Jetson); it went on at
    1600 MHz while the tune recorded 2400."""
    from tests import fake_jetson as fj

    monkeypatch.setattr("polythrottle.clocks.sysfs.IO_CLASS", fj.FakeKernelIO)
    make_cpufreq(fake_sysfs_root)
    pol = fake_sysfs_root / "sys/devices/system/cpu/cpufreq/policy0"
    fj.set_rules(fake_sysfs_root, clamp={"*/policy0/scaling_min_freq": 1600000})
    dev = open_gpu(tmp_path)
    with pytest.raises(DeviceError, match=r"holds 1600000 in /sys/.*scaling_min_freq after 2400000 was written"):
        dev.apply({**dev.default_config(), "cpu_mhz": 2400})
    assert (pol / "scaling_min_freq").read_text().strip() == "800000"
    assert (pol / "scaling_max_freq").read_text().strip() == "3200000"
    assert not state_file(tmp_path).exists()
    dev.close()


def test_cpu_clock_unavailable_says_why(gpu, tmp_path):
    dev = open_gpu(tmp_path)
    reason = {k.name: k.reason for k in dev.info().knobs}["cpu_mhz"]
    assert reason.startswith("cpufreq:") and "cpu_mhz" not in dev.space().names
    dev.close()


def test_invalid_config_writes_nothing(gpu, tmp_path):
    dev = open_gpu(tmp_path)
    gpu.calls.clear()
    for bad in ({"gpu_mhz": 1234}, {"gpu_mhz": 1980, "mem_mhz": 1593}, {"precision": "fp8"}, {"warp": 1}):
        with pytest.raises(BadInputError):
            dev.apply({**dev.default_config(), **bad})
    assert gpu.setter_calls() == []
    dev.close()


def test_restore_on_error_inside_with_block(gpu, tmp_path):
    with pytest.raises(RuntimeError):
        with open_gpu(tmp_path) as dev:
            dev.apply({**dev.default_config(), "gpu_mhz": 345})
            raise RuntimeError("boom")
    assert gpu.locked_gpu is None and gpu.setter_calls()[-3][0] == "nvmlDeviceResetGpuLockedClocks"


def test_keep_leaves_settings_and_restore_saved_puts_them_back(gpu, tmp_path):
    opts = DeviceOptions(state_dir=tmp_path / "state")  # no workload: hardware knobs only (apply/restore)
    dev = open_device("0", opts, torch_device="cpu")
    assert dev.hardware_knobs == ["gpu_mhz", "mem_mhz", "power_limit_w"] and dev.space().names == dev.hardware_knobs
    dev.apply({**dev.default_config(), "gpu_mhz": 345, "power_limit_w": 400})
    dev.keep()
    dev.close()
    assert gpu.locked_gpu == (345, 345) and gpu.power_limit_mw == 400_000 and state_file(tmp_path).exists()
    gpu.calls.clear()
    later = open_device("0", opts, torch_device="cpu")  # a new process: kept settings stay, as on a Jetson
    assert gpu.locked_gpu == (345, 345) and gpu.power_limit_mw == 400_000
    assert not [c for c in gpu.setter_calls() if c[0].startswith("nvmlDeviceReset")]  # no probe undid the lock
    assert later.hardware_knobs == ["gpu_mhz", "mem_mhz", "power_limit_w"]
    saved = json.loads(state_file(tmp_path).read_text())
    assert saved["meta"]["kept"] is True and saved["originals"][POWER_LIMIT] == 700_000
    later.close()
    assert gpu.locked_gpu == (345, 345) and gpu.power_limit_mw == 400_000
    third = open_device("0", opts, torch_device="cpu")
    third.apply({**third.default_config(), "power_limit_w": 200})
    assert sorted(third.restore_saved()) == sorted([POWER_LIMIT, MEM_LOCK, GPU_LOCK])
    assert gpu.power_limit_mw == 700_000 and gpu.locked_mem is None and gpu.locked_gpu is None
    third.close()
    ncc = open_device("0", DeviceOptions(state_dir=tmp_path / "state", no_clock_control=True), torch_device="cpu")
    assert ncc.restore_saved() == []
    ncc.close()


def test_leftovers_of_a_crashed_run_are_restored_at_open(gpu, tmp_path):
    store = tmp_path / "state"
    store.mkdir()
    (store / f"nvml_{UUID}.json").write_text(json.dumps(
        {"device": f"nvml:{UUID}", "originals": {POWER_LIMIT: 650_000, GPU_LOCK: "reset"}}))
    gpu.locked_gpu = (345, 345)
    dev = open_gpu(tmp_path)
    assert gpu.setter_calls()[:2] == [("nvmlDeviceResetGpuLockedClocks", ()),
                                      ("nvmlDeviceSetPowerManagementLimit", (650_000,))]
    assert gpu.locked_gpu is None and gpu.power_limit_mw == 650_000
    dev.close()
    assert not state_file(tmp_path).exists()


# ----- refusals -------------------------------------------------------------------------------------
def test_not_supported_knob_is_reported_and_tuning_goes_on(monkeypatch, tmp_path):
    gpu = FakeGpu(refuse={"nvmlDeviceSetMemoryLockedClocks": pynvml.NVMLError_NotSupported})
    gpu.install(monkeypatch.setattr)
    dev = open_gpu(tmp_path)
    status = {k.name: k for k in dev.info().knobs}
    assert not status["mem_mhz"].available and "Not Supported" in status["mem_mhz"].reason
    assert status["gpu_mhz"].available and status["power_limit_w"].available
    assert "mem_mhz" not in dev.space().names
    res = Tuner(dev, slo_ms=1e4, budget=3, optimizer="random", seed=0, knobs=["gpu_mhz", "batch_size"]).run()
    assert res.best is not None and len(res.history) == 3
    dev.close()
    assert gpu.locked_gpu is None and not state_file(tmp_path).exists()


def test_no_permission_leaves_only_software_knobs(monkeypatch, tmp_path):
    refuse = {n: pynvml.NVMLError_NoPermission for n in
              ("nvmlDeviceSetGpuLockedClocks", "nvmlDeviceSetMemoryLockedClocks", "nvmlDeviceSetPowerManagementLimit")}
    gpu = FakeGpu(refuse=refuse)
    gpu.install(monkeypatch.setattr)
    dev = open_gpu(tmp_path)
    status = {k.name: k for k in dev.info().knobs}
    for n in ("gpu_mhz", "mem_mhz", "power_limit_w"):
        assert not status[n].available and "needs root" in status[n].reason
    assert dev.space().names == ["batch_size", "precision"]
    assert not dev.info().touches_hardware
    dev.apply(dev.default_config())
    assert dev.measure().energy_j > 0
    dev.close()
    assert not state_file(tmp_path).exists()


def test_missing_counter_falls_back_to_sampled_power(monkeypatch, tmp_path):
    FakeGpu(energy_counter=False).install(monkeypatch.setattr)
    dev = open_gpu(tmp_path, no_clock_control=True)
    assert "integrated power" in dev.info().details["energy"]
    dev.apply(dev.default_config())
    assert dev.measure().energy_j > 0
    dev.close()


def test_open_errors(gpu, tmp_path):
    with pytest.raises(BadInputError, match="no such GPU"):
        open_device("3", DeviceOptions(workload="builtin:mlp"), torch_device="cpu")
    bare = open_device("0", DeviceOptions(no_clock_control=True, state_dir=tmp_path), torch_device="cpu")
    with pytest.raises(BadInputError, match="--workload"):  # without a workload: settings only
        bare.measure()
    bare.close()
    with pytest.raises(BadInputError, match="unknown builtin"):
        open_device("0", DeviceOptions(workload="builtin:nope"), torch_device="cpu")


# ----- --no-clock-control is airtight -----------------------------------------------------------------
def test_no_clock_control_never_writes_hardware(monkeypatch, tmp_path, capsys):
    gpu = FakeGpu(forbid_writes=True)  # every nvmlDeviceSet*/Reset*/Clear* of the module raises
    gpu.install(monkeypatch.setattr)
    sys_writes: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *a, **k):
        if str(file).startswith("/sys") and any(c in mode for c in "wax+"):
            sys_writes.append(str(file))
            raise PermissionError(f"test refuses writes to {file}")
        return real_open(file, mode, *a, **k)

    def guarded_os_open(path, flags, *a, **k):
        if str(path).startswith("/sys") and flags & (os.O_WRONLY | os.O_RDWR):
            sys_writes.append(str(path))
            raise PermissionError(f"test refuses writes to {path}")
        return real_os_open(path, flags, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    # a crashed earlier run left saved originals: restoring them would be a write, so it must not happen
    store = tmp_path / "state"
    store.mkdir()
    leftover = store / f"nvml_{UUID}.json"
    leftover.write_text(json.dumps({"device": f"nvml:{UUID}", "originals": {GPU_LOCK: "reset"}}))

    dev = open_gpu(tmp_path, no_clock_control=True, workload="builtin:tiny-cnn")
    assert "--no-clock-control leaves them as they are" in capsys.readouterr().err
    assert dev.space().names == ["batch_size", "precision", "channels_last"]
    status = {k.name: k for k in dev.info().knobs}
    assert all(not status[n].available and status[n].reason == "--no-clock-control"
               for n in ("gpu_mhz", "mem_mhz", "power_limit_w", "cpu_mhz"))
    res = Tuner(dev, slo_ms=1e4, budget=4, optimizer="random", seed=1).run()
    assert len(res.history) == 4
    dev.restore()
    with pytest.raises(ClockControlDisabledError):
        dev.control.guard.nvml("nvmlDeviceResetGpuLockedClocks", dev.control.handle)
    dev.close()
    assert gpu.setter_calls() == [] and sys_writes == [] and dev.control.guard.writes == []
    assert json.loads(leftover.read_text())["originals"] == {GPU_LOCK: "reset"}  # untouched


def test_guard_refuses_before_calling(monkeypatch, tmp_path):
    from polythrottle.clocks.sysfs import WritesDisabledError

    called = []
    monkeypatch.setattr(pynvml, "nvmlDeviceSetGpuLockedClocks", lambda *a: called.append(a))
    f = tmp_path / "sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq"  # writes go only to clock files
    f.parent.mkdir(parents=True)
    f.write_text("1000\n")
    g = WriteGuard(allowed=False, sysfs_root=tmp_path)
    with pytest.raises(ClockControlDisabledError, match="no-clock-control"):
        g.nvml("nvmlDeviceSetGpuLockedClocks", object(), 345, 345)
    with pytest.raises(WritesDisabledError):
        g.io.write("/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq", "500")
    assert called == [] and f.read_text() == "1000\n" and g.writes == []
    ok = WriteGuard(allowed=True, sysfs_root=tmp_path)
    ok.io.write("/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq", "500")
    ok.nvml("nvmlDeviceSetGpuLockedClocks", object(), 345, 345)
    assert f.read_text() == "500" and ok.writes == [("nvmlDeviceSetGpuLockedClocks", (345, 345))]
    with pytest.raises(ValueError):
        ok.nvml("nvmlDeviceGetName", object())


def test_only_the_guard_calls_nvml_setters():
    """Static check: no module but the guard calls an NVML setter directly."""
    pattern = re.compile(r"pynvml\.nvml(Device|System|Unit)(Set|Reset|Clear)\w*\s*\(")
    offenders = []
    for path in (ROOT / "polythrottle").rglob("*.py"):
        if path.name == "guard.py":
            continue
        if pattern.search(path.read_text()):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


# ----- through the CLI, in a subprocess ------------------------------------------------------------
def run_driver(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=timeout)


def test_cli_tune_no_clock_control_json(tmp_path):
    log = tmp_path / "nvml.log"
    r = run_driver(["tune", "--device", "nvml:0", "--no-clock-control", "--workload", "builtin:mlp",
                    "--slo-ms", "1000", "--budget", "4", "--seed", "0", "--window-s", "0.01", "--repeats", "2",
                    "--json", "--state-dir", str(tmp_path / "s")],
                   {"FAKE_NVML_LOG": str(log), "FAKE_NVML_FORBID_WRITES": "1"})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["knobs"] == ["batch_size", "precision"] and res["feasible"]
    assert res["device_info"]["name"] == "nvml:0"
    assert [json.loads(x)[0] for x in log.read_text().splitlines()] == ["nvmlDeviceGetTotalEnergyConsumption"]


def test_cli_profile_nvml(tmp_path):
    out = tmp_path / "t.csv"
    r = run_driver(["profile", "--device", "nvml:0", "--no-clock-control", "--workload", "builtin:mlp",
                    "--knobs", "batch_size", "--window-s", "0.01", "--repeats", "1", "--out", str(out),
                    "--state-dir", str(tmp_path / "s")], {"FAKE_NVML_FORBID_WRITES": "1"})
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("batch_size,energy_j,latency_ms") and len(lines) == 5


@pytest.mark.parametrize("no_clock_control", [False, True])
def test_sigterm_restores(tmp_path, no_clock_control):
    log = tmp_path / "nvml.log"
    state = tmp_path / "s"
    args = ["tune", "--device", "nvml:0", "--workload", "builtin:mlp", "--slo-ms", "1000", "--budget", "6",
            "--window-s", "30", "--repeats", "1", "--json", "--state-dir", str(state)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAKE_NVML_LOG": str(log)}
    if no_clock_control:
        args.append("--no-clock-control")
        env["FAKE_NVML_FORBID_WRITES"] = "1"
    p = subprocess.Popen([sys.executable, str(DRIVER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT, env=env)
    try:
        # wait until the device is open (first counter read) and, with clock control, the baseline applied
        marker = ('["nvmlDeviceGetTotalEnergyConsumption", []]' if no_clock_control
                  else '["nvmlDeviceSetGpuLockedClocks", [1980, 1980]]')
        deadline = time.time() + 90
        while time.time() < deadline:
            if log.exists() and marker in log.read_text():
                break
            time.sleep(0.05)
        else:
            pytest.fail("the tune never got that far")
        if not no_clock_control:
            assert list(state.glob("*.json")), "originals are saved before the first write"
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143, err
    assert "terminated (settings restored)" in err
    calls = [json.loads(line)[0] for line in log.read_text().splitlines()]
    if no_clock_control:
        assert calls == ["nvmlDeviceGetTotalEnergyConsumption"]  # not one setter or reset
        return
    assert calls[-3:] == ["nvmlDeviceResetGpuLockedClocks", "nvmlDeviceResetMemoryLockedClocks",
                          "nvmlDeviceSetPowerManagementLimit"]
    assert not list(state.glob("*.json"))


@pytest.mark.parametrize("no_clock_control", [False, True])
def test_sigterm_lost_where_its_handler_ran_still_restores(tmp_path, no_clock_control):
    """The signal of test_sigterm_restores, at the moment it was lost about 1 run in 100: its handler raised
    inside a library's bare ``except:`` (Cython's, importing numpy.random) and the tune ran on. Here the first
    batch signals itself inside one (``lost_signal_workload``): the tune still ends at the next batch."""
    log = tmp_path / "nvml.log"
    state = tmp_path / "s"
    args = ["tune", "--device", "nvml:0", "--workload", "tests.devices.lost_signal_workload:make", "--slo-ms",
            "1000", "--budget", "4", "--window-s", "0.05", "--repeats", "1", "--json", "--state-dir", str(state)]
    env = {"FAKE_NVML_LOG": str(log)}
    if no_clock_control:
        args.append("--no-clock-control")
        env["FAKE_NVML_FORBID_WRITES"] = "1"
    r = run_driver(args, env)
    assert r.returncode == 143, r.stderr
    assert r.stdout == "" and r.stderr.endswith("polythrottle: terminated (settings restored)\n")
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    if no_clock_control:
        assert [c[0] for c in calls] == ["nvmlDeviceGetTotalEnergyConsumption"]
        return
    assert ["nvmlDeviceSetGpuLockedClocks", [1980, 1980]] in calls  # the baseline was applied, then
    assert [c[0] for c in calls[-3:]] == ["nvmlDeviceResetGpuLockedClocks", "nvmlDeviceResetMemoryLockedClocks",
                                          "nvmlDeviceSetPowerManagementLimit"]
    assert not list(state.glob("*.json"))


def test_cli_without_nvidia_driver_is_one_line(tmp_path):
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    r = subprocess.run([sys.executable, "-m", "polythrottle", "tune", "--device", "nvml:0", "--workload",
                        "builtin:mlp", "--slo-ms", "10"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == UnsupportedError.exit_code
    assert r.stderr.count("\n") == 1 and "NVML unavailable" in r.stderr
    r = subprocess.run([sys.executable, "-m", "polythrottle", "tune", "--device", "nvml:x", "--workload",
                        "builtin:mlp", "--slo-ms", "10"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "expected a GPU index" in r.stderr


# ----- a hardware knob named but not settable here: the reason, not "unknown knob" ------------------------
def test_a_knob_the_driver_refuses_is_named_with_the_reason(monkeypatch, tmp_path):
    from polythrottle.errors import PermissionDeniedError

    refuse = {"nvmlDeviceSetGpuLockedClocks": pynvml.NVMLError_NoPermission,
              "nvmlDeviceSetMemoryLockedClocks": pynvml.NVMLError_NotSupported}
    FakeGpu(refuse=refuse).install(monkeypatch.setattr)
    dev = open_gpu(tmp_path)
    with pytest.raises(PermissionDeniedError, match="gpu_mhz cannot be set here: .*needs root"):
        Tuner(dev, slo_ms=1e4, budget=3, optimizer="random", knobs=["gpu_mhz", "batch_size"])
    with pytest.raises(PermissionDeniedError, match="gpu_mhz cannot be set here"):
        Tuner(dev, slo_ms=1e4, budget=3, optimizer="random", baseline={"gpu_mhz": 1980})
    with pytest.raises(UnsupportedError, match="mem_mhz cannot be set here: .*not supported"):
        dev.apply({**dev.default_config(), "mem_mhz": 1593})
    with pytest.raises(BadInputError, match="unknown knob 'nope'"):  # a name no part of the device has
        Tuner(dev, slo_ms=1e4, budget=3, optimizer="random", knobs=["nope"])
    dev.close()


def test_cli_apply_without_permission_is_one_line_exit_4(tmp_path):
    refuse = ",".join(f"{n}:NoPermission" for n in ("nvmlDeviceSetGpuLockedClocks", "nvmlDeviceSetMemoryLockedClocks",
                                                     "nvmlDeviceSetPowerManagementLimit"))
    r = run_driver(["apply", "--device", "nvml:0", "--set", "gpu_mhz=1980", "--state-dir", str(tmp_path / "s")],
                   {"FAKE_NVML_REFUSE": refuse})
    assert r.returncode == 4, r.stderr
    assert r.stderr.count("\n") == 1 and "gpu_mhz cannot be set here" in r.stderr and "needs root" in r.stderr


def test_cli_apply_of_some_knobs_writes_those_and_leaves_the_others_as_they_are(gpu, tmp_path, capsys):
    """As on a Jetson: `apply --set gpu_mhz=...` locks the GPU clock only (not "config is missing knob(s)");
    the power limit a first apply kept stays, the memory clock is not locked. A part no valid config has,
    or a value that is not a step, is refused with nothing written."""
    from polythrottle.cli import main

    state = ["--state-dir", str(tmp_path / "s")]
    assert main(["apply", "--device", "nvml:0", "--set", "power_limit_w=400", *state]) == 0
    gpu.calls.clear()
    assert main(["apply", "--device", "nvml:0", "--set", "gpu_mhz=1005", *state]) == 0, capsys.readouterr().err
    writes = [c for c in gpu.setter_calls() if c[0] != "nvmlDeviceSetPowerManagementLimit" or c[1] != (400_000,)]
    assert writes[-1] == ("nvmlDeviceSetGpuLockedClocks", (1005, 1005))  # after the probes: that lock only
    assert "nvmlDeviceSetMemoryLockedClocks" not in [n for n, a in writes if a != (1593, 2619)]
    assert gpu.locked_gpu == (1005, 1005) and gpu.locked_mem is None and gpu.power_limit_mw == 400_000
    assert "applied gpu_mhz=1005" in capsys.readouterr().out
    for bad in (["gpu_mhz=1006"], ["mem_mhz=1593", "gpu_mhz=1980"], ["nope=1"]):
        gpu.calls.clear()
        assert main(["apply", "--device", "nvml:0", *[x for b in bad for x in ("--set", b)], *state]) == 2
        assert ("nvmlDeviceSetGpuLockedClocks", (1980, 1980)) not in gpu.setter_calls()
        assert gpu.locked_gpu == (1005, 1005) and gpu.locked_mem is None and gpu.power_limit_mw == 400_000
    assert "missing knob" not in capsys.readouterr().err


def test_api_apply_of_some_knobs_writes_those_and_leaves_the_others_as_they_are(gpu, tmp_path):
    """``pt.apply`` as the CLI's ``apply``: a part of a config sets those knobs only (it used to fill the rest
    with the device's defaults and write them: the power limit at its maximum, the memory clock locked)."""
    import polythrottle as pt

    dev = open_gpu(tmp_path)
    try:
        pt.apply(dev, {"power_limit_w": 400})
        gpu.calls.clear()
        assert pt.apply(dev, {"gpu_mhz": "1005"}) == {"gpu_mhz": 1005}
        assert gpu.setter_calls() == [("nvmlDeviceSetGpuLockedClocks", (1005, 1005))]
        assert gpu.locked_gpu == (1005, 1005) and gpu.locked_mem is None and gpu.power_limit_mw == 400_000
        with pytest.raises(BadInputError):
            pt.apply(dev, {"mem_mhz": 1593, "gpu_mhz": 1980})
        assert gpu.locked_gpu == (1005, 1005) and gpu.locked_mem is None
    finally:
        dev.close()
    assert gpu.locked_gpu is None and gpu.power_limit_mw != 400_000  # close restores the originals


@pytest.mark.parametrize("failures", [1, 99])
def test_a_probe_whose_reset_fails_keeps_the_original_saved(gpu, tmp_path, monkeypatch, failures):
    """The probe locks the full range, then resets: if the reset fails, the GPU stays locked, so its original
    must stay saved (put back when the open fails, or by `polythrottle restore` later), never forgotten."""
    real_reset = pynvml.nvmlDeviceResetGpuLockedClocks
    left = {"failures": failures}

    def reset(handle):
        if left["failures"] > 0:
            left["failures"] -= 1
            raise pynvml.NVMLError_Unknown()
        return real_reset(handle)

    monkeypatch.setattr(pynvml, "nvmlDeviceResetGpuLockedClocks", reset)
    with pytest.raises(DeviceError):
        open_gpu(tmp_path)
    if failures == 1:  # the second reset (the open's own restore) worked
        assert gpu.locked_gpu is None and not state_file(tmp_path).exists()
        return
    assert gpu.locked_gpu == (345, 1980)
    assert json.loads(state_file(tmp_path).read_text())["originals"] == {GPU_LOCK: "reset"}
    left["failures"] = 0  # the driver recovers: the next start puts it back
    open_gpu(tmp_path).close()
    assert gpu.locked_gpu is None and not state_file(tmp_path).exists()
