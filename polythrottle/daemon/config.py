"""The daemon's YAML configuration file: fields, defaults, validation with ``FILE: FIELD: problem`` errors.

Relative paths in the file are relative to the file's directory. Validation here covers types and
ranges only; the device, workload, knobs and baseline are checked when the daemon opens the device
(still before it writes anything). See README "Running as a service" for the reference.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from polythrottle import paths, safe_yaml
from polythrottle.carbon import WORLD_AVERAGE, CarbonIntensity
from polythrottle.carbon import resolve as resolve_carbon
from polythrottle.errors import BadInputError, brief, clip

DEFAULT_SOCKET = Path("/run/polythrottle/control.sock")
"""The system socket; the default for a config without ``socket`` is ``polythrottle.paths.socket_path()``."""
DEFAULT_METRICS_ADDRESS = "127.0.0.1"
DEFAULT_METRICS_PORT = 9347
DEFAULT_CARBON_G_PER_KWH = WORLD_AVERAGE.intensity_g_per_kwh
"""Global average carbon intensity of electricity generation in 2023, 481 gCO2/kWh (Ember,
"Electricity generation emission intensity", 2024 data release). Set your grid's value, or your
country's (``carbon_country``, from ``polythrottle.carbon``'s dataset)."""


class ConfigError(BadInputError):
    """The daemon configuration file is unreadable or invalid. Exit 2, one line naming file and field."""


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus endpoint: ``http://ADDRESS:PORT/metrics`` (port 0: any free port)."""

    address: str = DEFAULT_METRICS_ADDRESS
    port: int = DEFAULT_METRICS_PORT


@dataclass(frozen=True)
class DaemonConfig:
    """Everything the daemon needs. Units in names; see README for each field's meaning."""

    path: Path
    device: str
    slo_ms: float
    workload: str | None = None
    knobs: list[str] | None = None
    baseline: dict[str, Any] = field(default_factory=dict)
    budget: int = 15
    retune_budget: int = 5
    optimizer: str = "cbo"
    seed: int | None = None
    noise: float = 0.0
    percentile: float = 99.0
    window_s: float | None = None
    repeats: int | None = None
    slo_metric: str | None = None  # ttft | tpot | batch (None: the workload's default)
    no_clock_control: bool = False
    state_dir: Path | None = None
    history: str | None = None
    model_files: list[Path] = field(default_factory=list)
    model_version: str | None = None
    watch_interval_s: float = 2.0
    monitor_interval_s: float = 30.0
    socket: Path = field(default_factory=paths.socket_path)
    socket_group: str | None = None
    metrics: MetricsConfig | None = field(default_factory=MetricsConfig)
    carbon_intensity_g_per_kwh: float = DEFAULT_CARBON_G_PER_KWH
    carbon_country: str | None = None
    carbon: CarbonIntensity = WORLD_AVERAGE
    """The intensity in use with its country, year and source (from the two fields above; not a YAML field)."""

    def __post_init__(self) -> None:
        if self.carbon.intensity_g_per_kwh != self.carbon_intensity_g_per_kwh:  # built in code with a value
            object.__setattr__(self, "carbon", CarbonIntensity(self.carbon_country, self.carbon_intensity_g_per_kwh,
                                                               None, "given"))

    def resolved_state_dir(self) -> Path:
        """``state_dir``, else the default state directory (``polythrottle.paths.state_dir``)."""
        return paths.state_dir(self.state_dir)

    def history_path(self) -> str:
        """``history`` (a path or a URL), else the default history (``polythrottle.paths.default_history``)."""
        return self.history if self.history is not None else paths.default_history(self.state_dir)

    def same_device(self, other: DaemonConfig) -> bool:
        """Whether ``other`` opens the same device the same way (so a reload need not reopen it)."""
        keys = ("device", "workload", "noise", "seed", "percentile", "window_s", "repeats", "no_clock_control",
                "state_dir", "slo_metric")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


# ----- field parsers: value -> parsed value, raising ValueError with the problem ----------------------------
def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"must be a non-empty string, got {brief(v, 60)}")
    return v.strip()


