"""The optimizer interface. Optimizers know a search space and measurements, nothing of hardware.

Problem: minimise a positive ``objective`` (energy per inference) over the valid points of a
``SearchSpace`` subject to ``constraint <= threshold`` (latency <= SLO). Points are row indices.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from polythrottle.errors import BadInputError
from polythrottle.space import SearchSpace


@dataclass(frozen=True)
class Observation:
    """One measurement of point ``index``: objective (minimised) and constraint (<= threshold).

    ``objective_rel_std``/``constraint_rel_std``: relative noise of this observation, if known.
    """

    index: int
    objective: float
    constraint: float
    objective_rel_std: float | None = None
    constraint_rel_std: float | None = None


@dataclass(frozen=True)
class Recommendation:
    """The optimizer's pick. ``index`` is None when nothing is believed feasible.

    ``objective``/``constraint``: the estimate the pick is based on (model posterior mean, or the
    mean of repeated raw measurements). ``p_feasible``: probability the constraint truly holds.
    """

    index: int | None
    objective: float | None
    constraint: float | None
    p_feasible: float | None
    reason: str


class Optimizer(ABC):
    """Ask/tell optimizer over a finite candidate set."""

    name: str = "optimizer"

    def __init__(self, space: SearchSpace, threshold: float, seed: int | None = None) -> None:
        if not threshold > 0:
            raise BadInputError(f"constraint threshold must be > 0, got {threshold}")
        self.space = space
        self.threshold = float(threshold)
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.observations: list[Observation] = []
        self.stop_reason: str | None = None

    def tell(self, obs: Observation) -> None:
        """Record a measurement. Raises BadInputError for an index outside the space or bad values."""
        if not 0 <= obs.index < len(self.space):
            raise BadInputError(f"observation index {obs.index} outside the space")
        if not (obs.objective > 0 and obs.constraint > 0):
            raise BadInputError("objective and constraint must be positive")
        self.observations.append(obs)

    @abstractmethod
    def ask(self, remaining: int | None = None) -> int:
        """The next point to measure. ``remaining``: measurements left in the budget, this one included."""

    @property
    def measured(self) -> set[int]:
        return {o.index for o in self.observations}

    def unmeasured(self) -> np.ndarray:
        mask = np.ones(len(self.space), dtype=bool)
        mask[list(self.measured)] = False
        return np.flatnonzero(mask)

    def recommend(self) -> Recommendation:
        """Default: lowest mean measured objective among points whose mean measurements are feasible."""
        return recommend_from_raw(self.observations, self.threshold)


def recommend_from_raw(observations: list[Observation], threshold: float) -> Recommendation:
    """Pick from per-point means of raw measurements (no model)."""
    by_point: dict[int, list[Observation]] = {}
    for o in observations:
        by_point.setdefault(o.index, []).append(o)
    best: tuple[float, int, float] | None = None
    for i, obs in by_point.items():
        obj = float(np.mean([o.objective for o in obs]))
        con = float(np.mean([o.constraint for o in obs]))
        if con <= threshold and (best is None or obj < best[0]):
            best = (obj, i, con)
    if best is None:
        return Recommendation(None, None, None, None, "no measured point met the constraint")
    return Recommendation(best[1], best[0], best[2], None, "lowest measured objective among feasible points")
