"""What every clock control shares: ordered writes, min/max pair ordering, step validation."""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from polythrottle.clocks.sysfs import KernelRefusedError, SysfsIO
from polythrottle.errors import DeviceError, InvalidValueError, brief, clip

UNIT_PER_MHZ = {"Hz": 1_000_000, "kHz": 1_000, "MHz": 1}
INT_TEXT = re.compile(r"-?\d{1,20}")
"""What a clock file holds (stripped), and so what a saved original of one may be."""
READBACK_TOLERANCE = 0.005
"""How far a file read back after an apply may be from the value written (relative): adjacent steps of
every clock are further apart, so a value held at another step is caught, a rounded rate is not."""


@dataclass(frozen=True)
class Write:
    """Write ``value`` (text, in the file's own unit) to board path ``path``."""

    path: str
    value: str


def to_mhz(raw: int, unit: str) -> float:
    """A file value in ``unit`` (Hz/kHz/MHz) as MHz, rounded to 1 Hz (114750000 Hz -> 114.75)."""
    return round(raw / UNIT_PER_MHZ[unit], 6)


def describe_steps(steps_mhz: Sequence[float], limit: int = 16) -> str:
    vals = [f"{v:g}" for v in steps_mhz]
    if len(vals) > limit:
        vals = vals[: limit // 2] + ["..."] + vals[-limit // 2 :]
    return ", ".join(vals)


def match_step(knob: str, value: float | int | str, steps_raw: Sequence[int], unit: str) -> int:
    """The raw step (file unit) whose MHz value equals ``value`` (MHz). Raises InvalidValueError."""
    try:
        mhz = float(value)
    except (TypeError, ValueError, OverflowError):
        mhz = math.nan
    if math.isfinite(mhz):
        for raw in steps_raw:
            # a step matches within 1 kHz, so 114.75 and 114.750000 both name 114750000 Hz
            if abs(to_mhz(raw, unit) - mhz) < 1e-3:
                return raw
    steps = describe_steps([to_mhz(r, unit) for r in steps_raw])
    raise InvalidValueError(f"{knob}={clip(str(value), 40)} is not an available step; valid (MHz): {steps}")


def pair_writes(
    min_path: str, max_path: str, new_min: int, new_max: int, cur_min: int, cur_max: int
) -> list[Write]:
    """Writes taking a (min, max) pair from (cur_min, cur_max) to (new_min, new_max).

    The kernel refuses a minimum above the current maximum (and a maximum below the current
    minimum), so when the new minimum lies above the current maximum (raising) the maximum goes
    first; otherwise the minimum goes first. Unchanged values are not written.
    """
    order = [(max_path, new_max, cur_max), (min_path, new_min, cur_min)]
    if new_min <= cur_max:
        order.reverse()
    return [Write(p, str(v)) for p, v, cur in order if v != cur]


def _as_int(text: str | None) -> int | None:
    try:
        return int(str(text).split()[0])
    except (TypeError, ValueError, IndexError):
        return None


def pair_state_writes(
    min_path: str, max_path: str, target: Mapping[str, str], current: Mapping[str, str]
) -> list[Write]:
    """``pair_writes`` for file states (text values); a side absent from ``target`` keeps its value."""
    cur_min, cur_max = _as_int(current.get(min_path)), _as_int(current.get(max_path))
    new_min = _as_int(target.get(min_path, current.get(min_path)))
    new_max = _as_int(target.get(max_path, current.get(max_path)))
    if None in (cur_min, cur_max, new_min, new_max):  # unreadable: write what is asked, min first
        return [Write(p, str(target[p])) for p in (min_path, max_path) if p in target]
    return pair_writes(min_path, max_path, new_min, new_max, cur_min, cur_max)  # type: ignore[arg-type]


class ClockControl(ABC):
    """One clock domain set through kernel files.

    ``knobs``: the knob names it accepts (MHz values). ``files()``: every file holding its state
    (saved before the first write, put back on restore). ``target()`` validates knob values and
    returns the desired file values; ``writes()`` orders the writes from ``current`` to a target.
    """

    name: str = "clock"
    knobs: tuple[str, ...] = ()

    def __init__(self, io: SysfsIO) -> None:
        self.io = io

    @abstractmethod
    def steps_mhz(self, knob: str | None = None) -> tuple[float, ...]:
        """Valid values (MHz, ascending) of ``knob`` (default: the main knob)."""

    @abstractmethod
    def files(self) -> list[str]:
        """Every board path holding this domain's state, in the order they are saved."""

    @abstractmethod
    def target(self, settings: Mapping[str, float | int | str], current: Mapping[str, str]) -> dict[str, str]:
        """Desired file values for knob ``settings``. Raises InvalidValueError before any write."""

    @abstractmethod
    def writes(self, target: Mapping[str, str], current: Mapping[str, str]) -> list[Write]:
        """Ordered writes from ``current`` to ``target`` (both: path -> text)."""

    def settled(self, target: Mapping[str, str]) -> dict[str, str]:
        """The files of ``target`` that hold their value once it is put back (read back after a restore)."""
        return dict(target)

    @abstractmethod
    def current_mhz(self, state: Mapping[str, str] | None = None) -> dict[str, float]:
        """The knob values (MHz) the files say now (or in ``state``)."""

    def read_state(self) -> dict[str, str]:
        """Current text of every file in ``files()`` (what is saved as the originals before a write). A file
        holding anything but an integer (a copied or fake tree) could never be written back: DeviceError
        naming it, before anything is saved or written."""
        state = {p: self.io.read(p) for p in self.files()}
        for p, text in state.items():
            if not INT_TEXT.fullmatch(text):
                raise DeviceError(f"{p} holds {brief(text, 40)}, not an integer: refusing to change the "
                                  f"{self.name} clock (its original could not be put back)")
        return state


def execute_writes(io: SysfsIO, writes: Sequence[Write], done: list[Write] | None = None) -> list[Write]:
    """Perform ``writes`` in order; each successful one is appended to ``done`` (returned).

    Raises the first error (PermissionDeniedError, KernelRefusedError, DeviceError) with ``done``
    holding what was already written, so the caller can roll back.
    """
    done = [] if done is None else done
    for w in writes:
        io.write(w.path, w.value)
        done.append(w)
    return done


def check_read_back(io: SysfsIO, writes: Sequence[Write]) -> None:
    """KernelRefusedError if a file written does not hold the value written last (more than
    ``READBACK_TOLERANCE`` apart): the kernel took it without an error but keeps a cap (a thermal or
    nvpmodel limit, firmware rounding), so the board does not run the config asked for."""
    for path, value in {w.path: w.value for w in writes}.items():
        got, want = io.read_int(path), int(value)
        if _held_elsewhere(got, want):
            raise KernelRefusedError(f"the kernel holds {got} in {path} after {want} was written "
                                     "(a cap: a thermal or nvpmodel limit?)")


def read_back(io: SysfsIO, values: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The files of ``values`` (path -> integer text put back) that hold another value (more than
    ``READBACK_TOLERANCE`` apart): path -> (wanted, read). A restore's ``check_read_back``, which never raises: a
    file unreadable now, or a value that is no integer, is not judged."""
    out: dict[str, tuple[str, str]] = {}
    for path, value in values.items():
        try:
            got, want = io.read_int(path), int(value)
        except (DeviceError, ValueError):
            continue
        if _held_elsewhere(got, want):
            out[path] = (str(want), str(got))
    return out


def _held_elsewhere(got: int, want: int) -> bool:
    """Whether a file read back holds another value than the one written (beyond ``READBACK_TOLERANCE``)."""
    return abs(got - want) > READBACK_TOLERANCE * abs(want)
