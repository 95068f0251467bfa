"""The declared spec of a tune: one model for every face (CLI flags, daemon YAML, API keywords).

``TuneSpec`` holds what a tune needs (device, workload, SLO, knobs, budget, baseline, optimizer, seed,
measurement settings, history, model version); ``polythrottle.daemon.config.DaemonConfig`` is a
``TuneSpec`` plus the daemon's own fields. Validation happens here once (pydantic v2, unknown fields
forbidden); the tuner, the devices and the daemon trust what they get.

Errors keep the one-line style and name the field in the user's own terms: ``Face.CLI`` says ``--slo-ms``,
``Face.YAML`` says ``daemon.yaml: slo_ms``, ``Face.API`` says ``slo_ms=``. ``spec_error`` turns a pydantic
``ValidationError`` into that line as a ``BadInputError`` (exit 2); values are shown shortened, never whole.
"""

from __future__ import annotations

import enum
import importlib.util
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from polythrottle.errors import SHOWN_CHARS, BadInputError, MissingDependencyError, shown
from polythrottle.workloads.base import SLO_METRICS, SloMetric

MAX_SHOWN = SHOWN_CHARS
"""Characters of an offending value an error message shows at most."""

Scalar = int | float | str


class Face(enum.Enum):
    """Where a spec came from, for naming fields in errors."""

    CLI = "cli"
    YAML = "yaml"
    API = "api"


CLI_FLAGS = {"carbon_intensity_g_per_kwh": "--carbon-intensity", "model_files": "--model-file"}
"""Fields whose flag is not ``--`` + the name with ``-`` for ``_``."""


def field_name(name: str, face: Face, source: str = "") -> str:
    """``slo_ms`` as the user wrote it: ``--slo-ms`` (CLI), ``FILE: slo_ms`` (YAML), ``slo_ms=`` (API)."""
    if face is Face.CLI:
        return CLI_FLAGS.get(name, "--" + name.replace("_", "-"))
    if face is Face.YAML:
        return f"{source}: {name}" if source else name
    return f"{name}="


def spec_error(e: ValidationError, face: Face, source: str = "") -> BadInputError:
    """The first problem of ``e`` as one line naming the field in ``face``'s terms."""
    err = e.errors()[0]
    loc = [str(x) for x in err.get("loc", ()) if not isinstance(x, int)]
    if not loc:  # a rule across fields
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        return BadInputError(f"{source}: {msg}" if face is Face.YAML and source else msg)
    name = ".".join(loc) if loc else "spec"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        return BadInputError(f"{field_name(name, face, source)}: unknown field")
    if err.get("type") == "missing":
        return BadInputError(f"{field_name(name, face, source)}: is required")
    ctx = err.get("ctx") or {}
    msg = _HOUSE_STYLE.get(str(err.get("type")), msg).format(**{k: _ctx_text(v) for k, v in ctx.items()})
    value = err.get("input")
    got = "" if value is None or isinstance(value, Mapping) else f", got {shown(value)}"
    return BadInputError(f"{field_name(name, face, source)}: {msg}{got}")


def _ctx_text(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a bound such as 2**32 - 1, exactly
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


_HOUSE_STYLE = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "string_too_short": "must not be empty",
    "literal_error": "must be one of {expected}",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
}
"""pydantic error types -> the project's one-line wording (``{ctx}`` values filled in, shortened)."""


def _no_bool(v: Any, info: ValidationInfo | None = None) -> Any:
    """True/False and text are not numbers here (pydantic's lax mode would read True as 1 and ``"25"`` as 25):
    a quoted number in a YAML file or a keyword argument is a mistake worth telling. The CLI converts its
    flags itself (argparse ``type=``)."""
    if isinstance(v, bool):
        raise ValueError("must be a number, not true/false")
    if isinstance(v, str | bytes):
        kind = "an integer" if info is not None and info.field_name in _INTEGER_FIELDS else "a number"
        raise ValueError(f"must be {kind}")
    return v


_INTEGER_FIELDS = frozenset({"seed", "repeats", "budget"})


def _one_line_text(v: str | None) -> str | None:
    """Identifiers stored in the history and printed in tables (device, workload, model version) are
    printable text: a newline, tab, NUL, terminal escape or other control/format character is refused."""
    if v is not None and not v.isprintable():
        raise ValueError("must be printable text on one line (no newline, tab or control characters)")
    return v


def _finite(x: float, what: str) -> float:
    if not math.isfinite(x):
        raise ValueError(f"{what} must be a finite number")
    return x


