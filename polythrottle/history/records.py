"""What the history stores and returns: the key, rows as written (with client ids) and rows as read.

No database code here (and no SQLAlchemy import): these types are imported by ``import polythrottle``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from polythrottle.errors import brief
from polythrottle.history.errors import HistoryError
from polythrottle.space import Config, SearchSpace, Value

TUNE_STATUSES = ("running", "done", "failed")


@dataclass(frozen=True)
class HistoryKey:
    """What makes measurements comparable, apart from the model version and the unit.

    device: ``DeviceIdentity.device`` (``sim:jetson-agx-orin``, ``jetson:jetson-agx-orin``,
    ``nvml:nvidia-h200``, ``replay``). workload: the workload spec as given ("" if none).
    space: fingerprint of the tuned knob space and the fixed knobs (``space_fingerprint``).
    """

    device: str
    workload: str
    space: str

    @property
    def board(self) -> str:
        """The board or GPU part of ``device`` (``sim:jetson-agx-orin`` -> ``jetson-agx-orin``; "" for replay)."""
        return self.device.partition(":")[2]


def space_fingerprint(space: SearchSpace, fixed: Mapping[str, Value] | None = None) -> str:
    """A short stable hash of a knob space: knob names and values, and the values held fixed."""
    doc = {
        "knobs": [[k.name, [str(v) for v in k.values]] for k in space.knobs],
        "fixed": {k: str(v) for k, v in sorted((fixed or {}).items())},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def to_json(value: Any) -> str:
    """The one JSON encoding of configs and knob lists (sorted keys: equal configs give equal text)."""
    return json.dumps(value, sort_keys=True, default=str)


def opt_float(x: float | None) -> float | None:
    """``x`` as a float, None for None, NaN or infinity (not storable in every database)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def new_tune_client_id() -> str:
    """A globally unique tune id made by the writer (so an upload can be repeated without doubling)."""
    return uuid.uuid4().hex


def measurement_client_id(tune_client_id: str, step: int) -> str:
    """A measurement's client id: its tune's client id and its step (unique within the tune)."""
    return f"{tune_client_id}:{int(step)}"


