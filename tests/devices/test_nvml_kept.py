"""Settings an ``apply`` kept on an NVIDIA GPU, with NVML mocked at the pynvml boundary (tests/fake_nvml.py):
a later run that changes them puts them back to the kept settings; ``polythrottle restore`` still returns to
the true originals.
"""

from __future__ import annotations

import json
from pathlib import Path

import pynvml
import pytest
import torch

from polythrottle.devices import DeviceOptions
from polythrottle.devices.base import Device
from polythrottle.devices.nvml import open_device
from polythrottle.devices.nvml_settings import GPU_LOCK, MEM_LOCK, POWER_LIMIT
from polythrottle.errors import DeviceError
from polythrottle.measure.harness import HarnessSettings
from tests.fake_nvml import FakeGpu

torch.set_num_threads(1)
FAST = HarnessSettings(window_s=0.01, warmup_s=0.0, warmup_batches=1, repeats=2, min_batches=2)
KEPT = {"gpu_mhz": 1005, "mem_mhz": 1593, "power_limit_w": 400}  # what the user's `apply` keeps
TUNED = {"gpu_mhz": 675, "mem_mhz": 2619, "power_limit_w": 300}  # a later run's candidate
TRUE_ORIGINALS = {POWER_LIMIT: 700_000, MEM_LOCK: "reset", GPU_LOCK: "reset"}


@pytest.fixture(autouse=True)
def fake_sysfs_root(tmp_path, monkeypatch) -> Path:
    """Kernel files resolve under an empty tree (never the real /sys), subprocesses included."""
    root = tmp_path / "sysroot"
    root.mkdir()
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(root))
    return root


@pytest.fixture
def gpu(monkeypatch) -> FakeGpu:
    g = FakeGpu()
    g.install(monkeypatch.setattr)
    return g


def open_gpu(tmp_path: Path, *, workload: str | None = "builtin:mlp") -> Device:
    opts = DeviceOptions(workload=workload, state_dir=tmp_path / "state")
    return open_device("0", opts, torch_device="cpu", harness=FAST, rapl_root=tmp_path / "no-rapl")


def saved(tmp_path: Path) -> dict:
    files = list((tmp_path / "state").glob("*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text())


def keep_apply(tmp_path: Path, settings: dict) -> None:
    """What `polythrottle apply` does: keep, then apply, then close."""
    dev = open_gpu(tmp_path, workload=None)
    dev.keep()
    dev.apply({**dev.default_config(), **settings})
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
    assert gpu.power_limit_mw == 400_000  # the kept power limit, not the 700 W from before the kept apply
    dev.close()
    assert gpu.power_limit_mw == 400_000
    assert saved(tmp_path)["meta"]["kept"] is True and saved(tmp_path)["originals"] == TRUE_ORIGINALS
    restore_to_true_originals(gpu, tmp_path)
