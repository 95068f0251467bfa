"""``jetson[:PROFILE]``: the clocks of an NVIDIA Jetson through the kernel (``JetsonControl``), a workload
measured with board energy (``polythrottle.measure.live``).

Knobs (MHz): ``gpu_mhz`` (devfreq min_freq = max_freq, written in Hz; ``gpu_min_mhz``/``gpu_max_mhz``
set a range), ``emc_mhz`` (BPMP debugfs or the tegra210 override, in Hz), ``cpu_mhz`` (every online
cpufreq policy's scaling_min_freq = scaling_max_freq, in kHz). Every path is read under
``POLYTHROTTLE_ROOT`` (default ``/``).

Safety, in this order on every ``apply``: values are validated against the steps the kernel reports
(the profile's list for EMC) and nothing is written if any is invalid (InvalidValueError, exit 2);
every file to write must be a board file under ``/sys`` that no link leads out of the root
(``SysfsIO.check_write_target``, DeviceError) and writable (PermissionDeniedError, exit 4, "needs
root"); then the originals session
(``originals_session``) claims the board under the state lock (a live process holding unkept changes:
DeviceBusyError; a dead one's leftovers: restored first), saves the original values of every file of
each touched clock (kept from the first apply, never overwritten), and the writes go in an order the
kernel accepts, then every file written is read back (``clocks.check_read_back``): one the kernel took
but holds at another value (a cap) is KernelRefusedError. On ANY exception during the writes and the
read-back (a refused or capped write, KeyboardInterrupt, SystemExit) the files are put back to their values before this apply, judged
from what they say now, before the exception goes on. ``restore()`` puts back what this process changed; ``restore_saved()``
(``polythrottle restore``) puts back the saved originals, also after a crash, once every entry is
known to be a clock file of this board (``owned_files``) holding an integer. Restores, rollbacks and
the saving of originals hold SIGINT/SIGTERM/SIGHUP until done (``polythrottle.interrupts``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial
from typing import Any

from polythrottle.boards.layout import JetsonLayout, detect_layout, find_gpu_devfreq, read_serial
from polythrottle.clocks import ClockControl, CpufreqControl, DevfreqControl, EmcControl, Write, check_read_back
from polythrottle.clocks.base import UNIT_PER_MHZ, read_back
from polythrottle.clocks.sysfs import ROOT_HINT, SysfsIO, is_root_user, open_io
from polythrottle.devices.base import Control, Device, DeviceInfo
from polythrottle.devices.originals import OriginalsLocation, OriginalsStore
from polythrottle.devices.originals_checks import OwnedFiles, checked_files, jetson_allowed, refuse_outside
from polythrottle.devices.originals_session import OriginalsSession, PutBack
from polythrottle.devices.registry import DeviceOptions
from polythrottle.errors import (
    BadInputError,
    DeviceError,
    PermissionDeniedError,
    PolyThrottleError,
    UnknownKnobError,
    UnsupportedError,
)
from polythrottle.identity import DeviceIdentity
from polythrottle.measure.live import (
    LiveMeasurer,
    default_torch_device,
    harness_settings,
    jetson_meter,
    jetson_meter_statuses,
    load_spec,
    observed,
    open_workload,
)
from polythrottle.space import Config, Knob, KnobStatus, Value

CLOCK_KNOBS = ("gpu_mhz", "emc_mhz", "cpu_mhz")
"""Knobs offered to the tuner (the range knobs gpu_min_mhz/gpu_max_mhz are for ``apply`` only)."""
RANGE_KNOBS = ("gpu_min_mhz", "gpu_max_mhz")
Plan = tuple[ClockControl, dict[str, str], list[Write]]
"""One clock's part of an apply: the clock, its files before (path -> text), the ordered writes."""


def _reason(e: Exception) -> str:
    if isinstance(e, PermissionDeniedError):
        return "not root (debugfs is readable by root only)" if "/debug/" in str(e) else "not root"
    return str(e)


