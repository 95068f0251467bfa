"""``nvml[:INDEX]``: the hardware knobs of an NVIDIA GPU through NVML (``NvmlControl``, nvidia-ml-py), a
workload measured with the GPU's energy (``polythrottle.measure.live``).

Hardware knobs (each offered only if the driver accepts it; otherwise reported unavailable with the
driver's reason, and tuning goes on over the rest):
- ``gpu_mhz``: locked graphics clock (nvmlDeviceSetGpuLockedClocks min = max; Volta and newer), from
  the supported clocks of the memory clock in use, thinned to at most ``MAX_GPU_STEPS`` even steps;
- ``mem_mhz``: locked memory clock (nvmlDeviceSetMemoryLockedClocks; Ampere and newer);
- ``power_limit_w``: power limit (nvmlDeviceSetPowerManagementLimit), a few steps within the limits;
- ``cpu_mhz``: host CPU clock through cpufreq (``polythrottle.clocks.CpufreqControl``: min = max on
  every online policy, at most ``MAX_CPU_STEPS`` of the listed frequencies), where the kernel lists
  frequencies and the files are writable (root).
Whether a knob works is probed once at open with a write that changes nothing (locking the full range, then
resetting; setting the current power limit). Needs root. NVML errors become typed exceptions (``nvml_errors``).

Originals go through the originals session (``originals_session``): recorded before the first write
(NVML cannot read a lock: the original of a locked clock is "reset", i.e. unlocked), put back on
close, on SIGTERM/Ctrl-C (the CLI closes the device) and at the next open after a crash. Settings an
``apply`` kept stay at the next open, as on a Jetson (a kept clock lock is not probed: its probe's
reset would undo it); ``polythrottle restore`` puts them back. A kept lock (``unreadable``, saved with the
kept settings) is what a later run starts from and puts back (close, signal, failed apply, crash). With
``--no-clock-control`` no hardware knob is offered and the write guard refuses every write, restores included.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pynvml

from polythrottle.clocks import CpufreqControl, Write
from polythrottle.devices.base import Control, Device
from polythrottle.devices.guard import WriteGuard
from polythrottle.devices.nvml_errors import nvml_cause, nvml_errors, nvml_list
from polythrottle.devices.nvml_settings import (
    GPU_LOCK,
    LOCK_KEYS,
    MEM_LOCK,
    POWER_LIMIT,
    RESET,
    Setting,
    checked_settings,
    clock_knob,
    host_cpu,
    put_back_files,
    put_back_setting,
    thin,
)
from polythrottle.devices.originals import OriginalsLocation, OriginalsStore
from polythrottle.devices.originals_session import OriginalsSession
from polythrottle.devices.put_back import PutBack
from polythrottle.devices.registry import DeviceOptions
from polythrottle.energy.nvml import nvml_reason
from polythrottle.errors import BadInputError, DeviceError, PermissionDeniedError, UnsupportedError, every_face
from polythrottle.identity import DeviceIdentity, slug
from polythrottle.measure import live
from polythrottle.measure.harness import HarnessSettings
from polythrottle.space import Config, Knob, KnobStatus, SearchSpace, Value

MAX_GPU_STEPS = 16
MAX_CPU_STEPS = 8
POWER_STEPS = 6
HARDWARE_KNOBS = ("gpu_mhz", "mem_mhz", "power_limit_w", "cpu_mhz")
APPLY_ORDER = ("cpu_mhz", "power_limit_w", "mem_mhz", "gpu_mhz")  # the memory clock before the GPU's
__all__ = ["GPU_LOCK", "MEM_LOCK", "POWER_LIMIT", "NvmlControl", "open_device"]


class NvmlControl(Control):
    """The hardware knobs of NVIDIA GPU ``index``. See the module docstring. ``sysfs_root``: where kernel
    files (cpufreq) are read (default ``$POLYTHROTTLE_ROOT`` or /)."""

    def __init__(self, index: int, store: OriginalsStore, *, no_clock_control: bool = False,
                 sysfs_root: str | Path | None = None) -> None:
        self.index = index
        self.guard = WriteGuard(allowed=not no_clock_control, sysfs_root=sysfs_root)
        self.hw: dict[str, Setting] = {}
        self.cpu: CpufreqControl | None = None
        self._statuses: list[KnobStatus] = []
        self._gpu_by_mem: dict[int, list[int]] = {}
        self._applied: dict[str, Value] = {}  # what this process set, knob by knob
        self._last_writes: list[Write] = []
        self._kept: set[str] = set()  # saved keys a kept apply holds: their lock is not probed (a reset undoes it)
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise UnsupportedError(f"NVML unavailable: {nvml_reason(e)} (no NVIDIA driver?)") from None
        self._nvml_up = True
        try:
            self._identify()
        except BaseException:
            self.close()
            raise
        self.device_id = f"nvml:{self.uuid}"
        self._session = OriginalsSession(store, self.device_id, self, device_arg=f"nvml:{index}",
                                         unreadable=NvmlControl.unreadable)
        try:
            self._restore_leftovers()
            self._discover()
        except BaseException:
            try:
                self.restore()
            finally:
                self.close()
            raise

    # ----- open ---------------------------------------------------------------------------------------
    @nvml_errors("opening the GPU")
    def _identify(self) -> None:
        count = pynvml.nvmlDeviceGetCount()
        if not 0 <= self.index < count:
            raise BadInputError(f"nvml:{self.index}: no such GPU (this host has {count}: 0..{count - 1})")
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
        self.gpu_name = _text(pynvml.nvmlDeviceGetName(self.handle))
        self.uuid = _text(pynvml.nvmlDeviceGetUUID(self.handle))
        self.driver = _text(pynvml.nvmlSystemGetDriverVersion())

    def identity(self) -> DeviceIdentity:
        """The GPU's product name (slugged) and its UUID (not its index, which CUDA_VISIBLE_DEVICES changes)."""
        return DeviceIdentity("nvml", slug(self.gpu_name), self.uuid)

    def _restore_leftovers(self) -> None:
        """Originals left by a run that crashed: put them back (or, with --no-clock-control, say so). Settings
        an ``apply`` kept stay as they are, as on a Jetson (``polythrottle restore`` puts them back)."""
        if not self.guard.allowed:
            self._session.warn_leftovers_untouched()
            return
        if not self._session.saved():
            return
        if self._session.crash_leftovers()[1]:  # put back (to the kept settings a killed run started from)
            with self._session.claimed():
                pass
        elif not self._session.kept_keys():  # this process's own (an open that failed) or a live one's: refused
            self._session.restore_saved()
        self._kept = set(self._session.kept_keys())

    def _discover(self) -> None:
        if not self.guard.allowed:
            self._statuses += [KnobStatus(n, False, "--no-clock-control") for n in HARDWARE_KNOBS]
            return
        h, g = self.handle, self.guard
        mem_all = sorted(int(m) for m in nvml_list(pynvml.nvmlDeviceGetSupportedMemoryClocks, h))
        self._gpu_by_mem = {
            m: sorted(int(x) for x in nvml_list(pynvml.nvmlDeviceGetSupportedGraphicsClocks, h, m)) for m in mem_all
        }
        gpu_all = self._gpu_by_mem.get(mem_all[-1], []) if mem_all else []
        self._probe("gpu_mhz", gpu_all, GPU_LOCK, RESET,
                    lambda: g.nvml("nvmlDeviceSetGpuLockedClocks", h, gpu_all[0], gpu_all[-1]),
                    lambda v: g.nvml("nvmlDeviceSetGpuLockedClocks", h, v, v),
                    undo=lambda: g.nvml("nvmlDeviceResetGpuLockedClocks", h))
        self._probe("mem_mhz", mem_all, MEM_LOCK, RESET,
                    lambda: g.nvml("nvmlDeviceSetMemoryLockedClocks", h, mem_all[0], mem_all[-1]),
                    lambda v: g.nvml("nvmlDeviceSetMemoryLockedClocks", h, v, v),
                    undo=lambda: g.nvml("nvmlDeviceResetMemoryLockedClocks", h))
        try:
            current_mw, lo, hi = self._power_limits()
        except DeviceError as e:
            self._statuses.append(KnobStatus("power_limit_w", False, f"driver: {nvml_cause(e)}"))
        else:
            steps = {round(x / 1000) for x in np.linspace(lo, hi, POWER_STEPS)} | {round(current_mw / 1000)}
            self._probe("power_limit_w", sorted(steps), POWER_LIMIT, current_mw,
                        lambda: g.nvml("nvmlDeviceSetPowerManagementLimit", h, current_mw),
                        lambda w: g.nvml("nvmlDeviceSetPowerManagementLimit", h, int(w) * 1000))
        if "gpu_mhz" in self.hw:
            self.hw["gpu_mhz"].knob = clock_knob("gpu_mhz", thin(gpu_all, MAX_GPU_STEPS))
        self._discover_cpu()

    @nvml_errors("reading the power limit")
    def _power_limits(self) -> tuple[int, int, int]:
        current_mw = int(pynvml.nvmlDeviceGetPowerManagementLimit(self.handle))
        lo, hi = (int(x) for x in pynvml.nvmlDeviceGetPowerManagementLimitConstraints(self.handle))
        return current_mw, lo, hi

    @nvml_errors("probing {0}")
    def _probe_call(self, name: str, probe: Callable[[], object]) -> None:
        probe()

    def _probe(self, name: str, values: list[int], key: str, original: Any, probe: Callable[[], object],
               set_fn: Callable[[int], None], undo: Callable[[], object] | None = None) -> None:
        """Offer ``name`` if a write that changes nothing (``probe``, then ``undo``) is accepted; its original is
        saved meanwhile, and stays saved if ``undo`` fails (the probe's write is then still in place)."""
        if len(values) < 2:
            self._statuses.append(KnobStatus(name, False, "the driver lists fewer than 2 values"))
            return
        if undo is not None and key in self._kept:  # a kept apply set it (so the driver takes it): left as set
            self._offer(name, values, key, original, set_fn)
            return
        with self._session.claimed():
            recorded = self._session.record({key: original})
            try:
                self._probe_call(name, probe)
            except DeviceError as e:  # refused (nothing changed) or failed: passed on
                self._session.settled(recorded)
                if not isinstance(e, (PermissionDeniedError, UnsupportedError)):
                    raise
                why = "needs root" if isinstance(e, PermissionDeniedError) else "not supported"
                self._statuses.append(KnobStatus(name, False, f"driver refused: {nvml_cause(e)} ({why})"))
                return
            if undo is not None:
                self._probe_call(name, undo)  # fails: the original stays saved, restored when the open fails
            self._session.settled(recorded)  # the probe put it back
        self._offer(name, values, key, original, set_fn)

    def _offer(self, name: str, values: list[int], key: str, original: Any, set_fn: Callable[[int], None]) -> None:
        knob = Knob(name, tuple(values), log_scale=True, latency_trend=-1 if name.endswith("_mhz") else 0)
        lock = key in (GPU_LOCK, MEM_LOCK)  # unreadable: a kept lock is known as kept, else "reset" (unlocked)
        self.hw[name] = Setting(knob, lambda: {key: self._session.kept_values().get(key, original) if lock else original},
                                set_fn)
        self._statuses.append(KnobStatus(name, True))

    def _discover_cpu(self) -> None:
        """``cpu_mhz`` through cpufreq (every online policy, min = max), where the host allows it."""
        self.cpu, setting, status = host_cpu(self.guard.io, MAX_CPU_STEPS)
        if setting is not None:
            self.hw["cpu_mhz"] = setting
        self._statuses.append(status)

    # ----- Control: knobs -----------------------------------------------------------------------------
    @property
    def hardware_knobs(self) -> list[str]:
        """The hardware knobs this GPU can set (empty with --no-clock-control or without root)."""
        return list(self.hw)

    @property
    def touches_hardware(self) -> bool:
        return bool(self.hw)

    def knobs(self) -> list[Knob]:
        return [s.knob for s in self.hw.values()]

    def statuses(self) -> list[KnobStatus]:
        return list(self._statuses)

    def restrict(self, space: SearchSpace) -> SearchSpace:
        """A lock is a range the driver clamps to what the memory clock supports: a GPU clock step is valid
        with a memory clock if it lies within that clock's supported graphics clocks."""
        if "gpu_mhz" not in space.names or "mem_mhz" not in space.names:
            return space
        jg, jm = space.names.index("gpu_mhz"), space.names.index("mem_mhz")
        gk, mk = space.knobs[jg], space.knobs[jm]
        valid = np.array([[_within(g, self._gpu_by_mem.get(int(m), [])) for g in gk.values] for m in mk.values])
        return SearchSpace(space.knobs, space.rows[valid[space.rows[:, jm], space.rows[:, jg]]])

    def default_config(self) -> Config:
        """Highest clocks, the current power limit."""
        cfg: Config = {name: s.knob.values[-1] for name, s in self.hw.items()}
        if "power_limit_w" in self.hw:
            cfg["power_limit_w"] = round(self.hw["power_limit_w"].originals()[POWER_LIMIT] / 1000)
        return cfg

    def no_knob_error(self) -> BadInputError:
        why = "; ".join(f"{k.name}: {k.reason}" for k in self._statuses if not k.available)
        return BadInputError(f"nvml:{self.index} offers no knob to set ({why}); give a workload "
                             f"({every_face('workload')}) for software knobs")

    # ----- Control: apply -----------------------------------------------------------------------------
    def apply(self, settings: Mapping[str, Value]) -> None:
        """Set the hardware knobs in ``settings`` (validated by ``Device.apply`` against the whole space),
        memory clock before the GPU's. On any exception the knobs this apply set are put back."""
        self._last_writes = []
        names = [n for n in APPLY_ORDER if n in self.hw and n in settings and self._applied.get(n) != settings[n]]
        if not names:
            return
        before = dict(self._applied)
        with self._session.claimed():
            originals = {k: v for n in names for k, v in self.hw[n].originals().items()}
            steps = [functools.partial(self._set, n, settings[n]) for n in names]
            done = self._session.write(originals, steps, lambda done: self._undo(names[: done + 1], before))
        self._last_writes = [Write(n, str(settings[n])) for n in names[:done]]

    @nvml_errors("setting {0}={1}")
    def _set(self, name: str, value: Value) -> None:
        self.hw[name].set(int(value))
        self._applied[name] = value

    def _undo(self, touched: list[str], before: Mapping[str, Value]) -> list[str]:
        """Put the knobs ``touched`` back to ``before`` (this process's earlier value) or, for a knob this
        process had not set, to what it was before this process first wrote it (over kept settings, the kept
        value, not the saved original from before them). Best effort: returns the keys not put back."""
        failed: list[str] = []
        for name in reversed(touched):
            keys = list(self.hw[name].originals())
            try:
                if name in before:
                    self._set(name, before[name])
                    continue
                result = self.put_back(self._session.started_from(keys))
            except DeviceError:
                failed += keys
                continue
            failed += list(result.failed)
            if not result.failed:
                self._applied.pop(name, None)
        return failed

    @property
    def last_writes(self) -> list[Write]:
        return list(self._last_writes)

    # ----- Control: originals -------------------------------------------------------------------------
    def restore(self) -> None:
        """Put back every hardware setting this process changed (unless kept). Signals deferred until done."""
        if self._session.holds_changes:
            try:
                self._session.restore()
            finally:
                self._applied.clear()

    def keep(self) -> None:
        """Leave the applied settings on close (``apply``, ``tune --apply``) and a later ``apply``'s; originals
        stay saved for ``restore_saved``. A failed or interrupted apply is still undone."""
        self._session.keep()

    def unreadable(self) -> dict[str, int]:
        """The clock locks this process set (key -> MHz), which NVML cannot read back: saved when kept."""
        return {LOCK_KEYS[n]: int(v) for n, v in self._applied.items() if n in LOCK_KEYS}

    def restore_saved(self) -> list[str]:
        """Put back every saved original (this run's or a crashed one's); returns what was restored.
        BadInputError with --no-clock-control (a restore is a write), SavedStateError (exit 2, nothing
        written) for a tampered entry."""
        if not self.guard.allowed:
            if self._session.saved():
                raise BadInputError("--no-clock-control: restoring would write GPU settings; run without it")
            return []
        try:
            return self._session.restore_saved()
        finally:
            self._applied.clear()

    def originals_location(self) -> OriginalsLocation:
        return self._session.location()

    def checked_originals(self, saved: Mapping[str, Any]) -> dict[str, Any]:
        """``saved`` once every entry is a setting of this GPU with a value it can hold (``checked_settings``)."""
        return checked_settings(self.guard.io, saved, self.originals_location().file, self.handle)

    def put_back(self, values: Mapping[str, Any]) -> PutBack:
        """Kernel files first (min/max pairs in an order the kernel accepts), then NVML's, last recorded first."""
        out = put_back_files(self.guard.io, self.cpu, {k: str(v) for k, v in values.items() if k.startswith("/")})
        for key in reversed([k for k in values if not k.startswith("/")]):
            try:
                self._put_back_one(key, values[key])
            except DeviceError as e:
                out.failed[key] = nvml_cause(e)
                continue
            out.restored.append(key)
        return out

    @nvml_errors("restoring {0}")
    def _put_back_one(self, key: str, value: Any) -> None:
        put_back_setting(self.guard, self.handle, key, value)

    # ----- Control: reporting -------------------------------------------------------------------------
    def current(self) -> dict[str, float]:
        """The GPU's SM and memory clocks now (MHz; one NVML cannot read is left out)."""
        out: dict[str, float] = {}
        for knob, clock in (("gpu_mhz", pynvml.NVML_CLOCK_SM), ("mem_mhz", pynvml.NVML_CLOCK_MEM)):
            try:
                out[knob] = float(pynvml.nvmlDeviceGetClockInfo(self.handle, clock))
            except pynvml.NVMLError:
                pass
        return out

    def details(self) -> dict[str, str]:
        return {"gpu": self.gpu_name, "driver": self.driver, "uuid": self.uuid}

    def close(self) -> None:
        if self._nvml_up:
            self._nvml_up = False
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass


