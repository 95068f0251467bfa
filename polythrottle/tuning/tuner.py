"""The tuner joins a device and an optimizer: propose -> apply -> measure -> record -> recommend.

It measures the baseline (the device's default config, or the one given) first, then lets the
optimizer pick configs until the budget is spent or the optimizer ends the tune (``stop_reason`` set
while choosing: the config it returned is then not measured), and reports the recommendation, its
saving against the baseline and the fastest config measured (what to report when nothing met the SLO).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polythrottle import interrupts
from polythrottle.checks import check_seed, is_int, is_real
from polythrottle.devices.base import Device
from polythrottle.errors import BadInputError, brief
from polythrottle.measure.measurement import Measurement
from polythrottle.optim import Observation, Optimizer, make_optimizer
from polythrottle.space import Config, SearchSpace, Value
from polythrottle.spec import knob_list


@dataclass(frozen=True)
class TuneRecord:
    """One measurement made while tuning. ``propose_s``: seconds the optimizer spent choosing it."""

    step: int
    config: Config
    measurement: Measurement
    feasible: bool
    propose_s: float
    role: str  # "baseline", "explore" (optimizer's pick) or "recheck" (re-measured for confidence)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": self.config,
            "energy_j": self.measurement.energy_j,
            "latency_ms": self.measurement.latency_ms,
            "feasible": self.feasible,
            "propose_s": round(self.propose_s, 4),
            "role": self.role,
        }


@dataclass(frozen=True)
class ConfigSummary:
    """A config with its energy per inference and latency (means over every measurement of it)."""

    config: Config
    energy_j: float
    latency_ms: float
    measurements: int
    predicted_energy_j: float | None = None
    predicted_latency_ms: float | None = None
    p_feasible: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "config": self.config,
            "energy_j": self.energy_j,
            "latency_ms": self.latency_ms,
            "measurements": self.measurements,
        }
        for k in ("predicted_energy_j", "predicted_latency_ms", "p_feasible"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d


@dataclass
class TuneResult:
    """What a tune found: ``best`` (None when no measured config met ``slo_ms``), the ``baseline`` it is
    compared with, every measurement in ``history`` and why the tune stopped. Energies per inference in J,
    latencies in ms. ``extra``: what the session and the faces add (``model_version``, ``warm_start``,
    ``history_tune_id``, ``device_identity``, ``carbon``, ...); ``to_dict`` merges it in."""

    slo_ms: float
    optimizer: str
    budget: int
    tuned_knobs: list[str]
    baseline: ConfigSummary
    best: ConfigSummary | None
    history: list[TuneRecord]
    stop_reason: str
    recommendation_reason: str
    extra: dict[str, Any] = field(default_factory=dict)
    fastest: ConfigSummary | None = None
    """The measured config with the lowest mean latency (the lowest latency reachable, as far as measured)."""

    @property
    def feasible(self) -> bool:
        """Whether some measured config met the SLO (there is a ``best``)."""
        return self.best is not None

    @property
    def saving_pct(self) -> float | None:
        """Energy per inference saved by ``best`` against the baseline, in percent (None: no best)."""
        if self.best is None:
            return None
        return 100.0 * (self.baseline.energy_j - self.best.energy_j) / self.baseline.energy_j

    @property
    def lowest_latency_ms(self) -> float:
        """The lowest latency of any single measurement (ms)."""
        return min(r.measurement.latency_ms for r in self.history)

    def to_dict(self) -> dict[str, Any]:
        return {
            "slo_ms": self.slo_ms,
            "optimizer": self.optimizer,
            "budget": self.budget,
            "knobs": self.tuned_knobs,
            "feasible": self.feasible,
            "best": None if self.best is None else self.best.to_dict(),
            "baseline": self.baseline.to_dict(),
            "saving_pct": None if self.saving_pct is None else round(self.saving_pct, 3),
            "measurements": len(self.history),
            "stop_reason": self.stop_reason,
            "recommendation_reason": self.recommendation_reason,
            "fastest": None if self.fastest is None else self.fastest.to_dict(),
            "history": [r.to_dict() for r in self.history],
            **self.extra,
        }


OnRecord = Callable[[TuneRecord], None]


def _count(n: int) -> str:
    return f"{n} measurement" if n == 1 else f"{n} measurements"


class Tuner:
    """Tune ``device`` for the lowest energy per inference with latency <= ``slo_ms``.

    knobs: knobs to tune (default: every knob of the device); the others stay at the baseline.
    baseline: overrides of the device's default config (validated).
    budget: total measurements, the baseline included (>= 2).
    """

    def __init__(
        self,
        device: Device,
        slo_ms: float,
        budget: int = 20,
        *,
        optimizer: str | Callable[[SearchSpace, float, int | None], Optimizer] = "cbo",
        knobs: Sequence[str] | None = None,
        baseline: Mapping[str, Value | str] | None = None,
        seed: int | None = None,
    ) -> None:
        if not is_real(slo_ms) or not slo_ms > 0 or not math.isfinite(slo_ms):
            raise BadInputError(f"slo_ms must be a positive number, got {brief(slo_ms, 40)}")
        if not is_int(budget) or budget < 2:
            raise BadInputError(f"budget must be an integer >= 2 (baseline + one try), got {brief(budget, 40)}")
        check_seed(seed)
        knobs = knob_list(knobs)  # names stripped, none twice; BadInputError otherwise
        if baseline is not None and not isinstance(baseline, Mapping):
            raise BadInputError(f"baseline must be a mapping of knob: value, got {brief(baseline, 60)}")
        if isinstance(optimizer, str):
            from polythrottle.optim import OPTIMIZERS

            if optimizer not in OPTIMIZERS:
                raise BadInputError(
                    f"unknown optimizer {brief(optimizer, 40)}; expected one of: {', '.join(OPTIMIZERS)}"
                )
        elif not callable(optimizer):
            raise BadInputError(f"optimizer must be a name or a factory, got {brief(optimizer, 40)}")
        self.device = device
        self.slo_ms = float(slo_ms)
        self.budget = int(budget)
        self.seed = seed
        self.full_space = device.space()
        err = device.unavailable_knob_error(n for n in (*(knobs or ()), *(baseline or {}))
                                            if n not in self.full_space.names)
        if err is not None:  # a knob of the device that cannot be set here: why, not "unknown knob"
            raise err
        default = dict(device.default_config())
        for name, value in (baseline or {}).items():
            default[name] = self.full_space.knob(name).parse(value)
        self.baseline_config = self.full_space.normalize(default)
        tuned = list(knobs) if knobs else self.full_space.names
        self.space = self.full_space.restrict(tuned, self.baseline_config)
        self.tuned_knobs = tuned
        if isinstance(optimizer, str):
            self.optimizer = make_optimizer(optimizer, self.space, self.slo_ms, seed)
        else:
            self.optimizer = optimizer(self.space, self.slo_ms, seed)
        self.history: list[TuneRecord] = []

    def full_config(self, index: int) -> Config:
        """The device config for point ``index`` of the tuned subspace."""
        cfg = dict(self.baseline_config)
        cfg.update(self.space.config(index))
        return self.full_space.normalize(cfg)

    def _measure(self, config: Config, propose_s: float, role: str) -> Measurement:
        interrupts.check()  # a signal lost while the optimizer proposed: no write for a tune that is over
        self.device.apply(config)
        m = self.device.measure()
        rec = TuneRecord(len(self.history), config, m, m.latency_ms <= self.slo_ms, propose_s, role)
        self.history.append(rec)
        for cb in self._callbacks:
            cb(rec)
        return m

    def _tell(self, index: int, m: Measurement) -> None:
        self.optimizer.tell(
            Observation(index, m.energy_j, m.latency_ms, m.energy_rel_std, m.latency_rel_std)
        )

    def run(self, on_record: OnRecord | None = None) -> TuneResult:
        """Tune; ``on_record`` is called after every measurement. Device errors propagate."""
        self._callbacks = [on_record] if on_record else []
        base_sub = {n: self.baseline_config[n] for n in self.tuned_knobs}
        base_index = self.space.index_of(base_sub)
        first = self._measure(self.baseline_config, 0.0, "baseline")
        self._tell(base_index, first)
        exact = first.energy_rel_std == 0.0 and first.latency_rel_std == 0.0
        stop_reason = f"budget of {self.budget} measurements spent"
        while len(self.history) < self.budget:
            t0 = time.perf_counter()
            index = self.optimizer.ask(remaining=self.budget - len(self.history))
            propose_s = time.perf_counter() - t0
            if self.optimizer.stop_reason:  # the optimizer ends the tune: its last pick is not measured
                stop_reason = self.optimizer.stop_reason
                if "measurement" not in stop_reason:
                    stop_reason += f" (after {_count(len(self.history))})"
                break
            measured = index in self.optimizer.measured
            if measured and exact:
                # the device says its measurements are exact: measuring a config again cannot tell more
                stop_reason = (f"the optimizer asked to re-measure a config, but measurements are exact "
                               f"(after {_count(len(self.history))})")
                break
            m = self._measure(self.full_config(index), propose_s, "recheck" if measured else "explore")
            exact = exact and m.energy_rel_std == 0.0 and m.latency_rel_std == 0.0
            self._tell(index, m)
        return self._result(stop_reason)

    def _summary(self, config: Config, **pred: float | None) -> ConfigSummary:
        ms = [r.measurement for r in self.history if r.config == config]
        return ConfigSummary(
            config=config,
            energy_j=float(np.mean([m.energy_j for m in ms])),
            latency_ms=float(np.mean([m.latency_ms for m in ms])),
            measurements=len(ms),
            **pred,
        )

    def _result(self, stop_reason: str) -> TuneResult:
        rec = self.optimizer.recommend()
        best = None
        if rec.index is not None:
            best = self._summary(
                self.full_config(rec.index),
                predicted_energy_j=rec.objective,
                predicted_latency_ms=rec.constraint,
                p_feasible=rec.p_feasible,
            )
        configs: dict[tuple, Config] = {tuple(r.config.items()): r.config for r in self.history}
        summaries = [self._summary(c) for c in configs.values()]
        return TuneResult(
            slo_ms=self.slo_ms,
            optimizer=self.optimizer.name,
            budget=self.budget,
            tuned_knobs=self.tuned_knobs,
            baseline=self._summary(self.baseline_config),
            best=best,
            history=list(self.history),
            stop_reason=stop_reason,
            recommendation_reason=rec.reason,
            fastest=min(summaries, key=lambda c: c.latency_ms),
        )
