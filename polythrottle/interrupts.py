"""Signals as faults: what a hardware write does when SIGINT, SIGTERM or SIGHUP arrives.

Three pieces, used by every path that writes a clock (``apply``, ``tune``, ``restore``, the daemon):

- ``command_signals()`` (the CLI): the first SIGINT/SIGTERM/SIGHUP raises ``KeyboardInterrupt`` /
  ``Terminated`` in the main thread, so ``finally`` blocks put the hardware back; a later signal that
  comes while that exception is being handled (an ``except``/``finally``/``__exit__`` it runs through)
  or once the command is done is only recorded: a second Ctrl-C cannot cut a restore short. A handler
  runs wherever the main thread is, so the exception can be lost there (a library's bare ``except:``,
  e.g. the one around Cython's ``collections.abc`` registrations that every memoryview module runs on
  import; or a ``__del__``): then a later signal raises again, and so does ``check()``, the checkpoint
  of long loops (between batches, before each apply) and of the command's end. The previous handlers
  come back on exit.
- ``deferred()`` (around restores, rollbacks and the saving of originals): a signal arriving inside is
  recorded and handed to the handler that was installed once the block is done, so a restore always
  completes (a write that hangs in the kernel keeps it waiting: then SIGKILL, and the next start or
  ``polythrottle restore`` completes it from the saved originals). Only the main thread can swap
  handlers; elsewhere (the daemon's worker) it does nothing, as signals are the main thread's anyway.
- a registry of devices holding changes not yet put back (``changed``/``clean``/``kept``), so a command
  that ends on a signal can restore what is left and say truthfully whether it did (``settle()``).
"""

from __future__ import annotations

import signal
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
VERBS = {"SIGINT": "interrupted", "SIGTERM": "terminated", "SIGHUP": "hung up"}


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM (or SIGHUP) so that ``finally``/``with`` blocks restore hardware."""

    def __init__(self, signum: int = getattr(signal, "SIGTERM", 15)) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signum_of(e: BaseException) -> int:
    """The signal behind a KeyboardInterrupt (SIGINT unless it is a ``Terminated``)."""
    return e.signum if isinstance(e, Terminated) else signal.SIGINT


def exit_code_of(e: BaseException) -> int:
    """128 + the signal number: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + int(signum_of(e))


def verb_of(e: BaseException) -> str:
    return VERBS.get(signal.Signals(signum_of(e)).name, "interrupted")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# ----- the CLI's handlers -----------------------------------------------------------------------------
class _CommandState:
    def __init__(self) -> None:
        self.first: int | None = None  # the signal last raised as an exception
        self.later: list[int] = []  # signals only recorded
        self.done = False  # the command is done or its exception reached ``cli.main``: record only


_command = _CommandState()


