"""Safe exploration for constrained BO: which configs may be measured (SafeOpt-style, from the knobs'
latency bounds and the GP) and the safe initial design along the knobs' known energy trends.
``SafeDesign`` is mixed into ``ConstrainedBO`` (it uses ``self.settings``, ``self.space``,
``latency_bound`` and the energy-trend tables set up in ``ConstrainedBO.__init__``)."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr

from polythrottle.optim.cbo_state import CBOState
from polythrottle.optim.estimates import PointEstimates


class SafeDesign(CBOState):
    """Where exploration may go, and the first moves from the baseline."""

    def allowed(self, points: np.ndarray, est: PointEstimates, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """Which of ``points`` exploration may measure (SafeOpt-style; ``mean``/``std``: the GP posterior
        at them). A point must be provably under ``bound_factor`` x threshold by the knobs' latency
        exponents from a measured config (or no slower than the fastest measured one), or else one step
        from a point believed feasible over knobs without such a bound (its latency would be feasible if
        they did not matter); and likely under ``safety_factor`` x threshold: the bound proves it, or the
        GP gives P >= ``safety_p``. If no point is allowed, those with the lowest step bound are."""
        if self.settings.safety_factor is None:
            return np.ones(len(points), dtype=bool)
        log_k = math.log(self.settings.safety_factor)
        hard_ok, bound, step = self._bound_ok(points, est)
        fastest = float((est.lcon + est.se).min()) + 1e-12
        soft_ok = (bound <= max(log_k, fastest)) | (ndtr((log_k - mean[:, 1]) / std[:, 1]) >= self.settings.safety_p)
        allowed = hard_ok & soft_ok
        if not allowed.any():
            allowed = step <= step.min() + 1e-12
        return allowed

    def within_bound(self, points: np.ndarray, est: PointEstimates) -> np.ndarray:
        """Which of ``points`` are provably under ``bound_factor`` x threshold (the first condition of
        ``allowed``, without the GP's view): where the GP was just shown wrong, only this is trusted."""
        if self.settings.safety_factor is None:
            return np.ones(len(points), dtype=bool)
        return self._bound_ok(points, est)[0]

    def _bound_ok(self, points: np.ndarray, est: PointEstimates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(provably under ``bound_factor`` x threshold, log latency bound, step bound) of ``points``."""
        log_hard = math.log(max(self.settings.bound_factor, self.settings.safety_factor or 0.0))
        bound, step = self.latency_bound(points, est)
        fastest = float((est.lcon + est.se).min()) + 1e-12
        feasible_known = bool((est.p >= 0.5).any())
        step_ok = np.isinf(bound) & (step <= (1e-12 if feasible_known else fastest))
        return (bound <= max(log_hard, fastest)) | step_ok, bound, step

    def _design_point(self, left: np.ndarray, est: PointEstimates, allowed: np.ndarray, margin: float) -> int | None:
        """Safe initial design along the knobs' known energy trends (``Knob.energy_trend``, e.g. a larger
        batch is cheaper per inference): from the cheapest config believed feasible, if nothing has been
        measured along those knobs from it yet, the config that moves them furthest the cheap way while
        the latency bound keeps it under the threshold (by ``margin``); failing that, a one-step probe
        (``_probe_point``). None when there is no such move."""
        if not self.settings.initial_design or not self._energy_free.any():
            return None
        ok = np.flatnonzero(est.p >= 0.5)
        if len(ok) == 0:
            return None
        anchor = est.idx[int(ok[np.argmin(est.lobj[ok])])]
        fixed = ~self._energy_free
        rows = self.space.rows
        same = (rows[:, fixed] == rows[anchor, fixed]).all(1)
        if sum(bool(same[i]) for i in est.idx) > 1:
            return None  # the cheap direction was already explored from this anchor
        gain = (self._energy_dir[left] - self._energy_dir[anchor]).sum(1)
        cheap = same[left] & (self._energy_dir[left] >= self._energy_dir[anchor]).all(1) & (gain > 0)
        if not cheap.any():
            return None
        cheaper_way, gain = left[cheap], gain[cheap]
        bound, _ = self.latency_bound(cheaper_way, est)
        ok = allowed[cheap] & (bound <= -margin)
        if ok.any():
            return int(cheaper_way[ok][int(np.argmax(gain[ok]))])
        return self._probe_point(anchor, cheaper_way, bound, est)

    def _probe_point(self, anchor: int, cheaper_way: np.ndarray, bound: np.ndarray, est: PointEstimates) -> int | None:
        """When no move along the energy-trended knobs is provably feasible: one step along such a knob
        that no measurement has varied yet (its latency effect is then unknown to the GP, which would
        keep the cheap direction out of the safe set for good), from ``anchor``, if the knobs' latency
        bound keeps it under ``bound_factor`` x threshold. The fastest such step; None if there is none."""
        rows = self.space.rows
        measured = rows[np.asarray(est.idx)]
        never_varied = self._energy_free & (measured == measured[0]).all(0)
        if not never_varied.any():
            return None
        steps = np.abs(self._energy_dir[cheaper_way] - self._energy_dir[anchor])
        one_step = (steps.sum(1) == 1) & (steps[:, never_varied].sum(1) == 1)
        ok = one_step & (bound <= math.log(self.settings.bound_factor))
        if not ok.any():
            return None
        return int(cheaper_way[ok][int(np.argmin(bound[ok]))])


__all__ = ["SafeDesign"]
