"""Command line: ``polythrottle SUBCOMMAND``. Each subcommand lives in its own module here and
exposes ``register(subparsers)``; modules are discovered, so adding a command touches no other file.

Errors a user can cause print one line to stderr and exit non-zero (see ``polythrottle.errors``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
from collections.abc import Sequence

from polythrottle.errors import BadInputError, PolyThrottleError

_HELPER_MODULES = {"common"}


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM so that ``finally``/``with`` blocks restore hardware."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own convention)
        self.exit(2, f"polythrottle: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="polythrottle", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name in _HELPER_MODULES or mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        if hasattr(module, "register"):
            module.register(sub)
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


__all__ = ["BadInputError", "build_parser", "main", "run"]
