"""``polythrottle tune``: find the lowest-energy config that meets a latency SLO."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from polythrottle.cli.common import add_device_args, device_options, parse_knob_list
from polythrottle.cli.history_args import add_history_args, open_history
from polythrottle.devices import open_device
from polythrottle.errors import BadInputError
from polythrottle.optim import OPTIMIZERS
from polythrottle.space import parse_assignments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="tune knobs for the lowest energy per inference under a latency SLO")
    add_device_args(p)
    p.add_argument("--slo-ms", type=float, required=True, help="latency SLO in milliseconds")
    p.add_argument("--knobs", default=None, help="comma-separated knobs to tune (default: all)")
    p.add_argument("--budget", type=int, default=20, help="measurements, the baseline included (default 20)")
    p.add_argument("--optimizer", default="cbo", help=f"one of: {', '.join(OPTIMIZERS)} (default cbo)")
    p.add_argument("--baseline", action="append", default=None, metavar="KNOB=V,...",
                   help="baseline config overrides (default: highest clocks, smallest batch)")
    p.add_argument("--apply", action="store_true", help="leave the best config applied instead of restoring")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result to FILE")
    add_history_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from polythrottle.report import print_result, tune_progress  # rich rendering only when needed
    from polythrottle.history_tune import device_identity, run_tune

    if not args.slo_ms > 0:
        raise BadInputError(f"--slo-ms must be positive, got {args.slo_ms}")
    if args.budget < 2:
        raise BadInputError(f"--budget must be at least 2, got {args.budget}")
    if args.optimizer not in OPTIMIZERS:
        raise BadInputError(f"unknown optimizer {args.optimizer!r}; expected one of: {', '.join(OPTIMIZERS)}")
    knobs = parse_knob_list(args.knobs)
    baseline = parse_assignments(args.baseline)
    console = Console(stderr=True)
    store, model_version = open_history(args)
    device = open_device(args.device, device_options(args))
    keep = False
    try:
        tune_args = dict(store=store, device_id=device_identity(args.device), workload=args.workload or "",
                         model_version=model_version, warm_start=not args.no_warm_start,
                         optimizer=args.optimizer, knobs=knobs, baseline=baseline, seed=args.seed)
        if args.json or not console.is_terminal:
            result = run_tune(device, args.slo_ms, args.budget, **tune_args)
        else:
            with tune_progress(console, args.budget, args.slo_ms) as on_record:
                result = run_tune(device, args.slo_ms, args.budget, on_record=on_record, **tune_args)
        payload = result.to_dict()
        payload["device"] = args.device
        payload["workload"] = args.workload
        info = device.info()
        payload["device_info"] = {"name": info.name, "details": info.details,
                                  "knobs": [{"name": k.name, "available": k.available, "reason": k.reason}
                                            for k in info.knobs]}
        if args.apply and result.best is not None:
            device.apply(result.best.config)
            device.keep()
            keep = True
            payload["applied"] = result.best.config
        if args.out:
            args.out.write_text(json.dumps(payload, indent=2) + "\n")
        if args.json:
            json.dump(payload, sys.stdout)
            sys.stdout.write("\n")
        else:
            console_out = Console() if sys.stdout.isatty() else Console(width=160)
            print_result(result, console_out)
            warm = result.extra.get("warm_start")
            if warm:
                console_out.print(
                    f"Warm start from model version {warm['from_version']} ({warm['prior_measurements']} stored "
                    "measurements)" + (f"; {warm['fallback']}" if warm.get("fallback") else "") + "."
                )
    finally:
        if not keep:
            device.close()
        if store is not None:
            store.close()
    if result.best is None:
        if args.json:
            from polythrottle.report import no_config_line

            print(f"polythrottle: no config met the {args.slo_ms:g} ms SLO; {no_config_line(result)}", file=sys.stderr)
        return 3
    return 0
