"""Run the polythrottle CLI against a fake NVML GPU, the workload on the CPU (for subprocess tests).

Usage: python tests/nvml_driver.py ARGS...   Environment: FAKE_NVML_LOG (file of setter calls, one JSON
line each), FAKE_NVML_FORBID_WRITES=1 (every NVML setter raises), FAKE_NVML_REFUSE=name:NotSupported,...
"""

import os
import sys
from pathlib import Path

import pynvml
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_nvml import FakeGpu

torch.set_num_threads(1)
refuse = {}
for item in filter(None, os.environ.get("FAKE_NVML_REFUSE", "").split(",")):
    name, err = item.split(":")
    refuse[name] = getattr(pynvml, f"NVMLError_{err}")
log = os.environ.get("FAKE_NVML_LOG")
FakeGpu(log_path=Path(log) if log else None, refuse=refuse,
        forbid_writes=os.environ.get("FAKE_NVML_FORBID_WRITES") == "1").install()

import polythrottle.measure.live as live  # noqa: E402

live.cuda_device_for = lambda uuid, index: torch.device("cpu")

from polythrottle.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