@dataclass
class TuneRow:
    """A tune as written, identified by ``client_id`` across databases (a spool and the server)."""

    client_id: str
    device: str
    workload: str
    space: str
    model_version: str
    unit: str
    slo_ms: float
    optimizer: str
    knobs: str  # JSON list of the tuned knob names
    warm_from: str | None
    status: str
    started_at: float  # unix seconds
    finished_at: float | None = None
    best_config: str | None = None  # JSON object; None when nothing was feasible or not finished
    best_energy_j: float | None = None
    best_latency_ms: float | None = None
    baseline_energy_j: float | None = None
    stop_reason: str | None = None

    @classmethod
    def begin(cls, key: HistoryKey, model_version: str, *, slo_ms: float, optimizer: str, knobs: Sequence[str],
              warm_from: str | None, unit: str, client_id: str | None = None) -> TuneRow:
        """A new ``running`` tune, started now. Raises HistoryError on a bad SLO, or on a device, workload,
        model version or unit that is not printable text on one line (a newline or escape in a stored
        identifier would break every table and export that shows it)."""
        if not (math.isfinite(float(slo_ms)) and float(slo_ms) > 0):
            raise HistoryError(f"refusing to store a tune with slo_ms={slo_ms}")
        for column, text in (("device", key.device), ("workload", key.workload), ("model_version", model_version),
                             ("unit", unit)):
            if not isinstance(text, str) or not text.isprintable():
                raise HistoryError(f"refusing to store a tune with {column}={brief(text, 60)}: "
                                   "not printable text on one line")
        return cls(client_id=client_id or new_tune_client_id(), device=key.device, workload=key.workload,
                   space=key.space, model_version=model_version, unit=unit, slo_ms=float(slo_ms),
                   optimizer=optimizer, knobs=to_json(list(knobs)), warm_from=warm_from, status="running",
                   started_at=time.time())

    def finish(self, *, best_config: Mapping[str, Value] | None, best_energy_j: float | None,
               best_latency_ms: float | None, baseline_energy_j: float | None, stop_reason: str,
               status: str) -> None:
        """Mark finished now (``done`` or ``failed``) with its recommendation."""
        if status not in TUNE_STATUSES or status == "running":
            raise HistoryError(f"a tune finishes as 'done' or 'failed', not {status!r}")
        self.status = status
        self.finished_at = time.time()
        self.best_config = None if best_config is None else to_json(dict(best_config))
        self.best_energy_j = opt_float(best_energy_j)
        self.best_latency_ms = opt_float(best_latency_ms)
        self.baseline_energy_j = opt_float(baseline_energy_j)
        self.stop_reason = stop_reason

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MeasurementRow:
    """A measurement as written: ``client_id`` is ``measurement_client_id(tune_client_id, step)``."""

    client_id: str
    tune_client_id: str
    step: int
    config: str  # JSON object, the full device config
    energy_j: float  # energy per inference, joules
    latency_ms: float
    energy_rel_std: float | None
    latency_rel_std: float | None
    role: str  # baseline | explore | recheck | ...
    measured_at: float  # unix seconds
    extra: str | None = None  # JSON object or None

    @classmethod
    def new(cls, tune_client_id: str, *, step: int, config: Mapping[str, Value], energy_j: float,
            latency_ms: float, role: str, energy_rel_std: float | None = None,
            latency_rel_std: float | None = None, extra: Mapping[str, Any] | None = None) -> MeasurementRow:
        """A measurement made now. Raises HistoryError unless energy and latency are finite and positive."""
        if not (math.isfinite(energy_j) and energy_j > 0 and math.isfinite(latency_ms) and latency_ms > 0):
            raise HistoryError(f"refusing to store a measurement with energy_j={energy_j}, latency_ms={latency_ms}")
        return cls(client_id=measurement_client_id(tune_client_id, step), tune_client_id=tune_client_id,
                   step=int(step), config=to_json(dict(config)), energy_j=float(energy_j),
                   latency_ms=float(latency_ms), energy_rel_std=opt_float(energy_rel_std),
                   latency_rel_std=opt_float(latency_rel_std), role=role, measured_at=time.time(),
                   extra=to_json(dict(extra)) if extra else None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StoredMeasurement:
    """One persisted measurement. ``config`` is the full device config; ``unit`` that of its tune."""

    tune_id: int
    model_version: str
    step: int
    config: Config
    energy_j: float
    latency_ms: float
    role: str
    measured_at: float
    energy_rel_std: float | None = None
    latency_rel_std: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    unit: str = ""


@dataclass(frozen=True)
class StoredBest:
    """The recommendation of a finished tune."""

    tune_id: int
    model_version: str
    slo_ms: float
    config: Config
    energy_j: float
    latency_ms: float
    finished_at: float
    measurements: int
    baseline_energy_j: float | None = None
    warm_from: str | None = None
    unit: str = ""


@dataclass(frozen=True)
class VersionSummary:
    """A model version seen for a key: how many tunes and measurements, and when it was last tuned."""

    model_version: str
    tunes: int
    measurements: int
    last_tuned_at: float


@dataclass(frozen=True)
class StoredTune:
    """A tune as read back (``history ls``/``show``): its key, unit, status, recommendation and size."""

    id: int
    client_id: str
    key: HistoryKey
    model_version: str
    unit: str
    slo_ms: float
    optimizer: str
    knobs: list[str]
    warm_from: str | None
    status: str
    started_at: float
    finished_at: float | None
    best_config: Config | None
    best_energy_j: float | None
    best_latency_ms: float | None
    baseline_energy_j: float | None
    stop_reason: str | None
    measurements: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("key"))
        d["board"] = self.key.board
        return d


@dataclass(frozen=True)
class ExportedMeasurement:
    """One measurement with everything needed to read it alone (``history export``)."""

    tune_id: int
    measurement_id: str  # the client id: stable across databases
    device: str
    workload: str
    space: str
    model_version: str
    unit: str
    slo_ms: float
    step: int
    role: str
    config: Config
    energy_j: float
    latency_ms: float
    energy_rel_std: float | None
    latency_rel_std: float | None
    measured_at: float

    @property
    def board(self) -> str:
        return self.device.partition(":")[2]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["board"] = self.board
        return d


__all__ = [
    "ExportedMeasurement",
    "HistoryKey",
    "MeasurementRow",
    "StoredBest",
    "StoredMeasurement",
    "StoredTune",
    "TuneRow",
    "VersionSummary",
    "measurement_client_id",
    "new_tune_client_id",
    "space_fingerprint",
    "to_json",
]
