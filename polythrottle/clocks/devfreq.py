"""devfreq (the Jetson GPU): ``min_freq``/``max_freq`` in Hz, steps from ``available_frequencies``.

Knobs: ``gpu_mhz`` locks the clock (min = max), ``gpu_min_mhz``/``gpu_max_mhz`` set a range (the
governor scales in between). Writes follow ``pair_writes`` (the kernel refuses min above max).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from polythrottle.clocks.base import ClockControl, Write, match_step, pair_state_writes, to_mhz
from polythrottle.clocks.sysfs import SysfsIO
from polythrottle.errors import BadInputError, DeviceError, InvalidValueError


class DevfreqControl(ClockControl):
    """A devfreq device directory ``directory`` (board path) with files in ``unit`` (Hz).

    ``fallback_steps``: steps (file unit) used when the kernel offers no ``available_frequencies``.
    Raises DeviceError if the directory has no min/max files or no steps can be found.
    """

    def __init__(
        self,
        io: SysfsIO,
        directory: str,
        *,
        prefix: str = "gpu",
        unit: str = "Hz",
        files: Mapping[str, str] | None = None,
        fallback_steps: Sequence[int] | None = None,
    ) -> None:
        super().__init__(io)
        self.name = prefix
        self.directory = directory.rstrip("/")
        self.unit = unit
        f = {"available": "available_frequencies", "min": "min_freq", "max": "max_freq", "current": "cur_freq"}
        f.update(files or {})
        self.min_path = f"{self.directory}/{f['min']}"
        self.max_path = f"{self.directory}/{f['max']}"
        self.cur_path = f"{self.directory}/{f['current']}"
        self.available_path = f"{self.directory}/{f['available']}"
        self.knobs = (f"{prefix}_mhz", f"{prefix}_min_mhz", f"{prefix}_max_mhz")
        for p in (self.min_path, self.max_path):
            if not io.is_file(p):
                raise DeviceError(f"no {p} (devfreq)")
        steps = io.read_ints(self.available_path) if io.is_file(self.available_path) else list(fallback_steps or [])
        if not steps:
            raise DeviceError(f"no {self.available_path} and no steps in the profile")
        self.steps_raw = tuple(sorted(set(steps)))
        self.steps_source = self.available_path if io.is_file(self.available_path) else "profile"

    def cap(self, max_raw: int) -> None:
        """Offer only steps at or under ``max_raw`` (file unit; the power mode's cap), the lowest step if
        none is."""
        capped = tuple(s for s in self.steps_raw if s <= max_raw * (1 + 1e-6))
        self.steps_raw = capped or self.steps_raw[:1]

    def steps_mhz(self, knob: str | None = None) -> tuple[float, ...]:
        return tuple(to_mhz(r, self.unit) for r in self.steps_raw)

    def files(self) -> list[str]:
        return [self.min_path, self.max_path]

    def target(self, settings: Mapping[str, float | int | str], current: Mapping[str, str]) -> dict[str, str]:
        lock, lo, hi = self.knobs
        if lock in settings and (lo in settings or hi in settings):
            raise BadInputError(f"set either {lock} or {lo}/{hi}, not both")
        if lock in settings:
            raw = match_step(lock, settings[lock], self.steps_raw, self.unit)
            return {self.min_path: str(raw), self.max_path: str(raw)}
        new_min = match_step(lo, settings[lo], self.steps_raw, self.unit) if lo in settings else None
        new_max = match_step(hi, settings[hi], self.steps_raw, self.unit) if hi in settings else None
        eff_min = new_min if new_min is not None else int(current[self.min_path])
        eff_max = new_max if new_max is not None else int(current[self.max_path])
        if eff_min > eff_max:
            raise InvalidValueError(
                f"{lo}={to_mhz(eff_min, self.unit):g} is above {hi}={to_mhz(eff_max, self.unit):g}"
            )
        out = {}
        if new_min is not None:
            out[self.min_path] = str(new_min)
        if new_max is not None:
            out[self.max_path] = str(new_max)
        return out

    def writes(self, target: Mapping[str, str], current: Mapping[str, str]) -> list[Write]:
        return pair_state_writes(self.min_path, self.max_path, target, current)

    def current_mhz(self, state: Mapping[str, str] | None = None) -> dict[str, float]:
        s = state if state is not None else self.read_state()
        lo, hi = to_mhz(int(s[self.min_path]), self.unit), to_mhz(int(s[self.max_path]), self.unit)
        out = {self.knobs[1]: lo, self.knobs[2]: hi}
        if lo == hi:
            out[self.knobs[0]] = lo
        return out
