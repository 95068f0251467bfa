"""The daemon's YAML configuration file: ``DaemonConfig`` = the tune spec + the daemon's own fields.

``DaemonConfig`` is ``polythrottle.spec.TuneSpec`` (device, workload, SLO, knobs, budget, ...) plus what only
the service has (``retune_budget``, the model files it watches, intervals, the socket, metrics, carbon),
validated by pydantic with unknown fields refused. The file is loaded with the bounded YAML loader
(``polythrottle.safe_yaml``) and validated strictly: YAML already types its values, so ``slo_ms: "25"``
is refused like ``slo_ms: fast``; an empty value (``budget:``) means the default. Errors are one line,
``FILE: FIELD: problem`` (exit 2). Relative paths (``model_files``, ``state_dir``, ``socket``, ``history``
when it is a path, a ``FILE.py:FUNCTION`` workload, the table or profile file of a ``device``) are relative
to the file's directory, never the daemon's working directory. The device, workload, knobs and baseline
are checked when the daemon opens the device (still before it writes anything). See README "Running as a
service" for the reference.
"""

from __future__ import annotations

import dataclasses
import difflib
import grp
import math
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator

from polythrottle import paths, safe_yaml
from polythrottle.carbon import WORLD_AVERAGE, CarbonIntensity, lookup
from polythrottle.carbon import resolve as resolve_carbon
from polythrottle.errors import BadInputError, PolyThrottleError, brief, clip
from polythrottle.spec import DEVICE_FIELDS, Face, TuneSpec, spec_error

DEFAULT_SOCKET = paths.SYSTEM_SOCKET
"""The system socket; the default for a config without ``socket`` is ``polythrottle.paths.socket_path()``."""
DEFAULT_BUDGET = 15
DEFAULT_RETUNE_BUDGET = 5
DEFAULT_METRICS_ADDRESS = "127.0.0.1"
DEFAULT_METRICS_PORT = 9347
DEFAULT_CARBON_G_PER_KWH = WORLD_AVERAGE.intensity_g_per_kwh
"""Global average carbon intensity of electricity generation in 2023, 481 gCO2/kWh (Ember,
"Electricity generation emission intensity", 2024 data release). Set your grid's value, or your
country's (``carbon_country``, from ``polythrottle.carbon``'s dataset)."""
MAX_SOCKET_PATH_BYTES = paths.MAX_SOCKET_PATH_BYTES


class ConfigError(BadInputError):
    """The daemon configuration file is unreadable or invalid. Exit 2, one line naming file and field."""


class _Worded(ValueError):
    """A problem whose message already says what the value was (no ``, got VALUE`` added)."""


class MetricsConfig(BaseModel):
    """Prometheus endpoint: ``http://ADDRESS:PORT/metrics`` (port 0: any free port)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, protected_namespaces=())

    address: str = Field(default=DEFAULT_METRICS_ADDRESS, min_length=1)
    port: int = Field(default=DEFAULT_METRICS_PORT, ge=0, le=65535)


def _base_dir(info: ValidationInfo) -> Path:
    """The directory relative paths resolve against: the config file's (the working directory in code)."""
    ctx = info.context if isinstance(info.context, dict) else {}
    path = ctx.get("path")
    return Path(path).parent if path is not None else Path.cwd()


def _resolve(text: str, base: Path) -> Path:
    p = Path(os.path.expandvars(text)).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _names(v: Any) -> Any:
    """``a,b`` or a list of non-empty names, none twice (model files); anything else is left to the type."""
    items = [s.strip() for s in v.split(",")] if isinstance(v, str) else v
    if not isinstance(items, list | tuple):
        return v
    if not items or not all(isinstance(s, str) and s.strip() for s in items):
        raise ValueError("must be a non-empty list of names")
    names = [s.strip() for s in items]
    if len(set(names)) != len(names):
        raise _Worded(f"lists a name twice: {clip(', '.join(names), 120)}")
    return names


