"""cpufreq (CPU clusters): ``scaling_min_freq``/``scaling_max_freq`` in kHz, per policy.

Policies are found the way the kernel lays them out: every online ``cpuN/cpufreq`` is a link to the
policy of its cluster (``cpufreq/policyM``); links are resolved and de-duplicated, so each cluster
is written once. ``cpu_mhz`` sets min = max on every online policy; the value must be a step of
every policy (``scaling_available_frequencies``; the profile's list where a driver offers none) within
the policy's hardware limits (``cpuinfo_min_freq``/``cpuinfo_max_freq``, where readable): the table is
not trusted beyond them, since cpufreq holds a limit outside them at the nearest one, and a tune would
measure a clock the board does not run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from polythrottle.clocks.base import ClockControl, Write, match_step, pair_state_writes, to_mhz
from polythrottle.clocks.sysfs import SysfsIO
from polythrottle.errors import DeviceError

CPU_ROOT = "/sys/devices/system/cpu"


@dataclass(frozen=True)
class CpuPolicy:
    """One cpufreq policy: its directory (board path), online CPUs, steps (kHz)."""

    directory: str
    cpus: tuple[int, ...]
    steps_khz: tuple[int, ...]

    @property
    def min_path(self) -> str:
        return f"{self.directory}/scaling_min_freq"

    @property
    def max_path(self) -> str:
        return f"{self.directory}/scaling_max_freq"


def _cpu_online(io: SysfsIO, cpu_dir: str) -> bool:
    online = f"{cpu_dir}/online"
    if not io.is_file(online):  # cpu0 often has no 'online' file: it cannot go offline
        return True
    try:
        return io.read(online) == "1"
    except DeviceError:
        return False


def hardware_limits(io: SysfsIO, directory: str) -> tuple[int, int] | None:
    """The policy's hardware limits (kHz: ``cpuinfo_min_freq``, ``cpuinfo_max_freq``), or None where they
    cannot be read or make no range."""
    try:
        lo, hi = (io.read_int(f"{directory}/cpuinfo_{n}_freq") for n in ("min", "max"))
    except DeviceError:
        return None
    return (lo, hi) if 0 < lo <= hi else None


def _within_hardware(io: SysfsIO, directory: str, steps: Sequence[int], source: str) -> list[int]:
    """``steps`` within the policy's hardware limits. DeviceError when none is."""
    limits = hardware_limits(io, directory)
    if limits is None:
        return list(steps)
    within = [s for s in steps if limits[0] <= s <= limits[1]]
    if not within:
        raise DeviceError(f"{source} lists no frequency within the hardware limits of {directory} "
                          f"({limits[0]}-{limits[1]} kHz, cpuinfo_min_freq/cpuinfo_max_freq)")
    return within


def find_policies(io: SysfsIO, cpu_root: str = CPU_ROOT, fallback_steps_khz: Sequence[int] = ()) -> list[CpuPolicy]:
    """Online cpufreq policies under ``cpu_root``, sorted by first CPU."""
    groups: dict[str, list[int]] = {}
    for d in io.listdir(cpu_root):
        m = re.fullmatch(r"cpu(\d+)", d)
        if not m:
            continue
        cpu_dir = f"{cpu_root}/{d}"
        link = f"{cpu_dir}/cpufreq"
        if not io.is_dir(link) or not _cpu_online(io, cpu_dir):
            continue
        groups.setdefault(io.resolve(link), []).append(int(m.group(1)))
    policies = []
    for directory, cpus in groups.items():
        avail = f"{directory}/scaling_available_frequencies"
        steps = io.read_ints(avail) if io.is_file(avail) else list(fallback_steps_khz)
        if not steps:
            raise DeviceError(f"no {avail} and no CPU steps in the profile")
        steps = _within_hardware(io, directory, steps, avail if io.is_file(avail) else "the profile")
        if not (io.is_file(f"{directory}/scaling_min_freq") and io.is_file(f"{directory}/scaling_max_freq")):
            raise DeviceError(f"{directory} has no scaling_min_freq/scaling_max_freq")
        policies.append(CpuPolicy(directory, tuple(sorted(cpus)), tuple(sorted(set(steps)))))
    return sorted(policies, key=lambda p: p.cpus[0])


class CpufreqControl(ClockControl):
    """Every online cpufreq policy under ``cpu_root``. Raises DeviceError if none is found."""

    name = "cpu"
    knobs = ("cpu_mhz",)

    def __init__(self, io: SysfsIO, cpu_root: str = CPU_ROOT, fallback_steps_khz: Sequence[int] = ()) -> None:
        super().__init__(io)
        self.policies = find_policies(io, cpu_root, fallback_steps_khz)
        if not self.policies:
            raise DeviceError(f"no online cpufreq policy under {cpu_root}")
        common = set(self.policies[0].steps_khz)
        for p in self.policies[1:]:
            common &= set(p.steps_khz)
        if not common:
            raise DeviceError("the CPU clusters share no frequency step")
        self.steps_khz = tuple(sorted(common))

    def cap(self, max_khz: int) -> None:
        """Offer only steps at or under ``max_khz`` (the power mode's cap), the lowest step if none is."""
        self.steps_khz = tuple(s for s in self.steps_khz if s <= max_khz) or self.steps_khz[:1]

    def steps_mhz(self, knob: str | None = None) -> tuple[float, ...]:
        return tuple(to_mhz(s, "kHz") for s in self.steps_khz)

    def files(self) -> list[str]:
        return [f for p in self.policies for f in (p.min_path, p.max_path)]

    def target(self, settings: Mapping[str, float | int | str], current: Mapping[str, str]) -> dict[str, str]:
        khz = match_step("cpu_mhz", settings["cpu_mhz"], self.steps_khz, "kHz")
        return {f: str(khz) for f in self.files()}

    def writes(self, target: Mapping[str, str], current: Mapping[str, str]) -> list[Write]:
        out: list[Write] = []
        for p in self.policies:
            if p.min_path in target or p.max_path in target:
                out += pair_state_writes(p.min_path, p.max_path, target, current)
        return out

    def current_mhz(self, state: Mapping[str, str] | None = None) -> dict[str, float]:
        s = state if state is not None else self.read_state()
        lows = {to_mhz(int(s[p.min_path]), "kHz") for p in self.policies}
        highs = {to_mhz(int(s[p.max_path]), "kHz") for p in self.policies}
        out = {"cpu_min_mhz": min(lows), "cpu_max_mhz": max(highs)}
        if len(lows) == 1 and lows == highs:
            out["cpu_mhz"] = lows.pop()
        return out
