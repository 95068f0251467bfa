"""``polythrottle history ls | show ID | export``: read any history (SQLite path or PostgreSQL URL).

- ``ls``: tunes, newest first (id, start, device, unit, workload, model version, SLO, status,
  measurements, recommended energy and latency); filters ``--device/--workload/--model-version/--unit``.
- ``show ID``: one tune and its measurements.
- ``export [--format csv|json] [--out FILE]``: one row per measurement (see ``polythrottle.history.export``);
  ``--out`` is written whole or not at all.

Exit codes: 0 done; 2 bad input or an unusable history (missing, corrupt, newer schema, wrong
credentials; also ``show`` of an unknown id; an ``--out`` that cannot be written, nothing written);
6 the history server cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from polythrottle.atomicfile import atomic_writer
from polythrottle.cli.common import check_output, printable, row_number
from polythrottle.cli.history_args import add_history_location, open_for_reading
from polythrottle.errors import BadInputError


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="only this device (e.g. sim:jetson-agx-orin)")
    p.add_argument("--workload", default=None, help="only this workload")
    p.add_argument("--model-version", default=None, help="only this model version")
    p.add_argument("--unit", default=None, help="only this unit")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="list, show and export the tunes and measurements of a history")
    hs = p.add_subparsers(dest="history_command", metavar="ls|show|export", parser_class=type(p))
    hs.required = True

    ls = hs.add_parser("ls", help="list tunes, newest first")
    add_history_location(ls)
    _filters(ls)
    ls.add_argument("--limit", type=row_number, default=50, help="at most this many tunes (0: all; default 50)")
    ls.add_argument("--json", action="store_true", help="print a JSON array")
    ls.set_defaults(func=run_ls)

    show = hs.add_parser("show", help="one tune and its measurements")
    show.add_argument("id", type=row_number, help="tune id (as listed by ls)")
    add_history_location(show)
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=run_show)

    ex = hs.add_parser("export", help="every measurement, one row each, as CSV or JSON")
    add_history_location(ex)
    _filters(ex)
    ex.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
    ex.add_argument("--out", type=Path, default=None, help="write to FILE (default: standard output)")
    ex.set_defaults(func=run_export)


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "-" if x is None else format(x, fmt)


def _table(rows: list[list[str]]) -> None:
    rows = [[printable(c) for c in r] for r in rows]  # stored text: never a newline or a terminal escape
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def run_ls(args: argparse.Namespace) -> int:
    with open_for_reading(args) as store:
        tunes = store.tunes(device=args.device, workload=args.workload, model_version=args.model_version,
                            unit=args.unit, limit=args.limit or None)
    if args.json:
        json.dump([t.to_dict() for t in tunes], sys.stdout)
        sys.stdout.write("\n")
        return 0
    if not tunes:
        print("no tunes")
        return 0
    rows = [["ID", "STARTED", "DEVICE", "UNIT", "WORKLOAD", "MODEL", "SLO_MS", "STATUS", "N", "BEST_J", "BEST_MS"]]
    for t in tunes:
        rows.append([str(t.id), _when(t.started_at), t.key.device, t.unit or "?", t.key.workload or "-",
                     t.model_version, _num(t.slo_ms, "g"), t.status, str(t.measurements), _num(t.best_energy_j),
                     _num(t.best_latency_ms)])
    _table(rows)
    return 0


def run_show(args: argparse.Namespace) -> int:
    with open_for_reading(args) as store:
        got = store.tune(args.id)
        where = store.url
    if got is None:
        raise BadInputError(f"history {where} has no tune {args.id}")
    tune, ms = got
    if args.json:
        doc: dict[str, Any] = tune.to_dict()
        doc["measurements"] = [
            {"step": m.step, "role": m.role, "config": m.config, "energy_j": m.energy_j, "latency_ms": m.latency_ms,
             "energy_rel_std": m.energy_rel_std, "latency_rel_std": m.latency_rel_std, "measured_at": m.measured_at}
            for m in ms
        ]
        json.dump(doc, sys.stdout)
        sys.stdout.write("\n")
        return 0
    p = printable  # stored text: never a newline or a terminal escape
    print(f"tune {tune.id} ({p(tune.client_id)}): {p(tune.status)}, {tune.measurements} measurements")
    print(f"device {p(tune.key.device)}, unit {p(tune.unit or '?')}, workload {p(tune.key.workload or '-')}, "
          f"space {p(tune.key.space)}")
    print(f"model {p(tune.model_version)}" + (f" (warm from {p(tune.warm_from)})" if tune.warm_from else "")
          + f", SLO {tune.slo_ms:g} ms, optimizer {p(tune.optimizer)}, knobs {p(', '.join(tune.knobs))}")
    print(f"started {_when(tune.started_at)}, finished {_when(tune.finished_at)}"
          + (f", stop: {p(tune.stop_reason)}" if tune.stop_reason else ""))
    if tune.best_config is not None:
        print(f"best {json.dumps(tune.best_config, sort_keys=True)}: {_num(tune.best_energy_j)} J, "
              f"{_num(tune.best_latency_ms)} ms (baseline {_num(tune.baseline_energy_j)} J)")
    if ms:
        knobs = tune.knobs or sorted(ms[0].config)
        rows = [["STEP", "ROLE", *[k.upper() for k in knobs], "ENERGY_J", "LATENCY_MS", "OK"]]
        for m in ms:
            rows.append([str(m.step), m.role, *[str(m.config.get(k, "-")) for k in knobs], _num(m.energy_j),
                         _num(m.latency_ms), "yes" if m.latency_ms <= tune.slo_ms else "no"])
        _table(rows)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from polythrottle.history.export import write_measurements

    out = None if args.out is None else args.out.expanduser()
    check_output(out)  # before the history is read
    with open_for_reading(args) as store:
        if out is not None and store.path is not None and out.resolve() in {
                Path(f"{store.path.resolve()}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")}:
            raise BadInputError(f"--out {out} is the history database itself; export to another file")
        rows = store.export(device=args.device, workload=args.workload, model_version=args.model_version,
                            unit=args.unit)
        if out is None:
            write_measurements(rows, sys.stdout, args.format)
            return 0
        try:
            if out.exists() and not out.is_file():  # a FIFO, /dev/stdout: written in place, never replaced
                with out.open("w", newline="") as f:
                    n = write_measurements(rows, f, args.format)
            else:
                with atomic_writer(out, newline="") as f:
                    n = write_measurements(rows, f, args.format)
        except OSError as e:
            raise BadInputError(f"--out {out}: cannot write ({e.strerror or e})") from None
    print(f"wrote {n} measurements to {out}", file=sys.stderr)
    return 0
