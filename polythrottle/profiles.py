"""Device profiles: one YAML per board under ``device_profiles/``, loaded and validated here.

A profile holds the facts about one board that the hardware backend and the digital twin need.
Facts that are not known are listed in ``unknown`` (or carry a ``note``) instead of being invented.

Schema (``schema_version: 1``; every field is validated on load, errors name the file and the field)::

    schema_version: 1
    name: jetson-agx-orin                # must equal the file stem
    description: str
    soc: str                             # e.g. tegra234
    models: [str, ...]                   # exact /proc/device-tree/model strings (NULs stripped)
    model_substrings: [str, ...]         # fallback: longest substring contained in the model wins
    sources: [str, ...]                  # where the facts come from
    unknown: [str, ...]                  # facts known to be missing or unverified
    knobs:                               # hardware knobs, steps in MHz, strictly ascending, unique
      gpu_mhz: {steps: [...], control: gpu, note: str?}
      emc_mhz: {steps: [...], control: emc, note: str?}
      cpu_mhz: {steps: [...], control: cpu, note: str?}
    control:                             # how each clock is set (the Jetson backend reads this)
      gpu|emc|cpu:
        interface: devfreq | bpmp-debugfs | tegra-bwmgr | cpufreq
        unit: Hz | kHz                   # unit of the sysfs files (knob steps are MHz)
        variants:                        # tried in order; the first whose path exists is used
          - {path: str, jetpack: [4|5|6, ...], note: str?}
        files: {role: filename, ...}     # e.g. available/min/max/current/governor, rate/lock/...
        protocol: [str, ...]             # write order / hints, in words
        paths: {role: path, ...}         # extra absolute paths (e.g. emc_cap, override)
        clusters: [{policy: policy0, cpus: [0, 1, 2, 3]}, ...]   # cpufreq only
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
    sim:                                 # digital-twin parameters; validated by polythrottle.twin
      cpu_mhz: [...]                     # subset of knobs.cpu_mhz used by the twin (keeps spaces small)
      batch_sizes: [...], precisions: [...]
      static_w, gpu: {...}, emc: {...}, cpu: {...}, governor: {...}, workloads: {name: {...}}
      (see polythrottle/twin/model.py for every parameter and its unit)

Knob names used across PolyThrottle: gpu_mhz (GPU clock locked: devfreq min = max), gpu_min_mhz /
gpu_max_mhz (a range the devfreq governor moves within), emc_mhz, cpu_mhz, batch_size, precision.

Unit conventions: knob steps are MHz; a backend writes ``round(mhz * 1e6)`` to Hz files and
``round(mhz * 1e3)`` to kHz files. Raises ``ProfileError`` (a ``BadInputError``: exit 2).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from polythrottle import safe_yaml
from polythrottle.errors import ProfileError, brief, clip

PROFILE_DIR = Path(os.environ.get("POLYTHROTTLE_PROFILE_DIR") or Path(__file__).resolve().parent.parent / "device_profiles")
"""Where the built-in profiles live: the repository's ``device_profiles/`` (env POLYTHROTTLE_PROFILE_DIR)."""

SCHEMA_VERSION = 1
CLOCK_KNOBS = ("gpu_mhz", "emc_mhz", "cpu_mhz")
INTERFACES = ("devfreq", "bpmp-debugfs", "tegra-bwmgr", "cpufreq")
UNITS = ("Hz", "kHz")
JETPACKS = (4, 5, 6)
POWER_KINDS = ("hwmon", "iio")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


# ----- typed profile ----------------------------------------------------------------------------
@dataclass(frozen=True)
class KnobSpec:
    """A hardware clock knob: its steps in MHz (ascending) and which ``control`` entry sets it."""

    name: str
    steps: tuple[float, ...]
    control: str
    note: str = ""


@dataclass(frozen=True)
class PathVariant:
    """One place a control lives, and the JetPack major versions it was seen on."""

    path: str
    jetpack: tuple[int, ...]
    note: str = ""


@dataclass(frozen=True)
class CpuCluster:
    """A cpufreq policy directory (``policyN``) and the CPUs it governs."""

    policy: str
    cpus: tuple[int, ...]


