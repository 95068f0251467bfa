"""``nvml[:INDEX]``: an NVIDIA GPU through NVML (nvidia-ml-py), measuring a real PyTorch workload.

Hardware knobs (each offered only if the driver accepts it; otherwise reported unavailable with the
driver's reason, and tuning goes on over the rest):
- ``gpu_mhz``: locked graphics clock (nvmlDeviceSetGpuLockedClocks min = max; Volta and newer), from
  the supported clocks of the memory clock in use, thinned to at most ``MAX_GPU_STEPS`` even steps;
- ``mem_mhz``: locked memory clock (nvmlDeviceSetMemoryLockedClocks; Ampere and newer);
- ``power_limit_w``: power limit (nvmlDeviceSetPowerManagementLimit), a few steps within the limits;
- ``cpu_mhz``: host CPU clock through cpufreq (``polythrottle.clocks.CpufreqControl``: min = max on
  every online policy, at most ``MAX_CPU_STEPS`` of the listed frequencies), where the kernel lists
  frequencies and the files are writable (root).
Whether a knob works is probed once at open with a write that changes nothing (locking the full
supported range, then resetting; setting the current power limit). Setting clocks needs root.
Software knobs: see ``polythrottle.workloads.runner`` (and ``onnx_runtime``/``llm`` for those workloads).

Originals are recorded in the state store before the first write (NVML cannot read a lock: the
original of a locked clock is "reset", i.e. unlocked) and put back on close, on SIGTERM/Ctrl-C
(the CLI closes the device) and on the next open after a crash. With ``--no-clock-control`` no
hardware knob is offered and the write guard refuses every write, restores included.

Energy: the NVML counter (``polythrottle.energy.nvml``), or sampled power where the GPU has no
counter; plus CPU package energy from RAPL when it is readable (both reported in ``extra``).
"""

from __future__ import annotations

import os
import posixpath
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pynvml

from polythrottle import interrupts
from polythrottle.clocks import CpufreqControl, Write, execute_writes
from polythrottle.clocks.cpufreq import CPU_ROOT
from polythrottle.devices.base import Device, DeviceInfo, KnobStatus
from polythrottle.devices.guard import WriteGuard
from polythrottle.devices.registry import DeviceOptions
from polythrottle.energy.base import EnergyMeter
from polythrottle.energy.combined import CombinedMeter
from polythrottle.energy.nvml import NvmlEnergyMeter, NvmlPowerMeter, nvml_reason
from polythrottle.errors import BadInputError, DeviceError, PermissionDeniedError, UnsupportedError, brief
from polythrottle.harness import HarnessSettings, measure
from polythrottle.identity import DeviceIdentity, slug
from polythrottle.measurement import Measurement
from polythrottle.space import Config, Knob, SearchSpace, Value
from polythrottle.state import SavedStateError, StateStore, process_start
from polythrottle.sysfs import ROOT_HINT

MAX_GPU_STEPS = 16
MAX_CPU_STEPS = 8
POWER_STEPS = 6
HARDWARE_KNOBS = ("gpu_mhz", "mem_mhz", "power_limit_w", "cpu_mhz")

# Saved-originals keys and how each is put back.
GPU_LOCK, MEM_LOCK, POWER_LIMIT = "nvml.gpu_locked_clocks", "nvml.mem_locked_clocks", "nvml.power_limit_mw"
RESET = "reset"
MAX_POWER_LIMIT_MW = 10_000_000  # 10 kW: far above any GPU; a larger saved value is not a power limit


def _meta() -> dict[str, Any]:
    return {"pid": os.getpid(), "started": process_start(os.getpid())}


def _refusal(e: Exception) -> bool:
    return isinstance(e, (pynvml.NVMLError_NotSupported, pynvml.NVMLError_NoPermission,
                          pynvml.NVMLError_FunctionNotFound))


def nvml_error(what: str, e: Exception) -> DeviceError:
    """A typed error for an NVML failure (NoPermission -> PermissionDeniedError, exit 4)."""
    if isinstance(e, pynvml.NVMLError_NoPermission):
        return PermissionDeniedError(f"{what}: NVML says {nvml_reason(e)} (setting clocks needs root)")
    if isinstance(e, pynvml.NVMLError_NotSupported):
        return UnsupportedError(f"{what}: not supported by this GPU/driver")
    return DeviceError(f"{what}: NVML error {nvml_reason(e)}")


