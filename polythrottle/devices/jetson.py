"""``jetson[:PROFILE]``: GPU, EMC and CPU clocks of an NVIDIA Jetson through the kernel, board energy from INA3221.

Knobs (MHz): ``gpu_mhz`` (devfreq min_freq = max_freq, written in Hz; ``gpu_min_mhz``/``gpu_max_mhz``
set a range), ``emc_mhz`` (BPMP debugfs or the tegra210 override, in Hz), ``cpu_mhz`` (every online
cpufreq policy's scaling_min_freq = scaling_max_freq, in kHz). Every path is read under
``POLYTHROTTLE_ROOT`` (default ``/``).

Safety, in this order on every ``apply``: values are validated against the steps the kernel reports
(the profile's list for EMC) and nothing is written if any is invalid (InvalidValueError, exit 2);
write permission is checked (PermissionDeniedError, exit 4, "needs root"); under the state lock, the
saved originals are checked (a live process holding unkept changes: DeviceBusyError; a dead one's
leftovers: restored first); the original values of every file of each touched clock are saved (kept
from the first apply, never overwritten); then the writes go in an order the kernel accepts. On ANY
exception during the writes (a refused write, KeyboardInterrupt, SystemExit) the files are put back to
their values before this apply, judged from what they say now, before the exception goes on.
``restore()`` (called by ``close()``) puts back what this process changed; ``restore_saved()``
(``polythrottle restore``) puts back the saved originals, also after a crash, once every entry is
known to be a clock file of this board (``owned_files``) holding an integer. Restores, rollbacks and
the saving of originals hold SIGINT/SIGTERM/SIGHUP until done (``polythrottle.interrupts``).
"""

from __future__ import annotations

import os
import posixpath
import re
import sys
from collections.abc import Mapping
from typing import Any

from polythrottle import interrupts
from polythrottle.boards.layout import JetsonLayout, detect_layout, find_gpu_devfreq, read_serial
from polythrottle.clocks import ClockControl, CpufreqControl, DevfreqControl, EmcControl, Write
from polythrottle.clocks.base import UNIT_PER_MHZ
from polythrottle.devices.base import Device, DeviceInfo, KnobStatus
from polythrottle.devices.registry import DeviceOptions
from polythrottle.errors import (
    BadInputError,
    DeviceBusyError,
    DeviceError,
    PermissionDeniedError,
    UnknownKnobError,
    UnsupportedError,
    brief,
)
from polythrottle.identity import DeviceIdentity
from polythrottle.measurement import Measurement
from polythrottle.space import Config, Knob, SearchSpace, Value
from polythrottle.state import SavedStateError, StateStore, owner_alive, process_start
from polythrottle.sysfs import ROOT_HINT, SysfsIO, is_root_user, open_io