@dataclass(frozen=True)
class ClockControl:
    """How one clock is set: interface, file unit, path variants, file names and write protocol."""

    name: str
    interface: str
    unit: str
    variants: tuple[PathVariant, ...]
    files: dict[str, str]
    protocol: tuple[str, ...] = ()
    paths: dict[str, str] = field(default_factory=dict)
    clusters: tuple[CpuCluster, ...] = ()
    note: str = ""
    unknown: tuple[str, ...] = ()

    def to_unit(self, mhz: float) -> int:
        """``mhz`` in this control's file unit (Hz or kHz), rounded to an integer."""
        return round(mhz * (1e6 if self.unit == "Hz" else 1e3))


@dataclass(frozen=True)
class PowerInterface:
    """How the INA3221 is exposed: hwmon (JetPack 5+) or the L4T iio driver (JetPack 4)."""

    kind: str
    jetpack: tuple[int, ...]
    glob: str
    channel_base: int
    files: dict[str, str]

    def channel(self, rail: PowerRail) -> int:
        """``rail``'s channel number in this interface's own numbering."""
        return rail.channel - 1 + self.channel_base

    def sensor_glob(self, rail: PowerRail) -> str:
        """Glob of the sensor directory holding ``rail`` (``{addr}`` filled in)."""
        return self.glob.format(addr=rail.address[2:])

    def file(self, role: str, rail: PowerRail) -> str:
        """File name for ``role`` (label, voltage_mv, current_ma, power_mw) of ``rail``."""
        return self.files[role].format(ch=self.channel(rail))


@dataclass(frozen=True)
class PowerRail:
    """One INA3221 channel: rail name, I2C address and 1-based channel number."""

    name: str
    address: str
    channel: int
    note: str = ""


@dataclass(frozen=True)
class PowerSpec:
    sensor: str
    interfaces: tuple[PowerInterface, ...]
    rails: tuple[PowerRail, ...]
    board_power: tuple[str, ...]
    note: str = ""
    unknown: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceProfile:
    """A validated board profile. ``sim`` is the raw twin block (validated by ``polythrottle.twin``)."""

    name: str
    path: Path
    description: str
    soc: str
    models: tuple[str, ...]
    model_substrings: tuple[str, ...]
    knobs: dict[str, KnobSpec]
    control: dict[str, ClockControl]
    power: PowerSpec
    sim: dict[str, Any]
    sources: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()

    def steps(self, knob: str) -> tuple[float, ...]:
        """The steps (MHz) of hardware knob ``knob``."""
        return self.knobs[knob].steps

    def control_for(self, knob: str) -> ClockControl:
        """The control entry that sets hardware knob ``knob``."""
        return self.control[self.knobs[knob].control]


# ----- validation helpers ----------------------------------------------------------------------
class FieldReader:
    """A value inside a profile with its dotted field path, for one-line errors."""

    def __init__(self, file: Path | str, where: str, value: Any) -> None:
        self.file, self.where, self.value = file, where, value

    def fail(self, msg: str) -> ProfileError:
        return ProfileError(f"profile {self.file}: field {self.where or '<top>'}: {msg}")

    def child(self, key: str | int) -> FieldReader:
        where = f"{self.where}[{key}]" if isinstance(key, int) else (f"{self.where}.{key}" if self.where else key)
        return FieldReader(self.file, where, self.value[key])

    # typed accessors --------------------------------------------------------------------------
    def mapping(self) -> Mapping[str, Any]:
        if not isinstance(self.value, Mapping):
            raise self.fail(f"expected a mapping, got {type(self.value).__name__}")
        return self.value

    def get(self, key: str, required: bool = True) -> FieldReader | None:
        m = self.mapping()
        if key not in m or m[key] is None:
            if required:
                raise self.child_missing(key)
            return None
        return self.child(key)

    def child_missing(self, key: str) -> ProfileError:
        where = f"{self.where}.{key}" if self.where else key
        return ProfileError(f"profile {self.file}: field {where}: missing")

    def string(self) -> str:
        if not isinstance(self.value, str) or not self.value.strip():
            raise self.fail(f"expected a non-empty string, got {brief(self.value, 60)}")
        return self.value.strip()

    def integer(self) -> int:
        if not isinstance(self.value, int) or isinstance(self.value, bool):
            raise self.fail(f"expected an integer, got {brief(self.value, 60)}")
        return self.value

    def number(self) -> float:
        if not isinstance(self.value, (int, float)) or isinstance(self.value, bool) or not math.isfinite(self.value):
            raise self.fail(f"expected a number, got {brief(self.value, 60)}")
        return float(self.value)

    def items(self) -> Iterator[FieldReader]:
        if not isinstance(self.value, list):
            raise self.fail(f"expected a list, got {type(self.value).__name__}")
        for i in range(len(self.value)):
            yield self.child(i)

    def strings(self) -> tuple[str, ...]:
        return tuple(n.string() for n in self.items())

    def string_map(self) -> dict[str, str]:
        return {str(k): self.child(k).string() for k in self.mapping()}

    def opt_str(self, key: str) -> str:
        n = self.get(key, required=False)
        return "" if n is None else n.string()

    def opt_strings(self, key: str) -> tuple[str, ...]:
        n = self.get(key, required=False)
        return () if n is None else n.strings()

    def unknown_keys(self, allowed: set[str]) -> None:
        extra = sorted(set(self.mapping()) - allowed)
        if extra:
            where = f"{self.where}.{extra[0]}" if self.where else extra[0]
            raise ProfileError(
                f"profile {self.file}: field {where}: unknown field; expected one of: {', '.join(sorted(allowed))}"
            )


