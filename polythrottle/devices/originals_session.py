"""One originals session, shared by every control that writes hardware (Jetson clocks, NVML settings).

The rules, the same for every control (``polythrottle.devices.originals`` is the file they live in):

- before the first write of a session (``claimed()``, under the store's lock), originals a run that
  crashed left behind (their owner is dead and did not keep them) are checked and put back first, with
  a warning; a live process holding unkept changes makes this one refuse (DeviceBusyError), and so does
  another session of this process on the same device (a second device object opened on the same board:
  its "originals" would be the first one's changes, and closing both in the wrong order left them set);
- ``write()`` saves the originals (the first value seen is kept) before the first step, signals
  deferred meanwhile; on ANY exception during the steps (a refused write, KeyboardInterrupt,
  SystemExit) the control's rollback puts back what this write changed, and what is back is
  forgotten, before the exception goes on;
- ``restore()`` puts back what this process changed (values before its first write), signals deferred;
  every restore reads back what it wrote: a value held lower (a cap) stays saved as kept (``put_back``);
- ``keep()``: what is applied, and what later writes set, stays: the saved originals are marked kept
  (``polythrottle restore`` puts them back; no later run takes them for a crash's leftovers);
- a session writing over kept settings saves, with its originals, the values it started from
  (``run_over_kept``: the kept owner, the values before this run, the keys this run added): a run killed
  meanwhile is put back to the kept settings at the next claim, and they stay kept;
- settings the hardware cannot read back (an NVML clock lock: the control reads it as its original,
  "unlocked") are saved with kept settings as this process set them (``kept_values``, from the control's
  ``unreadable``); a later session over them starts from those values (``kept_values()``), so it puts back
  the kept setting, not the original from before the kept apply;
- ``restore_saved()`` puts back every saved original (also a crashed run's) once the control has
  checked every entry (``checked_originals``: a tampered file is refused whole, nothing written).

When everything a session changed is back, ownership returns to whoever held the originals before (a
kept apply). While the control holds changes it is registered with ``polythrottle.interrupts``, so a
command that ends on a signal restores it and says truthfully whether it did.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from polythrottle import interrupts
from polythrottle.devices.originals import OriginalsLocation, OriginalsStore, owner_alive, process_start
from polythrottle.devices.originals_checks import (
    KEPT_VALUES,
    RUN_OVER_KEPT,
    RunOverKept,
    kept_values,
    owner_pid,
    run_over_kept,
)
from polythrottle.devices.put_back import PutBack
from polythrottle.errors import DeviceBusyError, DeviceError, clip


class Board(Protocol):
    """What a control gives its session: how to check saved originals and write them back."""

    def restore(self) -> None:
        """Put back what this process changed (``polythrottle.interrupts.settle`` calls it)."""

    def checked_originals(self, saved: Mapping[str, Any]) -> dict[str, Any]:
        """``saved`` once every entry is a setting this control owns with a value of the right kind; else
        SavedStateError naming the entry (or PermissionDeniedError), nothing written."""

    def put_back(self, values: Mapping[str, Any]) -> PutBack:
        """Write ``values`` (checked, or this session's own) back, in an order the hardware accepts."""


_ACTIVE: dict[tuple[str, str], weakref.ref[OriginalsSession]] = {}
"""(state directory, device id) -> the session of this process that last claimed that device."""
_ACTIVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Recorded:
    """What one ``record`` added: keys new in the store, keys new in this session."""

    new: list[str]
    added: list[str]


class OriginalsSession:
    """The originals of one device (``device_id`` in ``store``) as one process changes them. See the module
    docstring. ``device_arg``: the ``--device`` that ``polythrottle restore`` needs in messages;
    ``meta``: facts saved with the originals (the owner's pid, start time and ``kept`` are added);
    ``unreadable(board)``: the values this process set of settings the hardware cannot read back (key ->
    value, as the board's ``checked_originals`` takes them), saved when they are kept."""

    def __init__(self, store: OriginalsStore, device_id: str, board: Board, *, device_arg: str,
                 meta: Mapping[str, Any] | None = None,
                 unreadable: Callable[[Any], Mapping[str, Any]] | None = None) -> None:
        self.store = store
        self.device_id = device_id
        # weak: a control dropped by its command is forgotten, also by ``interrupts.settle`` (which then does
        # not retry a restore that already failed and was reported)
        self._board = weakref.ref(board)
        self.device_arg = device_arg
        self.meta = dict(meta or {})
        self._unreadable = unreadable  # a function of the board, not a bound method: the board stays weak
        self.keep_mode = False
        self._before: dict[str, Any] = {}  # key -> value before this process first wrote it
        self._new: set[str] = set()  # keys this process added to the saved originals
        self._prior: dict[str, Any] | None = None  # the store's owner before this session (None: not claimed)
        self._kept: dict[str, Any] = {}  # the kept values of unreadable settings, when claimed over kept ones

    # ----- facts --------------------------------------------------------------------------------------
    @property
    def board(self) -> Board:
        board = self._board()
        if board is None:
            raise RuntimeError(f"the control of {self.device_id} is gone")
        return board

    @property
    def holds_changes(self) -> bool:
        """Whether this process has changed a setting it has not put back (nor kept)."""
        return bool(self._before)

    def location(self) -> OriginalsLocation:
        return self.store.location(self.device_id)

    def saved(self) -> dict[str, Any]:
        """Every saved original of this device (this process's and any other's)."""
        return self.store.originals(self.device_id)

    def kept_values(self) -> dict[str, Any]:
        """Under ``claimed()`` over kept settings: the values the kept apply left settings at that the hardware
        cannot read back (checked by the board), which this session starts from; empty otherwise."""
        return dict(self._kept)

    def started_from(self, keys: Sequence[str]) -> dict[str, Any]:
        """The values ``keys`` had before this process first wrote them (those it has not put back)."""
        return {k: self._before[k] for k in keys if k in self._before}

    # ----- writing ------------------------------------------------------------------------------------
    @contextmanager
    def claimed(self) -> Iterator[None]:
        """Hold the store's lock, with a crashed run's leftovers put back (see the module docstring)."""
        with self.store.lock(self.device_id):
            self._claim()
            yield

    def _key(self) -> tuple[str, str]:
        return str(self.store.directory.resolve()), self.device_id

    def _claim_in_process(self, check: bool) -> None:
        """With ``check`` (the saved originals are this process's, not kept): DeviceBusyError if another session
        of this process holds unrestored changes of this device. Then this session becomes the device's session
        in this process."""
        with _ACTIVE_LOCK:
            ref = _ACTIVE.get(self._key())
            other = ref() if ref is not None else None
            if check and other is not None and other is not self and other.holds_changes:
                raise DeviceBusyError(
                    f"another device object in this process holds unrestored changes of {self.device_id}; "
                    "close it (or restore it) before changing the settings through this one"
                )
            _ACTIVE[self._key()] = weakref.ref(self)

    def _release_in_process(self) -> None:
        with _ACTIVE_LOCK:
            ref = _ACTIVE.get(self._key())
            if ref is not None and ref() in (self, None):
                del _ACTIVE[self._key()]

    def _claim(self) -> None:
        if self._prior is not None:
            return
        state = self.store.load(self.device_id)
        if state is None or not state.originals:
            self._claim_in_process(check=False)
            self._prior, self._kept = {}, {}
            return
        kept = state.meta.get("kept") is True
        owner = owner_pid(state.meta.get("pid"))
        if kept or owner == os.getpid():
            self._kept = self._checked_kept(state.meta, state.originals) if kept else {}
            self._claim_in_process(check=not kept)
            self._prior = {"kept": kept, "pid": owner or 0, "started": state.meta.get("started")}
            return
        self._check_not_busy(owner, state.meta.get("started"))
        values = self.board.checked_originals(state.originals)  # a tampered file is refused before the warning
        run = run_over_kept(state.meta, state.originals, self.store.path(self.device_id))
        back = self.board.checked_originals(run.before) if run is not None else values
        still_kept = {k: v for k, v in state.originals.items() if run is not None and k not in run.new}
        kept_now = self._checked_kept(state.meta, still_kept)
        to = " to the kept settings it started from" if run is not None else ""
        print(f"polythrottle: warning: restoring {len(back)} setting(s) left by a run that did "
              f"not finish (pid {owner or 'unknown'}){to}", file=sys.stderr)
        with interrupts.deferred():  # a signal cannot cut it short and leave the crash's clocks in place
            if run is None:
                self._restore_locked(values)
            else:
                self._restore_run_locked(back, run)
        self._claim_in_process(check=False)
        # what stays saved now is a value held under a cap (``put_back``): kept by this process
        self._prior = dict(run.owner) if run is not None else self._kept_owner() if self.saved() else {}
        self._kept = kept_now

    def _checked_kept(self, meta: Mapping[str, Any], originals: Mapping[str, Any]) -> dict[str, Any]:
        """The saved kept values of ``originals``' settings, every entry checked by the board (SavedStateError:
        nothing written)."""
        values = kept_values(meta, self.store.path(self.device_id))
        checked = self.board.checked_originals(values) if values else {}
        return {k: v for k, v in checked.items() if k in originals}

    def crash_leftovers(self) -> tuple[int | None, list[str]]:
        """(owner pid, keys) of saved originals a run that did not finish left (not kept, owner dead or
        unknown); ``(None, [])`` when there are none or the file cannot be read (``restore`` says why)."""
        try:
            state = self.store.load(self.device_id)
        except DeviceError:
            return None, []
        if state is None or not state.originals or state.meta.get("kept") is True:
            return None, []
        owner = owner_pid(state.meta.get("pid"))
        if owner is not None and (owner == os.getpid() or owner_alive(owner, state.meta.get("started"))):
            return None, []
        return owner, list(state.originals)

    def warn_leftovers_untouched(self) -> None:
        """For a control opened with ``--no-clock-control``, which restores nothing (a restore is a write):
        one warning on stderr when a run that did not finish left settings changed, since this run measures
        at them, and how to put them back. Kept settings and a live owner's are not leftovers: no warning."""
        owner, keys = self.crash_leftovers()
        if keys:
            print(leftovers_warning(self.device_id, self.device_arg, owner, keys), file=sys.stderr)

    def _check_not_busy(self, owner: int | None, started: Any = None) -> None:
        """DeviceBusyError if ``owner`` is another live process (the same one that saved the originals: a
        pid reused by an unrelated process since, whose start time differs, does not count)."""
        if owner is not None and owner != os.getpid() and owner_alive(owner, started):
            raise DeviceBusyError(
                f"another polythrottle process (pid {owner}) is changing the settings of {self.device_id}; "
                "wait for it to finish or stop it (it restores them when it stops)"
            )

    def record(self, originals: Mapping[str, Any]) -> Recorded:
        """Save ``originals`` (values already saved are kept) and count them as this session's changes,
        whole or not at all (signals deferred). Over kept settings, the values this session started from
        are saved with them (``run_over_kept``). Call under ``claimed()``, before writing."""
        with interrupts.deferred():
            meta = self._meta()
            if self._prior and self._prior.get("kept") is True:
                saved = self.store.originals(self.device_id)
                before = {**{k: originals[k] for k in originals if k not in self._before}, **self._before}
                new = sorted(self._new | {k for k in originals if k not in saved})
                meta[RUN_OVER_KEPT] = {"owner": self._prior, "before": before, "new": new}
            new = self.store.record(self.device_id, originals, meta=meta)
            self._new.update(new)
            added = [k for k in originals if k not in self._before]
            for k in added:
                self._before[k] = originals[k]
            interrupts.changed(self.board)
        return Recorded(new, added)

    def settled(self, recorded: Recorded, failed: Sequence[str] = ()) -> None:
        """What ``recorded`` saved is back (but ``failed``): forget it; the session ends when nothing is left."""
        back = [k for k in recorded.new if k not in failed]
        self.store.forget(self.device_id, back)
        self._new.difference_update(back)
        for k in recorded.added:
            if k not in failed:
                self._before.pop(k, None)
        if not self._before:
            self._end()

    def write(self, originals: Mapping[str, Any], steps: Sequence[Callable[[], object]],
              rollback: Callable[[int], list[str]]) -> int:
        """Under ``claimed()``: save ``originals``, then run ``steps`` in order; returns how many ran.

        On ANY exception in a step, ``rollback(steps done)`` (signals deferred) puts back what this write
        changed and returns the keys it could not put back. Device and OS errors come back as one
        DeviceError of the same type saying whether the rollback worked; anything else (KeyboardInterrupt,
        SystemExit, a bug) passes on as it is, what could not be put back still tracked."""
        recorded = self.record(originals)
        done = 0
        try:
            for step in steps:
                step()
                done += 1
        except BaseException as e:
            with interrupts.deferred():  # a second signal cannot cut the rollback short
                failed = rollback(done)
                self.settled(recorded, failed)
            if not isinstance(e, (DeviceError, OSError)):
                raise
            if not failed:
                msg = f"; rolled back the {done} value(s) already written" if done else ""
            else:
                msg = f"; ROLLBACK FAILED for {', '.join(failed)}: run `polythrottle restore --device {self.device_arg}`"
            if isinstance(e, DeviceError):
                raise type(e)(f"{e}{msg}") from None
            raise DeviceError(f"{e}{msg}") from None
        if self.keep_mode:
            self._seal()
        return done

    # ----- keeping and restoring ----------------------------------------------------------------------
    def keep(self) -> None:
        """Leave what is applied, and what later writes set, in place (see the module docstring)."""
        self.keep_mode = True
        self._seal()

    def _seal(self) -> None:
        if not self._before:
            return
        with interrupts.deferred(), self.store.lock(self.device_id):
            saved = self.store.originals(self.device_id)
            if saved:
                unreadable = {**self._kept, **(self._unreadable(self.board) if self._unreadable else {})}
                kept = {k: v for k, v in unreadable.items() if k in saved}
                self.store.record(self.device_id, {}, meta={**self._kept_owner(), RUN_OVER_KEPT: None, KEPT_VALUES: kept})
            self._before.clear()
            self._new.clear()
            self._prior, self._kept = None, {}
            self._release_in_process()
            interrupts.kept(self.board)

    def _end(self) -> None:
        """Everything this session changed is back: ownership returns to whoever had it before."""
        if self._prior and self.store.originals(self.device_id):
            self.store.record(self.device_id, {}, meta={**self._prior, RUN_OVER_KEPT: None})
        self._prior, self._kept = None, {}
        self._release_in_process()
        interrupts.clean(self.board)

    def restore(self) -> None:
        """Put back what this process changed (as it was when first written). Signals deferred until done;
        DeviceError naming what could not be put back (it stays saved)."""
        if not self._before:
            return
        with interrupts.deferred(), self.store.lock(self.device_id):
            result = self.board.put_back(self._before)
            stay = {*result.failed, *result.lower()}  # a value held lower than its original: kept saved
            self.store.forget(self.device_id, [k for k in self._new if k not in stay])
            self._before = {k: v for k, v in self._before.items() if k in result.failed}
            self._new &= set(result.failed)
            if not self._before:
                if result.lower() and not (self._prior or {}).get("kept"):
                    self._prior = self._kept_owner()
                self._end()
        result.warn(self.device_arg)
        if result.failed:
            raise DeviceError(
                f"could not restore {result.describe()}; the originals stay saved in {self.store.directory}: "
                f"run `polythrottle restore --device {self.device_arg}` as root"
            )

    def restore_saved(self) -> list[str]:
        """Put back every saved original (also a crashed run's) and forget them; returns the keys restored.
        Refused (DeviceBusyError) while another live process holds unkept changes; a tampered entry is
        refused whole (SavedStateError, nothing written). Signals deferred until done."""
        with interrupts.deferred(), self.store.lock(self.device_id):
            state = self.store.load(self.device_id)
            if state is None or not state.originals:
                return []
            if state.meta.get("kept") is not True:
                self._check_not_busy(owner_pid(state.meta.get("pid")), state.meta.get("started"))
            return self._restore_locked(state.originals)

    def _restore_locked(self, saved: Mapping[str, Any]) -> list[str]:
        values = self.board.checked_originals(saved)
        interrupts.changed(self.board)  # until it is done: a failure is reported, never "restored"
        result = self.board.put_back(values)
        result.warn(self.device_arg)
        self.store.forget(self.device_id, [k for k in result.restored if k not in result.lower()])
        self._before.clear()
        self._new.clear()
        self._prior, self._kept = None, {}
        self._release_in_process()
        if result.failed:
            self._before.update({k: values[k] for k in result.failed})
            self.store.record(self.device_id, {}, meta={RUN_OVER_KEPT: None})  # what is left goes back whole
            raise DeviceError(f"could not restore {result.describe()}; they stay saved in "
                              f"{self.store.path(self.device_id)}")
        if result.lower():  # held under a cap: kept for `polythrottle restore`, no crash's leftovers
            self.store.record(self.device_id, {}, meta={**self._kept_owner(), RUN_OVER_KEPT: None})
        interrupts.clean(self.board)
        return result.restored

    def _restore_run_locked(self, before: Mapping[str, Any], run: RunOverKept) -> None:
        """Put a killed run's changes back to the kept settings it started from (``before``); the keys it
        added are forgotten and the kept owner owns the rest again. DeviceError if a value cannot be put back
        (the file stays as it was: the next claim tries again)."""
        interrupts.changed(self.board)
        result = self.board.put_back(before)
        result.warn(self.device_arg)
        if result.failed:
            self._before.update({k: before[k] for k in result.failed})  # tried again when this process ends
            raise DeviceError(f"could not restore {result.describe()}; they stay saved in "
                              f"{self.store.path(self.device_id)}")
        self.store.forget(self.device_id, [k for k in run.new if k not in result.lower()])
        if self.store.originals(self.device_id):
            self.store.record(self.device_id, {}, meta={**run.owner, RUN_OVER_KEPT: None})
        interrupts.clean(self.board)

    @staticmethod
    def _kept_owner() -> dict[str, Any]:  # this process, owning kept settings
        return {"kept": True, "pid": os.getpid(), "started": process_start(os.getpid())}

    def _meta(self) -> dict[str, Any]:
        return {**self.meta, "pid": os.getpid(), "started": process_start(os.getpid()), "kept": False,
                RUN_OVER_KEPT: None}

    def kept_keys(self) -> list[str]:
        """The saved originals' keys when a kept apply owns them (the settings it changed stay as set)."""
        state = self.store.load(self.device_id)
        return list(state.originals) if state is not None and state.meta.get("kept") is True else []


def leftovers_warning(device_id: str, device_arg: str, owner: int | None, keys: Sequence[str]) -> str:
    """The one line every control prints for a crashed run's leftovers it leaves alone (--no-clock-control)."""
    return (f"polythrottle: warning: {len(keys)} setting(s) of {device_id} were left changed by a run that did not "
            f"finish (pid {owner or 'unknown'}): {clip(', '.join(keys), 160)}; --no-clock-control leaves them as "
            f"they are: `polythrottle restore --device {device_arg}` puts them back")