def thin(values: list[int], most: int) -> list[int]:
    """At most ``most`` values spread evenly by index, always keeping the lowest and highest."""
    values = sorted(set(values))
    if len(values) <= most:
        return values
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, most)).astype(int))
    return [values[i] for i in idx]


def cuda_device_for(uuid: str, index: int) -> Any:
    """The torch CUDA device of the GPU with NVML ``uuid``. Raises UnsupportedError if torch cannot see it."""
    import torch

    if not torch.cuda.is_available():
        raise UnsupportedError("PyTorch sees no CUDA device (CPU-only torch, or CUDA_VISIBLE_DEVICES hides it)")
    want = uuid.lower().removeprefix("gpu-")
    for i in range(torch.cuda.device_count()):
        got = str(getattr(torch.cuda.get_device_properties(i), "uuid", "")).lower().removeprefix("gpu-")
        if got and got == want:
            return torch.device("cuda", i)
    if "CUDA_VISIBLE_DEVICES" not in os.environ and index < torch.cuda.device_count():
        return torch.device("cuda", index)
    raise UnsupportedError(f"GPU {uuid} (NVML index {index}) is not visible to PyTorch (CUDA_VISIBLE_DEVICES?)")


@dataclass
class _HwKnob:
    name: str
    values: list[int]
    originals: Callable[[], dict[str, Any]]  # saved-originals entries, read before the first write
    set: Callable[[int], None]


