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
    from polythrottle.daemon.service import Daemon, check_config, setup_logging

    if args.check:
        print(check_config(args.config))
        return 0
    config = load_config(args.config)
    setup_logging(getattr(args, "debug", False))
    return Daemon(config).run()
