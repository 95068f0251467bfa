"""What a saved original may be, checked before anything is written back: the board files a control owns
(``OwnedFiles``, ``checked_files``: plain paths under the root holding an integer), the record a run over
kept settings leaves (``run_over_kept``) and the kept values the hardware cannot read back (``kept_values``).
Anything else is SavedStateError (exit 2), nothing written.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from polythrottle.boards.layout import JetsonLayout
from polythrottle.clocks.base import INT_TEXT, UNIT_PER_MHZ
from polythrottle.clocks.cpufreq import hardware_limits
from polythrottle.clocks.emc import EmcProtocol
from polythrottle.clocks.sysfs import SysfsIO
from polythrottle.devices.originals import SavedStateError
from polythrottle.errors import DeviceError, brief


def owner_pid(value: Any) -> int | None:
    """A saved owner pid, or None when it is missing or not a positive integer (tampered)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


RUN_OVER_KEPT = "run_over_kept"
"""Meta key of a session writing over kept settings: ``{"owner": the kept owner's meta, "before": key -> value
before this run, "new": keys this run added}`` (None otherwise)."""


KEPT_VALUES = "kept_values"
"""Meta key of kept settings: ``{key: value}``, the values a kept apply left settings at that the hardware cannot
read back (an NVML clock lock), for a later session to start from (absent or empty: none)."""


def kept_values(meta: Mapping[str, Any], where: Path) -> dict[str, Any]:
    """The saved ``kept_values`` (unchecked: the control checks every entry). SavedStateError (nothing written)
    when it is not an object."""
    values = meta.get(KEPT_VALUES)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise SavedStateError(f"saved originals {where}: {KEPT_VALUES!r} is malformed ({brief(values, 60)}); "
                              "refusing to restore (nothing written): restore by hand or remove the file")
    return dict(values)


@dataclass(frozen=True)
class RunOverKept:
    """A run over kept settings, as saved: whom to hand back to, the values it started from, the keys it added."""

    owner: dict[str, Any]
    before: dict[str, Any]
    new: list[str]


def run_over_kept(meta: Mapping[str, Any], originals: Mapping[str, Any], where: Path) -> RunOverKept | None:
    """The saved ``run_over_kept`` of a run that did not finish (only its keys still saved), or None.
    SavedStateError (nothing written) when it is malformed: not an object, an owner that did not keep."""
    run = meta.get(RUN_OVER_KEPT)
    if run is None:
        return None
    bad = SavedStateError(f"saved originals {where}: {RUN_OVER_KEPT!r} is malformed ({brief(run, 60)}); "
                          "refusing to restore (nothing written): restore by hand or remove the file")
    if not isinstance(run, dict):
        raise bad
    owner, before, new = run.get("owner"), run.get("before"), run.get("new")
    if not isinstance(owner, dict) or owner.get("kept") is not True or not isinstance(before, dict) \
            or not isinstance(new, list) or not all(isinstance(k, str) for k in new):
        raise bad
    started = owner.get("started")
    # a key no longer saved was put back already (and forgotten): only saved originals are written
    return RunOverKept({"kept": True, "pid": owner_pid(owner.get("pid")) or 0,
                        "started": started if isinstance(started, int) and not isinstance(started, bool) else None},
                       {k: v for k, v in before.items() if k in originals}, [k for k in new if k in originals])


@dataclass(frozen=True)
class OwnedFiles:
    """The board files a saved original may name: exact paths and patterns; ``kind`` names them in messages."""

    exact: frozenset[str]
    patterns: tuple[re.Pattern[str], ...]
    kind: str

    def owns(self, path: str) -> bool:
        return path in self.exact or any(r.fullmatch(path) for r in self.patterns)


def checked_files(io: SysfsIO, owned: OwnedFiles, saved: Mapping[str, Any], where: Path) -> dict[str, str]:
    """``saved`` (board path -> value) as path -> text once every entry is a plain absolute path that
    ``owned`` owns, resolving under ``io.root`` to such a file (no ``..``, no link out), holding an
    integer. Else SavedStateError naming the first bad entry: nothing is written."""
    real_exact = set()
    for f in owned.exact:
        try:
            real_exact.add(io.resolve(f))
        except DeviceError:
            continue
    out: dict[str, str] = {}
    for p, v in saved.items():
        what = f"saved originals {where}: entry {brief(p, 100)}"
        refuse = "refusing to restore (nothing written)"
        if not isinstance(p, str) or not p.startswith("/") or posixpath.normpath(p) != p or "/../" in p + "/":
            raise SavedStateError(f"{what} is not a plain absolute path; {refuse}")
        if not owned.owns(p):
            raise SavedStateError(f"{what} is not {owned.kind}; {refuse}")
        try:
            real = io.resolve(p)
        except DeviceError:
            raise SavedStateError(f"{what} resolves outside {io.root}; {refuse}") from None
        if real != p and real not in real_exact and not any(r.fullmatch(real) for r in owned.patterns):
            raise SavedStateError(f"{what} is a link to {brief(real, 100)}, not {owned.kind}; {refuse}")
        text = str(v) if isinstance(v, (str, int)) and not isinstance(v, bool) else None
        if text is None or not INT_TEXT.fullmatch(text.strip()):
            raise SavedStateError(f"{what} has the value {brief(v, 40)}, not an integer; {refuse}")
        out[p] = text.strip()
    return out


