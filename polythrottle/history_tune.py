"""A tune recorded in the history store and warm-started from it: the one place the CLI, the Python API
and the daemon join ``Tuner``, ``HistoryStore`` and ``WarmStartBO``.

Every measurement is committed to the store as it is made (a tune killed midway keeps what it measured);
the tune is marked ``done`` with its recommendation, or ``failed`` if it raised. With ``warm_start`` and
the ``cbo`` optimizer, the prior is the stored measurements of this model version if there are any
(a repeated tune, e.g. for another SLO), else those of the most recently tuned other version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from polythrottle.devices.base import Device
from polythrottle.history import HistoryKey, space_fingerprint
from polythrottle.space import Value
from polythrottle.tuner import OnRecord, Tuner, TuneRecord, TuneResult

if TYPE_CHECKING:
    from polythrottle.history.protocol import History

DEFAULT_MODEL_VERSION = "unversioned"
SIMULATED_SCHEMES = ("replay", "sim")


def device_identity(spec: str) -> str:
    """The device part of a history key: the spec, except ``replay`` for any replayed table (so a table
    measured for a new model version can be re-tuned warm from an older table's history)."""
    scheme = spec.partition(":")[0].strip().lower()
    return "replay" if scheme == "replay" else spec.strip()


def is_simulated(spec: str) -> bool:
    """Whether ``spec`` names a simulated or replayed device (their history is off unless asked for)."""
    return spec.partition(":")[0].strip().lower() in SIMULATED_SCHEMES


@dataclass(frozen=True)
class WarmStartInfo:
    """What a warm start started from and what it found (log-unit shift of energy and latency)."""

    from_version: str
    prior_measurements: int
    shift_energy: float | None = None
    shift_latency: float | None = None
    fallback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def key_device(device_id: str, profile: str) -> str:
    """The key's device (contract: ``DeviceIdentity.device``) from a device spec and its board profile.
    Interim, until ``polythrottle.identity`` (#13) replaces it: ``sim:...`` -> ``sim:PROFILE``,
    ``jetson...`` -> ``jetson:PROFILE`` when the profile is known, ``replay``, else the spec."""
    scheme = device_id.partition(":")[0].strip().lower()
    if scheme == "sim":
        return "sim:" + (profile or PurePosixPath(device_id.partition(":")[2].split("?", 1)[0]).stem)
    if scheme == "jetson" and profile:
        return f"jetson:{profile}"
    return "replay" if scheme == "replay" else device_id


def default_unit(device_id: str) -> str:
    """The unit id when nothing better is known (interim, until #13): sim -> "0", else "" (unknown)."""
    return "0" if device_id.partition(":")[0].strip().lower() == "sim" else ""


def history_key(tuner: Tuner, device_id: str, *, workload: str = "", profile: str = "") -> HistoryKey:
    """The key of ``tuner``'s tuned space (tuned knobs and their values, the fixed knobs' values)."""
    fixed = {n: v for n, v in tuner.baseline_config.items() if n not in tuner.tuned_knobs}
    return HistoryKey(key_device(device_id, profile), workload, space_fingerprint(tuner.space, fixed))


def run_tune(
    device: Device,
    slo_ms: float,
    budget: int = 20,
    *,
    store: History | None,
    device_id: str,
    workload: str = "",
    profile: str | None = None,
    model_version: str | None = None,
    warm_start: bool = True,
    optimizer: str = "cbo",
    knobs: Sequence[str] | None = None,
    baseline: Mapping[str, Value | str] | None = None,
    seed: int | None = None,
    on_record: OnRecord | None = None,
    unit: str | None = None,
) -> TuneResult:
    """Tune ``device`` (see ``Tuner``), recording into ``store`` (None: no history, a plain tune).

    ``result.extra`` gains ``model_version``, ``history_tune_id`` and ``warm_start`` (a
    ``WarmStartInfo`` dict, or None for a cold start). unit: recorded with the tune (None:
    ``default_unit(device_id)``); the warm start reads this unit's own history.
    Raises what ``Tuner`` raises and HistoryError.
    """
    tuner = Tuner(device, slo_ms, budget, optimizer=optimizer, knobs=knobs, baseline=baseline, seed=seed)
    if store is None:
        return tuner.run(on_record)
    version = model_version or DEFAULT_MODEL_VERSION
    if profile is None:
        profile = device.info().details.get("profile", "")
        if profile.endswith((".yaml", ".yml")):  # a profile file: its name, not where it is installed
            profile = Path(profile).stem
    key = history_key(tuner, device_id, workload=workload, profile=profile)
    unit = default_unit(device_id) if unit is None else unit

    warm: WarmStartInfo | None = None
    if warm_start and optimizer == "cbo":
        own = store.observations(key, model_version=version, unit=unit)
        source = version if own else store.previous_version(key, version, unit=unit)
        if source is not None:
            from polythrottle.optim.warm_start import (  # imports torch
                WarmStartBO,
                configs_to_prior,
            )

            stored = own if source == version else store.observations(key, model_version=source, unit=unit)
            prior = configs_to_prior(
                tuner.space,
                [({n: m.config.get(n) for n in tuner.tuned_knobs}, m.energy_j, m.latency_ms) for m in stored],
            )
            if prior:
                tuner.optimizer = WarmStartBO(tuner.space, tuner.slo_ms, seed, prior=prior)
                warm = WarmStartInfo(source, len(prior))

    tune_id = store.begin_tune(key, version, slo_ms=slo_ms, optimizer=tuner.optimizer.name,
                               knobs=tuner.tuned_knobs, warm_from=warm.from_version if warm else None, unit=unit)

    def record(r: TuneRecord) -> None:
        m = r.measurement
        store.add_measurement(tune_id, step=r.step, config=r.config, energy_j=m.energy_j,
                              latency_ms=m.latency_ms, role=r.role, energy_rel_std=m.energy_rel_std,
                              latency_rel_std=m.latency_rel_std)
        if on_record is not None:
            on_record(r)

    try:
        result = tuner.run(record)
    except BaseException:
        store.finish_tune(tune_id, best_config=None, stop_reason="interrupted or failed", status="failed")
        raise
    best = result.best
    store.finish_tune(
        tune_id,
        best_config=None if best is None else best.config,
        best_energy_j=None if best is None else best.energy_j,
        best_latency_ms=None if best is None else best.latency_ms,
        baseline_energy_j=result.baseline.energy_j,
        stop_reason=result.stop_reason,
    )
    if warm is not None:
        opt = tuner.optimizer
        warm = WarmStartInfo(warm.from_version, warm.prior_measurements, round(opt.shift[0], 4),
                             round(opt.shift[1], 4), opt.fallback_reason)
    result.extra.update(
        model_version=version,
        history_tune_id=tune_id,
        warm_start=None if warm is None else warm.to_dict(),
    )
    return result


__all__ = ["DEFAULT_MODEL_VERSION", "WarmStartInfo", "default_unit", "device_identity", "history_key", "is_simulated",
           "key_device", "run_tune"]
