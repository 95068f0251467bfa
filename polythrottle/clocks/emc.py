"""EMC (memory clock) through debugfs, as NVIDIA's jetson_clocks sets it.

- TX2, Xavier, Orin (BPMP): write ``1`` to ``/sys/kernel/debug/bpmp/debug/clk/emc/mrq_rate_locked``,
  then the rate in Hz to ``.../emc/rate``. Restore writes the original rate, then the original lock
  (normally ``0``, which hands the clock back to the firmware's DVFS).
- Nano/TX1 (tegra210): the rate in Hz to ``/sys/kernel/debug/clk/override.emc/clk_update_rate``,
  then ``1`` to ``.../override.emc/clk_state``; restore in the reverse order.

The kernel offers no list of EMC rates here, so the steps come from the board profile; steps outside
the firmware's range (``min_rate``/``max_rate``, when readable; the firmware holds the rate within it)
and above the nvpmodel EMC cap are not offered. debugfs is readable by root only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from polythrottle.clocks.base import UNIT_PER_MHZ, ClockControl, Write, match_step, to_mhz
from polythrottle.clocks.sysfs import SysfsIO
from polythrottle.errors import DeviceError


@dataclass(frozen=True)
class EmcProtocol:
    """How to hold EMC at a rate: which file takes the rate, which file locks it, in which order.

    lock_first: write the lock before the rate when locking (BPMP) or after it (tegra210 override);
    unlocking (restore) uses the reverse order and never writes a rate <= 0 (an override file that
    was never set reads 0; writing it would ask for the lowest clock). cap_paths: files whose
    values (same unit) cap the offered steps when readable (firmware max_rate, nvpmodel EMC cap);
    floor_paths: files whose values are the lowest step offered when readable (firmware min_rate).
    """

    rate_path: str
    lock_path: str
    lock_value: str = "1"
    lock_first: bool = True
    unit: str = "Hz"
    cap_paths: tuple[str, ...] = ()
    cur_rate_path: str | None = None
    floor_paths: tuple[str, ...] = ()


def _positive(text: str) -> bool:
    try:
        return int(text) > 0
    except ValueError:
        return False


class EmcControl(ClockControl):
    """EMC via ``protocol``; ``steps_mhz`` from the profile. Raises DeviceError/PermissionDeniedError."""

    name = "emc"
    knobs = ("emc_mhz",)

    def __init__(self, io: SysfsIO, protocol: EmcProtocol, steps_mhz: Sequence[float]) -> None:
        super().__init__(io)
        self.protocol = protocol
        for p in (protocol.rate_path, protocol.lock_path):
            if not io.exists(p):
                raise DeviceError(f"no {p} (is debugfs mounted?)")
        io.read(protocol.rate_path)  # debugfs needs root: fail here (PermissionDeniedError), not later
        per = UNIT_PER_MHZ[protocol.unit]
        steps = sorted({round(m * per) for m in steps_mhz})
        self.caps: dict[str, int] = {}
        for bound_path in (*protocol.cap_paths, *protocol.floor_paths):
            try:
                bound = io.read_int(bound_path)
            except DeviceError:  # absent or unreadable: no bound from it
                continue
            if bound <= 0:
                continue
            if bound_path in protocol.floor_paths:
                steps = [s for s in steps if s >= bound * (1 - 1e-6)]
            else:
                self.caps[bound_path] = bound
                steps = [s for s in steps if s <= bound * (1 + 1e-6)]
        if not steps:
            raise DeviceError("no EMC steps (the profile lists none within the firmware's range and cap)")
        self.steps_raw = tuple(steps)

    def steps_mhz(self, knob: str | None = None) -> tuple[float, ...]:
        return tuple(to_mhz(s, self.protocol.unit) for s in self.steps_raw)

    def files(self) -> list[str]:
        return [self.protocol.rate_path, self.protocol.lock_path]

    def target(self, settings: Mapping[str, float | int | str], current: Mapping[str, str]) -> dict[str, str]:
        raw = match_step("emc_mhz", settings["emc_mhz"], self.steps_raw, self.protocol.unit)
        return {self.protocol.rate_path: str(raw), self.protocol.lock_path: self.protocol.lock_value}

    def writes(self, target: Mapping[str, str], current: Mapping[str, str]) -> list[Write]:
        p = self.protocol
        locking = target.get(p.lock_path, current.get(p.lock_path)) == p.lock_value
        order = [p.lock_path, p.rate_path] if locking == p.lock_first else [p.rate_path, p.lock_path]
        out = []
        for path in order:
            if path not in target or target[path] == current.get(path):
                continue
            if path == p.rate_path and not locking and not _positive(target[path]):
                continue
            out.append(Write(path, target[path]))
        return out

    def settled(self, target: Mapping[str, str]) -> dict[str, str]:
        """``target`` without the rate when it unlocks the clock: the firmware's DVFS moves it from then on."""
        p = self.protocol
        unlocked = target.get(p.lock_path) != p.lock_value
        return {k: v for k, v in target.items() if not (unlocked and k == p.rate_path)}

    def current_mhz(self, state: Mapping[str, str] | None = None) -> dict[str, float]:
        p = self.protocol
        if state is None and p.cur_rate_path and self.io.is_file(p.cur_rate_path):
            raw = self.io.read_int(p.cur_rate_path)
        else:
            s = state if state is not None else self.read_state()
            try:
                raw = int(s[p.rate_path])
            except (KeyError, ValueError):
                raise DeviceError(f"{p.rate_path}: unreadable EMC rate {s.get(p.rate_path)!r}") from None
        return {"emc_mhz": to_mhz(raw, p.unit)}