class NvmlDevice(Device):
    """One NVIDIA GPU and one workload. See the module docstring.

    torch_device: where the workload runs (default: the CUDA device of this GPU; tests pass "cpu").
    store: saved-originals store (default: ``StateStore(options.state_dir)``).
    """

    def __init__(
        self,
        index: int,
        options: DeviceOptions,
        *,
        torch_device: Any = None,
        store: Any = None,
        harness: HarnessSettings | None = None,
        rapl_root: Any = None,
        sysfs_root: Any = None,
    ) -> None:
        self.options = options
        self.guard = WriteGuard(allowed=not options.no_clock_control, sysfs_root=sysfs_root)
        self._nvml_up = False
        self._live = None
        self.meter: EnergyMeter | None = None
        self._applied: dict[str, Value] = {}
        self._keep = False
        try:
            self._open(index, torch_device, store, harness, rapl_root)
        except BaseException:
            self.close()
            raise

    # ----- open ---------------------------------------------------------------------------------
    def _open(self, index: int, torch_device: Any, store: Any, harness: HarnessSettings | None,
              rapl_root: Any) -> None:
        from polythrottle.workloads import load_workload
        from polythrottle.workloads.runner import LiveWorkload

        # a bad workload fails before NVML is touched; without one, only hardware knobs (apply/restore)
        spec = load_workload(self.options.workload) if self.options.workload else None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise UnsupportedError(f"NVML unavailable: {nvml_reason(e)} (no NVIDIA driver?)") from None
        self._nvml_up = True
        count = pynvml.nvmlDeviceGetCount()
        if not 0 <= index < count:
            raise BadInputError(f"nvml:{index}: no such GPU (this host has {count}: 0..{count - 1})")
        self.index = index
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.gpu_name = _text(pynvml.nvmlDeviceGetName(self.handle))
        self.uuid = _text(pynvml.nvmlDeviceGetUUID(self.handle))
        self.driver = _text(pynvml.nvmlSystemGetDriverVersion())
        self.device_id = f"nvml:{self.uuid}"
        self.store = store if store is not None else StateStore(self.options.state_dir)
        self._restore_leftovers()

        self.hw: dict[str, _HwKnob] = {}
        self.knob_status: list[KnobStatus] = []
        self._discover_hardware()

        self.harness = harness or HarnessSettings(
            window_s=self.options.window_s or HarnessSettings.window_s,
            percentile=self.options.percentile,
            repeats=getattr(self.options, "repeats", None) or HarnessSettings.repeats,
        )
        if spec is not None:
            self.meter = self._open_meter(rapl_root)
            dev = torch_device if torch_device is not None else cuda_device_for(self.uuid, index)
            self._live = LiveWorkload(spec, dev, slo_metric=getattr(self.options, "slo_metric", None))
            self.knob_status += self._live.knob_status
        self._space = self._build_space()

    def _restore_leftovers(self) -> None:
        """Originals left by a run that crashed: put them back (or say why not)."""
        left = self.store.originals(self.device_id)
        if not left:
            return
        if not self.guard.allowed:
            print(f"polythrottle: warning: {self.device_id} has settings saved by an earlier run that did not "
                  f"finish ({', '.join(left)}); --no-clock-control leaves them alone: run once without it "
                  "to restore them", file=sys.stderr)
            return
        self._restore_values(left)

    def _discover_hardware(self) -> None:
        if not self.guard.allowed:
            for n in HARDWARE_KNOBS:
                self.knob_status.append(KnobStatus(n, False, "--no-clock-control"))
            return
        h = self.handle
        mem_all = sorted(int(m) for m in _nvml_list(pynvml.nvmlDeviceGetSupportedMemoryClocks, h))
        self._gpu_by_mem = {
            m: sorted(int(g) for g in _nvml_list(pynvml.nvmlDeviceGetSupportedGraphicsClocks, h, m)) for m in mem_all
        }
        top_mem = mem_all[-1] if mem_all else None
        gpu_all = self._gpu_by_mem.get(top_mem, []) if top_mem else []

        def probe(name: str, values: list[int], key: str, original: Any, probe_fn: Callable[[], None],
                  set_fn: Callable[[int], None]) -> None:
            if len(values) < 2:
                self.knob_status.append(KnobStatus(name, False, "the driver lists fewer than 2 values"))
                return
            self.store.record(self.device_id, {key: original})
            try:
                probe_fn()
            except pynvml.NVMLError as e:
                self.store.forget(self.device_id, [key])
                if not _refusal(e):
                    raise nvml_error(f"probing {name}", e) from None
                why = "needs root" if isinstance(e, pynvml.NVMLError_NoPermission) else "not supported"
                self.knob_status.append(KnobStatus(name, False, f"driver refused: {nvml_reason(e)} ({why})"))
                return
            self.store.forget(self.device_id, [key])  # the probe already put it back
            self.hw[name] = _HwKnob(name, values, lambda: {key: original}, set_fn)
            self.knob_status.append(KnobStatus(name, True))

        g = self.guard
        probe("gpu_mhz", gpu_all, GPU_LOCK, RESET,
              lambda: (g.nvml("nvmlDeviceSetGpuLockedClocks", h, gpu_all[0], gpu_all[-1]),
                       g.nvml("nvmlDeviceResetGpuLockedClocks", h)),
              lambda v: g.nvml("nvmlDeviceSetGpuLockedClocks", h, v, v))
        probe("mem_mhz", mem_all, MEM_LOCK, RESET,
              lambda: (g.nvml("nvmlDeviceSetMemoryLockedClocks", h, mem_all[0], mem_all[-1]),
                       g.nvml("nvmlDeviceResetMemoryLockedClocks", h)),
              lambda v: g.nvml("nvmlDeviceSetMemoryLockedClocks", h, v, v))
        try:
            current_mw = int(pynvml.nvmlDeviceGetPowerManagementLimit(h))
            lo, hi = (int(x) for x in pynvml.nvmlDeviceGetPowerManagementLimitConstraints(h))
            steps = {round(x / 1000) for x in np.linspace(lo, hi, POWER_STEPS)} | {round(current_mw / 1000)}
            probe("power_limit_w", sorted(steps), POWER_LIMIT, current_mw,
                  lambda: g.nvml("nvmlDeviceSetPowerManagementLimit", h, current_mw),
                  lambda w: g.nvml("nvmlDeviceSetPowerManagementLimit", h, int(w) * 1000))
        except pynvml.NVMLError as e:
            self.knob_status.append(KnobStatus("power_limit_w", False, f"driver: {nvml_reason(e)}"))
        if "gpu_mhz" in self.hw:
            self.hw["gpu_mhz"].values = thin(gpu_all, MAX_GPU_STEPS)
        self._discover_cpu()

    def _discover_cpu(self) -> None:
        """``cpu_mhz`` through cpufreq (every online policy, min = max), where the host allows it."""
        io = self.guard.io
        try:
            self.cpu = CpufreqControl(io)
        except DeviceError as e:
            self.knob_status.append(KnobStatus("cpu_mhz", False, f"cpufreq: {e}"))
            return
        locked = [f for f in self.cpu.files() if not io.writable(f)]
        if locked:
            self.knob_status.append(KnobStatus("cpu_mhz", False, f"cannot write {locked[0]} ({ROOT_HINT})"))
            return
        steps = [round(x) for x in self.cpu.steps_mhz()]
        if len(steps) < 2:
            self.knob_status.append(KnobStatus("cpu_mhz", False, "cpufreq lists fewer than 2 frequencies"))
            return

        def set_cpu(mhz: int) -> None:
            state = self.cpu.read_state()
            execute_writes(io, self.cpu.writes(self.cpu.target({"cpu_mhz": mhz}, state), state))

        self.hw["cpu_mhz"] = _HwKnob("cpu_mhz", thin(steps, MAX_CPU_STEPS), self.cpu.read_state, set_cpu)
        self.knob_status.append(KnobStatus("cpu_mhz", True))

    def _open_meter(self, rapl_root: Any) -> EnergyMeter:
        try:
            gpu: EnergyMeter = NvmlEnergyMeter(self.handle)
            self.energy_source = "NVML energy counter"
        except UnsupportedError as counter_missing:
            try:
                gpu = NvmlPowerMeter(self.handle)
            except UnsupportedError as e:
                raise UnsupportedError(f"{self.device_id}: no energy source ({counter_missing}; {e})") from None
            self.energy_source = f"integrated power ({gpu.source}; no energy counter)"
        from polythrottle.energy.rapl import POWERCAP, RaplMeter

        try:
            cpu = RaplMeter(rapl_root or POWERCAP)
        except UnsupportedError as e:
            self.cpu_energy = f"not measured ({e})"
            return gpu
        self.cpu_energy = "RAPL package energy (included in energy_j)"
        return CombinedMeter([gpu, cpu])

    @property
    def hardware_knobs(self) -> list[str]:
        """The hardware knobs this device can set (empty with --no-clock-control or without root)."""
        return list(self.hw)

    def _build_space(self) -> SearchSpace | None:
        knobs = [Knob(k.name, tuple(k.values)) for k in self.hw.values()]
        knobs += list(self._live.knobs) if self._live is not None else []
        if not knobs:
            return None
        space = SearchSpace.product(knobs)
        if "gpu_mhz" in self.hw and "mem_mhz" in self.hw:
            names = [k.name for k in knobs]
            jg, jm = names.index("gpu_mhz"), names.index("mem_mhz")
            gk, mk = knobs[jg], knobs[jm]
            # a lock is a range the driver clamps to what the memory clock supports: a step is valid
            # with a memory clock if it lies within that clock's supported graphics clocks
            valid = np.array([[_within(g, self._gpu_by_mem.get(int(m), [])) for g in gk.values] for m in mk.values])
            keep = valid[space.rows[:, jm], space.rows[:, jg]]
            space = SearchSpace(space.knobs, space.rows[keep])
        return space

    # ----- Device API ---------------------------------------------------------------------------
    def identity(self) -> DeviceIdentity:
        """The GPU's product name (slugged) and its UUID (not its index, which CUDA_VISIBLE_DEVICES changes)."""
        return DeviceIdentity("nvml", slug(self.gpu_name), self.uuid)

    @property
    def workload_name(self) -> str:
        return self._live.spec.name if self._live is not None else ""

    def space(self) -> SearchSpace:
        if self._space is None:
            why = "; ".join(f"{k.name}: {k.reason}" for k in self.knob_status if not k.available)
            raise BadInputError(f"nvml:{self.index} offers no knob to set ({why}); pass --workload for software knobs")
        return self._space

    def default_config(self) -> Config:
        """Highest clocks, the current power limit, fp32, smallest batch, no graphs."""
        space = self.space()
        cfg: dict[str, Value] = {}
        for name, k in self.hw.items():
            cfg[name] = k.values[-1]
        if "power_limit_w" in self.hw:
            cfg["power_limit_w"] = round(self.hw["power_limit_w"].originals()[POWER_LIMIT] / 1000)
        if self._live is not None:
            cfg.update(self._live.default_config())
        if not space.contains(cfg):  # e.g. the top gpu clock is not offered at the top memory clock
            return space.config(0)
        return space.normalize(cfg)

    def apply(self, config: Mapping[str, Value]) -> None:
        """Validate ``config`` fully, then set hardware knobs (memory clock first), then software. On any
        exception (an NVML error, KeyboardInterrupt, SystemExit) the knobs this apply set are put back
        to what they were before it, signals deferred meanwhile."""
        cfg = self.space().normalize(config)  # raises BadInputError before any write
        before = dict(self._applied)
        touched: list[str] = []
        try:
            for name in ("cpu_mhz", "power_limit_w", "mem_mhz", "gpu_mhz"):
                if name in self.hw and self._applied.get(name) != cfg[name]:
                    k = self.hw[name]
                    with interrupts.deferred():
                        self.store.record(self.device_id, k.originals(), meta=_meta())  # first value kept
                        interrupts.changed(self)
                    touched.append(name)
                    try:
                        k.set(int(cfg[name]))
                    except pynvml.NVMLError as e:
                        raise nvml_error(f"setting {name}={cfg[name]}", e) from None
                    self._applied[name] = cfg[name]
        except BaseException:
            with interrupts.deferred():
                self._undo(touched, before)
            raise
        if self._live is not None:
            self._live.set_config(cfg)
        if self._keep and self._applied:
            interrupts.kept(self)

    def _undo(self, touched: list[str], before: Mapping[str, Value]) -> None:
        """Put the knobs ``touched`` back to ``before`` (this process's earlier value) or, for a knob this
        process had not set, to its saved original. Best effort: what fails stays saved for ``restore``."""
        for name in reversed(touched):
            try:
                if name in before:
                    self.hw[name].set(int(before[name]))
                    self._applied[name] = before[name]
                else:
                    keys = list(self.hw[name].originals())
                    saved = self.store.originals(self.device_id)
                    self._restore_values({k: saved[k] for k in keys if k in saved})
                    self._applied.pop(name, None)
            except (pynvml.NVMLError, DeviceError):
                continue
        if not self._applied and not self.store.originals(self.device_id):
            interrupts.clean(self)

    def measure(self) -> Measurement:
        if self._live is None or self.meter is None:
            raise BadInputError("the nvml device measures a workload: pass --workload "
                                "(e.g. torchvision:resnet50, builtin:mlp, mymodule:make_workload)")
        m = measure(self._live.runner, self.meter, self.harness)
        extra = dict(m.extra)
        extra.update(self._observed_state())
        return Measurement(m.energy_j, m.latency_ms, m.throughput_ips, m.power_w, m.duration_s,
                           m.energy_rel_std, m.latency_rel_std, extra)

    def _observed_state(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, fn, args in (
            ("observed_gpu_mhz", pynvml.nvmlDeviceGetClockInfo, (pynvml.NVML_CLOCK_SM,)),
            ("observed_mem_mhz", pynvml.nvmlDeviceGetClockInfo, (pynvml.NVML_CLOCK_MEM,)),
            ("temperature_c", pynvml.nvmlDeviceGetTemperature, (pynvml.NVML_TEMPERATURE_GPU,)),
        ):
            try:
                out[key] = float(fn(self.handle, *args))
            except pynvml.NVMLError:
                pass
        return out

    def restore(self) -> None:
        """Put back every hardware setting this process (or a crashed one) changed, unless kept. Signals
        are deferred until it is done."""
        if not self._nvml_up or not hasattr(self, "store") or self._keep:
            return
        with interrupts.deferred():
            left = self.store.originals(self.device_id)
            if left and self.guard.allowed:
                self._restore_values(left)
            self._applied.clear()
            interrupts.clean(self)

    def keep(self) -> None:
        """Leave the applied settings on close (``apply``, ``tune --apply``), also those a later ``apply``
        sets; originals stay saved for ``restore``. A failed or interrupted apply is still undone."""
        self._keep = True
        if self._applied:
            interrupts.kept(self)

    def restore_saved(self) -> list[str]:
        """Put back every saved original (this run's or a crashed one's); returns what was restored.
        Raises ClockControlDisabledError with --no-clock-control (a restore is a write), SavedStateError
        (exit 2, nothing written) for a tampered entry."""
        with interrupts.deferred():
            left = self.store.originals(self.device_id)
            if left:
                self._restore_values(left)
            interrupts.clean(self)
        return list(left)

    def _checked(self, originals: Mapping[str, Any]) -> dict[str, Any]:
        """``originals`` once every entry is a setting this device owns with a value of the right kind:
        the three NVML settings, cpufreq limits of a CPU policy (under the root, no ``..``, no link out
        of it). Else SavedStateError naming the entry; nothing is written."""
        where = self.store.path(self.device_id)
        io = self.guard.io
        cpu = re.escape(CPU_ROOT)
        files = (re.compile(rf"{cpu}/cpufreq/policy\d+/scaling_(min|max)_freq"),
                 re.compile(rf"{cpu}/cpu\d+/cpufreq/scaling_(min|max)_freq"))
        for key, value in originals.items():
            what = f"saved originals {where}: entry {brief(key, 100)}"
            if key.startswith("/"):
                if posixpath.normpath(key) != key or not any(r.fullmatch(key) for r in files):
                    raise SavedStateError(f"{what} is not a cpufreq limit; refusing to restore (nothing written)")
                try:
                    real = io.resolve(key)
                except DeviceError:
                    raise SavedStateError(f"{what} resolves outside {io.root}; refusing to restore") from None
                if not any(r.fullmatch(real) for r in files):
                    raise SavedStateError(f"{what} is a link to {brief(real, 100)}; refusing to restore")
                if isinstance(value, bool) or not re.fullmatch(r"\d{1,12}", str(value).strip()):
                    raise SavedStateError(f"{what} has the value {brief(value, 40)}; refusing to restore")
            elif key in (GPU_LOCK, MEM_LOCK):
                if value != RESET:
                    raise SavedStateError(f"{what} has the value {brief(value, 40)}, not {RESET!r}; refusing "
                                          "to restore")
            elif key == POWER_LIMIT:
                if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_POWER_LIMIT_MW:
                    raise SavedStateError(f"{what} has the value {brief(value, 40)}, not a power limit in mW; "
                                          "refusing to restore")
            else:
                raise SavedStateError(f"{what} is not a setting of an NVIDIA GPU; refusing to restore "
                                      "(nothing written)")
        return dict(originals)

    def _restore_values(self, originals: Mapping[str, Any]) -> None:
        originals = self._checked(originals)
        h, g = self.handle, self.guard
        errors = []
        files = {k: str(v) for k, v in originals.items() if k.startswith("/")}
        if files:  # kernel files (cpufreq): min/max pairs in an order the kernel accepts
            cpu = getattr(self, "cpu", None)
            try:
                state = cpu.read_state() if cpu is not None else {}
                writes = cpu.writes(files, state) if cpu is not None else [Write(p, v) for p, v in files.items()]
                execute_writes(g.io, writes)
                self.store.forget(self.device_id, list(files))
            except DeviceError as e:
                errors.append(str(e))
        for key in reversed(list(originals)):
            value = originals[key]
            try:
                if key == GPU_LOCK:
                    g.nvml("nvmlDeviceResetGpuLockedClocks", h)
                elif key == MEM_LOCK:
                    g.nvml("nvmlDeviceResetMemoryLockedClocks", h)
                elif key == POWER_LIMIT:
                    g.nvml("nvmlDeviceSetPowerManagementLimit", h, int(value))
                else:
                    continue
            except pynvml.NVMLError as e:
                errors.append(f"{key}: {nvml_reason(e)}")
                continue
            self.store.forget(self.device_id, [key])
        if errors:
            raise DeviceError(f"could not restore {self.device_id}: " + "; ".join(errors))

    def info(self) -> DeviceInfo:
        details = {"gpu": getattr(self, "gpu_name", "?"), "driver": getattr(self, "driver", "?"),
                   "uuid": getattr(self, "uuid", "?"), "energy": getattr(self, "energy_source", "?"),
                   "cpu energy": getattr(self, "cpu_energy", "?"),
                   "window": f"{self.harness.window_s:g} s x {self.harness.repeats}"}
        if self._live is not None:
            details["workload"] = self._live.spec.name
            details["torch device"] = str(self._live.device)
            details.update(self._live.details())
        return DeviceInfo(name=f"nvml:{getattr(self, 'index', '?')}", kind="nvml", details=details,
                          knobs=list(self.knob_status), touches_hardware=bool(self.hw))

    def close(self) -> None:
        try:
            self.restore()
        finally:
            if self._live is not None:
                self._live.close()
                self._live = None
            if self.meter is not None:
                self.meter.close()
                self.meter = None
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


def _nvml_list(fn: Callable[..., Any], *args: Any) -> list[Any]:
    try:
        return list(fn(*args))
    except pynvml.NVMLError:
        return []


def open_device(arg: str, options: DeviceOptions) -> NvmlDevice:
    try:
        index = int(arg) if arg else 0
    except ValueError:
        raise BadInputError(f"nvml:{arg}: expected a GPU index, e.g. nvml:0") from None
    return NvmlDevice(index, options)