def _steps(node: FieldReader) -> tuple[float, ...]:
    vals = [n.number() for n in node.items()]
    if not vals:
        raise node.fail("no steps")
    if any(v <= 0 for v in vals):
        raise node.fail("steps must be positive")
    for i in range(1, len(vals)):
        if vals[i] == vals[i - 1]:
            raise node.fail(f"duplicate step {vals[i]:g}")
        if vals[i] < vals[i - 1]:
            raise node.fail(f"steps must be ascending ({vals[i - 1]:g} before {vals[i]:g})")
    return tuple(vals)


def _jetpacks(node: FieldReader) -> tuple[int, ...]:
    out = tuple(n.integer() for n in node.items())
    bad = [j for j in out if j not in JETPACKS]
    if bad or not out:
        raise node.fail(f"expected JetPack major versions from {list(JETPACKS)}, got {list(out)}")
    return out


def _choice(node: FieldReader, choices: tuple[str, ...]) -> str:
    s = node.string()
    if s not in choices:
        raise node.fail(f"{brief(s, 60)} is not one of: {', '.join(choices)}")
    return s


def _control(name: str, node: FieldReader) -> ClockControl:
    node.unknown_keys({"interface", "unit", "variants", "files", "protocol", "paths", "clusters", "note", "unknown"})
    variants = []
    for v in node.get("variants").items():  # type: ignore[union-attr]
        v.unknown_keys({"path", "jetpack", "note"})
        path = v.get("path").string()  # type: ignore[union-attr]
        if not path.startswith("/"):
            raise v.child("path").fail(f"expected an absolute path, got {brief(path, 60)}")
        variants.append(PathVariant(path, _jetpacks(v.get("jetpack")), v.opt_str("note")))  # type: ignore[arg-type]
    if not variants:
        raise node.child("variants").fail("at least one path variant is needed")
    clusters = []
    cl = node.get("clusters", required=False)
    if cl is not None:
        seen: set[int] = set()
        for c in cl.items():
            c.unknown_keys({"policy", "cpus"})
            cpus = tuple(n.integer() for n in c.get("cpus").items())  # type: ignore[union-attr]
            if not cpus or seen & set(cpus):
                raise c.child("cpus").fail("empty, or a CPU listed in two clusters")
            seen |= set(cpus)
            clusters.append(CpuCluster(c.get("policy").string(), cpus))  # type: ignore[union-attr]
    interface = _choice(node.get("interface"), INTERFACES)  # type: ignore[arg-type]
    if interface == "cpufreq" and not clusters:
        raise node.child_missing("clusters")
    paths = node.get("paths", required=False)
    return ClockControl(
        name=name,
        interface=interface,
        unit=_choice(node.get("unit"), UNITS),  # type: ignore[arg-type]
        variants=tuple(variants),
        files=node.get("files").string_map(),  # type: ignore[union-attr]
        protocol=node.opt_strings("protocol"),
        paths={} if paths is None else paths.string_map(),
        clusters=tuple(clusters),
        note=node.opt_str("note"),
        unknown=node.opt_strings("unknown"),
    )


