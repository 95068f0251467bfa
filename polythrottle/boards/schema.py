"""The board profile YAML, declared: pydantic models, every field checked on load (``polythrottle.boards.profiles``).

A profile holds the facts about one board that the hardware backend and the digital twin need.
Facts that are not known are listed in ``unknown`` (or carry a ``note``) instead of being invented.
Unknown fields are refused; ``key: null`` counts as absent. Errors name the file and the dotted
field (``profile bad.yaml: field knobs.gpu_mhz.steps: steps must be ascending (1300.5 before 1236.75)``).

Schema (``schema_version: 1``)::

    schema_version: 1
    name: jetson-agx-orin                # must equal the file stem
    description: str
    soc: str                             # e.g. tegra234
    models: [str, ...]                   # exact /proc/device-tree/model strings (NULs stripped)
    model_substrings: [str, ...]         # fallback: longest substring contained in the model wins
    sources: [str, ...]                  # where the facts come from
    unknown: [str, ...]                  # facts known to be missing or unverified
    knobs:                               # hardware knobs, steps in MHz, strictly ascending, unique, positive
      gpu_mhz: {steps: [...], control: gpu, note: str?}     # required
      emc_mhz: {steps: [...], control: emc, note: str?}
      cpu_mhz: {steps: [...], control: cpu, note: str?}
    control:                             # how each clock is set (the Jetson backend reads this)
      gpu|emc|cpu:
        interface: devfreq | bpmp-debugfs | tegra-bwmgr | cpufreq
        unit: Hz | kHz                   # unit of the sysfs files (knob steps are MHz)
        variants:                        # tried in order; the first whose path exists is used
          - {path: str, jetpack: [4|5|6, ...], note: str?}     # path: a plain path under /sys
        files: {role: filename, ...}     # e.g. available/min/max/current/governor, rate/lock/... (no '..')
        protocol: [str, ...]             # write order / hints, in words
        paths: {role: path, ...}         # extra plain paths under /sys (e.g. emc_cap, override)
        # paths a control writes must lie where clocks live (polythrottle.clocks.sysfs.CLOCK_SUBTREES):
        # devfreq variants: /sys/class/devfreq/NAME or /sys/devices/.../devfreq/NAME (or .../devfreq_dev);
        # bpmp-debugfs variants: /sys/kernel/debug/bpmp/debug/clk/emc; tegra-bwmgr override paths:
        # /sys/kernel/debug/clk/override.emc/...; cpufreq variant: /sys/devices/system/cpu[/cpufreq].
        # Read-only paths (emc_cap, current, the tegra_bwmgr variant, power) are not held to this.
        clusters: [{policy: policy0, cpus: [0, 1, 2, 3]}, ...]   # cpufreq only (required there)
        note: str?
        unknown: [str, ...]
    power:
      sensor: ina3221
      interfaces:                        # how the INA3221 is exposed, per JetPack generation
        - {kind: hwmon | iio, jetpack: [...], glob: str, channel_base: 0 | 1,
           files: {label: ..., voltage_mv: ..., current_ma: ..., power_mw: ...?}}
          # glob: the sensor directory, "{addr}" = the address's two hex digits ("40");
          # files: "{ch}" = the channel in this interface's numbering (rail.channel - 1 + channel_base);
          # iio (JetPack 4, L4T ina3221x driver) numbers channels from 0, hwmon from 1.
      rails:                             # channel numbers are 1-based (hwmon numbering)
        - {name: VDD_IN, address: "0x40", channel: 1, note: str?}
      board_power: [rail, ...]           # rails whose sum is the reported power (no overlaps)
      note: str?
      unknown: [str, ...]
    sim:                                 # digital-twin parameters: plain data here, checked by polythrottle.twin.params
      cpu_mhz: [...]                     # subset of knobs.cpu_mhz used by the twin (keeps spaces small)
      batch_sizes: [...], precisions: [...]
      static_w, gpu: {...}, emc: {...}, cpu: {...}, governor: {...}, workloads: {name: {...}}

Knob names used across PolyThrottle: gpu_mhz (GPU clock locked: devfreq min = max), gpu_min_mhz /
gpu_max_mhz (a range the devfreq governor moves within), emc_mhz, cpu_mhz, batch_size, precision.

Unit conventions: knob steps are MHz; a backend writes ``round(mhz * 1e6)`` to Hz files and
``round(mhz * 1e3)`` to kHz files.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, ValidationInfo, field_validator, model_validator

from polythrottle.boards.validation import Int, Loc, Number, Section, Str, fail, non_empty, one_of, shown
from polythrottle.clocks.sysfs import clock_subtree

SCHEMA_VERSION = 1
CLOCK_KNOBS = ("gpu_mhz", "emc_mhz", "cpu_mhz")
INTERFACES = ("devfreq", "bpmp-debugfs", "tegra-bwmgr", "cpufreq")
UNITS = ("Hz", "kHz")
JETPACKS = (4, 5, 6)
POWER_KINDS = ("hwmon", "iio")
POWER_FILE_ROLES = ("label", "voltage_mv", "current_ma")
"""Files every power interface must name (``power_mw`` is optional)."""
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
CPU_ROOTS = ("/sys/devices/system/cpu", "/sys/devices/system/cpu/cpufreq")
"""Where a cpufreq control's policies are looked for (the variant path, ``/cpufreq`` dropped)."""
WRITTEN_VARIANTS = {"devfreq": "devfreq", "bpmp-debugfs": "emc-bpmp"}
"""Interfaces whose variant directories hold the files written -> the ``CLOCK_SUBTREES`` kind they must be in."""
WRITTEN_PATHS = {"tegra-bwmgr": ("emc-override", ("override", "override_rate", "override_state"))}
"""Interfaces whose ``paths`` roles are written -> (``CLOCK_SUBTREES`` kind, those roles)."""
_WHERE = {"devfreq": "a devfreq device (/sys/class/devfreq/NAME, /sys/devices/.../devfreq/NAME)",
          "emc-bpmp": "the BPMP EMC clock (/sys/kernel/debug/bpmp/debug/clk/emc)",
          "emc-override": "the tegra210 EMC override (/sys/kernel/debug/clk/override.emc)"}


