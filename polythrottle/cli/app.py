"""The command line behind ``polythrottle.cli.run``: the parser and ``main``. Each command lives in its own module
of ``polythrottle.cli`` and exposes ``register(subparsers)``; ``COMMANDS`` lists them in the order ``--help`` shows
them.

Errors a user can cause print one line to stderr and exit non-zero (see ``polythrottle.errors``).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, cast

from polythrottle import interrupts
from polythrottle._version import __version__
from polythrottle.errors import BadInputError, PermissionDeniedError, PolyThrottleError, clip
from polythrottle.interrupts import Terminated

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

DESCRIPTION = (
    "Lowest energy per inference under a latency SLO on NVIDIA Jetsons and GPUs: constrained Bayesian "
    "optimization of GPU, memory and CPU clocks and software knobs."
)
COMMANDS = ("tune", "profile", "apply", "restore", "plot", "history", "fleet", "devices", "daemon", "status", "notify",
            "install-service")
"""Every subcommand, as typed; the module is the name with ``-`` -> ``_``."""
EPILOG = ("exit codes: 0 ok; 2 bad input; 3 no config met the SLO; 4 permission denied (needs root); "
          "5 unsupported here (no such device, sensor or knob); 1 a device or daemon failed at run time, or stdout "
          "cannot be written (a full disk); 6 the history cannot be reached (server out of reach, SQLite file "
          "locked); 130/143/129 interrupted by SIGINT/SIGTERM/SIGHUP (after the settings are back); 141 stdout "
          "closed early ('| head')")
_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a command killed by it
_on_sigterm = interrupts.raise_terminated  # for scripts that hold a device and want SIGTERM to restore it


class _Parser(argparse.ArgumentParser):
    _seen: list[str] | None = None
    _parent: _Parser | None = None  # the parser whose subcommand this one is (set by build_parser)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        self._seen = list(sys.argv[1:] if args is None else args)  # for error(): the arguments this parser got
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse's own convention)
        if message.startswith("the following arguments are required"):
            chain: list[_Parser] = []
            p: _Parser | None = self
            while p is not None:
                chain.insert(0, p)
                p = p._parent
            stray = next((s for s in (q._stray_option() for q in chain) if s is not None), None)
            if stray is not None:  # `--bogus` alone said "arguments are required: COMMAND": name the option
                message = f"unrecognized arguments: {stray}"
        self.exit(2, f"polythrottle: error: {message}\n")

    def _stray_option(self) -> str | None:
        """The first option among this parser's arguments that it does not know, None if there is none. argparse
        reports a missing required argument before an unknown option, which then went unnamed. The arguments
        after a subcommand's name are that subcommand's (its own parser names what it does not know)."""
        commands: set[str] = set()
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                commands.update(action.choices)
        for arg in self._seen or ():
            if arg == "--":
                return None
            if arg in commands:
                return None
            if not arg.startswith("-") or arg == "-" or self._negative_number_matcher.match(arg):
                continue
            name = arg.split("=", 1)[0]
            if name in self._option_string_actions:
                continue
            if name.startswith("--") and self.allow_abbrev and any(
                    o.startswith(name) for o in self._option_string_actions if o.startswith("--")):
                continue
            if not name.startswith("--") and name[:2] in self._option_string_actions:  # -n5, -hv
                continue
            return clip(name, 80)
        return None

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        """--help and --version: a failed write to stdout is an error (argparse ignores it: exit 0, nothing shown)."""
        if message and file is not None and file is sys.stdout:
            out = _Stdout(cast(TextIO, file))
            out.write(message)
            out.flush()
        else:
            super()._print_message(message, file)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="polythrottle", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"polythrottle {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"polythrottle.cli.{name.replace('-', '_')}").register(sub)
    _link_subcommands(parser)
    return parser


def _link_subcommands(parser: argparse.ArgumentParser) -> None:
    """Give each subcommand's parser its parent (``polythrottle --bogus tune``: the stray option is the parent's)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if isinstance(child, _Parser):
                    child._parent = parser if isinstance(parser, _Parser) else None
                    _link_subcommands(child)


class StdoutError(PolyThrottleError):
    """Standard output cannot be written (a full disk, ``> /dev/full``, an I/O error); not a closed pipe. Exit 1."""


class _Stdout:
    """``sys.stdout`` while a command runs: a write or flush that fails (other than a closed pipe, which stays a
    quiet BrokenPipeError) raises StdoutError naming standard output, whichever command or library wrote."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _failed(self, e: OSError) -> StdoutError:
        _stdout_to_devnull()  # what is still buffered must not fail again at the interpreter's last flush
        return StdoutError(f"cannot write to standard output: {e.strerror or e}")

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise self._failed(e) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise self._failed(e) from None

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...: the stream's own
        return getattr(self._stream, name)


_DEVICE_ROOTS = ("/sys/", "/proc/", "/dev/")
"""Where a board's and the kernel's files live: a permission refused there needs root (exit 4)."""


def _is_device_path(filename: object) -> bool:
    """Whether ``filename`` (an OSError's) is a board's or the kernel's file, not one a user gave."""
    return isinstance(filename, str) and filename.startswith(_DEVICE_ROOTS)


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
    """Run the command ``argv`` names. Returns the exit code (``polythrottle.cli.run`` is the console script's entry point).

    Exit codes: 0 done; 1 device error, or standard output cannot be written (one line naming it: a full
    disk, ``> /dev/full``); 2 bad input; 3 nothing met the SLO; 4 permission denied; 5 unsupported;
    6 history unreachable; 128 + N on signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP), once the settings the
    command changed are back; 141 (silently) when stdout's reader went away (``| head``). Each error is one line on stderr, never a traceback (``--debug`` shows it).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except StdoutError as e:  # --help or --version could not be printed
        print(f"polythrottle: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        _stdout_to_devnull()
        return _BROKEN_PIPE
    interrupts.reset()
    real_stdout = sys.stdout
    if real_stdout is not None:
        sys.stdout = _Stdout(real_stdout)  # type: ignore[assignment]
    with interrupts.command_signals():
        try:
            try:
                code, message = int(args.func(args) or 0), ""
                sys.stdout.flush()  # what the command printed is out (or its failure is this command's error)
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
                elif isinstance(e, PermissionError) and e.filename is not None and _is_device_path(e.filename):
                    # a board's or the kernel's file that a device layer left unconverted: needs root, not bad input
                    code = PermissionDeniedError.exit_code
                    message = f"error: {clip(str(e.filename), 200)}: permission denied (needs root)"
                elif isinstance(e, PermissionError) and e.filename is not None:  # a file given (a replay table,
                    # a history, a model or workload file) in a directory this user may not search: bad input, as
                    # for a file it may not read (the device's files and the state directory say PermissionDenied)
                    code, message = BadInputError.exit_code, f"error: {clip(str(e.filename), 200)}: permission denied"
                elif args.debug:
                    raise
                else:
                    code, message = 1, f"error: {type(e).__name__}: {clip(str(e))}"
            finally:
                interrupts.ignore_further()  # from here on a signal is recorded, not raised
                sys.stdout = real_stdout
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


__all__ = ["COMMANDS", "BadInputError", "StdoutError", "Terminated", "build_parser", "main"]
