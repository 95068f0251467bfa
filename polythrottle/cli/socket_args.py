"""Where the daemon's control socket is, for ``status`` and ``notify``: --socket, --config, or the default."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from polythrottle.daemon.client import socket_path
from polythrottle.errors import brief


def seconds(text: str) -> float:
    """argparse type of a timeout: a finite number of seconds > 0 (else exit 2 naming the flag)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {brief(text, 40)}") from None
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {brief(text, 40)}")
    return x


def add_socket_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--socket", type=Path, default=None,
                   help="daemon control socket (default $POLYTHROTTLE_SOCKET, else /run/polythrottle/control.sock as "
                        "root or when it exists, else $XDG_RUNTIME_DIR/polythrottle/control.sock, else "
                        "STATE_DIR/control.sock)")
    g.add_argument("--config", type=Path, default=None, help="take the socket path from this daemon config file")
    p.add_argument("--timeout", type=seconds, default=5.0, help="seconds to wait for the daemon's answer (default 5)")


def resolve_socket(args: argparse.Namespace) -> Path:
    """The socket named by --socket, else by --config's ``socket`` field, else the default."""
    if args.config is not None:
        from polythrottle.daemon.config import load_config

        return load_config(args.config).socket
    return socket_path(args.socket)
