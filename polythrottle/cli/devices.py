"""``polythrottle devices``: what hardware was found, what can be controlled and measured here, and why not;
then the simulated boards (digital twins of the board profiles) and their workloads, to try without hardware."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from polythrottle.boards.profiles import list_profiles, load_profile
from polythrottle.clocks.sysfs import fs_root, is_root_user
from polythrottle.devices import DeviceInfo, DeviceOptions
from polythrottle.devices.registry import SCHEMES
from polythrottle.errors import PolyThrottleError
from polythrottle.space import KnobStatus


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list the hardware found and what can be controlled and measured")
    p.add_argument("--state-dir", type=Path, default=None, help="state directory (env POLYTHROTTLE_STATE_DIR)")
    p.add_argument("--json", action="store_true", help="print one JSON list on stdout")
    p.set_defaults(func=run)


def nvml_summary() -> list[DeviceInfo]:
    """Read-only NVML view (when the nvml device module has no ``probe``): each GPU and its sensors."""
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
        try:
            nvml_probe = getattr(importlib.import_module(SCHEMES["nvml"]), "probe", None)
        except ImportError:
            nvml_probe = None
        out += [nvml_probe(options)] if nvml_probe else nvml_summary()
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


def _status(available: bool) -> str:
    return "yes" if available else "no "


def render(infos: list[DeviceInfo]) -> str:
    lines = []
    sims = [i for i in infos if i.kind == "sim"]
    for info in infos:
        if info.kind == "sim" and info is sims[0]:
            lines += ["", "Simulated boards (digital twins: no hardware needed, nothing is written;",
                      "sim:BOARD?gpu=range tunes the GPU's min/max clocks under its governor):"]
        if not info.found:
            lines.append(f"{info.name if info.kind == 'sim' else info.kind}: " + "; ".join(info.notes or ["not found"]))
            continue
        lines.append(f"{info.name}: {info.details.get('board', info.kind)}")
        for k, v in info.details.items():
            if k != "board":
                lines.append(f"  {k}: {v}")
        if info.knobs:
            lines.append("  control:")
            lines += [f"    [{_status(k.available)}] {k.name}: {k.reason}" for k in info.knobs]
        if info.meters:
            lines.append("  measure:")
            lines += [f"    [{_status(m.available)}] {m.name}: {m.reason}" for m in info.meters]
        lines += [f"  note: {n}" for n in info.notes]
    ready = [i for i in sims if i.found]
    if ready:
        first = next((i for i in ready if i.name == "sim:jetson-agx-orin"), ready[0])
        workload = first.details["workloads"].split(", ")[0]
        slo = "25" if first.name == "sim:jetson-agx-orin" and workload == "efficientnet-b0" else "MS"
        lines += ["", f"Try: polythrottle tune --device {first.name} --workload {workload} --slo-ms {slo}",
                  "     polythrottle tune --device replay:TABLE.csv --slo-ms MS     (a measured table)"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    infos = probe_all(DeviceOptions(state_dir=args.state_dir)) + sim_boards()
    if args.json:
        print(json.dumps([
            {"name": i.name, "kind": i.kind, "found": i.found, "details": i.details, "notes": i.notes,
             "control": [vars(k) for k in i.knobs], "measure": [vars(m) for m in i.meters]}
            for i in infos
        ], indent=2))
    else:
        print(render(infos))
    return 0
