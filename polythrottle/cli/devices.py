"""``polythrottle devices``: what hardware was found, what can be controlled and measured here, and why not."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from polythrottle.devices import DeviceInfo, DeviceOptions
from polythrottle.devices.registry import SCHEMES
from polythrottle.errors import PolyThrottleError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list the hardware found and what can be controlled and measured")
    p.add_argument("--state-dir", type=Path, default=None, help="state directory (env POLYTHROTTLE_STATE_DIR)")
    p.add_argument("--json", action="store_true", help="print one JSON list on stdout")
    p.set_defaults(func=run)


def probe_all(options: DeviceOptions) -> list[DeviceInfo]:
    """Every device kind whose module has ``probe(options) -> DeviceInfo`` (hardware kinds)."""
    out = []
    for scheme, module_name in SCHEMES.items():
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
            out.append(probe(options))
        except PolyThrottleError as e:
            out.append(DeviceInfo(name=scheme, kind=scheme, found=False, notes=[str(e)]))
    return out


def _status(available: bool) -> str:
    return "yes" if available else "no "


def render(infos: list[DeviceInfo]) -> str:
    lines = []
    for info in infos:
        if not info.found:
            lines.append(f"{info.kind}: " + "; ".join(info.notes or ["not found"]))
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
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    infos = probe_all(DeviceOptions(state_dir=args.state_dir))
    if args.json:
        print(json.dumps([
            {"name": i.name, "kind": i.kind, "found": i.found, "details": i.details, "notes": i.notes,
             "control": [vars(k) for k in i.knobs], "measure": [vars(m) for m in i.meters]}
            for i in infos
        ], indent=2))
    else:
        print(render(infos))
    return 0
