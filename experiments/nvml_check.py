"""Read-only checks of an NVIDIA GPU before live runs: versions, energy-counter step period and read
cost, power readings, and a few harness measurements with the counter cross-checked against
integrated instantaneous power. Never writes any hardware setting (--no-clock-control).

Usage: python experiments/nvml_check.py [--index 0] [--workload torchvision:resnet50] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pynvml  # noqa: E402

from polythrottle.devices import DeviceOptions  # noqa: E402
from polythrottle.devices.nvml import open_device  # noqa: E402
from polythrottle.energy.nvml import NvmlEnergyMeter, power_reader, read_energy_mj  # noqa: E402
from polythrottle.measure.harness import HarnessSettings  # noqa: E402


def versions(handle) -> dict:
    import importlib.metadata as md

    import torch

    out = {
        "gpu": pynvml.nvmlDeviceGetName(handle),
        "driver": pynvml.nvmlSystemGetDriverVersion(),
        "cuda_driver_api": pynvml.nvmlSystemGetCudaDriverVersion_v2(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(),
    }
    for pkg in ("torchvision", "nvidia-ml-py", "botorch", "gpytorch", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    out["power_limit_w"] = pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000
    out["persistence_mode"] = pynvml.nvmlDeviceGetPersistenceMode(handle)
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in out.items()}


def counter_behaviour(handle, seconds: float = 1.0) -> dict:
    """Read the counter back to back for ``seconds``: read cost and how often its value changes."""
    t_end = time.perf_counter() + seconds
    reads, changes, last, costs = 0, [], read_energy_mj(handle), []
    while time.perf_counter() < t_end:
        a = time.perf_counter()
        v = read_energy_mj(handle)
        b = time.perf_counter()
        costs.append(b - a)
        reads += 1
        if v != last:
            changes.append(b)
            last = v
    gaps = [y - x for x, y in zip(changes, changes[1:])]
    read_w, src = power_reader(handle)
    a = time.perf_counter()
    p = read_w()
    return {
        "reads": reads,
        "read_cost_ms_median": 1e3 * sorted(costs)[len(costs) // 2],
        "changes": len(changes),
        "step_period_ms_median": 1e3 * sorted(gaps)[len(gaps) // 2] if gaps else None,
        "power_source": src,
        "idle_power_w": p,
        "power_read_ms": 1e3 * (time.perf_counter() - a),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--workload", default="torchvision:resnet50")
    ap.add_argument("--window-s", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--configs", default="1/fp32/off,128/fp16/on,32/bf16/off")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(args.index)
    report = {"versions": versions(h), "counter": counter_behaviour(h)}
    print(json.dumps(report, indent=1), flush=True)

    settings = HarnessSettings(window_s=args.window_s, repeats=args.repeats)
    dev = open_device(str(args.index), DeviceOptions(workload=args.workload, no_clock_control=True), harness=settings)
    # cross-check the counter against integrated instantaneous power over the same windows
    print(json.dumps(dev.info().details), flush=True)
    dev.measurer.meter = NvmlEnergyMeter(dev.control.handle, cross_check=True)
    rows = []
    try:
        for spec in args.configs.split(","):
            b, prec, graphs = spec.split("/")
            cfg = dev.default_config() | {"batch_size": int(b), "precision": prec}
            if "cuda_graphs" in dev.space().names:
                cfg["cuda_graphs"] = graphs
            t0 = time.perf_counter()
            dev.apply(cfg)
            t_apply = time.perf_counter() - t0
            m = dev.measure()
            row = {"config": cfg, "apply_s": t_apply, **m.to_dict()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        dev.close()
    report["measurements"] = rows
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