class JetsonControl(Control):
    """The clocks of a Jetson board under ``io.root``, laid out as ``layout``. See the module docstring."""

    whole_configs = False  # any subset of the clocks, and the GPU range knobs outside the tuned space

    def __init__(self, layout: JetsonLayout, io: SysfsIO, store: OriginalsStore, *, model: str | None = None,
                 no_clock_control: bool = False) -> None:
        self.layout = layout
        self.io = io
        self.model = model
        self.no_clock_control = no_clock_control
        self.device_id = "jetson" if io.is_real_root else f"jetson@{io.root}"
        self.clocks: dict[str, ClockControl] = {}  # domain name -> clock
        self.unavailable: dict[str, str] = {}  # knob -> reason
        self._open_clocks()
        self._session = OriginalsSession(store, self.device_id, self, device_arg="jetson",
                                         meta={"profile": layout.profile, "model": model or "", "root": str(io.root)})
        self._last_writes: list[Write] = []
        self._gpu_steps_all: tuple[int, ...] = ()  # the GPU's steps (file unit) before the power mode's cap
        self._cap_to_power_mode()
        if no_clock_control:
            self._session.warn_leftovers_untouched()

    def _cap_to_power_mode(self) -> None:
        """Offer GPU and CPU steps only up to their ``max_freq``/``scaling_max_freq`` as the board had them before
        any run of ours (a saved original, else the file now; the CPU's lowest cluster's): the power mode's caps,
        which nvpmodel writes there and jetson_clocks keeps to. A tune never lifts a clock above the power mode
        the user chose (on a kernel that holds the cap, a write above it was also refused at the first apply)."""
        saved = self._session.saved()
        gpu, cpu = self.clocks.get("gpu"), self.clocks.get("cpu")
        if isinstance(gpu, DevfreqControl):
            self._gpu_steps_all = gpu.steps_raw
            cap = self._mode_cap(gpu.max_path, saved, gpu.steps_raw)
            if cap is not None:
                gpu.cap(cap)
        if isinstance(cpu, CpufreqControl):
            caps = [c for p in cpu.policies if (c := self._mode_cap(p.max_path, saved, p.steps_khz)) is not None]
            if caps:
                cpu.cap(min(caps))

    def _mode_cap(self, path: str, saved: Mapping[str, Any], steps: tuple[int, ...]) -> int | None:
        """The cap in limit file ``path`` before any run of ours; None: unreadable, or a saved value no step
        range holds (a tampered file, refused whole at the first write: not a cap)."""
        value = saved.get(path)
        try:
            cap = int(value) if value is not None else self.io.read_int(path)
        except (DeviceError, TypeError, ValueError):
            return None
        if value is not None and not min(steps) * (1 - 1e-6) <= cap <= max(steps) * (1 + 1e-6):
            return None
        return cap if cap > 0 else None

    # ----- discovery ----------------------------------------------------------------------------------
    def _open_clocks(self) -> None:
        L, io = self.layout, self.io
        try:
            gpu_dir = next((d for d in L.gpu_dirs if io.is_dir(d)), None) or find_gpu_devfreq(io)
            if gpu_dir is None:
                raise DeviceError(f"no GPU devfreq directory (tried {', '.join(L.gpu_dirs)} and /sys/class/devfreq)")
            per = UNIT_PER_MHZ[L.gpu_unit]
            self.clocks["gpu"] = DevfreqControl(
                io, gpu_dir, unit=L.gpu_unit, files=L.gpu_files,
                fallback_steps=[round(m * per) for m in L.gpu_steps_mhz],
            )
        except DeviceError as e:
            for k in ("gpu_mhz", *RANGE_KNOBS):
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
            self.clocks["emc"] = EmcControl(io, proto, L.emc_steps_mhz)
        except DeviceError as e:
            self.unavailable["emc_mhz"] = _reason(e)
        try:
            self.clocks["cpu"] = CpufreqControl(io, L.cpu_root, [round(m * 1000) for m in L.cpu_steps_mhz])
        except DeviceError as e:
            self.unavailable["cpu_mhz"] = _reason(e)

    def _clock_of(self, knob: str) -> ClockControl:
        for c in self.clocks.values():
            if knob in c.knobs:
                return c
        if knob in self.unavailable:
            raise UnsupportedError(f"{knob} cannot be set on this board: {self.unavailable[knob]}")
        offered = [k for c in self.clocks.values() for k in c.knobs]
        none = f"no knob can be set on this board here ({', '.join(self.unavailable) or 'none found'}: see `polythrottle devices`)"
        raise UnknownKnobError(f"unknown knob {knob!r}; " + (f"this device offers: {', '.join(offered)}" if offered else none))

    def _unwritable(self, clock: ClockControl) -> str:
        """'' if this process may write the clock's files, else the reason."""
        for p in clock.files():
            if not self.io.writable(p):
                return f"not root (cannot write {p})"
        return ""

    # ----- Control: knobs -----------------------------------------------------------------------------
    @property
    def hardware_knobs(self) -> list[str]:
        """Every clock knob of this board, settable here or not."""
        return [k for c in self.clocks.values() for k in c.knobs] + list(self.unavailable)

    def knobs(self) -> list[Knob]:
        """The clocks this process may set (none with --no-clock-control): MHz, latency falls as they rise."""
        if self.no_clock_control:
            return []
        return [Knob(c.knobs[0], c.steps_mhz(), log_scale=True, latency_trend=-1)
                for c in self.clocks.values() if not self._unwritable(c)]

    def statuses(self) -> list[KnobStatus]:
        out = []
        for k in CLOCK_KNOBS:
            if k in self.unavailable:
                out.append(KnobStatus(k, False, self.unavailable[k]))
                continue
            c = self._clock_of(k)
            why = "--no-clock-control" if self.no_clock_control else self._unwritable(c)
            steps = c.steps_mhz()
            detail = f"{len(steps)} steps {steps[0]:g}-{steps[-1]:g} MHz"
            out.append(KnobStatus(k, not why, why or detail))
        return out

    def default_config(self) -> Config:
        """Highest clocks."""
        return {k.name: k.values[-1] for k in self.knobs()}

    def no_knob_error(self) -> PolyThrottleError:
        why = "--no-clock-control" if self.no_clock_control else ROOT_HINT
        return UnsupportedError(f"no knob of {self.layout.profile} can be tuned here ({why})")

    # ----- Control: apply -----------------------------------------------------------------------------
    def apply(self, settings: Mapping[str, Value]) -> None:
        """Set every clock knob in ``settings`` (a subset is fine). See the module docstring."""
        self._last_writes = []
        by_clock: dict[str, dict[str, Value]] = {}
        for knob, value in settings.items():
            if self.no_clock_control and knob in CLOCK_KNOBS + RANGE_KNOBS:
                raise BadInputError(f"--no-clock-control: refusing to set {knob}")
            c = self._clock_of(knob)
            by_clock.setdefault(c.name, {})[knob] = value
        # 1. validate everything and check permission (nothing written, nothing saved yet)
        plans = self._plan(by_clock)
        if not plans:
            return
        for _clock, _, writes in plans:
            for w in writes:
                self.io.check_write_target(w.path)  # a board file, not behind a link out of the root
                if not self.io.writable(w.path):
                    raise PermissionDeniedError(f"cannot write {w.path}: permission denied; {ROOT_HINT}")
        with self._session.claimed():  # may restore a crashed run's leftovers: plan again from the files now
            plans = self._plan(by_clock)
            if plans:
                originals = {p: v for _, before, _ in plans for p, v in before.items()}
                writes = [w for _, _, ws in plans for w in ws]
                steps = [partial(self.io.write, w.path, w.value) for w in writes] + [partial(check_read_back, self.io, writes)]
                done = self._session.write(originals, steps, lambda _done: self._rollback(plans))
                self._last_writes = writes[:done]

    def _plan(self, by_clock: Mapping[str, Mapping[str, Value]]) -> list[Plan]:
        """(clock, its files now, ordered writes) for every clock that changes. Raises InvalidValueError."""
        plans: list[Plan] = []
        for name, settings in by_clock.items():
            c = self.clocks[name]
            before = c.read_state()
            writes = c.writes(c.target(settings, before), before)
            if writes:
                plans.append((c, before, writes))
        return plans

    def _rollback(self, plans: list[Plan]) -> list[str]:
        """Put every file of ``plans`` back to its value before this apply, judging what changed by what
        the files say now (a write interrupted after the kernel took it counts). Returns the paths that
        could not be put back."""
        failed: list[str] = []
        for c, before, _ in reversed(plans):
            bad: list[str] = []
            for _attempt in range(2):  # a write refused once (a transient error) is tried again
                try:
                    current = c.read_state()
                except DeviceError:
                    current = {}  # unreadable: write every value back
                bad = self._write_best_effort(c.writes(before, current))
                if not bad:
                    break
            failed += bad
        return failed

    def _write_best_effort(self, writes: list[Write]) -> list[str]:
        failed = []
        for w in writes:
            try:
                self.io.write(w.path, w.value)
            except DeviceError:
                failed.append(w.path)
        return failed

    @property
    def last_writes(self) -> list[Write]:
        return list(self._last_writes)

    # ----- Control: originals -------------------------------------------------------------------------
    def restore(self) -> None:
        """Put back what this process changed (values as they were when it first wrote them)."""
        self._session.restore()

    def keep(self) -> None:
        """Leave what is applied, and what later ``apply`` calls set, in place: close() will not restore
        it, nor will the next run take it for a crash's leftovers. ``polythrottle restore`` puts it back."""
        self._session.keep()

    def restore_saved(self) -> list[str]:
        """Put back every saved original (also after a crash) and forget them. Returns paths restored.
        Every entry is checked first (``checked_originals``); refused while another live process holds
        unkept changes (DeviceBusyError)."""
        if not self.io.writes_allowed:
            raise BadInputError("--no-clock-control: restoring would write clock settings; run without it")
        return self._session.restore_saved()

    def originals_location(self) -> OriginalsLocation:
        return self._session.location()

    def owned_files(self) -> OwnedFiles:
        """Board paths a saved original may name: every file of this board's clocks and of the profile's
        candidate GPU/EMC paths, and the cpufreq limits of any CPU policy (an offline cluster's too)."""
        exact = {f for c in self.clocks.values() for f in c.files()}
        gpu_min = self.layout.gpu_files.get("min", "min_freq")
        gpu_max = self.layout.gpu_files.get("max", "max_freq")
        for d in self.layout.gpu_dirs:
            exact |= {f"{d}/{gpu_min}", f"{d}/{gpu_max}"}
        for proto in self.layout.emc:
            exact |= {proto.rate_path, proto.lock_path}
        cpu = re.escape(self.layout.cpu_root.rstrip("/"))
        patterns = (re.compile(rf"{cpu}/cpufreq/policy\d+/scaling_(min|max)_freq"),
                    re.compile(rf"{cpu}/cpu\d+/cpufreq/scaling_(min|max)_freq"))
        return OwnedFiles(frozenset(exact), patterns, f"a clock file of {self.layout.profile}")

    def checked_originals(self, saved: Mapping[str, Any]) -> dict[str, Any]:
        """``saved`` as path -> text once every entry is a clock file of this board (``checked_files``)
        this process may write. Raises SavedStateError (exit 2) or PermissionDeniedError; nothing written."""
        where = self._session.location().file
        values = checked_files(self.io, self.owned_files(), saved, where)
        gpu = self.clocks.get("gpu")
        refuse_outside(values, partial(jetson_allowed, self.io, self.layout, gpu.files() if gpu else [], self._gpu_steps_all), where)
        for p in values:
            if self.io.exists(p) and not self.io.writable(p):
                raise PermissionDeniedError(f"cannot write {p}: permission denied; {ROOT_HINT}")
        return values

    def put_back(self, values: Mapping[str, Any]) -> PutBack:
        """Write ``values`` (path -> text) back, clock by clock in kernel order (read back), then any other path."""
        out = PutBack()
        handled: set[str] = set()
        for c in self.clocks.values():
            target = {p: values[p] for p in c.files() if p in values}
            if not target:
                continue
            handled |= set(target)
            try:
                current = c.read_state()
            except DeviceError:
                current = {}
            bad = self._write_best_effort(c.writes(target, current))
            out.failed.update(dict.fromkeys(bad, ""))
            out.restored += [p for p in target if p not in bad]
            out.held.update(read_back(self.io, {p: v for p, v in c.settled(target).items() if p not in bad}))
        for p, v in values.items():  # saved by a layout this process does not see (e.g. now-offline CPUs)
            if p in handled:
                continue
            bad = self._write_best_effort([Write(p, v)] if self.io.exists(p) else [])
            out.failed.update(dict.fromkeys(bad, ""))
            out.restored += [] if bad else [p]
        return out

    # ----- Control: reporting -------------------------------------------------------------------------
    def current(self) -> dict[str, float]:
        """Current knob values (MHz) as the kernel files say (a clock whose files are unreadable or hold
        no number just now is left out)."""
        out: dict[str, float] = {}
        for c in self.clocks.values():
            try:
                out.update(c.current_mhz())
            except (DeviceError, ValueError, KeyError):
                continue
        return out

    def details(self) -> dict[str, str]:
        saved = self._session.saved()
        details = {
            "board": self.layout.description or self.layout.profile,
            "profile": self.layout.profile,
            "model": self.model or "(none)",
            "root": str(self.io.root),
            "user": "root" if is_root_user() else "not root",
            "saved originals": f"{len(saved)} in {self._session.location().file}" if saved else "none",
        }
        cur = self.current()
        if cur:
            details["current"] = ", ".join(f"{k}={v:g}" for k, v in cur.items())
        return details


