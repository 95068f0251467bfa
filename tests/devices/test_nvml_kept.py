"""Settings an ``apply`` kept on an NVIDIA GPU, with NVML mocked at the pynvml boundary (tests/fake_nvml.py):
a later run that changes them puts them back to the kept settings; ``polythrottle restore`` still returns to
the true originals.

Clock locks in particular: NVML cannot read a lock back, so the tool records the locks it kept, and a later
run that changes a kept lock puts it back to the kept lock (not to "unlocked") when it ends, on SIGTERM, when
its apply fails midway and at the next start after it was killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pynvml
import pytest
import torch

from polythrottle.devices.nvml_settings import GPU_LOCK, MEM_LOCK, POWER_LIMIT
from polythrottle.devices.originals import SavedStateError
from polythrottle.errors import DeviceError
from tests.conftest import ROOT
from tests.devices.nvml_helpers import DRIVER, open_gpu
from tests.fake_nvml import FakeGpu

pytestmark = pytest.mark.usefixtures("fake_sysfs_root")  # never the real /sys

torch.set_num_threads(1)
KEPT = {"gpu_mhz": 1005, "mem_mhz": 1593, "power_limit_w": 400}  # what the user's `apply` keeps
TUNED = {"gpu_mhz": 675, "mem_mhz": 2619, "power_limit_w": 300}  # a later run's candidate
TRUE_ORIGINALS = {POWER_LIMIT: 700_000, MEM_LOCK: "reset", GPU_LOCK: "reset"}


def saved(tmp_path: Path) -> dict:
    files = list((tmp_path / "state").glob("*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text())


def keep_apply(tmp_path: Path, settings: dict) -> None:
    """What `polythrottle apply` does: keep, then set the knobs given (``Device.apply_part``), then close."""
    dev = open_gpu(tmp_path, workload=None)
    dev.keep()
    dev.apply_part(settings)
    dev.close()


def assert_kept(gpu: FakeGpu) -> None:
    assert gpu.locked_gpu == (1005, 1005) and gpu.locked_mem == (1593, 1593) and gpu.power_limit_mw == 400_000


def restore_to_true_originals(gpu: FakeGpu, tmp_path: Path) -> None:
    """`polythrottle restore`: back to the settings before the first apply (unlocked, 700 W), nothing saved."""
    dev = open_gpu(tmp_path, workload=None)
    assert sorted(dev.restore_saved()) == sorted(TRUE_ORIGINALS)
    dev.close()
    assert gpu.locked_gpu is None and gpu.locked_mem is None and gpu.power_limit_mw == 700_000
    assert not list((tmp_path / "state").glob("*.json"))


def test_a_kept_apply_records_the_locks_it_kept(gpu, tmp_path):
    keep_apply(tmp_path, KEPT)
    assert_kept(gpu)
    state = saved(tmp_path)
    assert state["originals"] == TRUE_ORIGINALS  # the true originals: what `restore` puts back
    assert state["meta"]["kept"] is True
    assert state["meta"]["kept_values"] == {MEM_LOCK: 1593, GPU_LOCK: 1005}  # NVML cannot read them back
    dev = open_gpu(tmp_path, workload=None)  # a second kept apply that sets one lock: the other stays recorded
    dev.keep()
    dev.control.apply({"gpu_mhz": 1215})
    dev.close()
    assert gpu.locked_gpu == (1215, 1215) and gpu.locked_mem == (1593, 1593)
    assert saved(tmp_path)["meta"]["kept_values"] == {MEM_LOCK: 1593, GPU_LOCK: 1215}
    assert saved(tmp_path)["originals"] == TRUE_ORIGINALS
    restore_to_true_originals(gpu, tmp_path)


def test_a_run_after_a_kept_apply_puts_back_the_kept_locks(gpu, tmp_path):
    keep_apply(tmp_path, KEPT)
    dev = open_gpu(tmp_path)
    dev.apply({**dev.default_config(), **TUNED})
    assert gpu.locked_gpu == (675, 675) and gpu.locked_mem == (2619, 2619) and gpu.power_limit_mw == 300_000
    gpu.calls.clear()
    dev.close()
    assert gpu.setter_calls() == [("nvmlDeviceSetGpuLockedClocks", (1005, 1005)),
                                  ("nvmlDeviceSetMemoryLockedClocks", (1593, 1593)),
                                  ("nvmlDeviceSetPowerManagementLimit", (400_000,))]
    assert_kept(gpu)  # the kept settings, locks included: not "unlocked"
    state = saved(tmp_path)
    assert state["meta"]["kept"] is True and state["originals"] == TRUE_ORIGINALS
    assert state["meta"]["kept_values"] == {MEM_LOCK: 1593, GPU_LOCK: 1005}
    restore_to_true_originals(gpu, tmp_path)


def test_an_apply_failing_midway_over_kept_settings_rolls_back_to_them(gpu, tmp_path, monkeypatch):
    """The rollback of a knob this process had not set goes to what it started from (the kept setting), not
    to the saved original from before the kept apply."""
    keep_apply(tmp_path, KEPT)
    dev = open_gpu(tmp_path)
    real = pynvml.nvmlDeviceSetGpuLockedClocks

    def set_gpu(handle, lo, hi):
        if (lo, hi) == (675, 675):  # the driver refuses the candidate's GPU clock, the last write
            raise pynvml.NVMLError_Unknown()
        return real(handle, lo, hi)

    monkeypatch.setattr(pynvml, "nvmlDeviceSetGpuLockedClocks", set_gpu)
    with pytest.raises(DeviceError, match="rolled back"):
        dev.apply({**dev.default_config(), **TUNED})
    assert_kept(gpu)
    dev.close()
    assert_kept(gpu)
    assert saved(tmp_path)["meta"]["kept"] is True and saved(tmp_path)["originals"] == TRUE_ORIGINALS
    restore_to_true_originals(gpu, tmp_path)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_run_killed_after_a_kept_apply_is_put_back_to_the_kept_locks_at_the_next_start(gpu, tmp_path):
    keep_apply(tmp_path, KEPT)
    dev = open_gpu(tmp_path)
    dev.apply({**dev.default_config(), **TUNED})
    path = next((tmp_path / "state").glob("*.json"))
    state = json.loads(path.read_text())
    state["meta"].update(pid=dead_pid(), started=None)  # its owner died without restoring (SIGKILL)
    path.write_text(json.dumps(state))
    gpu.calls.clear()
    later = open_gpu(tmp_path)  # the next start
    assert gpu.setter_calls()[:3] == [("nvmlDeviceSetGpuLockedClocks", (1005, 1005)),
                                      ("nvmlDeviceSetMemoryLockedClocks", (1593, 1593)),
                                      ("nvmlDeviceSetPowerManagementLimit", (400_000,))]
    assert_kept(gpu)
    later.close()
    assert_kept(gpu)
    state = saved(tmp_path)
    assert state["meta"]["kept"] is True and state["originals"] == TRUE_ORIGINALS
    dev.control._session._before.clear()  # the "killed" run: nothing of it runs again
    restore_to_true_originals(gpu, tmp_path)


@pytest.mark.parametrize("tampered", [{GPU_LOCK: "1005"}, {GPU_LOCK: 10**9}, {GPU_LOCK: True},
                                      {"/etc/shadow": 1}, [1005]])
def test_tampered_kept_locks_are_refused_before_any_write(gpu, tmp_path, tampered):
    keep_apply(tmp_path, KEPT)
    path = next((tmp_path / "state").glob("*.json"))
    state = json.loads(path.read_text())
    state["meta"]["kept_values"] = tampered
    path.write_text(json.dumps(state))
    gpu.calls.clear()
    with pytest.raises(SavedStateError) as e:
        dev = open_gpu(tmp_path)
        dev.apply({**dev.default_config(), **TUNED})
    assert e.value.exit_code == 2 and "\n" not in str(e.value)
    assert gpu.setter_calls() == []
    assert_kept(gpu)


# ----- through the CLI, in a subprocess ------------------------------------------------------------------
def run_driver(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=120)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_tune_stopped_after_a_kept_apply_returns_to_the_kept_locks(gpu, tmp_path, signum):
    state = tmp_path / "state"
    r = run_driver(["apply", "--device", "nvml:0", "--set", "gpu_mhz=1005", "--set", "mem_mhz=1593",
                    "--set", "power_limit_w=400", "--state-dir", str(state)], {})
    assert r.returncode == 0, r.stderr
    log = tmp_path / "nvml.log"
    args = ["tune", "--device", "nvml:0", "--workload", "builtin:mlp", "--slo-ms", "1000", "--budget", "6",
            "--window-s", "30", "--repeats", "1", "--json", "--state-dir", str(state)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAKE_NVML_LOG": str(log)}
    p = subprocess.Popen([sys.executable, str(DRIVER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT, env=env)
    try:
        marker = '["nvmlDeviceSetGpuLockedClocks", [1980, 1980]]'  # the baseline: highest clocks
        deadline = time.time() + 90
        while time.time() < deadline:
            if log.exists() and marker in log.read_text():
                break
            time.sleep(0.05)
        else:
            pytest.fail("the tune never got that far")
        p.send_signal(signum)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    if signum == signal.SIGTERM:
        assert p.returncode == 143 and "terminated (settings restored)" in err, err
        assert calls[-3:-1] == [["nvmlDeviceSetGpuLockedClocks", [1005, 1005]],
                                ["nvmlDeviceSetMemoryLockedClocks", [1593, 1593]]]
    else:  # killed: the next start (here, in-process) puts the kept locks back
        assert p.returncode == -signal.SIGKILL
        gpu.locked_gpu, gpu.locked_mem = (1980, 1980), (2619, 2619)  # as the killed tune left the GPU
        dev = open_gpu(tmp_path)
        assert gpu.setter_calls()[:2] == [("nvmlDeviceSetGpuLockedClocks", (1005, 1005)),
                                          ("nvmlDeviceSetMemoryLockedClocks", (1593, 1593))]
        dev.close()
        assert gpu.locked_gpu == (1005, 1005) and gpu.locked_mem == (1593, 1593)
    kept = saved(tmp_path)
    assert kept["meta"]["kept"] is True and kept["originals"] == TRUE_ORIGINALS
    r = run_driver(["restore", "--device", "nvml:0", "--state-dir", str(state)], {"FAKE_NVML_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    calls = [json.loads(line)[0] for line in log.read_text().splitlines()]
    assert calls[-3:] == ["nvmlDeviceResetGpuLockedClocks", "nvmlDeviceResetMemoryLockedClocks",
                          "nvmlDeviceSetPowerManagementLimit"]
    assert not list(state.glob("*.json"))
