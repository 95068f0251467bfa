"""What constrained BO knows of measured points (``PointEstimates``) and of unmeasured candidates
(``CandidateView``), in log units: log objective, log(constraint / threshold)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class PointEstimates(NamedTuple):
    """Per measured point: row index, mean log objective, mean log constraint/threshold, the standard
    error of that mean, P(feasible) (clipped to the speed-order bounds when they are used) and the
    number of measurements."""

    idx: list[int]
    lobj: np.ndarray
    lcon: np.ndarray
    se: np.ndarray
    p: np.ndarray
    n: np.ndarray


class CandidateView(NamedTuple):
    """What the model says of the unmeasured candidates ``left``: the measured points' estimates, the GP
    posterior mean and std of both outcomes (n, 2), log P(feasible) clipped to the speed-order bounds,
    log P(feasible by ``margin``) (a margin a few repeats can confirm) and its speed-order upper bound."""

    left: np.ndarray
    est: PointEstimates
    mean: np.ndarray
    std: np.ndarray
    log_pof: np.ndarray
    log_pof_c: np.ndarray
    upper_c: np.ndarray
    margin: float


__all__ = ["CandidateView", "PointEstimates"]
