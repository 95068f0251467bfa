"""What devices this machine offers: the hardware kinds' probes (``probe(options) -> DeviceInfo`` of a
device module; NVML's GPUs) and the simulated boards (the twin of every board profile) with their workloads.
Reads only; ``polythrottle devices`` renders the result."""

from __future__ import annotations

import importlib
from pathlib import Path

from polythrottle.boards.profiles import list_profiles, load_profile
from polythrottle.clocks.sysfs import fs_root
from polythrottle.devices.base import DeviceInfo
from polythrottle.devices.nvml_probe import probe_gpus
from polythrottle.devices.registry import SCHEMES, DeviceOptions
from polythrottle.errors import PolyThrottleError


def probe_all(options: DeviceOptions) -> list[DeviceInfo]:
    """Every device kind whose module has ``probe(options) -> DeviceInfo`` (hardware kinds)."""
    out = []
    jetson_found = False
    for scheme, module_name in SCHEMES.items():
        if scheme == "nvml":
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:  # a kind not in this build, or its library missing
            if isinstance(e, ModuleNotFoundError) and e.name == module_name:
                continue
            out.append(DeviceInfo(name=scheme, kind=scheme, found=False, notes=[f"not available ({e})"]))
            continue
        probe = getattr(module, "probe", None)
        if probe is None:
            continue
        try:
            info = probe(options)
        except PolyThrottleError as e:
            info = DeviceInfo(name=scheme, kind=scheme, found=False, notes=[str(e)])
        out.append(info)
        jetson_found |= info.kind == "jetson" and info.found
    # NVML: on a Jetson it reports NotSupported (said in the Jetson entry); under a fake root it is moot
    if not jetson_found and fs_root() == Path("/"):
        out += probe_gpus()
    return out


def sim_boards() -> list[DeviceInfo]:
    """Every board profile's twin (``sim:NAME``) and its workloads; a broken profile says why."""
    from polythrottle.twin.params import board_from_profile

    out = []
    for name in list_profiles():
        try:
            profile = load_profile(name)
            workloads = list(board_from_profile(profile).workloads)
        except PolyThrottleError as e:
            out.append(DeviceInfo(name=f"sim:{name}", kind="sim", found=False, notes=[str(e)]))
            continue
        out.append(DeviceInfo(name=f"sim:{name}", kind="sim", details={
            "board": profile.description, "workloads": ", ".join(workloads)}))
    return out


__all__ = ["probe_all", "sim_boards"]
