"""``jetson[:PROFILE]``: GPU, EMC and CPU clocks of an NVIDIA Jetson through the kernel, board energy from INA3221.

Knobs (MHz): ``gpu_mhz`` (devfreq min_freq = max_freq, written in Hz; ``gpu_min_mhz``/``gpu_max_mhz``
set a range), ``emc_mhz`` (BPMP debugfs or the tegra210 override, in Hz), ``cpu_mhz`` (every online
cpufreq policy's scaling_min_freq = scaling_max_freq, in kHz). Every path is read under
``POLYTHROTTLE_ROOT`` (default ``/``).

Safety, in this order on every ``apply``: values are validated against the steps the kernel reports
(the profile's list for EMC) and nothing is written if any is invalid (InvalidValueError, exit 2);
write permission is checked (PermissionDeniedError, exit 4, "needs root"); the original values of
every file of each touched clock are saved in the state directory (kept from the first apply, never
overwritten); then the writes go in an order the kernel accepts; a write that fails rolls back what
this apply had written. ``restore()`` (called by ``close()``) puts back what this process changed;
``restore_saved()`` (``polythrottle restore``) puts back the saved originals, also after a crash.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from polythrottle.boards.layout import JetsonLayout, detect_layout, find_gpu_devfreq, read_serial
from polythrottle.clocks import ClockControl, CpufreqControl, DevfreqControl, EmcControl, Write
from polythrottle.clocks.base import UNIT_PER_MHZ
from polythrottle.devices.base import Device, DeviceInfo, KnobStatus
from polythrottle.devices.registry import DeviceOptions
from polythrottle.errors import (
    BadInputError,
    DeviceError,
    PermissionDeniedError,
    UnknownKnobError,
    UnsupportedError,
)
from polythrottle.identity import DeviceIdentity
from polythrottle.measurement import Measurement
from polythrottle.space import Config, Knob, SearchSpace, Value
from polythrottle.state import StateStore
from polythrottle.sysfs import ROOT_HINT, SysfsIO, is_root_user, open_io

CLOCK_KNOBS = ("gpu_mhz", "emc_mhz", "cpu_mhz")
"""Knobs offered to the tuner (the range knobs gpu_min_mhz/gpu_max_mhz are for ``apply`` only)."""


def _reason(e: Exception) -> str:
    if isinstance(e, PermissionDeniedError):
        return "not root (debugfs is readable by root only)" if "/debug/" in str(e) else "not root"
    return str(e)


class JetsonDevice(Device):
    """A Jetson board under ``io.root``, laid out as ``layout``. See the module docstring."""

    def __init__(
        self,
        layout: JetsonLayout,
        io: SysfsIO,
        store: StateStore,
        *,
        model: str | None = None,
        options: DeviceOptions | None = None,
    ) -> None:
        self.layout = layout
        self.io = io
        self.store = store
        self.model = model
        self.options = options or DeviceOptions()
        self.device_id = "jetson" if io.is_real_root else f"jetson@{io.root}"
        self.controls: dict[str, ClockControl] = {}  # domain name -> control
        self.unavailable: dict[str, str] = {}  # knob -> reason
        self._open_controls()
        self._session_before: dict[str, str] = {}  # path -> value before this process first wrote it
        self._session_new: set[str] = set()  # keys this process added to the saved originals
        self._prior_meta: dict[str, Any] | None = None  # the store's owner before this session
        self.last_writes: list[Write] = []
        self._meter: Any = None
        self._live: Any = None

    # ----- discovery ----------------------------------------------------------------------------
    def _open_controls(self) -> None:
        L, io = self.layout, self.io
        try:
            gpu_dir = next((d for d in L.gpu_dirs if io.is_dir(d)), None) or find_gpu_devfreq(io)
            if gpu_dir is None:
                raise DeviceError(f"no GPU devfreq directory (tried {', '.join(L.gpu_dirs)} and /sys/class/devfreq)")
            per = UNIT_PER_MHZ[L.gpu_unit]
            self.controls["gpu"] = DevfreqControl(
                io, gpu_dir, unit=L.gpu_unit, files=L.gpu_files,
                fallback_steps=[round(m * per) for m in L.gpu_steps_mhz],
            )
        except DeviceError as e:
            for k in ("gpu_mhz", "gpu_min_mhz", "gpu_max_mhz"):
                self.unavailable[k] = _reason(e)
        try:
            if not L.emc:
                raise DeviceError(f"profile {L.profile} has no EMC control")
            proto = next((p for p in L.emc if io.exists(p.rate_path) and io.exists(p.lock_path)), None)
            if proto is None:
                debugfs = "/sys/kernel/debug"
                hint = "debugfs is not mounted" if not io.listdir(debugfs) else "no EMC clock files in debugfs"
                if io.is_dir(debugfs) and not io.path(debugfs).stat().st_mode & 0o005 and not is_root_user():
                    hint = "not root (debugfs is readable by root only)"
                raise DeviceError(f"{hint} (tried {', '.join(p.rate_path for p in L.emc)})")
            self.controls["emc"] = EmcControl(io, proto, L.emc_steps_mhz)
        except DeviceError as e:
            self.unavailable["emc_mhz"] = _reason(e)
        try:
            self.controls["cpu"] = CpufreqControl(
                io, L.cpu_root, [round(m * 1000) for m in L.cpu_steps_mhz]
            )
        except DeviceError as e:
            self.unavailable["cpu_mhz"] = _reason(e)

    def _control_of(self, knob: str) -> ClockControl:
        for c in self.controls.values():
            if knob in c.knobs:
                return c
        if knob in self.unavailable:
            raise UnsupportedError(f"{knob} cannot be set on this board: {self.unavailable[knob]}")
        offered = [k for c in self.controls.values() for k in c.knobs]
        raise UnknownKnobError(f"unknown knob {knob!r}; this device offers: {', '.join(offered)}")

    def _writable(self, control: ClockControl) -> str:
        """'' if this process may write the control's files, else the reason."""
        for p in control.files():
            if not self.io.writable(p):
                return f"not root (cannot write {p})"
        return ""

    @property
    def hardware_knobs(self) -> list[str]:
        """Every clock knob of this board, settable here or not."""
        return [k for c in self.controls.values() for k in c.knobs] + list(self.unavailable)

    # ----- Device API ---------------------------------------------------------------------------
    def identity(self) -> DeviceIdentity:
        """The board profile and the board's serial number (``""`` where the device tree has none)."""
        return DeviceIdentity("jetson", self.layout.profile, read_serial(self.io) or "")

    @property
    def workload_name(self) -> str:
        return self._live.spec.name if self._live is not None else ""

    def attach_workload(self, spec: str) -> None:
        """Measure workload ``spec`` (``builtin:NAME``, ``torchvision:NAME``, ``module:function``) with
        the measurement harness and board energy (INA3221, else jtop). Adds its software knobs."""
        try:
            from polythrottle.harness import HarnessSettings
            from polythrottle.workloads import load_workload
            from polythrottle.workloads.runner import LiveWorkload
        except ModuleNotFoundError as e:
            raise UnsupportedError(f"measuring a workload needs {e.name}, which this build lacks") from None

        workload = load_workload(spec)
        self._meter = self._open_meter()
        import torch

        o = self.options
        self._live = LiveWorkload(workload, "cuda" if torch.cuda.is_available() else "cpu",
                                  slo_metric=getattr(o, "slo_metric", None))
        self.harness = HarnessSettings(window_s=o.window_s or HarnessSettings.window_s, percentile=o.percentile,
                                       repeats=getattr(o, "repeats", None) or HarnessSettings.repeats)

    def _open_meter(self) -> Any:
        from polythrottle.energy.ina3221 import INA3221Meter

        try:
            return INA3221Meter(self.layout.board_rails or None, io=self.io)
        except UnsupportedError as ina:
            try:
                from polythrottle.energy.jtop import JtopMeter

                return JtopMeter(self.layout.board_rails or None)
            except UnsupportedError as jt:
                raise UnsupportedError(f"no board energy source: {ina}; jtop: {jt}") from None

    def space(self) -> SearchSpace:
        knobs = []
        if not self.options.no_clock_control:
            for c in self.controls.values():
                if not self._writable(c):
                    knobs.append(Knob(c.knobs[0], c.steps_mhz()))
        if self._live is not None:
            knobs += list(self._live.knobs)
        if not knobs:
            why = "--no-clock-control" if self.options.no_clock_control else ROOT_HINT
            raise UnsupportedError(f"no knob of {self.layout.profile} can be tuned here ({why})")
        return SearchSpace.product(knobs)

    def default_config(self) -> Config:
        """Highest clocks; the workload's default software config (fp32, smallest batch)."""
        soft = self._live.default_config() if self._live is not None else {}
        return {k.name: soft.get(k.name, k.values[-1]) for k in self.space().knobs}

    def apply(self, config: Mapping[str, Value]) -> None:
        """Set every knob in ``config`` (a subset of the knobs is fine). See the module docstring."""
        self.last_writes = []
        software = {k.name for k in self._live.knobs} if self._live is not None else set()
        soft = {k: v for k, v in config.items() if k in software}
        config = {k: v for k, v in config.items() if k not in software}
        if soft:  # validated here, before any hardware write; built after the clocks are set
            for k in self._live.knobs:  # type: ignore[union-attr]
                if k.name in soft:
                    soft[k.name] = k.parse(soft[k.name])
        self._apply_clocks(config)
        if soft:
            self._live.set_config(soft)  # type: ignore[union-attr]

    def _apply_clocks(self, config: Mapping[str, Value]) -> None:
        by_control: dict[str, dict[str, Value]] = {}
        for knob, value in config.items():
            if self.options.no_clock_control and knob in CLOCK_KNOBS + ("gpu_min_mhz", "gpu_max_mhz"):
                raise BadInputError(f"--no-clock-control: refusing to set {knob}")
            c = self._control_of(knob)
            by_control.setdefault(c.name, {})[knob] = value
        # 1. validate everything, plan every write (nothing written yet)
        plans: list[tuple[ClockControl, dict[str, str], list[Write]]] = []
        for name, settings in by_control.items():
            c = self.controls[name]
            before = c.read_state()
            writes = c.writes(c.target(settings, before), before)
            if writes:
                plans.append((c, before, writes))
        if not plans:
            return
        # 2. permission, before the first write
        for _control, _, writes in plans:
            for w in writes:
                if not self.io.writable(w.path):
                    raise PermissionDeniedError(f"cannot write {w.path}: permission denied; {ROOT_HINT}")
        with self.store.lock(self.device_id):
            if self._prior_meta is None:
                self._start_session()
                if self._prior_meta is None:  # leftovers of a crashed run were just restored: re-plan
                    self._prior_meta = {}
                    return self._apply_clocks(config)
            # 3. originals, before the first write (a later apply never overwrites them)
            originals = {p: v for c, before, _ in plans for p, v in before.items()}
            new = self.store.record(self.device_id, originals, meta=self._meta())
            self._session_new.update(new)  # before writing: an interrupt mid-write still gets restored
            for p, v in originals.items():
                self._session_before.setdefault(p, v)
            # 4. write, rolling back this apply on the first failure
            done: list[Write] = []
            try:
                for _control, _, writes in plans:
                    for w in writes:
                        self.io.write(w.path, w.value)
                        done.append(w)
            except (DeviceError, OSError) as e:
                failed = self._rollback(plans, done)
                if not failed:
                    self.store.forget(self.device_id, new)
                    self._session_new.difference_update(new)
                    msg = f"; rolled back the {len(done)} value(s) already written" if done else ""
                else:
                    msg = f"; ROLLBACK FAILED for {', '.join(failed)}: run `polythrottle restore --device jetson`"
                if isinstance(e, DeviceError):
                    raise type(e)(f"{e}{msg}") from None
                raise DeviceError(f"{e}{msg}") from None
            self.last_writes = done

    def _start_session(self) -> None:
        """Before this process first writes: settings a crashed run left behind (saved originals whose
        owner is dead and did not ask to keep them) are restored first, with a warning, so this
        session never takes a crash's low clocks for the board's own. Sets ``_prior_meta`` otherwise."""
        state = self.store.load(self.device_id)
        if state is None or not state.originals:
            self._prior_meta = {}
            return
        owner = state.meta.get("pid")
        if not state.meta.get("kept") and isinstance(owner, int) and owner != os.getpid() and not _alive(owner):
            print(f"polythrottle: warning: restoring {len(state.originals)} setting(s) left by a run that did "
                  f"not finish (pid {owner})", file=sys.stderr)
            self.restore_saved()
            return
        self._prior_meta = {"kept": bool(state.meta.get("kept")), "pid": owner}

    def keep(self) -> None:
        """Leave what was applied in place: close() will not restore it, nor will the next run take it for
        a crash's leftovers. ``polythrottle restore`` still puts the originals back."""
        if self.store.originals(self.device_id):
            self.store.record(self.device_id, {}, meta={"kept": True, "pid": os.getpid()})
        self._session_before.clear()
        self._session_new.clear()

    def _rollback(self, plans: list[tuple[ClockControl, dict[str, str], list[Write]]], done: list[Write]) -> list[str]:
        """Undo ``done`` (control by control, kernel order). Returns the paths that could not be put back."""
        failed: list[str] = []
        for c, before, _ in reversed(plans):
            current = dict(before)
            current.update({w.path: w.value for w in done if w.path in before})
            failed += self._write_best_effort(c.writes(before, current))
        return failed

    def _write_best_effort(self, writes: list[Write]) -> list[str]:
        failed = []
        for w in writes:
            try:
                self.io.write(w.path, w.value)
            except DeviceError:
                failed.append(w.path)
        return failed

    def _put_back(self, values: Mapping[str, str]) -> tuple[list[str], list[str]]:
        """Write ``values`` (path -> text) back, control by control in kernel order, then any other
        path as saved. Returns (paths restored, paths that failed)."""
        restored: list[str] = []
        failed: list[str] = []
        handled: set[str] = set()
        for c in self.controls.values():
            target = {p: values[p] for p in c.files() if p in values}
            if not target:
                continue
            handled |= set(target)
            try:
                current = c.read_state()
            except DeviceError:
                current = {}
            bad = self._write_best_effort(c.writes(target, current))
            failed += bad
            restored += [p for p in target if p not in bad]
        for p, v in values.items():  # saved by a layout this process does not see (e.g. now-offline CPUs)
            if p in handled:
                continue
            bad = self._write_best_effort([Write(p, v)] if self.io.exists(p) else [])
            failed += bad
            restored += [] if bad else [p]
        return restored, failed

    def restore(self) -> None:
        """Put back what this process changed (values as they were when it first wrote them)."""
        if not self._session_before:
            return
        with self.store.lock(self.device_id):
            restored, failed = self._put_back(self._session_before)
            self.store.forget(self.device_id, [k for k in self._session_new if k not in failed])
            if self._prior_meta and not failed and self.store.originals(self.device_id):
                self.store.record(self.device_id, {}, meta=self._prior_meta)  # hand ownership back
            self._session_before = {p: v for p, v in self._session_before.items() if p in failed}
            self._session_new &= set(failed)
        if failed:
            raise DeviceError(
                f"could not restore {', '.join(failed)}; the originals stay saved in {self.store.directory}: "
                "run `polythrottle restore --device jetson` as root"
            )

    def restore_saved(self) -> list[str]:
        """Put back every saved original (also after a crash) and forget them. Returns paths restored."""
        if not self.io.writes_allowed:
            raise BadInputError("--no-clock-control: restoring would write clock settings; run without it")
        with self.store.lock(self.device_id):
            saved = self.store.originals(self.device_id)
            if not saved:
                return []
            for p in saved:
                if self.io.exists(p) and not self.io.writable(p):
                    raise PermissionDeniedError(f"cannot write {p}: permission denied; {ROOT_HINT}")
            restored, failed = self._put_back({p: str(v) for p, v in saved.items()})
            self.store.forget(self.device_id, restored)
            self._session_before.clear()
            self._session_new.clear()
        if failed:
            raise DeviceError(
                f"could not restore {', '.join(failed)}; they stay saved in {self.store.path(self.device_id)}"
            )
        return restored

    def measure(self) -> Measurement:
        """Measure the workload under the applied config (warm-up, windows, latency percentile, repeats)."""
        if self._live is None:
            raise BadInputError("the jetson device measures a workload: pass --workload "
                                "(e.g. torchvision:resnet50, builtin:mlp, mymodule:make_workload)")
        from polythrottle.harness import measure

        m = measure(self._live.runner, self._meter, self.harness)
        extra = dict(m.extra)
        extra.update({f"observed_{k}": v for k, v in self.current().items()})
        stats = getattr(self._meter, "last_stats", None)
        if stats is not None:
            extra["meter_overhead"] = round(stats.overhead, 4)
            extra["meter_failed_reads"] = stats.failures
        return Measurement(m.energy_j, m.latency_ms, m.throughput_ips, m.power_w, m.duration_s,
                           m.energy_rel_std, m.latency_rel_std, extra)

    def close(self) -> None:
        try:
            self.restore()
        finally:
            if self._live is not None:
                self._live.close()
                self._live = None
            if self._meter is not None:
                self._meter.close()
                self._meter = None

    # ----- reporting ----------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {"profile": self.layout.profile, "model": self.model or "", "root": str(self.io.root),
                "pid": os.getpid(), "kept": False}

    def current(self) -> dict[str, float]:
        """Current knob values (MHz) as the kernel files say."""
        out: dict[str, float] = {}
        for c in self.controls.values():
            try:
                out.update(c.current_mhz())
            except DeviceError:
                continue
        return out

    def knob_statuses(self) -> list[KnobStatus]:
        out = []
        for k in CLOCK_KNOBS:
            if k in self.unavailable:
                out.append(KnobStatus(k, False, self.unavailable[k]))
                continue
            c = self._control_of(k)
            why = "--no-clock-control" if self.options.no_clock_control else self._writable(c)
            steps = c.steps_mhz()
            detail = f"{len(steps)} steps {steps[0]:g}-{steps[-1]:g} MHz"
            out.append(KnobStatus(k, not why, why or detail))
        return out

    def meter_statuses(self) -> list[KnobStatus]:
        from polythrottle.energy.ina3221 import board_rails

        out = []
        try:
            rails = board_rails(self.io, self.layout.board_rails or None)
            out.append(KnobStatus("ina3221", True, "board power = " + " + ".join(r.name for r in rails)))
        except (UnsupportedError, DeviceError) as e:
            out.append(KnobStatus("ina3221", False, _reason(e)))
        out.append(KnobStatus("jtop", *_jtop_status()))
        out.append(KnobStatus("nvml", False, "NVML reports NotSupported on Jetson (power, energy and clocks)"))
        return out

    def info(self) -> DeviceInfo:
        saved = self.store.originals(self.device_id)
        details = {
            "board": self.layout.description or self.layout.profile,
            "profile": self.layout.profile,
            "model": self.model or "(none)",
            "root": str(self.io.root),
            "user": "root" if is_root_user() else "not root",
            "saved originals": f"{len(saved)} in {self.store.path(self.device_id)}" if saved else "none",
        }
        cur = self.current()
        if cur:
            details["current"] = ", ".join(f"{k}={v:g}" for k, v in cur.items())
        if self._live is not None:
            details["workload"] = self._live.spec.name
            details["energy"] = f"{self._meter.name} every {self._meter.sampler.period_s * 1000:g} ms"
            details.update(self._live.details())
        return DeviceInfo(
            name=f"jetson:{self.layout.profile}",
            kind="jetson",
            details=details,
            knobs=self.knob_statuses() + (list(self._live.knob_status) if self._live is not None else []),
            touches_hardware=True,
            meters=self.meter_statuses(),
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _jtop_status() -> tuple[bool, str]:
    from polythrottle.energy.jtop import jtop_status

    return jtop_status()


def open_device(arg: str, options: DeviceOptions) -> JetsonDevice:
    """``jetson`` (detect the board) or ``jetson:PROFILE`` (force a profile name or YAML path)."""
    io = open_io(writes_allowed=not options.no_clock_control)
    layout, model = detect_layout(io, arg)
    dev = JetsonDevice(layout, io, StateStore(options.state_dir), model=model, options=options)
    if options.workload:
        dev.attach_workload(options.workload)
    return dev


def probe(options: DeviceOptions) -> DeviceInfo:
    """What ``polythrottle devices`` shows for Jetsons: the board, or plainly that none was found."""
    io = open_io()
    try:
        dev = open_device("", options)
    except DeviceError as e:
        return DeviceInfo(name="jetson", kind="jetson", found=False, notes=[str(e)],
                          details={"root": str(io.root)})
    return dev.info()
