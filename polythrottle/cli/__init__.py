"""Command line: ``polythrottle COMMAND``. ``run`` is the console script's entry point (``[project.scripts]``)
and ``python -m polythrottle``'s; the parser and ``main`` live in ``polythrottle.cli.app``, each command in its
own module here.

This module loads nothing before ``run`` is called: the console script imports it, and a Ctrl-C that lands
while the command line is still loading (its modules, the subcommands', the parser), before the command's own
signal handling is in place, is one line and exit 130 instead of a KeyboardInterrupt traceback. The names of
``polythrottle.cli.app`` (``main``, ``build_parser``, ...) load from here when first used.
"""

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: the console script starts here

if TYPE_CHECKING:
    from polythrottle.cli.app import (
        COMMANDS,
        BadInputError,
        StdoutError,
        Terminated,
        build_parser,
        main,
    )

INTERRUPTED = 130
"""128 + SIGINT, as a shell reports a command a Ctrl-C ended."""


def run() -> None:
    """Entry point of the ``polythrottle`` console script and of ``python -m polythrottle``: ``main`` plus a
    Ctrl-C that lands before the command's handlers are in place (nothing changed yet): one line, exit 130."""
    try:
        from polythrottle.cli.app import main

        code = main()
    except KeyboardInterrupt:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C cannot cut this line short
        print("polythrottle: interrupted", file=sys.stderr)
        code = INTERRUPTED
    sys.exit(code)


_APP = ("COMMANDS", "BadInputError", "StdoutError", "Terminated", "_on_sigterm", "build_parser", "main")


def __getattr__(name: str) -> object:
    if name not in _APP:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from polythrottle.cli import app

    return getattr(app, name)


__all__ = ["COMMANDS", "BadInputError", "StdoutError", "Terminated", "build_parser", "main", "run"]
