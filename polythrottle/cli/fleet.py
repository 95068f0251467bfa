"""``polythrottle fleet [--history URL] [--json]``: per device (board), workload, model version and SLO:
units, tunes, the config the tunes recommend most and how much its energy and latency vary across the
units that measured it (min / median / max and CV; see ``polythrottle.history.fleet_summary``).

Exit codes: 0 done; 2 an unusable history (missing, corrupt, newer schema, wrong credentials);
6 the history server cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from polythrottle.cli.common import printable
from polythrottle.cli.history_args import add_history_location, open_for_reading

if TYPE_CHECKING:
    from polythrottle.history.fleet_summary import Spread


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="per board, workload and model version: units, tunes, best config and its "
                                     "spread across units")
    add_history_location(p)
    p.add_argument("--json", action="store_true", help="print a JSON array, one object per group")
    p.set_defaults(func=run)


def _spread(s: Spread | None, unit: str) -> str:
    if s is None:
        return "-"
    cv = "" if s.cv is None else f" cv {100 * s.cv:.1f}%"
    return f"{s.min:.4g}/{s.median:.4g}/{s.max:.4g} {unit}{cv}"


def run(args: argparse.Namespace) -> int:
    from polythrottle.history.fleet_summary import fleet_summary

    with open_for_reading(args) as store:
        groups = fleet_summary(store)
    if args.json:
        json.dump([g.to_dict() for g in groups], sys.stdout)
        sys.stdout.write("\n")
        return 0
    if not groups:
        print("no tunes")
        return 0
    for g in groups:
        p = printable  # stored text: never a newline or a terminal escape
        print(f"{p(g.device)}  workload {p(g.workload or '-')}  model {p(g.model_version)}  SLO {g.slo_ms:g} ms  "
              f"space {p(g.space)}")
        print(f"  {g.units} units, {g.tunes} tunes, {g.measurements} measurements")
        if g.best_config is None:
            print("  best: none yet (no finished tune found a feasible config)")
            continue
        cfg = p(", ".join(f"{k}={v}" for k, v in sorted(g.best_config.items())))
        print(f"  best ({g.best_tunes} tunes): {cfg}")
        print(f"  across {g.config_units} units (min/median/max): energy {_spread(g.energy_j, 'J')}, "
              f"latency {_spread(g.latency_ms, 'ms')}; meets the SLO on {g.feasible_units}/{g.config_units}")
    return 0
