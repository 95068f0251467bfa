"""What the parts of ``ConstrainedBO`` share: its settings (``CBOSettings``) and the state each part
reads (``CBOState``). ``ConstrainedBO`` (``cbo.py``) is assembled from parts, one concept a module
(``gp_model``, ``speed_order``, ``safe_design``, ``stopping``); each part derives from ``CBOState``, which
declares the attributes and methods it may use of the others, so every part type-checks alone."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from botorch.models import SingleTaskGP

from polythrottle.optim.base import Optimizer
from polythrottle.optim.estimates import PointEstimates


@dataclass(frozen=True)
class CBOSettings:
    """Tunables of the constrained BO loop.

    n_init: initial-design size, observations told before the first ask included (e.g. the baseline).
    confidence: P(feasible) a recommendation must reach.
    safety_factor, safety_p: measure only configs likely under ``safety_factor`` x the threshold: the
      knobs' latency bound proves it or the GP gives P >= ``safety_p`` (None: no limit; see ``allowed``).
    bound_factor: ... and, where the knobs' latency exponents bound a config's latency, only configs
      whose bound is under ``bound_factor`` x the threshold.
    stop_delta, stop_p, min_evals: stop when, after at least ``min_evals`` observations, no unmeasured
      config has P(feasible and objective < (1 - stop_delta) x the recommendation's) >= ``stop_p``.
    stop_delta_noise: ... with ``stop_delta`` raised to one objective measurement's relative noise (the GP's
      estimate) where that is larger: a smaller saving could not be told from noise.
    confirm_pick: before ending on a recommendation measured once, measure it again while no config has
      been measured twice or another confident one is within noise of it (see ``_unconfirmed_pick``).
    impossible_p: stop as infeasible when nothing measured and no unmeasured config has P(feasible) >= this.
    recheck_reserve: in the last measurements of a budget, re-measuring a point of uncertain feasibility
      competes with new points (as from ``confident_best_after`` on).
    max_repeats: most measurements of one point.
    recheck_min_p: a measured point with at least this P(feasible) may be re-measured (see ``_recheck_value``).
    reported_noise: how observations' own noise estimates (``objective_rel_std``...) are used:
      "fixed" as the exact noise; "floor" as a lower bound, the GP learning extra homoscedastic noise on
      top (live windows of one measurement miss the spread between measurements); "ignore": inferred.
    noise_prior_rel_sd: when observations report no noise, the GP infers it with a prior whose mode is
      this relative noise of one measurement (log units; see ``OutcomeGP._inferred_noise_likelihood``).
    confident_best_after: from this many observations on, expected improvement is measured from the
      confidently feasible incumbent (the recommendation) rather than from the best point with P >= 0.5.
      None: never.
    recheck_compete: from ``confident_best_after`` on, re-measure a point whenever the value of doing so
      (see ``_recheck_value``) beats the best expected improvement of a new point.
    prune_dominated: explore only points not dominated by the knobs' speed ranks (a point with the same
      other values and a higher-ranked precision, CUDA graphs on, ... is no slower and no costlier);
      a rank that measurements contradict is dropped.
    contradiction_tol: (relative difference, standard errors): two measured points contradict a rank when
      the one ranked faster is slower or costlier by more than both (see ``_check_order``).
    rank_check: before the tune ends itself while ranks prune configs, measure the recommendation one rank
      lower on each ranked knob whose one-rank slowdown is bounded (see ``rank_check``).
    probe_opened: after measurements contradict a rank, the tune does not end itself before it has measured
      the config the rank had pruned most likely to be feasible and cheaper (see ``_opened_probe``).
    suspect_recheck: before the tune ends itself, a config measured once that may contradict a rank (beyond
      the relative slack, within the noise) is measured again (see ``suspect_recheck``).
    pessimistic_mean: the GP's prior mean is the highest (costliest, slowest) measured value, not fitted.
    initial_design: move along the knobs' known energy trends first (see ``_design_point``).
    power_trend, power_exponent: the GP of log objective sits on a fitted trend in the clocks (knobs whose
      latency falls as they rise, with no known energy trend): log(power relative to the top clocks), power
      static plus dynamic ~ clock^``power_exponent``, fitted to the measured objective / constraint. It
      makes energy (power x latency) U-shaped in a clock between measured clocks (see
      ``OutcomeGP.power_trend``).
    confirm_margin: judge unmeasured configs (expected improvement, stopping) on P(latency under the
      threshold by a margin that ``max_repeats`` measurements can confirm), not on P(feasible).
    monotone_slack: use the knobs' known speed order with this relative slack: a point at least as
      slow as a measured one is no more likely feasible than that one at (1 + slack) x threshold, and a
      point at least as fast no less likely than it at threshold / (1 + slack). None: ignore the order.
    """

    n_init: int = 1
    confidence: float = 0.975
    safety_factor: float | None = 1.2
    safety_p: float = 0.9
    bound_factor: float = 3.0
    stop_delta: float = 0.01
    stop_delta_noise: bool = True
    stop_p: float = 0.4
    min_evals: int = 6
    impossible_p: float = 0.01
    prune_dominated: bool = True
    confirm_margin: bool = True
    lengthscale_prior: tuple[str, float, float] = ("lognormal", -0.1, 1.0)
    initial_design: bool = True
    power_trend: bool = True
    power_exponent: float = 3.0
    pessimistic_mean: bool = True
    smooth_objective: bool = True
    confirm_pick: bool = True
    stop_candidates: int = 64
    stop_samples: int = 512
    slack_as_sd: bool = False
    max_batch: int = 4096
    warm_maxiter: int = 30
    recheck_reserve: int = 5
    max_repeats: int = 4
    reported_noise: str = "floor"
    noise_prior_rel_sd: float = 0.03
    monotone_slack: float | None = 0.05
    recheck_min_p: float = 0.1
    confident_best_after: int | None = 6
    recheck_compete: bool = True
    rank_check: bool = True
    probe_opened: bool = True
    suspect_recheck: bool = True
    contradiction_tol: tuple[float, float] = (1.05, 2.0)


class CBOState(Optimizer):
    """State shared by the parts of ``ConstrainedBO`` (set in ``ConstrainedBO.__init__``)."""

    settings: CBOSettings
    X_all: torch.Tensor
    """Every point of the space, encoded in [0, 1] (n x d)."""
    _model: SingleTaskGP | None
    _model_n: int
    _hyper: dict[str, torch.Tensor] | None
    _hyper_inferred_noise: bool
    _energy_dir: np.ndarray
    _energy_free: np.ndarray
    _rank_checked: set[int]
    _suspects: set[int]
    """Configs ``suspect_recheck`` measured again (once each)."""
    """Ranked knobs (space columns) whose rank ``verdict_check`` has already tested."""
    _opened: np.ndarray | None
    """Configs a contradicted rank stopped pruning, not probed yet (None: none pending; see ``_opened_probe``)."""
    _trend_q: tuple[list[int], np.ndarray, np.ndarray, np.ndarray] | None
    """The fitted power trend: clock columns, their dynamic-power shares q, the measured log-ratio range."""
    _trend_all: np.ndarray | None
    """The power trend at every point of the space (log units), or None when none is fitted."""
    _lr_all: np.ndarray | None
    """The clocks' log(value / top value) at every point of the space (computed once, when first needed)."""

    if TYPE_CHECKING:  # provided by the parts; declared for the type checker only

        @property
        @abstractmethod
        def exact(self) -> bool: ...

        @abstractmethod
        def model(self) -> SingleTaskGP: ...

        @abstractmethod
        def noise_std(self) -> tuple[float, float]: ...

        @abstractmethod
        def posterior(self, indices: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]: ...

        @abstractmethod
        def _point_estimates(self) -> PointEstimates: ...

        @abstractmethod
        def _objective_noise_sd(self) -> float: ...

        @abstractmethod
        def latency_bound(self, points: np.ndarray, est: PointEstimates | None = None
                          ) -> tuple[np.ndarray, np.ndarray]: ...
