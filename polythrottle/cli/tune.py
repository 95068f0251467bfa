"""``polythrottle tune``: find the lowest-energy config that meets a latency SLO."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from polythrottle.cli.common import (
    add_device_args,
    check_output,
    close_device,
    refuse_output_over_input,
    tune_spec,
    write_output,
)
from polythrottle.cli.history_args import (
    add_history_args,
    checked_model_version,
    open_store,
    refuse_output_over_history,
)
from polythrottle.devices import open_device
from polythrottle.errors import clip
from polythrottle.optim import OPTIMIZERS

if TYPE_CHECKING:
    from polythrottle.tuning.tuner import TuneResult


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
    p.add_argument("--quiet", action="store_true",
                   help="print nothing while tuning and no final table (errors still go to stderr)")
    p.add_argument("--carbon-country", default=None, metavar="ISO3",
                   help="grid carbon intensity of this country (ISO 3166-1 alpha-3, e.g. FRA) for the CO2 "
                        "estimate (default: world average)")
    p.add_argument("--carbon-intensity", type=float, default=None, metavar="G_PER_KWH",
                   help="grid carbon intensity in gCO2/kWh; overrides --carbon-country's dataset value")
    add_history_args(p)
    p.set_defaults(func=run)


def _add_workload_latencies(payload: dict[str, Any], result: TuneResult) -> None:
    """Live workloads that time more than batches (llm: ttft/tpot): each history row gets every metric's
    statistics (``latencies_ms``), the payload the SLO metric and what energy is counted per."""
    for row, rec in zip(payload["history"], result.history):
        extra = rec.measurement.extra
        if "latencies_ms" in extra:
            row["latencies_ms"] = extra["latencies_ms"]
            payload.setdefault("slo_metric", extra.get("slo_metric"))
            payload.setdefault("energy_per", extra.get("energy_per"))


def _say_spooled(store: object) -> None:
    """One warning line when the history could not be written (a server out of reach, a SQLite file locked by
    another process) and measurements wait in the local spool. A SQLite history is tried once more first
    (its lock is usually brief): what that writes leaves nothing waiting."""
    pending = getattr(store, "pending", None)
    n = pending() if callable(pending) else 0
    target = getattr(store, "target", None)
    sqlite = bool(getattr(target, "is_sqlite", False))
    if n and sqlite:
        store.sync()  # type: ignore[attr-defined]  # a SpooledHistory: it has pending, so it has sync
        n = pending() if callable(pending) else 0
    if n:
        why = getattr(store, "last_error", None) or f"history server {getattr(store, 'url', '')} not reached"
        when = ("written to the history by the next tune once the file is free" if sqlite
                else "uploaded once the server answers")
        print(f"polythrottle: warning: {clip(str(why), 200)}; {n} measurements wait in the local spool "
              f"{getattr(store, 'spool_file', '')} ({when})", file=sys.stderr)
        return
    spooled = int(getattr(store, "spooled", 0) or 0)
    if sqlite and spooled:
        print(f"polythrottle: warning: history database {getattr(store, 'url', '')} was locked by another process "
              f"for a while; {spooled} measurements waited in the local spool and are now written to it",
              file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from polythrottle.carbon import resolve, tune_extra
    from polythrottle.cli.render import LiveView, no_config_line, print_result  # rich rendering only when needed
    from polythrottle.tuning.session import check_tune, run_tune

    spec = tune_spec(args)  # every argument checked before anything else happens
    model_version = checked_model_version(args)  # a missing --model-file first; refused if no history is kept
    knobs = list(spec.knobs) if spec.knobs else None
    carbon = resolve(spec.carbon_country, spec.carbon_intensity_g_per_kwh)
    check_output(args.out)  # before the tune: an unwritable --out would lose the result after it
    refuse_output_over_input(args.device, args.out)
    refuse_output_over_history(args, args.out)
    device = open_device(spec.device, spec.device_options())
    keep = False
    store = None
    cause: BaseException | None = None
    try:
        # knobs and baseline checked against the device before the history is opened (which creates it)
        check_tune(device, spec.slo_ms, spec.budget, knobs=knobs, baseline=spec.baseline, seed=spec.seed)
        store = open_store(args)
        live = None if args.quiet else LiveView(Console(stderr=True), spec.slo_ms, spec.budget,
                                                 device=spec.device, knobs=knobs)
        result = run_tune(device, spec.slo_ms, spec.budget, store=store, model_version=model_version,
                          warm_start=spec.warm_start, optimizer=spec.optimizer, knobs=knobs, baseline=spec.baseline,
                          seed=spec.seed, on_record=live.on_record if live else None)
        result.extra.update(tune_extra(carbon, result))
        payload = result.to_dict()
        payload["device"] = args.device
        payload["workload"] = args.workload
        _add_workload_latencies(payload, result)
        info = device.info()
        payload["device_info"] = {"name": info.name, "details": info.details,
                                  "knobs": [{"name": k.name, "available": k.available, "reason": k.reason}
                                            for k in info.knobs]}
        if args.apply and result.best is not None:
            device.apply(result.best.config)
            payload["applied"] = result.best.config
        if args.out:
            write_output(args.out, json.dumps(payload, indent=2) + "\n")
        if args.apply and result.best is not None:
            device.keep()  # only once the result is saved: a failure before leaves nothing applied
            keep = True
        if args.json:
            json.dump(payload, sys.stdout)
            sys.stdout.write("\n")
        elif not args.quiet:
            console_out = Console()
            print_result(result, console_out, carbon)
            warm = result.extra.get("warm_start")
            if warm:
                console_out.print(  # model versions are the user's text: printed as is, never as markup
                    escape(f"Warm start from model version {warm['from_version']} ({warm['prior_measurements']} "
                           "stored measurements" + (" of another knob space" if warm.get("from_space") else "") + ")"
                           + (f"; {warm['fallback']}" if warm.get("fallback") else "") + "."),
                    highlight=False,
                )
        _say_spooled(store)
    except BaseException as e:
        cause = e
        raise
    finally:
        try:
            if not keep:
                close_device(device, cause)  # a restore that fails names the cause too
        finally:
            if store is not None:
                store.close()
    if result.best is None:
        if args.json or args.quiet:
            print(
                f"polythrottle: no config met the {args.slo_ms:g} ms SLO; {no_config_line(result)}",
                file=sys.stderr,
            )
        return 3
    return 0
