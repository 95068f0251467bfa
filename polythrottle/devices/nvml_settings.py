"""The settings of an NVIDIA GPU and its host: the knob each is, its saved-originals keys, how a saved entry
is checked and put back, and the host's CPU clock (cpufreq).

NVML cannot read a clock lock, so the original of a locked clock is ``"reset"`` (unlocked), and a lock this
tool set is known as it set it: a clock in MHz (min = max; kept by an ``apply``, what a later run puts back).
The original power limit is in mW. Host CPU clocks are cpufreq limits (board paths). A saved entry that is
anything else is refused (SavedStateError, exit 2) before anything is written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pynvml

from polythrottle.clocks import CpufreqControl, Write, check_read_back, execute_writes, read_back
from polythrottle.clocks.cpufreq import CPU_ROOT
from polythrottle.clocks.sysfs import ROOT_HINT, SysfsIO
from polythrottle.devices.guard import WriteGuard
from polythrottle.devices.nvml_errors import nvml_list
from polythrottle.devices.originals import SavedStateError
from polythrottle.devices.originals_checks import OwnedFiles, checked_files, cpufreq_steps, refuse_outside, within_steps
from polythrottle.devices.put_back import PutBack
from polythrottle.errors import DeviceError, brief
from polythrottle.space import Knob, KnobStatus

GPU_LOCK, MEM_LOCK, POWER_LIMIT = "nvml.gpu_locked_clocks", "nvml.mem_locked_clocks", "nvml.power_limit_mw"
RESET = "reset"
LOCK_KEYS = {"gpu_mhz": GPU_LOCK, "mem_mhz": MEM_LOCK}
MAX_LOCK_MHZ = 100_000  # 100 GHz: far above any GPU clock; a larger saved lock is not a clock
MAX_POWER_LIMIT_MW = 10_000_000  # 10 kW: far above any GPU; a larger saved value is not a power limit
CPUFREQ_FILES = OwnedFiles(frozenset(), (
    re.compile(rf"{re.escape(CPU_ROOT)}/cpufreq/policy\d+/scaling_(min|max)_freq"),
    re.compile(rf"{re.escape(CPU_ROOT)}/cpu\d+/cpufreq/scaling_(min|max)_freq"),
), "a cpufreq limit")


@dataclass
class Setting:
    """One hardware knob: its steps, its saved-originals entries (read before the first write), its setter."""

    knob: Knob
    originals: Callable[[], dict[str, Any]]
    set: Callable[[int], None]


def clock_knob(name: str, values: list[int]) -> Knob:
    """A clock (MHz): log scale, latency falls as it rises."""
    return Knob(name, tuple(values), log_scale=True, latency_trend=-1)


def host_cpu(io: SysfsIO, most: int) -> tuple[CpufreqControl | None, Setting | None, KnobStatus]:
    """The host's CPU clock through cpufreq (every online policy, min = max; at most ``most`` steps): its
    control (None: no cpufreq), the knob when this process may set it, and its status."""
    try:
        cpu = CpufreqControl(io)
    except DeviceError as e:
        return None, None, KnobStatus("cpu_mhz", False, f"cpufreq: {e}")
    locked = [f for f in cpu.files() if not io.writable(f)]
    if locked:
        return cpu, None, KnobStatus("cpu_mhz", False, f"cannot write {locked[0]} ({ROOT_HINT})")
    steps = [round(x) for x in cpu.steps_mhz()]
    if len(steps) < 2:
        return cpu, None, KnobStatus("cpu_mhz", False, "cpufreq lists fewer than 2 frequencies")

    def set_cpu(mhz: int) -> None:  # a limit the kernel took but holds at a cap: KernelRefusedError, rolled back
        state = cpu.read_state()
        writes = cpu.writes(cpu.target({"cpu_mhz": mhz}, state), state)
        execute_writes(io, writes)
        check_read_back(io, writes)

    return cpu, Setting(clock_knob("cpu_mhz", thin(steps, most)), cpu.read_state, set_cpu), KnobStatus("cpu_mhz", True)


def checked_settings(io: SysfsIO, saved: Mapping[str, Any], where: Path, handle: Any = None) -> dict[str, Any]:
    """``saved`` once every entry is a setting of an NVIDIA GPU with a value of the right kind: the three
    NVML settings (a lock ``"reset"`` or a clock in MHz), cpufreq limits of a CPU policy under ``io.root``
    (``checked_files``), each within what GPU ``handle`` (and the policy) can hold (``allowed``; a lock at
    1 MHz, restored, leaves the GPU at its lowest clock). Else SavedStateError naming the entry; nothing is
    written."""
    files = checked_files(io, CPUFREQ_FILES, {k: v for k, v in saved.items() if k.startswith("/")}, where)
    for key, value in saved.items():
        what = f"saved originals {where}: entry {brief(key, 100)}"
        if key.startswith("/"):
            continue
        if key in (GPU_LOCK, MEM_LOCK):
            if value != RESET and not _int_within(value, MAX_LOCK_MHZ):
                raise SavedStateError(f"{what} has the value {brief(value, 40)}, not {RESET!r} or a clock in MHz; "
                                      "refusing to restore")
        elif key == POWER_LIMIT:
            if not _int_within(value, MAX_POWER_LIMIT_MW):
                raise SavedStateError(f"{what} has the value {brief(value, 40)}, not a power limit in mW; "
                                      "refusing to restore")
        else:
            raise SavedStateError(f"{what} is not a setting of an NVIDIA GPU; refusing to restore (nothing written)")
    values = {k: files.get(k, v) for k, v in saved.items()}
    if handle is not None:
        refuse_outside(values, functools.partial(allowed, io, handle), where)
    return values


def allowed(io: SysfsIO, handle: Any, key: str) -> Callable[[int], bool] | None:
    """What a saved ``key`` of GPU ``handle`` may hold: a lock within the supported clocks, a power limit within
    the constraints, a cpufreq limit within its policy's steps. None: NVML (or the policy) lists nothing."""
    if key in (GPU_LOCK, MEM_LOCK):
        mem = [int(m) for m in nvml_list(pynvml.nvmlDeviceGetSupportedMemoryClocks, handle)]
        return within_steps(mem if key == MEM_LOCK else [int(g) for m in mem for g in nvml_list(
            pynvml.nvmlDeviceGetSupportedGraphicsClocks, handle, m)])
    if key == POWER_LIMIT:
        try:
            return within_steps([int(x) for x in pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)])
        except pynvml.NVMLError:
            return None
    return within_steps(cpufreq_steps(io, key))


