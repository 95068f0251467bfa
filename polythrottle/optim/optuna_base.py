"""Optuna samplers behind the ask/tell ``Optimizer`` interface (optional extra ``bench``).

Each knob is one Optuna parameter: numeric knobs an ``IntDistribution`` over their value indices
(ordered), categorical knobs a ``CategoricalDistribution``. The latency constraint goes through
``trial.set_constraint`` (Optuna 5 semantics: a value <= 0 is feasible), as ``latency / SLO - 1``.

Sparse spaces: a suggested combination that is not a valid point, or that was already measured, is
mapped to the nearest valid unmeasured point (Euclidean distance in the space's [0, 1] encoding);
the sampler's trial is then closed as FAIL and the point actually measured is added as a completed
trial, so the sampler always learns from what was measured. Re-measurements told by the tuner are
added as further completed trials. The recommendation is what Optuna would report: the lowest
measured objective among measured-feasible points (``recommend_from_raw``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from polythrottle.errors import BadInputError
from polythrottle.optim.base import Observation, Optimizer
from polythrottle.space import SearchSpace

try:
    import optuna
    from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
    from optuna.trial import TrialState
except ModuleNotFoundError:  # pragma: no cover - depends on the installed extras
    optuna = None  # type: ignore[assignment]

CONSTRAINT_KEY = "latency"


class OptunaOptimizer(Optimizer):
    """Base class: subclasses implement ``make_sampler``."""

    name = "optuna"

    def __init__(self, space: SearchSpace, threshold: float, seed: int | None = None) -> None:
        if optuna is None:
            raise BadInputError(
                f"optimizer {self.name!r} needs Optuna: pip install 'polythrottle[bench]'"
            )
        super().__init__(space, threshold, seed)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.distributions: dict[str, BaseDistribution] = {}
        for k in space.knobs:
            if k.numeric:
                self.distributions[k.name] = IntDistribution(0, len(k) - 1)
            else:
                self.distributions[k.name] = CategoricalDistribution(list(k.values))
        self._encoded = space.encoded(ties=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-feature warnings of some samplers
            self.study = optuna.create_study(direction="minimize", sampler=self.make_sampler(seed))
        self._pending: tuple[Any, int, int] | None = None  # (optuna trial, suggested index or -1, asked index)

    def make_sampler(self, seed: int | None) -> Any:
        raise NotImplementedError

    # ----- mapping between Optuna params and points -----------------------------------------------
    def _params(self, index: int) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for k, j in zip(self.space.knobs, self.space.rows[index]):
            params[k.name] = int(j) if k.numeric else k.values[int(j)]
        return params

    def _row(self, params: dict[str, Any]) -> np.ndarray:
        return np.asarray(
            [params[k.name] if k.numeric else k.index(params[k.name]) for k in self.space.knobs], dtype=np.int64
        )

    def _nearest_unmeasured(self, row: np.ndarray) -> int:
        left = self.unmeasured()
        if len(left) == 0:
            left = np.arange(len(self.space))
        pairs = list(zip(self.space.knobs, row))
        target = np.asarray([k.encode()[int(j)] for k, j in pairs]
                            + [t[int(j)] for k, j in pairs if (t := k.encode_ties()) is not None])
        d = ((self._encoded[left] - target) ** 2).sum(axis=1)
        return int(left[int(np.argmin(d))])

    # ----- ask / tell -----------------------------------------------------------------------------
    def ask(self, remaining: int | None = None) -> int:
        self._close_pending()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask(self.distributions)
        row = self._row(trial.params)
        suggested = self.space._lookup.get(tuple(int(v) for v in row), -1)
        index = suggested if suggested >= 0 and suggested not in self.measured else self._nearest_unmeasured(row)
        self._pending = (trial, suggested, index)
        return index

    def _close_pending(self) -> None:
        if self._pending is not None:  # asked but never told: leave nothing running
            self.study.tell(self._pending[0], state=TrialState.FAIL)
            self._pending = None

    def tell(self, obs: Observation) -> None:
        super().tell(obs)
        constraint = obs.constraint / self.threshold - 1.0
        if self._pending is not None and self._pending[1] == obs.index == self._pending[2]:
            trial = self._pending[0]
            self._pending = None
            trial.set_constraint(CONSTRAINT_KEY, constraint)
            self.study.tell(trial, obs.objective)
            return
        self._close_pending()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=self._params(obs.index),
                    distributions=self.distributions,
                    value=obs.objective,
                    constraints={CONSTRAINT_KEY: constraint},
                )
            )