def parse_knob_list(v: Any) -> tuple[str, ...] | None:
    """The knob-list rule of every face (``--knobs``, the daemon's ``knobs:``, ``knobs=``, ``Tuner``): None
    (all knobs), one string ``"a,b"`` (never read letter by letter; blanks between commas skipped), or a
    non-empty list/tuple of names; names stripped, none twice. Raises ValueError with the problem only
    (``is empty``, ``must be knob names``, ``lists a knob twice: a, a``): the caller names the field."""
    if v is None:
        return None
    if isinstance(v, str):
        names: list[Any] = [s for s in (p.strip() for p in v.split(",")) if s]
        if not names:
            raise ValueError("is empty")
    elif isinstance(v, list | tuple):
        names = [n.strip() if isinstance(n, str) else n for n in v]
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError("must be knob names")
    else:
        raise ValueError("must be a list of knob names or one string 'a,b'")
    if len(set(names)) != len(names):
        raise ValueError(f"lists a knob twice: {', '.join(names)}")
    return tuple(names)


def knob_list(v: Any, name: str = "knobs") -> list[str] | None:
    """``parse_knob_list`` for callers outside a spec (``profile --knobs``, ``Tuner``): the names as a list
    (None: all knobs), or BadInputError ``NAME PROBLEM, got VALUE``."""
    try:
        names = parse_knob_list(v)
    except ValueError as e:
        raise BadInputError(f"{name} {e}, got {shown(v)}") from None
    return None if names is None else list(names)


class DeviceSpec(BaseModel):
    """How to open a device: which one, what it measures and how (``profile``, ``apply``, ``restore``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, protected_namespaces=())

    device: str = Field(min_length=1)
    workload: str | None = Field(None, min_length=1)
    noise: float = Field(0.0, ge=0, le=10)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    percentile: float = Field(99.0, gt=0, le=100)
    window_s: float | None = Field(None, gt=0)
    repeats: int | None = Field(None, ge=1)
    no_clock_control: bool = False
    state_dir: Path | None = None
    slo_metric: SloMetric | None = None

    @field_validator("slo_metric", mode="before")
    @classmethod
    def _known_slo_metric(cls, v: Any) -> Any:
        if v is not None and v not in SLO_METRICS:
            raise ValueError(f"must be one of {', '.join(SLO_METRICS)}")
        return v

    @field_validator("noise", "seed", "percentile", "window_s", "repeats", mode="before")
    @classmethod
    def _numbers_not_bools(cls, v: Any, info: ValidationInfo) -> Any:
        v = _no_bool(v, info)
        if isinstance(v, float) and math.isnan(v):  # before the bound, which said "must be <= 10, got nan"
            raise ValueError("the value must be a finite number")
        return v

    @field_validator("device", "workload")
    @classmethod
    def _printable_device(cls, v: str | None) -> str | None:
        return _one_line_text(v)

    @field_validator("noise", "percentile", "window_s")
    @classmethod
    def _finite_measure(cls, v: float | None) -> float | None:
        return None if v is None else _finite(v, "the value")

    @classmethod
    def parse(cls, data: Mapping[str, Any], face: Face = Face.API, source: str = "") -> Any:
        """Validate ``data``; raises BadInputError naming the field in ``face``'s terms."""
        try:
            return cls.model_validate(dict(data), context={"face": face, "source": source})
        except ValidationError as e:
            raise spec_error(e, face, source) from None

    def device_options(self) -> Any:
        """The ``polythrottle.devices.DeviceOptions`` this spec opens its device with."""
        from polythrottle.devices import DeviceOptions

        return DeviceOptions(workload=self.workload, noise=self.noise, seed=self.seed,
                             no_clock_control=self.no_clock_control, state_dir=self.state_dir,
                             percentile=self.percentile, window_s=self.window_s, repeats=self.repeats,
                             slo_metric=self.slo_metric)


DEVICE_FIELDS: tuple[str, ...] = tuple(DeviceSpec.model_fields)
"""The fields that say which device is opened and how: a face reads these into a ``DeviceSpec``; the daemon
keeps its device open across a reload that changes none of them."""


