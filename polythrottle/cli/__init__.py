"""Command line: ``polythrottle COMMAND``. Each command lives in its own module here and exposes
``register(subparsers)``; ``COMMANDS`` lists them in the order ``--help`` shows them.

Errors a user can cause print one line to stderr and exit non-zero (see ``polythrottle.errors``).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from polythrottle._version import __version__
from polythrottle.errors import BadInputError, PolyThrottleError

DESCRIPTION = (
    "Lowest energy per inference under a latency SLO on NVIDIA Jetsons and GPUs: constrained Bayesian "
    "optimization of GPU, memory and CPU clocks and software knobs."
)
COMMANDS = ("tune", "profile", "apply", "restore", "plot", "history", "fleet", "devices", "daemon", "status", "notify",
            "install-service")
"""Every subcommand, as typed; the module is the name with ``-`` -> ``_``."""
EPILOG = ("exit codes: 0 ok; 2 bad input; 3 no config met the SLO; 4 permission denied (needs root); "
          "5 unsupported here (no such device, sensor or knob); 1 a device or daemon failed at run time; "
          "130/143 interrupted by SIGINT/SIGTERM (settings restored)")


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM so that ``finally``/``with`` blocks restore hardware."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own convention)
        self.exit(2, f"polythrottle: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="polythrottle", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"polythrottle {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``polythrottle`` console script. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(signal, "SIGTERM"):
        try:
            signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:  # not the main thread (e.g. called from a library)
            pass
    try:
        return int(args.func(args) or 0)
    except PolyThrottleError as e:
        print(f"polythrottle: error: {e}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        print("polythrottle: terminated (settings restored)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("polythrottle: interrupted (settings restored)", file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:
        if args.debug:
            raise
        print(f"polythrottle: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def run() -> None:
    sys.exit(main())


__all__ = ["COMMANDS", "BadInputError", "build_parser", "main", "run"]
