"""What ``polythrottle devices`` says of NVIDIA GPUs: a read-only NVML view (nvidia-ml-py), each GPU with
its energy sensors and whether its clocks can be set here."""

from __future__ import annotations

from polythrottle.clocks.sysfs import is_root_user
from polythrottle.devices.base import DeviceInfo
from polythrottle.space import KnobStatus


def probe_gpus() -> list[DeviceInfo]:
    """Each NVIDIA GPU NVML sees and its sensors, read-only (nothing is written); one entry saying why
    when there is none (nvidia-ml-py missing, no driver, no GPU)."""
    try:
        import pynvml
    except ImportError:
        return [DeviceInfo(name="nvml", kind="nvml", found=False, notes=["nvidia-ml-py is not installed"])]
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return [DeviceInfo(name="nvml", kind="nvml", found=False, notes=[f"no NVIDIA GPU found: NVML says {e}"])]
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            meters = []
            for label, fn in (("energy counter", pynvml.nvmlDeviceGetTotalEnergyConsumption),
                              ("power", pynvml.nvmlDeviceGetPowerUsage)):
                try:
                    fn(h)
                    meters.append(KnobStatus(label, True, "readable"))
                except pynvml.NVMLError as e:
                    meters.append(KnobStatus(label, False, f"NVML reports {e}"))
            why = f"`tune --device nvml:{i}` probes what the driver accepts" if is_root_user() else "not root"
            knobs = [KnobStatus(k, is_root_user(), why) for k in ("gpu_mhz", "mem_mhz")]
            board = name.decode() if isinstance(name, bytes) else str(name)
            gpus.append(DeviceInfo(name=f"nvml:{i}", kind="nvml", details={"board": board}, knobs=knobs,
                                   meters=meters))
        return gpus or [DeviceInfo(name="nvml", kind="nvml", found=False, notes=["NVML found no GPU"])]
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
