"""What the NVML device tests share besides the fixtures (``conftest``): fast harness settings, the
subprocess driver and a device opened on the fake GPU (``open_gpu``)."""

from __future__ import annotations

from pathlib import Path

from polythrottle.devices import DeviceOptions
from polythrottle.devices.base import Device
from polythrottle.devices.nvml import open_device
from polythrottle.measure.harness import HarnessSettings
from tests.conftest import ROOT

FAST = HarnessSettings(window_s=0.01, warmup_s=0.0, warmup_batches=1, repeats=2, min_batches=2)
DRIVER = ROOT / "tests" / "nvml_driver.py"


def open_gpu(tmp_path: Path, *, no_clock_control: bool = False, workload: str | None = "builtin:mlp") -> Device:
    opts = DeviceOptions(workload=workload, no_clock_control=no_clock_control, state_dir=tmp_path / "state")
    return open_device("0", opts, torch_device="cpu", harness=FAST, rapl_root=tmp_path / "no-rapl")
