"""Safe constrained Bayesian optimization over a finite candidate set (BoTorch / GPyTorch).

This module holds the loop (``ConstrainedBO``: ask, tell, recommend) and its settings; the parts live
beside it: ``gp_model`` (the surrogate), ``speed_order`` (what the knobs' semantics imply),
``safe_design`` (where exploration may go, the first moves), ``stopping`` (when a tune ends, what is
worth re-measuring), ``estimates`` (what is known of measured and unmeasured configs).

Model: one GP per outcome, on log(objective) and log(constraint / threshold), both standardised,
inputs in [0, 1] (clocks and batch sizes on a log axis, categorical values in their known speed order,
see ``Knob.encode``; values that share a speed rank, such as fp16 and bf16, at one place on that axis and
apart on one more, ``Knob.encode_ties``: the GP learns how far they differ instead of reading one as lying
between the other and the next rank). The log objective's GP sits on a fitted power trend in the clocks
(``OutcomeGP.power_trend``): energy is power x latency, power static plus dynamic ~ clock^3, so energy is
U-shaped in a clock, and a GP interpolating two measured clocks would not see the dip between them.

Knob semantics (``Knob.latency_trend``, ``latency_exponent``, ``speed_rank``) give a partial order of
the candidates by speed: a config with lower clocks, a larger batch or a slower precision than a
measured one, and the same values of every knob without a known order, is no faster. They are used twice:

* Feasibility bounds: P(feasible) of a candidate is clipped to what measured points imply (a config
  slower than one measured infeasible is infeasible too, with ``monotone_slack``).
* Safe exploration (SafeOpt-style): only configs likely under ``safety_factor`` x the threshold are
  measured. Where the knobs' latency exponents bound the slowdown from a measured config (a clock
  halved at most doubles the latency, a batch twice as large takes at most twice as long), the bound
  decides; elsewhere the GP must give P(constraint <= safety_factor x threshold) >= ``safety_p``.
  A config never slower than the fastest measured one is always allowed (so the fastest configs can
  be reached when even the baseline is far over the threshold).

Acquisition: analytic constrained log-EI (EI x P(feasible), Gardner et al. 2014), maximised exactly
over every allowed unmeasured candidate; log P(feasible) while no point is believed feasible.

Recommendation: among measured points, the lowest mean measured objective whose probability of
feasibility is at least ``confidence``. A point whose feasibility is still uncertain is re-measured
rather than trusted on one noisy sample, when the value of doing so beats a new point's expected
improvement (and in the last ``recheck_reserve`` measurements); a recommendation measured once is
measured again before the tune ends while no config was measured twice or a rival is within noise of
it (``confirm_pick``). With exact measurements (every observation reports a relative noise of 0)
nothing is measured twice.

The optimizer ends the tune itself (``stop_reason``) when
* no config can meet the threshold: nothing measured is feasible and no unmeasured config has
  P(feasible) >= ``impossible_p`` (the fastest configs were measured and everything else is slower),
  once what that verdict rests on was checked (``verdict_check``: the fastest measured config one rank
  lower on each ranked knob, once per knob, and every value of a categorical knob without a known speed
  order measured once);
* a better feasible config is unlikely to remain: after ``min_evals`` measurements, with a confident
  recommendation and no re-measurement worth making, no unmeasured config has a probability >=
  ``stop_p`` of being feasible and cheaper than the recommendation by at least ``stop_delta`` or (with
  ``stop_delta_noise``) one measurement's relative noise, whichever is larger;
* every config has been measured.
"""


from __future__ import annotations

import math

import numpy as np
import torch
from botorch.acquisition.analytic import _log_ei_helper
from botorch.models import SingleTaskGP
from scipy.special import log_ndtr, ndtr, ndtri

from polythrottle.optim.base import Observation, Optimizer, Recommendation
from polythrottle.optim.cbo_state import CBOSettings
from polythrottle.optim.estimates import CandidateView, PointEstimates
from polythrottle.optim.gp_model import DTYPE, OutcomeGP, matern_kernel, one_torch_thread
from polythrottle.optim.safe_design import SafeDesign
from polythrottle.optim.speed_order import OrderBounds, SpeedOrder
from polythrottle.optim.stopping import Stopping
from polythrottle.space import SearchSpace

EXACT_SE = 1e-9
"""Standard error of a point's mean log constraint when measurements are exact."""