def _int_within(value: Any, most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= most


def put_back_setting(guard: WriteGuard, handle: Any, key: str, value: Any) -> None:
    """Put NVML setting ``key`` back to its saved ``value`` (through the write guard): a lock ``"reset"`` is
    unlocked, a lock in MHz locked there (min = max). Raises NVMLError."""
    if key in (GPU_LOCK, MEM_LOCK) and value != RESET:
        name = "nvmlDeviceSetGpuLockedClocks" if key == GPU_LOCK else "nvmlDeviceSetMemoryLockedClocks"
        guard.nvml(name, handle, int(value), int(value))
    elif key == GPU_LOCK:
        guard.nvml("nvmlDeviceResetGpuLockedClocks", handle)
    elif key == MEM_LOCK:
        guard.nvml("nvmlDeviceResetMemoryLockedClocks", handle)
    elif key == POWER_LIMIT:
        guard.nvml("nvmlDeviceSetPowerManagementLimit", handle, int(value))


def put_back_files(io: SysfsIO, cpu: CpufreqControl | None, files: Mapping[str, str]) -> PutBack:
    """Write the host's cpufreq limits ``files`` (path -> text) back, min/max pairs in an order the kernel accepts,
    then read them back (a limit held under a cap: ``PutBack.held``)."""
    out = PutBack()
    if not files:
        return out
    try:
        state = cpu.read_state() if cpu is not None else {}
        writes = cpu.writes(files, state) if cpu is not None else [Write(p, v) for p, v in files.items()]
        execute_writes(io, writes)
    except DeviceError as e:
        out.failed.update(dict.fromkeys(files, str(e)))
        return out
    out.restored += list(files)
    out.held.update(read_back(io, files))
    return out


def thin(values: list[int], most: int) -> list[int]:
    """At most ``most`` values spread evenly by index, always keeping the lowest and highest."""
    values = sorted(set(values))
    if len(values) <= most:
        return values
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, most)).astype(int))
    return [values[i] for i in idx]