def _number(lo: float | None = None, *, strict: bool = False, hi: float | None = None) -> Callable[[Any], float]:
    def parse(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"must be a number, got {brief(v, 60)}")
        if lo is not None and (v <= lo if strict else v < lo):
            raise ValueError(f"must be {'>' if strict else '>='} {lo:g}, got {brief(v, 60)}")
        if hi is not None and v > hi:
            raise ValueError(f"must be <= {hi:g}, got {brief(v, 60)}")
        return float(v)

    return parse


def _int(lo: int) -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be an integer, got {brief(v, 60)}")
        if v < lo:
            raise ValueError(f"must be >= {lo}, got {v}")
        return v

    return parse


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {v!r}")
        return str(v)

    return parse


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {brief(v, 60)}")
    return v


def _str_list(v: Any) -> list[str]:
    items = [s.strip() for s in v.split(",")] if isinstance(v, str) else v
    if not isinstance(items, list) or not items or not all(isinstance(s, str) and s.strip() for s in items):
        raise ValueError(f"must be a non-empty list of names, got {brief(v, 60)}")
    names = [s.strip() for s in items]
    if len(set(names)) != len(names):
        raise ValueError(f"lists a name twice: {clip(', '.join(names), 120)}")
    return names


def _mapping(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise ValueError(f"must be a mapping of knob: value, got {brief(v, 60)}")
    for k, x in v.items():
        if not isinstance(x, str | int | float) or isinstance(x, bool):
            raise ValueError(f"value of {brief(k, 60)} must be a number or a name, got {brief(x, 60)}")
    return dict(v)


class _Reader:
    """Reads fields of one mapping, with errors ``FILE: PREFIX FIELD: problem``."""

    def __init__(self, path: Path, raw: Mapping[str, Any], prefix: str = "") -> None:
        self.path, self.raw, self.prefix = path, raw, prefix

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.prefix}{name}: {problem}")

    def get(self, name: str, parse: Callable[[Any], Any], default: Any = None, *, required: bool = False) -> Any:
        if name not in self.raw or self.raw[name] is None:
            if required:
                raise self.error(name, "is required")
            return default
        try:
            return parse(self.raw[name])
        except ValueError as e:
            raise self.error(name, str(e)) from None

    def path_field(self, name: str, default: Path | None = None) -> Path | None:
        text = self.get(name, _str)
        if text is None:
            return default
        p = Path(os.path.expandvars(text)).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    def check_unknown(self, known: set[str]) -> None:
        for key in self.raw:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known fields: {', '.join(sorted(known))}"
                raise ConfigError(f"{self.path}: {self.prefix}unknown field {brief(key, 60)}{hint}")


FIELDS = {f.name for f in fields(DaemonConfig)} - {"path", "carbon"}