def within_steps(steps: Sequence[int], *, zero_ok: bool = False) -> Callable[[int], bool] | None:
    """Whether a saved value lies within ``steps`` (lowest to highest, 1 ppm either way; 0 too with
    ``zero_ok``): a value outside is none the hardware held, and restoring it could leave a clock at its
    lowest step (a limit of 1). None when there are no steps to judge by."""
    if not steps:
        return None
    lo, hi = min(steps), max(steps)
    return lambda v: (zero_ok and v == 0) or lo * (1 - 1e-6) <= v <= hi * (1 + 1e-6)


def outside(where: Path, key: str, value: Any) -> SavedStateError:
    """The refusal of a saved value no original can have (``within_steps``); nothing is written."""
    return SavedStateError(f"saved originals {where}: entry {brief(key, 100)} has the value {brief(value, 40)}, "
                           "outside what this setting can hold; refusing to restore (nothing written)")


def cpufreq_steps(io: SysfsIO, path: str) -> list[int]:
    """The frequencies (kHz) a limit file ``path`` of a cpufreq policy can hold, links resolved: its hardware
    limits (``cpuinfo_min_freq``/``cpuinfo_max_freq``, which cpufreq holds every limit within) where readable,
    else what ``scaling_available_frequencies`` lists (an entry of it outside the hardware limits widens
    nothing); empty when there is neither (or the policy is gone)."""
    try:
        directory = posixpath.dirname(io.resolve(path))
        limits = hardware_limits(io, directory)
        if limits is not None:
            return list(limits)
        avail = f"{directory}/scaling_available_frequencies"
        return io.read_ints(avail) if io.is_file(avail) else []
    except DeviceError:
        return []


def refuse_outside(values: Mapping[str, Any], allowed: Callable[[str], Callable[[int], bool] | None],
                   where: Path) -> None:
    """SavedStateError (``outside``) for the first integer value of ``values`` that ``allowed(key)`` refuses."""
    for key, value in values.items():
        check = allowed(key) if INT_TEXT.fullmatch(str(value).strip()) else None
        if check is not None and not check(int(value)):
            raise outside(where, key, value)


def _lock_or_zero(locked: int, value: int) -> bool:
    return value in (0, locked)


def _emc_range(io: SysfsIO, layout: JetsonLayout, proto: EmcProtocol) -> list[int]:
    """What an EMC rate file can hold (its unit): the profile's steps and the firmware's range and caps where
    readable (a rate a lock held before us, e.g. jetson_clocks' highest, lies within them)."""
    per = UNIT_PER_MHZ[proto.unit]
    out = [round(m * per) for m in layout.emc_steps_mhz]
    for bound in (*proto.floor_paths, *proto.cap_paths):
        try:
            out.append(io.read_int(bound))
        except DeviceError:
            continue
    return [v for v in out if v > 0]


def jetson_allowed(io: SysfsIO, layout: JetsonLayout, gpu_files: Sequence[str], gpu_steps: Sequence[int],
                   path: str) -> Callable[[int], bool] | None:
    """What a saved original of a Jetson's clock file ``path`` may hold: a GPU devfreq limit (``gpu_files``, the
    profile's candidates) 0 (no limit) or within ``gpu_steps`` (the kernel's, before the power mode's cap; else
    the profile's); a cpufreq limit within its policy's steps (else the profile's); an EMC lock 0 or the lock
    value; an EMC rate within the profile's steps and the firmware's range (0 too for the tegra210 override,
    which reads 0 until it is set: a rate restored locked at 1 Hz left EMC at its lowest step). None: not
    judged."""
    names = (layout.gpu_files.get("min", "min_freq"), layout.gpu_files.get("max", "max_freq"))
    if path in {f"{d}/{n}" for d in layout.gpu_dirs for n in names} | set(gpu_files):
        per = UNIT_PER_MHZ[layout.gpu_unit]
        return within_steps(gpu_steps or [round(m * per) for m in layout.gpu_steps_mhz], zero_ok=True)
    for proto in layout.emc:
        if path == proto.lock_path:
            return partial(_lock_or_zero, int(proto.lock_value))
        if path == proto.rate_path:
            return within_steps(_emc_range(io, layout, proto), zero_ok=not proto.lock_first)
    if re.search(r"/scaling_(min|max)_freq$", path):
        return within_steps(cpufreq_steps(io, path) or [round(m * 1000) for m in layout.cpu_steps_mhz])
    return None
