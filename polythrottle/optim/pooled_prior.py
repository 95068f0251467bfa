"""A prior pooled from several sources that differ by a level: e.g. units of one board (a fleet).

Hardware-agnostic: a source is any label of prior observations of the same search space. Sources of one
kind differ (one unit draws a little more power, another is a little slower), mostly by a level per
outcome in log space, so observations are not pooled raw. Per outcome (log objective, log constraint),
each source gets an offset such that its observations agree with the other sources' at the points they
share (alternating: per-point means of the offset-corrected values, then each source's offset as the median
of its residuals at points measured by at least two sources; offsets centred). The pooled prior is then
one observation per point: the mean of the offset-corrected values, i.e. the fleet's typical unit.

``spread``: the standard deviation of what remains after the offsets at shared points (log units, the
larger of the two outcomes): how differently the sources are *shaped*. Measurement noise is part of it.
A large spread means the sources disagree and should not be pooled (``PooledPrior.agrees``). The new
source's own level is found by the warm start itself (``WarmStartBO`` estimates the shift of the new
measurements against the prior and drops a prior whose shape does not fit).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from polythrottle.optim.base import Observation

MAX_SPREAD = 0.15
"""Residual spread (log units, ~15%) above which sources are said to disagree."""
ITERATIONS = 8


@dataclass(frozen=True)
class PooledPrior:
    """observations: one per point (the offset-corrected mean over sources). sources: how many sources
    contributed; measurements: how many observations. spread: residual spread after offsets (log units;
    None when no point was measured by two sources, so nothing could be compared)."""

    observations: list[Observation]
    sources: int
    measurements: int
    spread: float | None

    @property
    def agrees(self) -> bool:
        return self.spread is None or self.spread <= MAX_SPREAD


def _offsets(source_of: np.ndarray, point_of: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Per-source offsets of one outcome (indexed like ``np.unique(source_of)``) and the residual spread."""
    sources, s_idx = np.unique(source_of, return_inverse=True)
    points, p_idx = np.unique(point_of, return_inverse=True)
    shared_point = np.zeros(len(points), dtype=bool)
    for p in range(len(points)):
        shared_point[p] = len(np.unique(s_idx[p_idx == p])) >= 2
    shared = shared_point[p_idx]
    off = np.zeros(len(sources))
    if not shared.any():
        return off, None
    for _ in range(ITERATIONS):
        corrected = y - off[s_idx]
        mean = np.bincount(p_idx, corrected, minlength=len(points)) / np.bincount(p_idx, minlength=len(points))
        resid = y - mean[p_idx]
        for s in range(len(sources)):
            mine = (s_idx == s) & shared
            if mine.any():
                off[s] = float(np.median(resid[mine]))
        off -= off.mean()
    corrected = y - off[s_idx]
    mean = np.bincount(p_idx, corrected, minlength=len(points)) / np.bincount(p_idx, minlength=len(points))
    resid = (corrected - mean[p_idx])[shared]
    dof = max(int(shared.sum()) - int(shared_point.sum()), 1)
    return off, math.sqrt(float((resid**2).sum()) / dof)


def pool(observations: Sequence[tuple[Hashable, Observation]]) -> PooledPrior:
    """Pool ``(source, observation)`` pairs into one prior (see the module docstring)."""
    if not observations:
        return PooledPrior([], 0, 0, None)
    labels = {s: i for i, s in enumerate(dict.fromkeys(s for s, _ in observations))}
    source_of = np.array([labels[s] for s, _ in observations])
    point_of = np.array([o.index for _, o in observations])
    outcomes = np.array([[math.log(o.objective), math.log(o.constraint)] for _, o in observations])
    corrected = np.empty_like(outcomes)
    spreads: list[float] = []
    for j in range(2):
        off, spread = _offsets(source_of, point_of, outcomes[:, j])
        _, s_idx = np.unique(source_of, return_inverse=True)
        corrected[:, j] = outcomes[:, j] - off[s_idx]
        if spread is not None:
            spreads.append(spread)
    by_point: dict[int, list[int]] = defaultdict(list)
    for k, p in enumerate(point_of):
        by_point[int(p)].append(k)
    prior = [
        Observation(p, float(np.exp(corrected[rows, 0].mean())), float(np.exp(corrected[rows, 1].mean())))
        for p, rows in sorted(by_point.items())
    ]
    return PooledPrior(prior, len(labels), len(observations), max(spreads) if spreads else None)


__all__ = ["MAX_SPREAD", "PooledPrior", "pool"]
