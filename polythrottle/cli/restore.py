"""``polythrottle restore``: put back every saved original hardware value (also after a crash)."""

from __future__ import annotations

import argparse

from polythrottle.cli.common import add_device_args, device_options
from polythrottle.devices import open_device
from polythrottle.devices.registry import is_simulated


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="put back the original hardware values saved before the first change")
    add_device_args(p, measuring=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if is_simulated(args.device):
        print(f"nothing to restore for {args.device}: a simulated device changes no hardware")
        return 0
    device = open_device(args.device, device_options(args))
    restored = device.restore_saved()
    if not restored:
        print(f"nothing to restore for {args.device} (no saved originals)")
        return 0
    print(f"restored {len(restored)} value(s):")
    for p in restored:
        print(f"  {p}")
    return 0