def _within(value: Any, steps: list[int]) -> bool:
    return bool(steps) and min(steps) <= int(value) <= max(steps)


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def open_device(arg: str, options: DeviceOptions, *, torch_device: Any = None, harness: HarnessSettings | None = None,
                rapl_root: str | Path | None = None, sysfs_root: str | Path | None = None) -> Device:
    """``nvml[:INDEX]`` with ``options.workload`` measured (none: hardware knobs only, for apply/restore).
    torch_device: where the workload runs (default: the CUDA device of this GPU; tests pass "cpu");
    harness: measurement settings (default: from the options); rapl_root: RAPL's powercap directory."""
    try:
        index = int(arg) if arg else 0
    except ValueError:
        raise BadInputError(f"nvml:{arg}: expected a GPU index, e.g. nvml:0") from None
    # a bad workload fails before NVML is touched
    spec = live.load_spec(options.workload) if options.workload else None
    control = NvmlControl(index, OriginalsStore(options.state_dir), no_clock_control=options.no_clock_control,
                          sysfs_root=sysfs_root)
    try:
        measurer = None if spec is None else live.gpu_measurer(
            spec, control.handle, control.device_id, torch_device=torch_device, uuid=control.uuid, index=index,
            harness=harness or live.harness_settings(options.window_s, options.percentile, options.repeats),
            rapl_root=rapl_root, slo_metric=options.slo_metric, current=control.current)
    except BaseException:
        try:
            control.restore()
        finally:
            control.close()
        raise
    return Device(control.identity(), name=f"nvml:{index}", control=control, measurer=measurer)
