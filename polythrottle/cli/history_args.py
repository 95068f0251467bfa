"""History-store arguments of ``tune`` (and any command that tunes): --history, --model-version, ..."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from polythrottle import paths
from polythrottle.devices.registry import is_simulated
from polythrottle.errors import BadInputError
from polythrottle.fingerprint import fingerprint_files
from polythrottle.spec import Face, refuse_two_model_versions, refuse_unkept_model_version

if TYPE_CHECKING:
    from polythrottle.history.protocol import History
    from polythrottle.history.store import HistoryStore


def add_history_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("history and warm start")
    g.add_argument("--history", default=None, metavar="URL",
                   help="history: a SQLite path, sqlite:///PATH or postgresql://USER@HOST:PORT/DB; default "
                        "$POLYTHROTTLE_HISTORY_URL or STATE_DIR/history.sqlite for real devices, none for sim/replay")
    g.add_argument("--no-history", action="store_true", help="neither read nor write the history database")
    g.add_argument("--model-version", default=None, metavar="V",
                   help="model version the measurements belong to (default: fingerprint of --model-file)")
    g.add_argument("--model-file", action="append", default=None, type=Path, metavar="PATH",
                   help="model weights file or directory; its hash is the model version (repeatable)")
    g.add_argument("--no-warm-start", action="store_true",
                   help="tune cold even if the history has measurements of this or a previous model version")


def unkept_history(args: argparse.Namespace) -> str | None:
    """Why the tune the arguments describe keeps no history, in the flags' terms; None when it keeps one (a
    real device's default history counts, though opening it is best effort). Raises BadInputError for
    --history with --no-history."""
    if args.no_history:
        if args.history is not None:
            raise BadInputError("give --history or --no-history, not both")
        return "--no-history"
    if args.history is None and is_simulated(args.device):
        return "a sim: or replay: device without --history"
    return None


def model_version(args: argparse.Namespace) -> str | None:
    """The model version the arguments give (None: the default): --model-version, or the fingerprint of
    --model-file. Raises BadInputError (both given, empty, a model file missing or unreadable)."""
    refuse_two_model_versions({"model_version": args.model_version, "model_files": args.model_file}, Face.CLI)
    if args.model_version is not None and not args.model_version.strip():
        raise BadInputError("--model-version is empty")
    if args.model_file:
        return fingerprint_files(args.model_file)
    return args.model_version.strip() if args.model_version else None


def checked_model_version(args: argparse.Namespace) -> str | None:
    """``model_version``, refused (``polythrottle.spec.refuse_unkept_model_version``) when the tune keeps no
    history: what ``tune`` calls before it opens anything. A missing --model-file is named first."""
    unkept = unkept_history(args)
    version = model_version(args)
    refuse_unkept_model_version({"model_version": args.model_version, "model_files": args.model_file}, Face.CLI,
                                unkept)
    return version


def open_store(args: argparse.Namespace) -> History | None:
    """The store named by the arguments (None when off). A PostgreSQL history spools in the state dir while
    the server is out of reach; the default history of a real device is best effort (a warning if unusable)."""
    from polythrottle.history import HistoryError, default_history
    from polythrottle.history import open_history as open_target

    if unkept_history(args) is not None:
        return None
    state_dir = getattr(args, "state_dir", None)
    spool_dir = paths.state_dir(state_dir)
    if args.history is not None:
        return open_target(args.history, spool_dir=spool_dir)
    try:  # the implicit default is best effort: tuning must not fail because the state dir is unusable
        return open_target(default_history(state_dir), spool_dir=spool_dir)
    except HistoryError as e:
        print(f"polythrottle: warning: not recording history: {e}", file=sys.stderr)
        return None


def open_history(args: argparse.Namespace) -> tuple[History | None, str | None]:
    """``(open_store(args), model_version(args))``: the store (None when off) and the model version (None: the
    default), unchecked against each other (``tune`` calls ``checked_model_version`` first)."""
    version = model_version(args)
    return open_store(args), version


def refuse_output_over_history(args: argparse.Namespace, out: Path | None, flag: str = "--out") -> None:
    """Refuse an output file that is the SQLite history the command would write (an atomic replace of it
    would swap the whole history for the output). Raises BadInputError."""
    from polythrottle.history import HistoryError, default_history, parse_target

    if out is None or args.no_history:
        return
    target = args.history
    if target is None:
        if is_simulated(args.device):
            return
        target = default_history(getattr(args, "state_dir", None))
    try:
        parsed = parse_target(target)
    except HistoryError:
        return  # refused with its own message when the history is opened
    if parsed.path is None:
        return
    db = parsed.path.expanduser().resolve()
    if Path(out).expanduser().resolve() in {Path(f"{db}{s}") for s in ("", "-wal", "-shm", "-journal")}:
        raise BadInputError(f"{flag} {out} is the history database itself; write the result to another file")


def add_history_location(p: argparse.ArgumentParser) -> None:
    """--history URL for commands that read a history (``history``, ``fleet``)."""
    p.add_argument("--history", default=None, metavar="URL",
                   help="history: a SQLite path, sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
                        "(default $POLYTHROTTLE_HISTORY_URL, else STATE_DIR/history.sqlite)")
    p.add_argument("--state-dir", type=Path, default=None, help="state directory of the default history")


def open_for_reading(args: argparse.Namespace) -> HistoryStore:
    """The history named by --history (or the default), opened read-only: nothing is written (a missing
    SQLite file is refused, not created; a history the user may only read can be read).
    Raises HistoryError (exit 2) or HistoryUnavailable (exit 6, server out of reach)."""
    from polythrottle.history import HistoryStore, default_history

    return HistoryStore(default_history(args.state_dir) if args.history is None else args.history, read_only=True)


__all__ = ["add_history_args", "add_history_location", "checked_model_version", "model_version", "open_for_reading",
           "open_history", "open_store", "refuse_output_over_history", "unkept_history"]