class ConstrainedBO(OutcomeGP, OrderBounds, SafeDesign, Stopping, Optimizer):
    name = "cbo"

    def __init__(
        self,
        space: SearchSpace,
        threshold: float,
        seed: int | None = None,
        settings: CBOSettings | None = None,
    ) -> None:
        super().__init__(space, threshold, seed)
        self.settings = settings or CBOSettings()
        self.X_all = torch.as_tensor(space.encoded(ties=True), dtype=DTYPE)
        self._model: SingleTaskGP | None = None
        self._model_n = -1
        self._hyper: dict[str, torch.Tensor] | None = None
        self._hyper_inferred_noise = True
        self._sobol = torch.quasirandom.SobolEngine(
            dimension=max(self.X_all.shape[1], 1), scramble=True, seed=0 if seed is None else int(seed)
        )
        self.last_acq_value: float | None = None
        self._set_order(frozenset())
        self._rank_checked = set()
        self._suspects = set()
        self._opened = None
        self._trend_q = None
        self._trend_all = None
        self._lr_all = None
        etrend = np.array([k.energy_trend or 0 for k in space.knobs], dtype=np.int64)
        self._energy_dir = space.rows.astype(np.int64) * -etrend  # larger = cheaper on the energy-trended knobs
        self._energy_free = etrend != 0

    @property
    def exact(self) -> bool:
        """Whether every observation says it is exact (relative noise 0 on both outcomes)."""
        return bool(self.observations) and all(
            o.objective_rel_std == 0.0 and o.constraint_rel_std == 0.0 for o in self.observations
        )

    def _point_estimates(self) -> PointEstimates:
        """Per measured point: indices, mean log objective, mean log constraint/threshold, P(feasible).

        The estimate of a point is the mean of its own measurements (unbiased, unlike the GP's
        smoothed mean at a rough optimum); its standard error uses the GP's noise estimate (exact
        measurements: none).
        """
        by_point: dict[int, list[Observation]] = {}
        for o in self.observations:
            by_point.setdefault(o.index, []).append(o)
        idx = sorted(by_point)
        lobj = np.array([np.mean([math.log(o.objective) for o in by_point[i]]) for i in idx])
        lcon = np.array([np.mean([math.log(o.constraint / self.threshold) for o in by_point[i]]) for i in idx])
        n = np.array([len(by_point[i]) for i in idx], dtype=float)
        if self.exact:
            se = np.full(len(idx), EXACT_SE)
        else:
            se = np.maximum(self._constraint_noise_sd(by_point), 1e-3) / np.sqrt(n)
            if self.settings.smooth_objective and len(idx) >= 3:
                # the GP's posterior mean at the measured points: pools neighbours, so a config is not
                # preferred on one lucky measurement when the objective's noise is a few percent
                lobj = self.posterior(idx)[0][:, 0]
        est = PointEstimates(idx, lobj, lcon, se, ndtr(-lcon / se), n)
        if self._use_order:
            if self.exact:
                lower, upper = self._trend_bounds(np.asarray(idx), est)
            else:
                lower, upper = self._measured_order_bounds(est)
            est = est._replace(p=np.minimum(np.maximum(est.p, lower), upper))
        return est

    # ----- ask --------------------------------------------------------------------------------------
    def _initial_point(self) -> int:
        left = self.unmeasured()
        target = self._sobol.draw(1).to(DTYPE)[:, : self.X_all.shape[1]]
        d = ((self.X_all[left] - target) ** 2).sum(-1)
        return int(left[int(torch.argmin(d))])

    def ask(self, remaining: int | None = None) -> int:
        with one_torch_thread():
            return self._ask(remaining)

    def _ask(self, remaining: int | None) -> int:
        if len(self.observations) < self.settings.n_init:
            return self._initial_point()
        self._check_order()
        left = self.unmeasured()
        left = left[self.undominated[left]]
        if len(left) == 0:
            # nothing left to explore: a measured config whose feasibility is still uncertain (or a pick
            # measured once) gets the re-measurements that may confirm it before the tune ends
            est = self._point_estimates()
            suspect = self.suspect_recheck(est)
            if suspect is not None:
                return suspect
            check = self.rank_check()
            if check is not None:
                return check
            recheck = self._recheck_before_stop(remaining, est, converged=False)
            if recheck is not None:
                return recheck
            self.stop_reason = (
                f"every config of the space has been measured ({len(self.observations)} measurements)"
                if len(self.measured) == len(self.space) else
                f"every config not dominated by the knobs' speed order has been measured ({len(self.observations)} "
                "measurements)"
            )
            rec = self.recommend()
            return rec.index if rec.index is not None else self.observations[-1].index

        exact = self.exact
        view = self.view(left, remaining)
        est, mean, std, log_pof, log_pof_c, margin = view.est, view.mean, view.std, view.log_pof, view.log_pof_c, view.margin
        lobj, feasible = est.lobj, est.p >= 0.5
        sure = est.p >= self.settings.confidence
        late = self.settings.confident_best_after is not None and len(self.observations) >= self.settings.confident_best_after
        if feasible.any():
            # early: improve on the best point believed feasible (race to the optimum); late: on the
            # point that would be recommended, so that a slightly costlier point that can be
            # confirmed feasible still has value when the best one sits on the latency boundary
            best_f = float(lobj[sure].min()) if late and sure.any() else float(lobj[feasible].min())
            u = torch.as_tensor((best_f - mean[:, 0]) / std[:, 0], dtype=DTYPE)
            log_ei = _log_ei_helper(u).numpy() + np.log(std[:, 0])
            values = log_ei + log_pof_c
        else:
            values = log_pof.copy()

        # the tune ends itself when no config can meet the threshold ...
        p_max = float(np.exp(log_pof.max()))
        if not (est.p >= self.settings.impossible_p).any() and p_max < self.settings.impossible_p:
            check = self.verdict_check(est)
            if check is not None:
                return check
            self.stop_reason = (
                f"no config can meet the threshold: "
                f"{'the one measured config does not' if len(est.idx) == 1 else f'none of the {len(est.idx)} measured configs does'}"
                f", and no other has P(feasible) >= {self.settings.impossible_p:g} (highest {p_max:.2g})"
            )
            return int(left[int(np.argmax(values))])

        allowed = self.allowed(left, est, mean, std)
        design = self._design_point(left, est, allowed, margin)
        if design is not None:
            return design
        values = np.where(allowed, values, -np.inf)
        best = int(np.argmax(values))
        self.last_acq_value = float(values[best])
        pick = int(left[best])
        reserve = remaining is not None and remaining <= self.settings.recheck_reserve
        if exact:
            pass
        elif (late or reserve) and self.settings.recheck_compete:
            # both are expected relative improvements of the recommendation: re-measure when that pays more
            recheck, value = self._recheck_value(remaining, est)
            if recheck is not None and math.log(value) > self.last_acq_value:
                return recheck

        # ... or when a better feasible config is unlikely to remain
        better, delta = None, 0.0
        if len(self.observations) >= self.settings.min_evals:
            delta = self.stop_delta()
            better = self.p_better(view, delta)  # None while nothing is confidently feasible
        if better is not None:
            p_remain = self._p_better_remains(left, *better, margin, view.upper_c)
            if p_remain < self.settings.stop_p:
                suspect = self.suspect_recheck(est)
                if suspect is not None:
                    return suspect
                if self._opened is not None:  # configs a contradicted rank opened: probe one first
                    probe = self._opened_probe(left, np.where(self.within_bound(left, est), better[0], 0.0))
                    if probe is not None:
                        return probe
                check = self.rank_check()
                if check is not None:
                    return check
                recheck = self._recheck_before_stop(remaining, est, converged=True)
                if recheck is not None:
                    return recheck
                self.stop_reason = (
                    f"converged: P(an unmeasured config is feasible and >= {delta:.0%} cheaper "
                    f"than the recommendation) = {p_remain:.2g} < {self.settings.stop_p:g} after "
                    f"{len(self.observations)} measurements"
                )
        return pick

    def view(self, left: np.ndarray, remaining: int | None = None) -> CandidateView:
        """The model's view of the unmeasured candidates ``left`` (see ``CandidateView``)."""
        est = self._point_estimates()
        mean, std = self.posterior(left)
        lower, upper = self._trend_bounds(left, est) if self._use_order else (np.zeros(len(left)), np.ones(len(left)))
        log_lo, log_hi = np.log(np.maximum(lower, 1e-300)), np.log(np.maximum(upper, 1e-300))
        log_pof = np.clip(log_ndtr(-mean[:, 1] / std[:, 1]), log_lo, log_hi)
        # what is worth measuring is a config that can be confirmed feasible: latency a few noise
        # standard errors under the threshold (those of the measurements it can still get)
        margin = 0.0
        upper_c = upper
        if self.settings.confirm_margin and not self.exact:
            repeats = self.settings.max_repeats if remaining is None else max(1, min(self.settings.max_repeats, remaining))
            margin = float(ndtri(self.settings.confidence) * est.se[0] * math.sqrt(est.n[0] / repeats))
            if self._use_order:
                _, upper_c = self._trend_bounds(left, est, margin)
        log_pof_c = np.minimum(log_ndtr((-margin - mean[:, 1]) / std[:, 1]), np.log(np.maximum(upper_c, 1e-300)))
        return CandidateView(left, est, mean, std, log_pof, log_pof_c, upper_c, margin)

    # ----- recommend --------------------------------------------------------------------------------
    def recommend(self) -> Recommendation:
        if len(self.observations) < 2 and not self.exact:
            return super().recommend()
        idx, lobj, lcon, _, p, _ = self._point_estimates()
        conf = self.settings.confidence
        ok = np.flatnonzero(p >= conf)
        if len(ok) == 0:
            ok = np.flatnonzero(p >= 0.5)
            if len(ok) == 0:
                return Recommendation(None, None, None, float(p.max()), "no measured point is believed feasible")
            reason = f"no point reaches P(feasible) >= {conf:g}; lowest measured energy with P >= 0.5"
        else:
            reason = f"lowest measured objective with P(feasible) >= {conf:g}"
        j = int(ok[np.argmin(lobj[ok])])
        return Recommendation(
            index=idx[j],
            objective=float(math.exp(lobj[j])),
            constraint=float(math.exp(lcon[j]) * self.threshold),
            p_feasible=float(p[j]),
            reason=reason,
        )


__all__ = ["DTYPE", "CBOSettings", "ConstrainedBO", "SpeedOrder", "matern_kernel"]