def _power(node: FieldReader) -> PowerSpec:
    node.unknown_keys({"sensor", "interfaces", "rails", "board_power", "note", "unknown"})
    interfaces = []
    for n in node.get("interfaces").items():  # type: ignore[union-attr]
        n.unknown_keys({"kind", "jetpack", "glob", "channel_base", "files"})
        base = n.get("channel_base").integer()  # type: ignore[union-attr]
        if base not in (0, 1):
            raise n.child("channel_base").fail(f"expected 0 or 1, got {base}")
        files = n.get("files").string_map()  # type: ignore[union-attr]
        for role in ("label", "voltage_mv", "current_ma"):
            if role not in files:
                raise n.child("files").child_missing(role)
        interfaces.append(
            PowerInterface(
                kind=_choice(n.get("kind"), POWER_KINDS),  # type: ignore[arg-type]
                jetpack=_jetpacks(n.get("jetpack")),  # type: ignore[arg-type]
                glob=n.get("glob").string(),  # type: ignore[union-attr]
                channel_base=base,
                files=files,
            )
        )
    rails = []
    seen: set[str] = set()
    for n in node.get("rails").items():  # type: ignore[union-attr]
        n.unknown_keys({"name", "address", "channel", "note"})
        name = n.get("name").string()  # type: ignore[union-attr]
        if name in seen:
            raise n.child("name").fail(f"duplicate rail {brief(name, 60)}")
        seen.add(name)
        addr = n.get("address").string()  # type: ignore[union-attr]
        if not re.fullmatch(r"0x4[0-3]", addr):
            raise n.child("address").fail(f"expected an INA3221 I2C address 0x40-0x43, got {brief(addr, 60)}")
        ch = n.get("channel").integer()  # type: ignore[union-attr]
        if ch not in (1, 2, 3):
            raise n.child("channel").fail(f"expected channel 1, 2 or 3, got {ch}")
        rails.append(PowerRail(name, addr, ch, n.opt_str("note")))
    bp = node.get("board_power")
    board = bp.strings()  # type: ignore[union-attr]
    if not board:
        raise bp.fail("at least one rail is needed")  # type: ignore[union-attr]
    for r in board:
        if r not in seen:
            raise bp.fail(f"rail {brief(r, 60)} is not listed in power.rails")  # type: ignore[union-attr]
    return PowerSpec(
        sensor=node.get("sensor").string(),  # type: ignore[union-attr]
        interfaces=tuple(interfaces),
        rails=tuple(rails),
        board_power=board,
        note=node.opt_str("note"),
        unknown=node.opt_strings("unknown"),
    )


def _sim_tree(node: FieldReader) -> dict[str, Any]:
    """Check the sim block is plain data (mappings, lists, numbers, strings); the twin checks the rest."""

    def walk(n: FieldReader) -> None:
        v = n.value
        if isinstance(v, Mapping):
            for k in v:
                if not isinstance(k, str):
                    raise n.fail(f"keys must be strings, got {brief(k, 60)}")
                walk(n.child(k))
        elif isinstance(v, list):
            for c in n.items():
                walk(c)
        elif isinstance(v, bool) or v is None:
            return
        elif isinstance(v, (int, float)):
            n.number()
        elif not isinstance(v, str):
            raise n.fail(f"unsupported value {brief(v, 60)}")

    node.mapping()
    walk(node)
    return dict(node.value)


TOP_FIELDS = {
    "schema_version", "name", "description", "soc", "models", "model_substrings", "sources",
    "unknown", "knobs", "control", "power", "sim",
}