class DaemonConfig(TuneSpec):
    """Everything the daemon needs: a ``TuneSpec`` and the service's fields. Units in names; see README for
    each field. ``path`` is the file it was read from; ``carbon`` the grid intensity in use."""

    budget: int = Field(default=DEFAULT_BUDGET, ge=2)
    history: str | None = Field(default=None, min_length=1)  # the daemon always keeps a history: a path or a URL
    carbon_intensity_g_per_kwh: float = Field(default=None, ge=0, validate_default=True)  # None: see _intensity
    retune_budget: int = Field(default=DEFAULT_RETUNE_BUDGET, ge=2)
    watch_interval_s: float = Field(default=2.0, ge=0.1)  # smaller: the daemon would spin on stat()
    monitor_interval_s: float = Field(default=30.0, ge=0)
    socket: Path = Field(default_factory=paths.socket_path)
    socket_group: str | None = Field(default=None, min_length=1)
    metrics: MetricsConfig | None = Field(default_factory=lambda: MetricsConfig())

    _path: Path = PrivateAttr(default_factory=lambda: Path("daemon.yaml"))
    _carbon: CarbonIntensity = PrivateAttr(default=WORLD_AVERAGE)

    # ----- today's wording, and paths relative to the file (knobs: TuneSpec's rule, as on every face) -----
    @field_validator("baseline", mode="before")
    @classmethod
    def _baseline(cls, v: Any) -> Any:
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            raise ValueError("must be a mapping of knob: value")
        for k, x in v.items():
            if not isinstance(x, str | int | float) or isinstance(x, bool):
                raise _Worded(f"value of {brief(k, 60)} must be a number or a name, got {brief(x, 60)}")
        return v

    @field_validator("socket_group")
    @classmethod
    def _known_group(cls, v: str | None) -> str | None:
        """The group the socket is given at start: checked here, so ``--check`` and a reload refuse it too."""
        if v is not None:
            try:
                grp.getgrnam(v)
            except KeyError:
                raise _Worded(f"no such group {brief(v, 60)}") from None
        return v

    @field_validator("state_dir", "socket", mode="before")
    @classmethod
    def _path_field(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, str) and v.strip():
            return _resolve(v.strip(), _base_dir(info))
        if v is not None and not isinstance(v, Path):
            raise ValueError("must be a path")
        return v

    @field_validator("socket", mode="after")
    @classmethod
    def _socket_length(cls, v: Path) -> Path:
        """A Unix socket's path fits in ``sun_path`` (the daemon could not listen on a longer one)."""
        why = paths.socket_too_long(v)
        if why:
            raise _Worded(f"{why} (choose a shorter directory)")
        return v

    @field_validator("history", mode="before")
    @classmethod
    def _history_field(cls, v: Any, info: ValidationInfo) -> Any:
        """A URL (``postgresql://``, ``sqlite:///``) as written; a plain path relative to the config's directory."""
        if isinstance(v, str) and v.strip() and "://" not in v:
            return str(_resolve(v.strip(), _base_dir(info)))
        if isinstance(v, str) and v.strip():
            # a malformed URL was refused only when the history was opened, without the file and field
            from polythrottle.history.errors import HistoryError
            from polythrottle.history.target import parse_target

            try:
                parse_target(v)
            except HistoryError as e:
                raise _Worded(str(e)) from None
        return v

    @field_validator("device", mode="before")
    @classmethod
    def _device_field(cls, v: Any, info: ValidationInfo) -> Any:
        """The file a device spec names (``replay:TABLE.csv``, ``sim:``/``jetson:`` ``BOARD.yaml``, options after
        ``?`` kept) resolves against the config's directory; a profile name stays a name."""
        if not isinstance(v, str) or ":" not in v:
            return v
        scheme, _, arg = v.strip().partition(":")
        kind = scheme.strip().lower()
        target, query, options = arg.partition("?") if kind in ("sim", "jetson") else (arg, "", "")
        target = target.strip()
        is_file = kind == "replay" or (kind in ("sim", "jetson")
                                       and (Path(target).suffix in (".yaml", ".yml") or "/" in target))
        if not target or not is_file:
            return v
        return f"{scheme}:{_resolve(target, _base_dir(info))}{query}{options}"

    @field_validator("workload", mode="before")
    @classmethod
    def _workload_field(cls, v: Any, info: ValidationInfo) -> Any:
        """``FILE.py:FUNCTION`` with a relative FILE resolves against the config's directory."""
        if not isinstance(v, str) or ":" not in v:
            return v
        target, _, func = v.strip().rpartition(":")
        if not target.endswith(".py"):
            return v
        return f"{_resolve(target, _base_dir(info))}:{func}"

    @field_validator("model_files", mode="before")
    @classmethod
    def _model_files(cls, v: Any, info: ValidationInfo) -> Any:
        names = _names(v)
        if not isinstance(names, list):
            return names
        return tuple(_resolve(n, _base_dir(info)) for n in names)

    @field_validator("retune_budget")
    @classmethod
    def _retune_within_budget(cls, v: int, info: ValidationInfo) -> int:
        budget = info.data.get("budget")
        if budget is not None and v > budget:
            raise ValueError(f"must be <= budget ({budget})")
        return v

    @field_validator("watch_interval_s", "monitor_interval_s")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("metrics", mode="before")
    @classmethod
    def _metrics(cls, v: Any) -> Any:
        if v is False or v is None:
            return None
        if v is True:
            return {}
        if not isinstance(v, dict):
            raise ValueError("must be false or a mapping (address, port)")
        return v

    @field_validator("carbon_country")
    @classmethod
    def _known_country(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return lookup(v).country
        except BadInputError as e:
            raise _Worded(str(e)) from None

    @field_validator("carbon_intensity_g_per_kwh", mode="before")
    @classmethod
    def _intensity(cls, v: Any, info: ValidationInfo) -> Any:
        """Not given: the country's intensity, else the world average."""
        if v is None:
            return resolve_carbon(info.data.get("carbon_country")).intensity_g_per_kwh
        return v

    def model_post_init(self, context: Any) -> None:
        if isinstance(context, dict) and context.get("path") is not None:
            self._path = Path(context["path"])
        given = "carbon_intensity_g_per_kwh" in self.model_fields_set
        self._carbon = resolve_carbon(self.carbon_country, self.carbon_intensity_g_per_kwh if given else None)

    # ----- what the daemon asks of it ------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The config file (``daemon.yaml`` in the working directory when built in code)."""
        return self._path

    @property
    def carbon(self) -> CarbonIntensity:
        """The intensity in use with its country, year and source."""
        return self._carbon

    def resolved_state_dir(self) -> Path:
        """``state_dir``, else the default state directory (``polythrottle.paths.state_dir``)."""
        return paths.state_dir(self.state_dir)

    def history_path(self) -> str:
        """``history`` (a path or a URL), else the default history (``polythrottle.paths.default_history``)."""
        return self.history if self.history is not None else paths.default_history(self.state_dir)

    def device_options(self) -> Any:
        """The spec's ``DeviceOptions`` with the state directory resolved."""
        return dataclasses.replace(super().device_options(), state_dir=self.resolved_state_dir())

    def same_device(self, other: DaemonConfig) -> bool:
        """Whether ``other`` opens the same device the same way (so a reload need not reopen it)."""
        return all(getattr(self, k) == getattr(other, k) for k in DEVICE_FIELDS)


def config_error(e: ValidationError, path: Path) -> ConfigError:
    """The first problem of ``e`` as ``FILE: FIELD: problem``; an unknown field first, with a hint."""
    errors = e.errors()
    unknown = next((x for x in errors if x.get("type") in ("extra_forbidden", "invalid_key")), None)
    if unknown is not None:
        *where, key = unknown["loc"] or ("?",)
        model: type[BaseModel] = MetricsConfig if where == ["metrics"] else DaemonConfig
        known = sorted(model.model_fields)
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; known fields: {', '.join(known)}"
        prefix = "".join(f"{w}." for w in where)
        return ConfigError(f"{path}: {prefix}unknown field {brief(key, 60)}{hint}")
    first = errors[0]
    said = (first.get("ctx") or {}).get("error")
    if isinstance(said, _Worded):
        name = ".".join(str(x) for x in first.get("loc", ()) if not isinstance(x, int)) or "config"
        return ConfigError(f"{path}: {name}: {said}")
    return ConfigError(str(spec_error(e, Face.YAML, source=str(path))))


def parse_config(raw: Any, path: Path) -> DaemonConfig:
    """Validate the parsed YAML document ``raw`` read from ``path``. Raises ConfigError."""
    if not isinstance(raw, dict):
        kind = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(f"{path}: expected a mapping of fields (device: ..., slo_ms: ...), got {kind}")
    data = {k: v for k, v in raw.items() if v is not None or k == "metrics"}  # empty: the default
    try:
        # the face names the fields of a rule across them (spec.refuse_two_model_versions); the file is added below
        config = DaemonConfig.model_validate(data, strict=True, context={"path": path, "face": Face.YAML})
    except ValidationError as e:
        raise config_error(e, path) from None
    except PolyThrottleError as e:  # a check deeper down (carbon dataset, optimizers) said no
        raise ConfigError(f"{path}: {clip(str(e), 300)}") from None
    why = paths.socket_too_long(config.socket) if "socket" not in data else None  # a given one: _socket_length
    if why:  # the daemon would listen where no client can connect
        raise ConfigError(f"{path}: socket: {why} ({paths.socket_origin()}); set socket: to a shorter path")
    return config


def load_config(path: str | os.PathLike[str], text: str | None = None) -> DaemonConfig:
    """Read and validate the config file at ``path``. Raises ConfigError (one line: file, field, problem).
    ``text``: validate this text as the file at ``path`` (nothing is read; relative paths resolve against the
    directory of ``path``): a config about to be written there, checked before it is."""
    p = Path(path).expanduser().resolve()
    try:
        if text is None:
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
           "config_error", "load_config", "parse_config"]