CLOCK_KNOBS = ("gpu_mhz", "emc_mhz", "cpu_mhz")
Plan = tuple[ClockControl, dict[str, str], list[Write]]
"""One clock's part of an apply: the control, its files before (path -> text), the ordered writes."""
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
        self._keep_mode = False  # keep(): what is applied stays applied
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
        # 1. validate everything and check permission (nothing written, nothing saved yet)
        plans = self._plan(by_control)
        if not plans:
            return
        for _control, _, writes in plans:
            for w in writes:
                if not self.io.writable(w.path):
                    raise PermissionDeniedError(f"cannot write {w.path}: permission denied; {ROOT_HINT}")
        with self.store.lock(self.device_id):
            self._claim()  # may restore a crashed run's leftovers: plan again from what the files say now
            plans = self._plan(by_control)
            if plans:
                self._write_plans(plans)

    def _plan(self, by_control: Mapping[str, Mapping[str, Value]]) -> list[Plan]:
        """(control, its files now, ordered writes) for every control that changes. Raises InvalidValueError."""
        plans: list[Plan] = []
        for name, settings in by_control.items():
            c = self.controls[name]
            before = c.read_state()
            writes = c.writes(c.target(settings, before), before)
            if writes:
                plans.append((c, before, writes))
        return plans

    def _write_plans(self, plans: list[tuple[ClockControl, dict[str, str], list[Write]]]) -> None:
        """Save the originals, then write; on ANY exception (device error, KeyboardInterrupt, SystemExit)
        put back what this apply wrote before passing it on. Called under the store lock."""
        originals = {p: v for c, before, _ in plans for p, v in before.items()}
        with interrupts.deferred():  # the originals are saved whole before the first write, or not at all
            new = self.store.record(self.device_id, originals, meta=self._meta())
            self._session_new.update(new)
            added = [p for p in originals if p not in self._session_before]
            for p in added:
                self._session_before[p] = originals[p]
            interrupts.changed(self)
        done: list[Write] = []
        try:
            for _, _, writes in plans:
                for w in writes:
                    self.io.write(w.path, w.value)
                    done.append(w)
        except BaseException as e:
            with interrupts.deferred():  # a second signal cannot cut the rollback short
                failed = self._rollback(plans)
                back = [k for k in new if k not in failed]
                self.store.forget(self.device_id, back)
                self._session_new.difference_update(back)
                for p in added:
                    if p not in failed:
                        self._session_before.pop(p, None)
                if not self._session_before:
                    self._end_session()
            if not isinstance(e, (DeviceError, OSError)):
                raise  # interrupts and bugs pass on as they are; what could not be put back stays tracked
            if not failed:
                msg = f"; rolled back the {len(done)} value(s) already written" if done else ""
            else:
                msg = f"; ROLLBACK FAILED for {', '.join(failed)}: run `polythrottle restore --device jetson`"
            if isinstance(e, DeviceError):
                raise type(e)(f"{e}{msg}") from None
            raise DeviceError(f"{e}{msg}") from None
        self.last_writes = done
        if self._keep_mode:
            self._seal()

    def _claim(self) -> None:
        """Under the store lock, before this object's first write of a session: settings a crashed run
        left behind (saved originals whose owner is dead and did not keep them) are restored first,
        with a warning, so this session never takes a crash's clocks for the board's own; a live
        process that holds unkept changes (a tune, the daemon) makes this one refuse (DeviceBusyError)."""
        if self._prior_meta is not None:
            return
        state = self.store.load(self.device_id)
        if state is None or not state.originals:
            self._prior_meta = {}
            return
        kept = state.meta.get("kept") is True
        owner = _pid(state.meta.get("pid"))
        if kept or owner == os.getpid():
            self._prior_meta = {"kept": kept, "pid": owner or 0}
            return
        self._check_not_busy(owner, state.meta.get("started"))
        values = self._checked_originals(state.originals)  # a tampered file is refused before the warning
        print(f"polythrottle: warning: restoring {len(values)} setting(s) left by a run that did "
              f"not finish (pid {owner or 'unknown'})", file=sys.stderr)
        self._restore_saved_locked(values)
        self._prior_meta = {}

    def _check_not_busy(self, owner: int | None, started: Any = None) -> None:
        """DeviceBusyError if ``owner`` is another live process (the same one that saved the originals:
        a pid reused by an unrelated process since, whose start time differs, does not count)."""
        if owner is not None and owner != os.getpid() and owner_alive(owner, started):
            raise DeviceBusyError(
                f"another polythrottle process (pid {owner}) is changing the settings of {self.device_id}; "
                "wait for it to finish or stop it (it restores them when it stops)"
            )

    def _seal(self) -> None:
        """Hand what this session applied over to the saved originals as kept (see ``keep``)."""
        if not self._session_before:
            return
        with interrupts.deferred(), self.store.lock(self.device_id):
            if self.store.originals(self.device_id):
                self.store.record(self.device_id, {}, meta={"kept": True, "pid": os.getpid(),
                                                             "started": process_start(os.getpid())})
            self._session_before.clear()
            self._session_new.clear()
            self._prior_meta = None
            interrupts.kept(self)

    def _end_session(self) -> None:
        """Everything this session changed is back: ownership returns to whoever had it before."""
        if self._prior_meta and self.store.originals(self.device_id):
            self.store.record(self.device_id, {}, meta=self._prior_meta)
        self._prior_meta = None
        interrupts.clean(self)

    def keep(self) -> None:
        """Leave what is applied, and what later ``apply`` calls set, in place: close() will not restore
        it, nor will the next run take it for a crash's leftovers. An apply that fails or is
        interrupted is still rolled back. ``polythrottle restore`` puts the originals back."""
        self._keep_mode = True
        self._seal()

    def _rollback(self, plans: list[tuple[ClockControl, dict[str, str], list[Write]]]) -> list[str]:
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

    def _put_back(self, values: Mapping[str, str]) -> tuple[list[str], list[str]]:
        """Write ``values`` (path -> text, already checked) back, control by control in kernel order,
        then any other path as saved. Returns (paths restored, paths that failed)."""
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
        """Put back what this process changed (values as they were when it first wrote them). Signals
        are deferred until it is done."""
        if not self._session_before:
            return
        with interrupts.deferred(), self.store.lock(self.device_id):
            _, failed = self._put_back(self._session_before)
            self.store.forget(self.device_id, [k for k in self._session_new if k not in failed])
            self._session_before = {p: v for p, v in self._session_before.items() if p in failed}
            self._session_new &= set(failed)
            if not self._session_before:
                self._end_session()
        if failed:
            raise DeviceError(
                f"could not restore {', '.join(failed)}; the originals stay saved in {self.store.directory}: "
                "run `polythrottle restore --device jetson` as root"
            )

    def restore_saved(self) -> list[str]:
        """Put back every saved original (also after a crash) and forget them. Returns paths restored.

        Every entry is checked first (a file this board's layout owns, under the root, an integer
        value): a tampered file is refused whole (SavedStateError, exit 2) and nothing is written.
        Refused (DeviceBusyError) while another live process holds unkept changes. Signals are
        deferred until it is done."""
        if not self.io.writes_allowed:
            raise BadInputError("--no-clock-control: restoring would write clock settings; run without it")
        with interrupts.deferred(), self.store.lock(self.device_id):
            state = self.store.load(self.device_id)
            if state is None or not state.originals:
                return []
            if state.meta.get("kept") is not True:
                self._check_not_busy(_pid(state.meta.get("pid")), state.meta.get("started"))
            return self._restore_saved_locked(state.originals)

    def _restore_saved_locked(self, saved: Mapping[str, Any]) -> list[str]:
        values = self._checked_originals(saved)
        for p in values:
            if self.io.exists(p) and not self.io.writable(p):
                raise PermissionDeniedError(f"cannot write {p}: permission denied; {ROOT_HINT}")
        interrupts.changed(self)  # until it is done: a failure is reported, never "restored"
        restored, failed = self._put_back(values)
        self.store.forget(self.device_id, restored)
        self._session_before.clear()
        self._session_new.clear()
        self._prior_meta = None
        if failed:
            self._session_before.update({p: values[p] for p in failed})
            raise DeviceError(
                f"could not restore {', '.join(failed)}; they stay saved in {self.store.path(self.device_id)}"
            )
        interrupts.clean(self)
        return restored

    def owned_files(self) -> tuple[set[str], tuple[re.Pattern[str], ...]]:
        """Board paths a saved original may name: every file of this board's clock controls and of the
        profile's candidate GPU/EMC paths, and the cpufreq limits of any CPU policy (an offline
        cluster's too). Exact paths and patterns."""
        exact = {f for c in self.controls.values() for f in c.files()}
        gpu_min = self.layout.gpu_files.get("min", "min_freq")
        gpu_max = self.layout.gpu_files.get("max", "max_freq")
        for d in self.layout.gpu_dirs:
            exact |= {f"{d}/{gpu_min}", f"{d}/{gpu_max}"}
        for proto in self.layout.emc:
            exact |= {proto.rate_path, proto.lock_path}
        cpu = re.escape(self.layout.cpu_root.rstrip("/"))
        patterns = (re.compile(rf"{cpu}/cpufreq/policy\d+/scaling_(min|max)_freq"),
                    re.compile(rf"{cpu}/cpu\d+/cpufreq/scaling_(min|max)_freq"))
        return exact, patterns

    def _checked_originals(self, saved: Mapping[str, Any]) -> dict[str, str]:
        """``saved`` as path -> text once every entry is known to be safe to write back; else
        SavedStateError naming the first bad entry (nothing is written)."""
        exact, patterns = self.owned_files()
        where = self.store.path(self.device_id)

        def owned(p: str) -> bool:
            return p in exact or any(r.fullmatch(p) for r in patterns)

        real_exact = set()
        for f in exact:
            try:
                real_exact.add(self.io.resolve(f))
            except DeviceError:
                continue
        out: dict[str, str] = {}
        for p, v in saved.items():
            what = f"saved originals {where}: entry {brief(p, 100)}"
            if not isinstance(p, str) or not p.startswith("/") or posixpath.normpath(p) != p or "/../" in p + "/":
                raise SavedStateError(f"{what} is not a plain absolute path; refusing to restore (nothing written)")
            if not owned(p):
                raise SavedStateError(f"{what} is not a clock file of {self.layout.profile}; refusing to restore "
                                      "(nothing written)")
            try:
                real = self.io.resolve(p)
            except DeviceError:
                raise SavedStateError(f"{what} resolves outside {self.io.root}; refusing to restore "
                                      "(nothing written)") from None
            if real != p and real not in real_exact and not any(r.fullmatch(real) for r in patterns):
                raise SavedStateError(f"{what} is a link to {brief(real, 100)}, not a clock file; refusing to "
                                      "restore (nothing written)")
            text = str(v) if isinstance(v, (str, int)) and not isinstance(v, bool) else None
            if text is None or not _INT_TEXT.fullmatch(text.strip()):
                raise SavedStateError(f"{what} has the value {brief(v, 40)}, not an integer; refusing to restore "
                                      "(nothing written)")
            out[p] = text.strip()
        return out

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
                "pid": os.getpid(), "started": process_start(os.getpid()), "kept": False}

    def current(self) -> dict[str, float]:
        """Current knob values (MHz) as the kernel files say (a clock whose files are unreadable or hold
        no number just now is left out)."""
        out: dict[str, float] = {}
        for c in self.controls.values():
            try:
                out.update(c.current_mhz())
            except (DeviceError, ValueError, KeyError):
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


_INT_TEXT = re.compile(r"-?\d{1,20}")


def _pid(value: Any) -> int | None:
    """A saved owner pid, or None when it is missing or not a positive integer (tampered)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


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