def live_measurer(control: JetsonControl, options: DeviceOptions) -> LiveMeasurer:
    """``options.workload`` on this board: the harness, board energy (INA3221, else jtop), and the clocks
    the board really ran at in every measurement (``observed_*``)."""
    spec = load_spec(options.workload or "")
    meter, energy = jetson_meter(control.io, control.layout.board_rails or None, control.layout.rail_places)
    try:
        workload = open_workload(spec, default_torch_device(), options.slo_metric)
    except BaseException:
        meter.close()
        raise
    return LiveMeasurer(workload, meter, harness_settings(options.window_s, options.percentile, options.repeats),
                        energy=energy, observe=lambda: observed(control.current()))


def open_device(arg: str, options: DeviceOptions) -> Device:
    """``jetson`` (detect the board) or ``jetson:PROFILE`` (force a profile name or YAML path)."""
    io = open_io(writes_allowed=not options.no_clock_control)
    layout, model = detect_layout(io, arg)
    control = JetsonControl(layout, io, OriginalsStore(options.state_dir), model=model,
                            no_clock_control=options.no_clock_control)
    identity = DeviceIdentity("jetson", layout.profile, read_serial(io) or "")
    measurer = live_measurer(control, options) if options.workload else None
    rails = layout.board_rails or None
    return Device(identity, name=f"jetson:{layout.profile}", control=control, measurer=measurer,
                  meters=lambda: jetson_meter_statuses(io, rails, layout.rail_places))


def probe(options: DeviceOptions) -> DeviceInfo:
    """What ``polythrottle devices`` shows for Jetsons: the board, or plainly that none was found."""
    io = open_io()
    try:
        dev = open_device("", options)
    except DeviceError as e:
        return DeviceInfo(name="jetson", kind="jetson", found=False, notes=[str(e)],
                          details={"root": str(io.root)})
    return dev.info()
