"""``polythrottle status [--json]``: what the running daemon applied, its last tune, SLO and current numbers."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from typing import Any

from polythrottle.cli.socket_args import add_socket_args, resolve_socket
from polythrottle.errors import brief, first_line


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the daemon's applied config, last tune, SLO and current energy/latency")
    p.add_argument("--json", action="store_true", help="print the status as one JSON object")
    add_socket_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from polythrottle.daemon.client import status as daemon_status

    status = daemon_status(resolve_socket(args), timeout_s=args.timeout)
    if args.json:
        json.dump(status, sys.stdout, default=str)
        sys.stdout.write("\n")
    else:
        print_status(status)
    return 0


def _config(cfg: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items()) if cfg else "(none)"


def _ago(t: float | None) -> str:
    if not t:
        return "?"
    s = max(0.0, time.time() - float(t))
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}min ago" if s < 7200 else f"{s / 3600:.1f}h ago"


def print_status(s: dict[str, Any]) -> None:
    """Human-readable status, a line per topic; all of it or, for a status this version cannot show (a
    field missing or of another type: a daemon of another version, or not a daemon), one error and no line."""
    from polythrottle.daemon.client import DaemonError

    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text):
            _print_status(s)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        why = f"no field {brief(e.args[0], 40)}" if isinstance(e, KeyError) and e.args else first_line(e)
        raise DaemonError(f"the daemon's status cannot be shown ({why}); `polythrottle status --json` "
                          "prints it as sent") from None
    sys.stdout.write(text.getvalue())


def _print_status(s: dict[str, Any]) -> None:
    print(f"state:        {s['state']} (pid {s['pid']}, up {s['uptime_s']:.0f}s, config {s['config']})")
    print(f"device:       {s['device']}" + (f", workload {s['workload']}" if s.get("workload") else ""))
    print(f"SLO:          {s['slo_ms']:g} ms; knobs tuned: {', '.join(s.get('knobs') or [])}")
    print(f"model:        {s.get('model_version') or '(unknown)'}")
    src = f" (from {s['applied_source']})" if s.get("applied_source") else ""
    print(f"applied:      {_config(s.get('applied'))}{src}")
    cur = s.get("current")
    if cur:
        ok = "meets the SLO" if cur.get("meets_slo") else "OVER the SLO"
        print(f"current:      {cur['energy_j']:.4g} J/inference, {cur['latency_ms']:.4g} ms ({ok}), "
              f"{cur['co2_per_inference_g']:.3g} g CO2/inference at {s['carbon_intensity_g_per_kwh']:g} g/kWh")
    carbon = s.get("carbon")
    if carbon:
        where = ", ".join(str(x) for x in (carbon.get("country"), carbon.get("year")) if x)
        print(f"carbon:       {carbon['intensity_g_per_kwh']:g} g/kWh ({where + '; ' if where else ''}"
              f"{carbon.get('source')})")
    t = s.get("tuning")
    if t:
        print(f"tuning:       {t['kind']} of model {t['model_version']}: {t['measurements']}/{t['budget']} "
              f"measurements, started {_ago(t['started_at'])}")
    lt = s.get("last_tune")
    if lt:
        warm = lt.get("warm_start")
        how = f"warm start from {warm['from_version']}" if warm else "cold start"
        saving = f"saving {lt['saving_pct']:.1f}% vs baseline" if lt.get("saving_pct") is not None else "nothing feasible"
        print(f"last tune:    {lt['kind']}, {_ago(lt['finished_at'])}, {lt['measurements']} measurements "
              f"({how}), {saving}")
    v = s.get("slo_violations") or {}
    print(f"violations:   serving {v.get('serving', 0)}, tuning {v.get('tuning', 0)}; tunes: {s.get('tunes', 0)}")
    if s.get("recovered"):
        r = s["recovered"]
        print(f"recovered:    a previous run (pid {r.get('pid')}) left {len(r.get('restored') or [])} setting(s); restored")
    if s.get("metrics_url"):
        print(f"metrics:      {s['metrics_url']}")
    if s.get("last_error"):
        print(f"last error:   {s['last_error']}")