# ----- field checks -----------------------------------------------------------------------------
def _steps(values: tuple[float, ...]) -> tuple[float, ...]:
    if not values:
        raise fail("no steps")
    if any(v <= 0 for v in values):
        raise fail("steps must be positive")
    for before, step in zip(values, values[1:]):
        if step == before:
            raise fail(f"duplicate step {step:g}")
        if step < before:
            raise fail(f"steps must be ascending ({before:g} before {step:g})")
    return values


def _jetpacks(values: tuple[int, ...]) -> tuple[int, ...]:
    if not values or any(j not in JETPACKS for j in values):
        raise fail(f"expected JetPack major versions from {list(JETPACKS)}, got {shown(list(values))}")
    return values


def _sys_path(path: str, at: Loc = ()) -> str:
    """A clock's files are written as root: only plain paths under /sys (sysfs, debugfs), no ``..``."""
    if not path.startswith("/sys/") or posixpath.normpath(path) != path.rstrip("/"):
        raise fail(f"expected a plain path under /sys (no '..', '.' or '//'), got {shown(path)}", at=at)
    return path


def _sys_paths(paths: dict[str, str]) -> dict[str, str]:
    for role, path in paths.items():
        _sys_path(path, at=(role,))
    return paths


def _file_names(files: dict[str, str]) -> dict[str, str]:
    """File names relative to a clock's directory, never leaving it (``device/railgate_enable`` is fine)."""
    for role, name in files.items():
        if name.startswith("/") or posixpath.normpath(name) != name or ".." in name.split("/"):
            raise fail(f"expected a file name inside the clock's directory, got {shown(name)}", at=(role,))
    return files


def _channel_base(base: int) -> int:
    if base not in (0, 1):
        raise fail(f"expected 0 or 1, got {shown(base)}")
    return base


def _power_files(files: dict[str, str]) -> dict[str, str]:
    for role in POWER_FILE_ROLES:
        if role not in files:
            raise fail("missing", at=(role,))
    return files


def _ina_address(address: str) -> str:
    if not re.fullmatch(r"0x4[0-3]", address):
        raise fail(f"expected an INA3221 I2C address 0x40-0x43, got {shown(address)}")
    return address


def _rail_channel(channel: int) -> int:
    if channel not in (1, 2, 3):
        raise fail(f"expected channel 1, 2 or 3, got {shown(channel)}")
    return channel


def _plain_data(sim: dict[str, Any]) -> dict[str, Any]:
    """The sim block is plain data (mappings with string keys, lists, finite numbers, strings, booleans)."""

    def walk(value: Any, at: Loc) -> None:
        if isinstance(value, Mapping):
            for key, child in value.items():
                if not isinstance(key, str):
                    raise fail(f"keys must be strings, got {shown(key)}", at=at)
                walk(child, (*at, key))
        elif isinstance(value, list):
            for i, child in enumerate(value):
                walk(child, (*at, i))
        elif isinstance(value, float) and not math.isfinite(value):
            raise fail(f"expected a number, got {shown(value)}", at=at)
        elif not isinstance(value, (str, int, float, bool)) and value is not None:
            raise fail(f"unsupported value {shown(value)}", at=at)

    walk(sim, ())
    return sim