class TuneSpec(DeviceSpec):
    """Everything a tune needs; see README "Using it" for each field. Units in names."""

    slo_ms: float = Field(ge=1e-3)  # 1 us: smaller is no SLO, and under ~1e-300 its logarithm is not a number
    knobs: tuple[str, ...] | None = None
    baseline: dict[str, Scalar] = Field(default_factory=dict)
    budget: int = Field(20, ge=2)
    optimizer: str = "cbo"
    history: str | Literal[False] | None = None
    model_version: str | None = None
    model_files: tuple[Path, ...] = ()
    warm_start: bool = True
    carbon_country: str | None = None
    carbon_intensity_g_per_kwh: float | None = Field(None, ge=0)

    @field_validator("slo_ms", "budget", "carbon_intensity_g_per_kwh", mode="before")
    @classmethod
    def _tune_numbers_not_bools(cls, v: Any, info: ValidationInfo) -> Any:
        v = _no_bool(v, info)
        if isinstance(v, float) and math.isnan(v):  # before the bound, which said "must be >= 0.001, got nan"
            raise ValueError("the value must be a finite number")
        return v

    @field_validator("slo_ms", "carbon_intensity_g_per_kwh")
    @classmethod
    def _finite_numbers(cls, v: float | None) -> float | None:
        return None if v is None else _finite(v, "the value")

    @field_validator("knobs", mode="before")
    @classmethod
    def _knob_list(cls, v: Any) -> Any:
        return parse_knob_list(v)

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        from polythrottle.optim import OPTIMIZERS

        if v not in OPTIMIZERS:
            raise ValueError(f"must be one of {', '.join(OPTIMIZERS)}")
        if v.startswith("optuna-") and importlib.util.find_spec("optuna") is None:
            # an extra not installed: exit 5 (README "Exit codes"), and refused before a device is opened
            raise MissingDependencyError(f"optimizer {v!r} needs Optuna: pip install 'polythrottle[bench]'")
        return v

    @field_validator("model_version")
    @classmethod
    def _non_empty_version(cls, v: str | None) -> str | None:
        if v is not None and not v:
            raise ValueError("is empty")
        return _one_line_text(v)

    @field_validator("baseline")
    @classmethod
    def _finite_baseline(cls, v: dict[str, Scalar]) -> dict[str, Scalar]:
        for name, x in v.items():
            if isinstance(x, float) and not math.isfinite(x):
                raise ValueError(f"{name}={x} is not a finite number")
        return v

    @model_validator(mode="after")
    def _one_model_version(self, info: ValidationInfo) -> TuneSpec:
        """The face (and a YAML file's name) come in the validation context (``parse``; the daemon config's
        ``parse_config``); a spec built directly is the API's."""
        ctx = info.context or {}
        refuse_two_model_versions({"model_version": self.model_version, "model_files": self.model_files},
                                  ctx.get("face", Face.API), ctx.get("source", ""))
        return self


def _given(value: object) -> bool:
    """Whether a model version's field was given: not None, not an empty string, list or tuple."""
    return value is not None and not (isinstance(value, str | list | tuple) and not value)


def refuse_two_model_versions(given: Mapping[str, object], face: Face, source: str = "") -> None:
    """The rule of every face (``TuneSpec``, so the daemon config; the CLI's ``--model-version``/``--model-file``;
    the API's ``model_version_of``): a model version is given one way. ``given``: the model version's fields as
    the face took them (``model_version``, ``model_files``; the API's ``model``), None or empty when not given.
    Raises BadInputError naming the fields as ``face`` does (``give --model-version or --model-file, not both``;
    ``FILE: give model_version or model_files, not both``; ``give model_version= or model_files=, not both``)."""
    names = [field_name(k, face) for k, v in given.items() if _given(v)]
    if len(names) < 2:
        return
    msg = f"give {names[0]} or {names[1]}, not both" if len(names) == 2 else \
        f"give one of {', '.join(names[:-1])} and {names[-1]}"
    raise BadInputError(f"{source}: {msg}" if face is Face.YAML and source else msg)


def refuse_unkept_model_version(given: Mapping[str, object], face: Face, unkept: str | None) -> None:
    """The rule every face that tunes applies (CLI ``tune``, API ``tune``): a model version only keys the history
    the measurements are recorded in, so one given to a tune that keeps no history (where it was silently
    ignored) is refused. ``given``: the model version's fields as the face took them (``model_version``,
    ``model_files``; the API's ``model``), None or empty when not given; ``unkept``: why the tune keeps no
    history, in ``face``'s terms (None: it keeps one). Call it once the version itself is checked (a missing
    model file is named first). Raises BadInputError naming the field as ``face`` does."""
    name = next((k for k, v in given.items() if _given(v)), None)
    if name is None or unkept is None:
        return
    raise BadInputError(f"{field_name(name, face)} is unused: a model version only keys the history, and this tune "
                        f"keeps none ({unkept})")


__all__ = ["DEVICE_FIELDS", "DeviceSpec", "Face", "TuneSpec", "field_name", "knob_list", "parse_knob_list",
           "refuse_two_model_versions", "refuse_unkept_model_version", "shown", "spec_error"]