def parse_profile(data: Any, path: Path) -> DeviceProfile:
    """Validate parsed YAML ``data`` (from ``path``) into a DeviceProfile. Raises ProfileError."""
    root = FieldReader(path, "", data)
    root.mapping()
    root.unknown_keys(TOP_FIELDS)
    version = root.get("schema_version").integer()  # type: ignore[union-attr]
    if version != SCHEMA_VERSION:
        raise root.child("schema_version").fail(f"unsupported version {version}; expected {SCHEMA_VERSION}")
    name = root.get("name").string()  # type: ignore[union-attr]
    if not _NAME_RE.match(name):
        raise root.child("name").fail(f"{brief(name, 60)} is not a valid profile name (lowercase, digits, -_.)")
    if path.suffix in (".yaml", ".yml") and path.stem != name:
        raise root.child("name").fail(f"{brief(name, 60)} does not match the file name {brief(path.name, 60)}")
    models = root.get("models").strings()  # type: ignore[union-attr]
    if not models:
        raise root.child("models").fail("at least one /proc/device-tree/model string is needed")

    control = {}
    cnode = root.get("control")
    for cname in cnode.mapping():  # type: ignore[union-attr]
        control[str(cname)] = _control(str(cname), cnode.child(cname))  # type: ignore[union-attr]

    knobs: dict[str, KnobSpec] = {}
    knode = root.get("knobs")
    for kname in knode.mapping():  # type: ignore[union-attr]
        kn = knode.child(kname)  # type: ignore[union-attr]
        if kname not in CLOCK_KNOBS:
            raise kn.fail(f"unknown hardware knob; expected one of: {', '.join(CLOCK_KNOBS)}")
        kn.unknown_keys({"steps", "control", "note"})
        ctl = kn.get("control").string()  # type: ignore[union-attr]
        if ctl not in control:
            raise kn.child("control").fail(f"no control entry {brief(ctl, 60)} (have: {', '.join(control) or 'none'})")
        knobs[kname] = KnobSpec(kname, _steps(kn.get("steps")), ctl, kn.opt_str("note"))  # type: ignore[arg-type]
    if "gpu_mhz" not in knobs:
        raise knode.child_missing("gpu_mhz")  # type: ignore[union-attr]

    return DeviceProfile(
        name=name,
        path=path,
        description=root.get("description").string(),  # type: ignore[union-attr]
        soc=root.get("soc").string(),  # type: ignore[union-attr]
        models=models,
        model_substrings=root.opt_strings("model_substrings"),
        knobs=knobs,
        control=control,
        power=_power(root.get("power")),  # type: ignore[arg-type]
        sim=_sim_tree(root.get("sim")),  # type: ignore[arg-type]
        sources=root.opt_strings("sources"),
        unknown=root.opt_strings("unknown"),
    )


# ----- public API --------------------------------------------------------------------------------
def list_profiles(directory: Path | None = None) -> list[str]:
    """Names of the built-in profiles (file stems under ``device_profiles/``), sorted."""
    d = directory or PROFILE_DIR
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def profile_path(name_or_path: str | Path) -> Path:
    """The file for a profile name (``jetson-agx-orin``) or a path. Raises ProfileError if absent."""
    text = str(name_or_path).strip()
    if not text:
        raise ProfileError("empty profile name; expected one of: " + ", ".join(list_profiles()))
    p = Path(text).expanduser()
    if p.suffix in (".yaml", ".yml") or "/" in text or p.is_file():
        if not p.is_file():
            raise ProfileError(f"profile file {p} not found")
        return p
    builtin = PROFILE_DIR / f"{text}.yaml"
    if not builtin.is_file():
        raise ProfileError(
            f"unknown profile {brief(text, 60)}; expected one of: {', '.join(list_profiles())} or a .yaml path"
        )
    return builtin


_CACHE: dict[tuple[Path, float], DeviceProfile] = {}


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load and validate a profile by built-in name or file path. Raises ProfileError (exit 2)."""
    path = profile_path(name_or_path)
    try:
        key = (path.resolve(), path.stat().st_mtime)
    except OSError as e:
        raise ProfileError(f"profile {path}: cannot read ({e.strerror})") from None
    if key in _CACHE:
        return _CACHE[key]
    try:
        text = safe_yaml.read_text(path)
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"profile {path}: cannot read ({e})") from None
    try:
        data = safe_yaml.load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ProfileError(f"profile {path}: invalid YAML{where}: {clip(problem, 120)}") from None
    if data is None:
        raise ProfileError(f"profile {path}: file is empty")
    prof = parse_profile(data, path)
    _CACHE[key] = prof
    return prof


def _clean_model(text: str) -> str:
    return text.replace("\x00", "").strip()


def match_model(model: str, directory: Path | None = None) -> DeviceProfile | None:
    """The built-in profile for a ``/proc/device-tree/model`` string, or None.

    An exact match of ``models`` wins; otherwise the profile with the longest ``model_substrings``
    entry contained in the string (case-insensitive).
    """
    want = _clean_model(model)
    if not want:
        return None
    d = directory or PROFILE_DIR
    profiles = [load_profile(d / f"{n}.yaml") for n in list_profiles(d)]
    for p in profiles:
        if want in p.models:
            return p
    best: tuple[int, DeviceProfile] | None = None
    low = want.lower()
    for p in profiles:
        for s in p.model_substrings:
            if s.lower() in low and (best is None or len(s) > best[0]):
                best = (len(s), p)
    return best[1] if best else None