Steps = Annotated[tuple[Number, ...], AfterValidator(_steps)]
JetPacks = Annotated[tuple[Int, ...], AfterValidator(_jetpacks)]


# ----- the profile ------------------------------------------------------------------------------
class KnobSpec(Section):
    """A hardware clock knob: its steps in MHz (ascending) and which ``control`` entry sets it."""

    derived: ClassVar[tuple[str, ...]] = ("name",)
    name: str = ""  # the key under ``knobs``
    steps: Steps
    control: Str
    note: Str = ""


class PathVariant(Section):
    """One place a control lives, and the JetPack major versions it was seen on."""

    path: Annotated[Str, AfterValidator(_sys_path)]
    jetpack: JetPacks
    note: Str = ""


class CpuCluster(Section):
    """A cpufreq policy directory (``policyN``) and the CPUs it governs."""

    policy: Str
    cpus: tuple[Int, ...]


def _disjoint_clusters(clusters: tuple[CpuCluster, ...]) -> tuple[CpuCluster, ...]:
    seen: set[int] = set()
    for i, c in enumerate(clusters):
        if not c.cpus or seen & set(c.cpus):
            raise fail("empty, or a CPU listed in two clusters", at=(i, "cpus"))
        seen |= set(c.cpus)
    return clusters


class ClockSpec(Section):
    """How one clock is set: interface, file unit, path variants, file names and write protocol."""

    derived: ClassVar[tuple[str, ...]] = ("name",)
    name: str = ""  # the key under ``control``
    interface: Annotated[Str, AfterValidator(one_of(INTERFACES))]
    unit: Annotated[Str, AfterValidator(one_of(UNITS))]
    variants: Annotated[tuple[PathVariant, ...], AfterValidator(non_empty("at least one path variant is needed"))]
    files: Annotated[dict[str, Str], AfterValidator(_file_names)]
    protocol: tuple[Str, ...] = ()
    paths: Annotated[dict[str, Str], AfterValidator(_sys_paths)] = {}
    clusters: Annotated[tuple[CpuCluster, ...], AfterValidator(_disjoint_clusters)] = ()
    note: Str = ""
    unknown: tuple[Str, ...] = ()

    @model_validator(mode="after")
    def _writes_only_clock_files(self) -> ClockSpec:
        """Every path this control writes lies where that kind of clock lives: a profile cannot name
        ``/sys/power/state`` or a GPIO as a clock file (the write guard refuses it again at run time)."""
        kind = WRITTEN_VARIANTS.get(self.interface)
        for i, v in enumerate(self.variants):
            path = v.path.rstrip("/")
            if self.interface == "cpufreq" and path not in CPU_ROOTS:
                raise fail(f"{shown(v.path)} is not a cpufreq root ({' or '.join(CPU_ROOTS)}); "
                           "a clock control writes only clock files", at=("variants", i, "path"))
            if kind is not None and clock_subtree(path, (kind,)) is None:
                raise fail(f"{shown(v.path)} is not {_WHERE[kind]}; a clock control writes only clock files",
                           at=("variants", i, "path"))
        kind, roles = WRITTEN_PATHS.get(self.interface, ("", ()))
        for role in roles:
            if role in self.paths and clock_subtree(self.paths[role], (kind,)) is None:
                raise fail(f"{shown(self.paths[role])} is not {_WHERE[kind]}; a clock control writes only clock "
                           "files", at=("paths", role))
        return self

    @model_validator(mode="after")
    def _cpufreq_has_clusters(self) -> ClockSpec:
        if self.interface == "cpufreq" and not self.clusters:
            raise fail("missing", at=("clusters",))
        return self

    def to_unit(self, mhz: float) -> int:
        """``mhz`` in this control's file unit (Hz or kHz), rounded to an integer."""
        return round(mhz * (1e6 if self.unit == "Hz" else 1e3))


class PowerRail(Section):
    """One INA3221 channel: rail name, I2C address and 1-based channel number."""

    name: Str
    address: Annotated[Str, AfterValidator(_ina_address)]
    channel: Annotated[Int, AfterValidator(_rail_channel)]
    note: Str = ""


