"""A tune recorded in the history store and warm-started from it: the one place the CLI, the Python API
and the daemon join ``Tuner``, ``HistoryStore`` and ``WarmStartBO``.

Every measurement is committed to the store as it is made (a tune killed midway keeps what it measured);
the tune is marked ``done`` with its recommendation, or ``failed`` if it raised. With ``warm_start`` and
the ``cbo`` optimizer, the prior is the first of (``choose_prior``): this unit's stored measurements of this
model version (a repeated tune, e.g. for another SLO), other units' of it (the fleet, pooled), this unit's
of the most recently tuned other version, other units' of that version. A fleet whose units disagree is
not used (the next source is tried; ``warm_start.fallback`` says why). When the tune's own history key
holds nothing, the same order is tried on the same device's and workload's measurements under another knob
space (other tuned knobs or steps) whose configs lie in this tune's space (``warm_start.from_space``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from polythrottle.devices.base import Device
from polythrottle.errors import BadInputError
from polythrottle.history import HistoryKey, StoredMeasurement
from polythrottle.history.protocol import History
from polythrottle.identity import history_key
from polythrottle.optim.base import Observation
from polythrottle.optim.pooled_prior import MAX_SPREAD, pool
from polythrottle.space import Value
from polythrottle.tuning.tuner import OnRecord, Tuner, TuneRecord, TuneResult

DEFAULT_MODEL_VERSION = "unversioned"


@dataclass(frozen=True)
class WarmStartInfo:
    """What a warm start started from and what it found (log-unit shift of energy and latency).

    source: ``unit`` (this unit's own measurements) or ``fleet`` (other units of the same board, pooled with
    a level per unit: ``polythrottle.optim.pooled_prior``). units: how many units the prior came from.
    fallback: why the prior was dropped (then the tune went on cold). from_space: the space fingerprint of
    the history key the prior came from when it is another knob space than this tune's (None: the same)."""

    from_version: str
    prior_measurements: int
    source: str = "unit"
    units: int = 1
    shift_energy: float | None = None
    shift_latency: float | None = None
    fallback: str | None = None
    from_space: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def tune_key(tuner: Tuner, device: Device) -> HistoryKey:
    """The history key of ``tuner``'s tuned space on ``device``: the device's identity and workload, the tuned
    knobs and their values, the fixed knobs' values (``polythrottle.identity.history_key``). Every face
    (CLI, Python API, daemon) takes its key from here. The tuned knobs count in the device's order, not the
    order a face listed them in (``--knobs b,a`` is the space of ``a,b``)."""
    fixed = {n: v for n, v in tuner.baseline_config.items() if n not in tuner.tuned_knobs}
    space = tuner.space
    in_device_order = [n for n in tuner.full_space.names if n in tuner.tuned_knobs]
    if in_device_order != list(tuner.tuned_knobs):
        space = tuner.full_space.restrict(in_device_order, tuner.baseline_config)
    return history_key(device.identity(), device.workload_name, space, fixed)


def _same_fixed(config: Mapping[str, Value], tuner: Tuner) -> bool:
    """Whether ``config`` (a stored full config) holds every knob this tune does not tune at the value this
    tune holds it at (a measurement of another knob space is comparable only then)."""
    for knob in tuner.full_space.knobs:
        if knob.name in tuner.tuned_knobs:
            continue
        try:
            if knob.index(config[knob.name]) != knob.index(tuner.baseline_config[knob.name]):
                return False
        except (KeyError, BadInputError):
            return False
    return True


def _observations(stored: Sequence[StoredMeasurement], tuner: Tuner,
                  check_fixed: bool = False) -> list[tuple[str, Observation]]:
    """(unit, observation of the tuned subspace) of each stored measurement whose config lies in it (with
    ``check_fixed``, measurements of another key: also at this tune's values of the knobs it does not tune)."""
    out = []
    for m in stored:
        if check_fixed and not _same_fixed(m.config, tuner):
            continue
        try:
            i = tuner.space.index_of({n: m.config[n] for n in tuner.tuned_knobs})
        except (KeyError, BadInputError):  # a config of another space: not usable here
            continue
        if m.energy_j > 0 and m.latency_ms > 0:
            out.append((m.unit, Observation(i, m.energy_j, m.latency_ms)))
    return out


def choose_prior(store: History, key: HistoryKey, version: str, unit: str,
                 tuner: Tuner) -> tuple[list[Observation], WarmStartInfo] | None:
    """The prior of a warm start, in this order: this unit's measurements of this model version (a repeated
    tune), other units' of this version (the fleet), this unit's of the most recently tuned other version,
    other units' of it. Rows without a unit (written before units were recorded) count as this unit's. A
    fleet whose units disagree in shape is not used (the ``fallback`` says why; the next source is tried).
    When this key holds nothing usable: the same, from the same device's and workload's measurements under
    another knob space (other tuned knobs or steps; ``_other_space_prior``). None: nothing stored, a cold
    start."""
    chosen = _key_prior(store, key, version, unit, tuner)
    if chosen is not None and chosen[1].fallback is None:
        return chosen
    return _other_space_prior(store, key, version, unit, tuner) or chosen


