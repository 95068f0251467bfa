"""``History``: what the tuner, the API and the daemon need of a history (``HistoryStore`` and
``SpooledHistory`` both provide it). For type hints only; no SQLAlchemy import."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from polythrottle.history.records import (
    HistoryKey,
    StoredBest,
    StoredMeasurement,
    VersionSummary,
)
from polythrottle.space import Value


class History(Protocol):
    @property
    def url(self) -> str:  # where it is, password masked
        ...

    def begin_tune(self, key: HistoryKey, model_version: str, *, slo_ms: float, optimizer: str,
                   knobs: Sequence[str], warm_from: str | None = None, unit: str = "",
                   client_id: str | None = None) -> int: ...

    def add_measurement(self, tune_id: int, *, step: int, config: Mapping[str, Value], energy_j: float,
                        latency_ms: float, role: str, energy_rel_std: float | None = None,
                        latency_rel_std: float | None = None, extra: Mapping[str, Any] | None = None) -> None: ...

    def finish_tune(self, tune_id: int, *, best_config: Mapping[str, Value] | None, best_energy_j: float | None = None,
                    best_latency_ms: float | None = None, baseline_energy_j: float | None = None,
                    stop_reason: str = "", status: str = "done") -> None: ...

    def record_tune(self, key: HistoryKey, model_version: str, result: Any, *, warm_from: str | None = None,
                    unit: str = "") -> int: ...

    def best(self, key: HistoryKey, *, model_version: str, slo_ms: float | None = None,
             unit: str | None = None) -> StoredBest | None: ...

    def observations(self, key: HistoryKey, *, model_version: str | None = None,
                     unit: str | None = None) -> list[StoredMeasurement]: ...

    def model_versions(self, key: HistoryKey, *, unit: str | None = None) -> list[VersionSummary]: ...

    def previous_version(self, key: HistoryKey, current: str, *, unit: str | None = None) -> str | None: ...

    def keys(self) -> list[HistoryKey]: ...

    def close(self) -> None: ...


def is_history(obj: object) -> bool:
    """Whether ``obj`` can serve as a history store here: it has the methods a tune records and warm-starts
    with (``begin_tune``, ``add_measurement``, ``observations``), as ``HistoryStore`` and ``SpooledHistory`` do."""
    return all(callable(getattr(obj, m, None)) for m in ("begin_tune", "add_measurement", "observations"))


__all__ = ["History", "is_history"]