def _exception(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _unwinding() -> bool:
    """Whether the calling thread runs an ``except``/``finally``/``__exit__`` of a KeyboardInterrupt (or of an
    exception raised while handling one): a signal's exception is on its way out."""
    e = sys.exc_info()[1]
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__context__
    return False


def _command_handler(signum: int, frame: object) -> None:
    if _command.done or (_command.first is not None and _unwinding()):
        _command.later.append(signum)  # the first one is being handled: let its cleanup finish
        return
    # the first signal, or a later one while nothing handles the first: its exception was lost where the
    # handler ran (a bare ``except:``, a ``__del__``) and the command ran on
    _command.first = signum
    raise _exception(signum)


def check() -> None:
    """A checkpoint: raise again the exception of a signal that was lost (see the module docstring) while
    the command runs on. Cheap; does nothing outside a command's main thread or while the exception is
    being handled."""
    if _command.first is None or _command.done or not _in_main_thread() or _unwinding():
        return
    raise _exception(_command.first)


def ignore_further() -> None:
    """From now on the command's handlers only record signals (the command is done or unwinding)."""
    _command.done = True


def raise_terminated(signum: int, frame: object) -> None:
    """A plain SIGTERM handler (raises ``Terminated``), for scripts that hold a device."""
    raise Terminated(signum)


@contextmanager
def command_signals() -> Iterator[None]:
    """Install the CLI's handlers for the duration of one command (see the module docstring)."""
    if not _in_main_thread():
        yield
        return
    _command.first, _command.later, _command.done = None, [], False
    saved: dict[int, Any] = {}
    for s in SIGNALS:
        try:
            saved[s] = signal.signal(s, _command_handler)
        except (ValueError, OSError):
            pass
    try:
        yield
    finally:
        _command.done = True  # a signal lost in the command is not raised by a checkpoint after it
        _put_back_handlers(saved)


def _put_back_handlers(saved: dict[int, Any]) -> BaseException | None:
    """Reinstall ``saved`` handlers, all of them even when one raises (a pending signal is handled by
    ``signal.signal`` itself once its handler is set). Returns what a handler raised, if anything."""
    raised: BaseException | None = None
    for s, h in saved.items():
        try:
            signal.signal(s, h)
        except BaseException as e:  # noqa: BLE001 - a KeyboardInterrupt of a restored handler; kept for later
            raised = raised or e
    return raised


# ----- deferring signals around restores ------------------------------------------------------------------
class _Deferral:
    def __init__(self) -> None:
        self.depth = 0
        self.pending: list[int] = []


_deferral = _Deferral()


def _record(signum: int, frame: object) -> None:
    _deferral.pending.append(signum)


def _flush() -> None:
    """A Python-level call: the interpreter runs any handler whose signal has already arrived."""


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block is done, then hand them to the handlers installed
    before (in arrival order; a handler that raises ends the delivery). Re-entrant."""
    if not _in_main_thread():
        yield
        return
    if _deferral.depth:
        _deferral.depth += 1
        try:
            yield
        finally:
            _deferral.depth -= 1
        return
    saved: dict[int, Any] = {}
    _deferral.depth = 1
    try:
        for s in SIGNALS:
            try:
                saved[s] = signal.signal(s, _record)
            except (ValueError, OSError):
                pass
        yield
    finally:
        _flush()
        _deferral.depth = 0
        raised = _put_back_handlers(saved)
        pending, _deferral.pending = list(dict.fromkeys(_deferral.pending)), []
        if raised is not None:
            raise raised
        for s in pending:
            _deliver(s, saved.get(s, signal.SIG_DFL))


def _deliver(signum: int, handler: Any) -> None:
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt()
        signal.raise_signal(signum)  # the default action (terminate), now that the restore is done


# ----- devices with changes not yet put back ------------------------------------------------------------
class Restorable(Protocol):
    def restore(self) -> None: ...


_changed: weakref.WeakSet[Any] = weakref.WeakSet()
_kept: weakref.WeakSet[Any] = weakref.WeakSet()


def changed(device: Restorable) -> None:
    """``device`` has written a setting it has not put back yet."""
    _kept.discard(device)
    _changed.add(device)


def clean(device: Restorable) -> None:
    """``device`` has put back everything it changed."""
    _changed.discard(device)
    _kept.discard(device)


def kept(device: Restorable) -> None:
    """``device`` leaves its settings in place on purpose (``apply``, ``tune --apply``)."""
    _changed.discard(device)
    _kept.add(device)


def settle() -> tuple[list[str], bool]:
    """Restore every device still holding changes (signals deferred meanwhile). Returns (the one-line
    reasons of those that failed, whether a device keeps its settings on purpose)."""
    failed: list[str] = []
    with deferred():
        for dev in list(_changed):
            try:
                dev.restore()
            except Exception as e:  # noqa: BLE001 - reported, one line each
                failed.append(str(e))
            else:
                _changed.discard(dev)
    return failed, bool(len(_kept))


def reset() -> None:
    """Forget every tracked device (tests; a command that starts afresh)."""
    _changed.clear()
    _kept.clear()


__all__ = ["SIGNALS", "Terminated", "changed", "check", "clean", "command_signals", "deferred", "exit_code_of",
           "ignore_further", "kept", "raise_terminated", "reset", "settle", "signum_of", "verb_of"]