def _key_prior(store: History, key: HistoryKey, version: str, unit: str, tuner: Tuner,
               check_fixed: bool = False) -> tuple[list[Observation], WarmStartInfo] | None:
    """``choose_prior`` within one key (``check_fixed``: a key of another knob space)."""
    versions = [version] + [v.model_version for v in reversed(store.model_versions(key)) if v.model_version != version]
    note: WarmStartInfo | None = None
    space = key.space if check_fixed else None
    for v in versions[:2]:
        stored = _observations(store.observations(key, model_version=v), tuner, check_fixed)
        own = [o for u, o in stored if u in (unit, "")]
        if own:
            return own, WarmStartInfo(v, len(own), from_space=space)
        others = [(u, o) for u, o in stored if u not in (unit, "")]
        if others:
            pooled = pool(others)
            info = WarmStartInfo(v, pooled.measurements, source="fleet", units=pooled.sources, from_space=space)
            if pooled.agrees:
                return pooled.observations, info
            note = note or replace(info, fallback=f"the fleet's units disagree (spread {pooled.spread:.2f} in log "
                                                  f"units, more than {MAX_SPREAD:g}): not used")
    return ([], note) if note is not None else None


def _other_space_prior(store: History, key: HistoryKey, version: str, unit: str,
                       tuner: Tuner) -> tuple[list[Observation], WarmStartInfo] | None:
    """A prior from another knob space of the same device and workload (the tuned knobs or their steps
    changed, e.g. a model version that offers other batch sizes): the measurements whose configs lie in this
    tune's space and hold its fixed knobs at its values, from the key that gives the most of them (ties: the
    one whose chosen version is this version)."""
    best: tuple[list[Observation], WarmStartInfo] | None = None
    for other in store.keys():
        if other == key or other.device != key.device or other.workload != key.workload:
            continue
        chosen = _key_prior(store, other, version, unit, tuner, check_fixed=True)
        if chosen is None or chosen[1].fallback is not None:
            continue
        rank = (len(chosen[0]), chosen[1].from_version == version)
        if best is None or rank > (len(best[0]), best[1].from_version == version):
            best = chosen
    return best


def check_tune(device: Device, slo_ms: float, budget: int = 20, *, knobs: Sequence[str] | None = None,
               baseline: Mapping[str, Value | str] | None = None, seed: int | None = None) -> None:
    """Check a tune's SLO, budget, knobs and baseline against ``device`` without measuring anything: what a
    face calls before it opens (and so creates) a history database. Raises BadInputError."""
    Tuner(device, slo_ms, budget, optimizer="random", knobs=knobs, baseline=baseline, seed=seed)  # imports no torch


def run_tune(
    device: Device,
    slo_ms: float,
    budget: int = 20,
    *,
    store: History | None,
    model_version: str | None = None,
    warm_start: bool = True,
    optimizer: str = "cbo",
    knobs: Sequence[str] | None = None,
    baseline: Mapping[str, Value | str] | None = None,
    seed: int | None = None,
    on_record: OnRecord | None = None,
) -> TuneResult:
    """Tune ``device`` (see ``Tuner``), recording into ``store`` (None: no history, a plain tune).

    ``result.extra`` gains ``model_version``, ``history_tune_id`` and ``warm_start`` (a
    ``WarmStartInfo`` dict, or None for a cold start). Raises what ``Tuner`` raises and HistoryError.
    """
    tuner = Tuner(device, slo_ms, budget, optimizer=optimizer, knobs=knobs, baseline=baseline, seed=seed)
    identity = device.identity()
    if store is None:
        result = tuner.run(on_record)
        result.extra["device_identity"] = asdict(identity)
        return result
    version = model_version or DEFAULT_MODEL_VERSION
    key = tune_key(tuner, device)
    unit = identity.unit

    warm: WarmStartInfo | None = None
    if warm_start and optimizer == "cbo":
        chosen = choose_prior(store, key, version, unit, tuner)
        if chosen is not None:
            prior, warm = chosen
            if warm.fallback is None:
                from polythrottle.optim.warm_start import WarmStartBO  # imports torch

                tuner.optimizer = WarmStartBO(tuner.space, tuner.slo_ms, seed, prior=prior)

    tune_id = store.begin_tune(key, version, slo_ms=slo_ms, optimizer=tuner.optimizer.name,
                               knobs=tuner.tuned_knobs,
                               warm_from=warm.from_version if warm and warm.fallback is None else None, unit=unit)

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
    if warm is not None and warm.fallback is None:
        from polythrottle.optim.warm_start import WarmStartBO

        opt = tuner.optimizer
        assert isinstance(opt, WarmStartBO)
        warm = replace(warm, shift_energy=round(opt.shift[0], 4), shift_latency=round(opt.shift[1], 4),
                       fallback=opt.fallback_reason)
    result.extra.update(
        device_identity=asdict(identity),
        model_version=version,
        history_tune_id=tune_id,
        warm_start=None if warm is None else warm.to_dict(),
    )
    return result


__all__ = ["DEFAULT_MODEL_VERSION", "WarmStartInfo", "check_tune", "run_tune", "tune_key"]