class PowerInterface(Section):
    """How the INA3221 is exposed: hwmon (JetPack 5+) or the L4T iio driver (JetPack 4)."""

    kind: Annotated[Str, AfterValidator(one_of(POWER_KINDS))]
    jetpack: JetPacks
    glob: Str
    channel_base: Annotated[Int, AfterValidator(_channel_base)]
    files: Annotated[dict[str, Str], AfterValidator(_power_files)]

    def channel(self, rail: PowerRail) -> int:
        """``rail``'s channel number in this interface's own numbering."""
        return rail.channel - 1 + self.channel_base

    def sensor_glob(self, rail: PowerRail) -> str:
        """Glob of the sensor directory holding ``rail`` (``{addr}`` filled in)."""
        return self.glob.format(addr=rail.address[2:])

    def file(self, role: str, rail: PowerRail) -> str:
        """File name for ``role`` (label, voltage_mv, current_ma, power_mw) of ``rail``."""
        return self.files[role].format(ch=self.channel(rail))


def _unique_rails(rails: tuple[PowerRail, ...]) -> tuple[PowerRail, ...]:
    seen: set[str] = set()
    for i, r in enumerate(rails):
        if r.name in seen:
            raise fail(f"duplicate rail {shown(r.name)}", at=(i, "name"))
        seen.add(r.name)
    return rails


class PowerSpec(Section):
    """The board's power monitor: how it is exposed, its rails, and which of them sum to board power."""

    sensor: Str
    interfaces: tuple[PowerInterface, ...]
    rails: Annotated[tuple[PowerRail, ...], AfterValidator(_unique_rails)]
    board_power: Annotated[tuple[Str, ...], AfterValidator(non_empty("at least one rail is needed"))]
    note: Str = ""
    unknown: tuple[Str, ...] = ()

    @model_validator(mode="after")
    def _board_rails_listed(self) -> PowerSpec:
        names = {r.name for r in self.rails}
        for rail in self.board_power:
            if rail not in names:
                raise fail(f"rail {shown(rail)} is not listed in power.rails", at=("board_power",))
        return self


class DeviceProfile(Section):
    """A validated board profile. ``sim`` is the raw twin block (checked by ``polythrottle.twin.params``).

    Validate with ``context={"path": Path}`` (the file: ``name`` must equal its stem); ``path`` is
    filled in by the loader.
    """

    derived: ClassVar[tuple[str, ...]] = ("path",)
    path: Path = Path()
    schema_version: Int
    name: Str
    models: Annotated[tuple[Str, ...], AfterValidator(non_empty("at least one /proc/device-tree/model string is needed"))]
    control: dict[str, ClockSpec]
    knobs: dict[str, KnobSpec]
    description: Str
    soc: Str
    model_substrings: tuple[Str, ...] = ()
    power: PowerSpec
    sim: Annotated[dict[str, Any], AfterValidator(_plain_data)]
    sources: tuple[Str, ...] = ()
    unknown: tuple[Str, ...] = ()

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if version != SCHEMA_VERSION:
            raise fail(f"unsupported version {version}; expected {SCHEMA_VERSION}")
        return version

    @field_validator("name")
    @classmethod
    def _name_is_file_stem(cls, name: str, info: ValidationInfo) -> str:
        if not _NAME_RE.match(name):
            raise fail(f"{shown(name)} is not a valid profile name (lowercase, digits, -_.)")
        path = (info.context or {}).get("path")
        if path is not None and path.suffix in (".yaml", ".yml") and path.stem != name:
            raise fail(f"{shown(name)} does not match the file name {path.name!r}")
        return name

    @field_validator("control")
    @classmethod
    def _control_names(cls, control: dict[str, ClockSpec]) -> dict[str, ClockSpec]:
        return {name: c.model_copy(update={"name": name}) for name, c in control.items()}

    @field_validator("knobs", mode="before")
    @classmethod
    def _clock_knobs(cls, knobs: Any) -> Any:
        for name in knobs if isinstance(knobs, Mapping) else ():
            if name not in CLOCK_KNOBS:
                raise fail(f"unknown hardware knob; expected one of: {', '.join(CLOCK_KNOBS)}", at=(str(name),))
        return knobs

    @field_validator("knobs")
    @classmethod
    def _knob_names(cls, knobs: dict[str, KnobSpec]) -> dict[str, KnobSpec]:
        if "gpu_mhz" not in knobs:
            raise fail("missing", at=("gpu_mhz",))
        return {name: k.model_copy(update={"name": name}) for name, k in knobs.items()}

    @model_validator(mode="after")
    def _knob_controls_exist(self) -> DeviceProfile:
        for name, knob in self.knobs.items():
            if knob.control not in self.control:
                have = ", ".join(self.control) or "none"
                raise fail(f"no control entry {shown(knob.control)} (have: {have})", at=("knobs", name, "control"))
        return self

    def steps(self, knob: str) -> tuple[float, ...]:
        """The steps (MHz) of hardware knob ``knob``."""
        return self.knobs[knob].steps

    def control_for(self, knob: str) -> ClockSpec:
        """The control entry that sets hardware knob ``knob``."""
        return self.control[self.knobs[knob].control]
