"""``polythrottle daemon --config FILE.yaml``: run the service in the foreground (systemd Type=notify)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daemon", help="run as a service: apply the tuned config, re-tune on model updates")
    p.add_argument("--config", type=Path, required=True, help="daemon configuration file (YAML)")
    p.add_argument("--check", action="store_true",
                   help="validate the config and open the device (nothing is written), then exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from polythrottle.daemon.config import load_config
    from polythrottle.daemon.service import Daemon, prepare, setup_logging
    from polythrottle.daemon.trust import is_user_workload

    config = load_config(args.config)
    if args.check:  # writes nothing, and imports no workload code it would run
        prepared = prepare(config, import_workload=False)
        prepared.device.close()
        unchecked = ""
        if is_user_workload(config.workload):
            rest = [k for k in config.knobs or [] if k not in prepared.tuned_knobs]
            unchecked = (f"; workload {config.workload} found, not imported"
                         + (f" (knobs {', '.join(rest)} not checked)" if rest else ""))
        print(f"{config.path}: OK (device {config.device}, knobs {', '.join(prepared.tuned_knobs)}, "
              f"SLO {config.slo_ms:g} ms, socket {config.socket}{unchecked})")
        return 0
    setup_logging(getattr(args, "debug", False))
    return Daemon(config).run()
