"""``polythrottle devices``: what hardware was found, what can be controlled and measured here, and why not;
then the simulated boards (digital twins of the board profiles) and their workloads, to try without hardware."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polythrottle.devices import DeviceInfo, DeviceOptions
from polythrottle.devices.probe import probe_all, sim_boards


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list the hardware found and what can be controlled and measured")
    p.add_argument("--state-dir", type=Path, default=None, help="state directory (env POLYTHROTTLE_STATE_DIR)")
    p.add_argument("--json", action="store_true", help="print one JSON list on stdout")
    p.set_defaults(func=run)


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