def parse_config(raw: Any, path: Path) -> DaemonConfig:
    """Validate the parsed YAML document ``raw`` read from ``path``. Raises ConfigError."""
    if not isinstance(raw, dict):
        kind = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(f"{path}: expected a mapping of fields (device: ..., slo_ms: ...), got {kind}")
    r = _Reader(path, raw)
    r.check_unknown(FIELDS)
    budget = r.get("budget", _int(2), 15)
    retune = r.get("retune_budget", _int(2), 5)
    if retune > budget:
        raise r.error("retune_budget", f"must be <= budget ({budget}), got {retune}")
    optimizer = r.get("optimizer", _str, "cbo")
    from polythrottle.optim import OPTIMIZERS

    if optimizer not in OPTIMIZERS:
        raise r.error("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {brief(optimizer, 60)}")
    model_files = [Path(p) for p in (r.get("model_files", _str_list) or [])]
    model_files = [p if p.is_absolute() else (path.parent / p).resolve() for p in
                   (Path(os.path.expandvars(str(p))).expanduser() for p in model_files)]
    model_version = r.get("model_version", _str)
    if model_files and model_version:
        raise r.error("model_version", "give model_files or model_version, not both")
    metrics = _metrics(path, raw.get("metrics", {}))
    seed = r.get("seed", _int(0))
    carbon_country = r.get("carbon_country", _str)
    try:
        carbon = resolve_carbon(carbon_country, r.get("carbon_intensity_g_per_kwh", _number(0)))
    except BadInputError as e:
        raise r.error("carbon_country", str(e)) from None
    return DaemonConfig(
        path=path,
        device=r.get("device", _str, required=True),
        slo_ms=r.get("slo_ms", _number(0, strict=True), required=True),
        workload=_workload(r.get("workload", _str), path),
        knobs=r.get("knobs", _str_list),
        baseline=r.get("baseline", _mapping, {}),
        budget=budget,
        retune_budget=retune,
        optimizer=optimizer,
        seed=seed,
        noise=r.get("noise", _number(0), 0.0),
        percentile=r.get("percentile", _number(0, strict=True, hi=100), 99.0),
        window_s=r.get("window_s", _number(0, strict=True)),
        repeats=r.get("repeats", _int(1)),
        slo_metric=r.get("slo_metric", _choice("ttft", "tpot", "batch")),
        no_clock_control=r.get("no_clock_control", _bool, False),
        state_dir=r.path_field("state_dir"),
        history=_history_field(r),
        model_files=model_files,
        model_version=model_version,
        watch_interval_s=r.get("watch_interval_s", _number(0, strict=True), 2.0),
        monitor_interval_s=r.get("monitor_interval_s", _number(0), 30.0),
        socket=r.path_field("socket") or paths.socket_path(),
        socket_group=r.get("socket_group", _str),
        metrics=metrics,
        carbon_intensity_g_per_kwh=carbon.intensity_g_per_kwh,
        carbon_country=carbon.country,
        carbon=carbon,
    )


def _history_field(r: _Reader) -> str | None:
    """A URL (``postgresql://``, ``sqlite:///``) as written; a plain path relative to the config's directory."""
    text = r.get("history", _str)
    if text is None or "://" in text:
        return text
    path = r.path_field("history")
    return None if path is None else str(path)


def _workload(spec: str | None, path: Path) -> str | None:
    """``FILE.py:FUNCTION`` with a relative FILE resolves against the config's directory (never the
    daemon's working directory)."""
    if spec is None or ":" not in spec:
        return spec
    target, _, func = spec.rpartition(":")
    if not target.endswith(".py"):
        return spec
    f = Path(os.path.expandvars(target)).expanduser()
    return f"{f if f.is_absolute() else (path.parent / f).resolve()}:{func}"


def _metrics(path: Path, raw: Any) -> MetricsConfig | None:
    if raw is False or raw is None:
        return None
    if raw is True:
        return MetricsConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: metrics: must be false or a mapping (address, port), got {brief(raw, 60)}")
    r = _Reader(path, raw, "metrics.")
    r.check_unknown({"address", "port"})
    port = r.get("port", _int(0), DEFAULT_METRICS_PORT)
    if port > 65535:
        raise r.error("port", f"must be <= 65535, got {port}")
    return MetricsConfig(address=r.get("address", _str, DEFAULT_METRICS_ADDRESS), port=port)


def load_config(path: str | os.PathLike[str]) -> DaemonConfig:
    """Read and validate the config file at ``path``. Raises ConfigError (one line: file, field, problem)."""
    p = Path(path).expanduser().resolve()
    try:
        text = safe_yaml.read_text(p)
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"{p}: cannot read the config file (permission denied)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read the config file ({e})") from None
    try:
        raw = safe_yaml.load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or (str(e).splitlines() or ["?"])[0]
        raise ConfigError(f"{p}: not valid YAML{where}: {clip(problem, 120)}") from None
    return parse_config(raw, p)


__all__ = ["DEFAULT_CARBON_G_PER_KWH", "DEFAULT_SOCKET", "ConfigError", "DaemonConfig", "MetricsConfig",
           "load_config", "parse_config"]
