"""``polythrottle apply``: set hardware knobs and leave them set (originals saved for ``restore``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from polythrottle.cli.common import add_device_args, close_device, device_options
from polythrottle.devices import open_device
from polythrottle.devices.registry import is_simulated
from polythrottle.errors import BadInputError, brief, clip
from polythrottle.space import parse_assignments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("apply", help="set hardware knobs (e.g. gpu_mhz) and keep them; `restore` undoes it")
    add_device_args(p, measuring=False)
    p.add_argument("--set", action="append", default=None, metavar="KNOB=VALUE",
                   help="a knob and its value (repeatable; KNOB=V,KNOB2=V2 also works)")
    p.add_argument("--config", type=Path, default=None, metavar="RESULT.json",
                   help="apply the best config of a `tune --json`/`--out` result (hardware knobs only)")
    p.set_defaults(func=run)


def config_from_result(path: Path) -> dict[str, Any]:
    """The config to apply from a tune result (``best.config``) or ``{"config": {...}}``."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(f"--config {path} not found") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else clip(str(e), 100)
        raise BadInputError(f"--config {path}: not a JSON result ({why})") from None
    if isinstance(data, dict) and "best" in data:
        if not data["best"]:
            raise BadInputError(f"--config {path}: the tune found no feasible config (best is null)")
        cfg = data["best"].get("config") if isinstance(data["best"], dict) else None
    else:
        cfg = data.get("config") if isinstance(data, dict) else None
    if not isinstance(cfg, dict) or not cfg:
        raise BadInputError(f"--config {path}: expected a tune result with best.config")
    for k, v in cfg.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)) or isinstance(v, float) and not math.isfinite(v):
            raise BadInputError(f"--config {path}: {brief(k, 40)}={brief(v, 40)} is not a knob value")
    return cfg


def run(args: argparse.Namespace) -> int:
    if args.set and args.config:  # "give --set or --config" read as if neither had been given
        raise BadInputError("give --set KNOB=VALUE or --config RESULT.json, not both")
    if not args.set and not args.config:
        raise BadInputError("give --set KNOB=VALUE (one or more) or --config RESULT.json")
    config: dict[str, Any] = parse_assignments(args.set) if args.set else config_from_result(args.config)
    if is_simulated(args.device):
        raise BadInputError(f"{args.device} is simulated: it has no hardware settings to apply "
                            "(apply works on jetson and nvml devices; `tune` tunes simulated ones)")
    device = open_device(args.device, device_options(args))
    try:
        unavailable = device.unavailable_knob_error(config)  # e.g. no permission: why, not "nothing to apply"
        if unavailable is not None:
            raise unavailable
        if not device.info().touches_hardware:
            raise BadInputError(f"device {args.device} has no hardware settings to apply")
        hardware = device.hardware_knobs
        if args.config:
            skipped = {k: v for k, v in config.items() if k not in hardware}
            config = {k: v for k, v in config.items() if k in hardware}
            for k, v in skipped.items():
                print(f"polythrottle: note: {k}={v} is a software knob; set it in the serving code", file=sys.stderr)
            if not config:
                raise BadInputError(f"--config {args.config}: no hardware knob to apply")
        device.keep()  # what this apply sets stays set; the originals stay saved for `restore`
        device.apply_part(config)  # knobs not given stay as they are; a failed apply rolls back what it wrote
    except BaseException as e:
        close_device(device, e)  # restores what the failed apply left behind; a failure names the cause too
        raise
    close_device(device)  # restores nothing: what this apply set is kept
    writes = device.last_writes
    print("applied " + ", ".join(f"{k}={v}" for k, v in config.items()))
    for w in writes:
        print(f"  {w.path} <- {w.value}")
    if not writes:
        print("  (already set; nothing written)")
    where = device.originals_location()
    if where is not None and where.file.is_file():  # nothing written, nothing kept before: nothing was saved
        print(f"originals saved in {where.directory}; `polythrottle restore --device {args.device}` puts them back")
    return 0
