"""Command line: ``polythrottle COMMAND``. Each command lives in its own module here and exposes
``register(subparsers)``; ``COMMANDS`` lists them in the order ``--help`` shows them.

Errors a user can cause print one line to stderr and exit non-zero (see ``polythrottle.errors``).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from polythrottle import interrupts
from polythrottle._version import __version__
from polythrottle.errors import BadInputError, PolyThrottleError, clip
from polythrottle.interrupts import Terminated

DESCRIPTION = (
    "Lowest energy per inference under a latency SLO on NVIDIA Jetsons and GPUs: constrained Bayesian "
    "optimization of GPU, memory and CPU clocks and software knobs."
)
COMMANDS = ("tune", "profile", "apply", "restore", "plot", "history", "fleet", "devices", "daemon", "status", "notify",
            "install-service")
"""Every subcommand, as typed; the module is the name with ``-`` -> ``_``."""
EPILOG = ("exit codes: 0 ok; 2 bad input; 3 no config met the SLO; 4 permission denied (needs root); "
          "5 unsupported here (no such device, sensor or knob); 1 a device or daemon failed at run time; "
          "6 the history cannot be reached (server out of reach, SQLite file locked); 130/143/129 interrupted by SIGINT/SIGTERM/SIGHUP "
          "(after the settings are back); 141 stdout closed early ('| head')")
_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a command killed by it
_on_sigterm = interrupts.raise_terminated  # for scripts that hold a device and want SIGTERM to restore it


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse's own convention)
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


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush cannot fail on a closed pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file descriptor (captured in tests): nothing to flush
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names. Returns the exit code (``run`` is the console script's entry point).

    Exit codes: 0 done; 1 device error; 2 bad input; 3 nothing met the SLO; 4 permission denied;
    5 unsupported; 128 + N on signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP), once the settings the
    command changed are back; 141 (silently) when stdout's reader went away (``| head``). Each error is one line on stderr, never a traceback (``--debug`` shows it).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    interrupts.reset()
    with interrupts.command_signals():
        try:
            try:
                code, message = int(args.func(args) or 0), ""
                interrupts.check()  # a signal whose exception was lost (a library's bare except) still ends it
            except PolyThrottleError as e:
                code, message = e.exit_code, f"error: {e}"
            except KeyboardInterrupt as e:  # SIGINT, SIGTERM, SIGHUP: the command's finally blocks ran
                code, message = interrupts.exit_code_of(e), interrupts.verb_of(e)
            except BrokenPipeError:  # stdout's reader went away (`| head`): not an error of ours, say nothing
                code, message = _BROKEN_PIPE, ""
                _stdout_to_devnull()
            except SystemExit as e:  # e.g. a user's workload calling sys.exit(): settle what it left
                code = e.code if isinstance(e.code, int) and e.code else 1
                message = f"error: the command exited early (sys.exit({clip(str(e.code), 60)}))"
            except Exception as e:
                if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:  # a name given (--out, --history,
                    # replay:...) that no file can have: bad input, refused before anything was done with it
                    code, message = BadInputError.exit_code, f"error: {clip(str(e.filename or ''), 80)}: file name too long"
                elif args.debug:
                    raise
                else:
                    code, message = 1, f"error: {type(e).__name__}: {clip(str(e))}"
            finally:
                interrupts.ignore_further()  # from here on a signal is recorded, not raised
        except KeyboardInterrupt as e:  # the first signal landed between the command and the line above
            code, message = interrupts.exit_code_of(e), interrupts.verb_of(e)
        failed, kept = interrupts.settle()  # a command that stopped early must not leave a setting changed
        if code >= 128 and code != _BROKEN_PIPE:
            if failed:
                message += f"; COULD NOT RESTORE: {'; '.join(failed)}"
            elif kept:
                message += " (the applied settings stay; `polythrottle restore` puts the originals back)"
            else:
                message += " (settings restored)"
        elif failed:
            message = (message + "; " if message else "error: ") + f"COULD NOT RESTORE: {'; '.join(failed)}"
            code = code or 1
        if message:  # one line, bounded whatever a file or a device said
            print(f"polythrottle: {clip(message, 1000)}", file=sys.stderr)
        return code


def run() -> None:
    """Entry point of the ``polythrottle`` console script and of ``python -m polythrottle``: ``main`` plus a
    Ctrl-C that lands before the command's handlers are in place."""
    try:
        code = main()
    except KeyboardInterrupt:  # before the command's handlers were in place (importing it): nothing changed yet
        print("polythrottle: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


__all__ = ["COMMANDS", "BadInputError", "Terminated", "build_parser", "main", "run"]
