"""Constrained Bayesian optimization over a finite candidate set (BoTorch / GPyTorch).

Model: one GP per outcome, on log(objective) and log(constraint / threshold), both standardised,
inputs in [0, 1] (clocks and batch sizes on a log axis, see ``Knob.encode``). Acquisition: analytic
constrained log-EI (Gardner et al. 2014: EI x P(feasible)), maximised exactly over every unmeasured
candidate; log probability of feasibility while no point is believed feasible. The feasibility factor is
clipped to what the knobs' known latency trends imply from measured points (a config slower than one
measured infeasible is infeasible too). Initial design: the first observation (the tuner's baseline), or
scrambled-Sobol points snapped to valid candidates when ``n_init`` asks for more.

Recommendation: among measured points, the lowest mean measured objective whose probability of
feasibility is at least ``confidence``. A point whose feasibility is still uncertain is re-measured
rather than trusted on one noisy sample: chosen by the value of re-measuring it (objective saved x the
chance that a few repeats confirm it), and taken instead of a new point when that value beats the new
point's expected improvement over the recommendation (and in the last ``recheck_reserve`` measurements).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from botorch.acquisition.analytic import LogConstrainedExpectedImprovement, LogProbabilityOfFeasibility
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_matern_kernel_with_gamma_prior
from gpytorch.constraints import GreaterThan
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import LogNormalPrior
from scipy.special import ndtr, ndtri

from polythrottle.optim.base import Observation, Optimizer, Recommendation
from polythrottle.space import SearchSpace

DTYPE = torch.double
NOISE_PRIOR_DOF = 2.0


@dataclass(frozen=True)
class CBOSettings:
    """Tunables of the constrained BO loop.

    n_init: initial-design size, observations told before the first ask included (e.g. the baseline).
    confidence: P(feasible) a recommendation must reach.
    ei_stop: stop when the best expected improvement of log objective (~ relative improvement) is below this,
      after at least ``min_evals`` observations.
    recheck_reserve: the last measurements of a budget go to re-measuring candidates of uncertain feasibility.
    max_repeats: most measurements of one point.
    recheck_min_p: a measured point with at least this P(feasible) may be re-measured (see ``_uncertain_pick``).
    reported_noise: how observations' own noise estimates (``objective_rel_std``...) are used:
      "fixed" as the exact noise; "floor" as a lower bound, the GP learning extra homoscedastic noise on
      top (live windows of one measurement miss the spread between measurements); "ignore": inferred.
    confident_best_after: from this many observations on, expected improvement is measured from the
      confidently feasible incumbent (the recommendation) rather than from the best point with P >= 0.5.
      None: never.
    recheck_compete: from ``confident_best_after`` on, re-measure a point whenever the value of doing so
      (see ``_recheck_value``) beats the best expected improvement of a new point.
    monotone_slack: use the knobs' known latency trends (``Knob.latency_trend``) with this relative
      slack: a point at least as slow as a measured one (no faster on any trended knob, equal on the
      others) is no more likely feasible than that one at (1 + slack) x threshold, and a point at least
      as fast no less likely than it at threshold / (1 + slack). None: ignore trends.
    """

    n_init: int = 1
    confidence: float = 0.975
    ei_stop: float = 1e-4
    min_evals: int = 12
    max_batch: int = 4096
    warm_maxiter: int = 30
    recheck_reserve: int = 5
    max_repeats: int = 4
    reported_noise: str = "floor"
    monotone_slack: float | None = 0.05
    recheck_min_p: float = 0.1
    confident_best_after: int | None = 10
    recheck_compete: bool = True


class PointEstimates(NamedTuple):
    """Per measured point: row index, mean log objective, mean log constraint/threshold, the standard
    error of that mean, P(feasible) (clipped to the latency-trend bounds when they are used) and the
    number of measurements."""

    idx: list[int]
    lobj: np.ndarray
    lcon: np.ndarray
    se: np.ndarray
    p: np.ndarray
    n: np.ndarray


class ConstrainedBO(Optimizer):
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
        self.X_all = torch.as_tensor(space.encoded(), dtype=DTYPE)
        self._model: SingleTaskGP | None = None
        self._model_n = -1
        self._hyper: dict[str, torch.Tensor] | None = None
        self._hyper_inferred_noise = True
        self._sobol = torch.quasirandom.SobolEngine(
            dimension=max(self.X_all.shape[1], 1), scramble=True, seed=0 if seed is None else int(seed)
        )
        self.last_acq_value: float | None = None
        trend = np.array([k.latency_trend or 0 for k in space.knobs], dtype=int)
        self._slowness = (space.rows * trend).astype(np.int64)  # larger on a trended knob = slower
        self._untrended = space.rows[:, trend == 0]
        self._use_trends = self.settings.monotone_slack is not None and bool(trend.any())

    # ----- model ------------------------------------------------------------------------------------
    def _train_data(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        obs = self.observations
        X = self.X_all[[o.index for o in obs]]
        Y = torch.tensor(
            [[math.log(o.objective), math.log(o.constraint / self.threshold)] for o in obs], dtype=DTYPE
        )
        if self.settings.reported_noise != "ignore" and all(
            o.objective_rel_std is not None and o.constraint_rel_std is not None for o in obs
        ):
            var = torch.tensor(
                [[max(o.objective_rel_std, 1e-3) ** 2, max(o.constraint_rel_std, 1e-3) ** 2] for o in obs],
                dtype=DTYPE,
            )
            return X, Y, var
        return X, Y, None

    def model(self) -> SingleTaskGP:
        """The GP over (log objective, log constraint/threshold), refitted when observations changed."""
        if self._model is not None and self._model_n == len(self.observations):
            return self._model
        X, Y, var = self._train_data()
        # Matern-5/2 with BoTorch's Gamma(3, 6) lengthscale prior rather than the dimension-scaled
        # default: on 2-4 knobs the default's long lengthscales made the GP overconfident and runs stopped
        # early far from the optimum (experiments/results/bench.md)
        covar = get_matern_kernel_with_gamma_prior(X.shape[-1], batch_shape=torch.Size([2]))
        model = SingleTaskGP(X, Y, train_Yvar=var, outcome_transform=Standardize(m=2), covar_module=covar)
        if var is not None and self.settings.reported_noise == "floor":
            # the extra noise gets BoTorch's default prior for inferred noise (LogNormal(-4, 1))
            prior = LogNormalPrior(loc=-4.0, scale=1.0)
            model.likelihood = FixedNoiseGaussianLikelihood(
                noise=model.likelihood.noise_covar.noise, learn_additional_noise=True,
                batch_shape=model._aug_batch_shape, noise_prior=prior,
                noise_constraint=GreaterThan(1e-4, transform=None, initial_value=prior.mode),
            )
        if self._hyper is not None and (var is None) == self._hyper_inferred_noise:
            # Warm start from the previous fit: ~50x faster than a cold fit with restarts.
            model.load_state_dict(self._hyper, strict=False)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matrices: one thread is ~2x faster than two (measured)
        kwargs = {} if self._hyper is None else {"optimizer_kwargs": {"options": {"maxiter": self.settings.warm_maxiter}}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fit_gpytorch_mll(mll, **kwargs)
            except Exception:  # noqa: BLE001 - keep the prior hyper-parameters if fitting fails
                pass
            finally:
                torch.set_num_threads(threads)
        model.eval()
        self._hyper = {
            k: v.clone() for k, v in model.state_dict().items() if k.startswith(("likelihood", "covar_module", "mean_module"))
        }
        self._hyper_inferred_noise = var is None
        self._model, self._model_n = model, len(self.observations)
        return model

    def posterior(self, indices: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std (latent, no observation noise) of both outcomes at ``indices``."""
        model = self.model()
        with torch.no_grad():
            post = model.posterior(self.X_all[list(indices)])
            return post.mean.numpy(), post.variance.clamp_min(1e-12).sqrt().numpy()

    def noise_std(self) -> tuple[float, float]:
        """Per-measurement noise std of (log objective, log constraint), from the fitted GP."""
        model = self.model()
        _, _, var = self._train_data()
        stdvs = model.outcome_transform.stdvs.detach().reshape(-1)
        if var is not None:
            v = var.mean(0)
            extra = getattr(model.likelihood, "second_noise", 0.0)  # learned noise beyond the reported
            v = v + torch.as_tensor(extra, dtype=DTYPE).detach().reshape(-1) * stdvs**2
            return tuple(float(x) for x in v.sqrt())  # type: ignore[return-value]
        noise = model.likelihood.noise.detach().reshape(-1)
        sd = (noise * stdvs**2).sqrt()
        return float(sd[0]), float(sd[-1])

    def _constraint_noise_sd(self, by_point: dict[int, list[Observation]]) -> float:
        """Per-measurement noise sd of log constraint.

        The GP's noise estimate also absorbs model misfit on rough landscapes, so it overstates pure
        measurement noise. Replicated points measure the noise itself: their pooled within-point
        variance updates the GP's estimate as a prior worth ``NOISE_PRIOR_DOF`` degrees of freedom.
        """
        _, sd_gp = self.noise_std()
        ss, dof = 0.0, 0
        for obs in by_point.values():
            if len(obs) > 1:
                logs = np.log([o.constraint for o in obs])
                ss += float(((logs - logs.mean()) ** 2).sum())
                dof += len(obs) - 1
        return math.sqrt((NOISE_PRIOR_DOF * sd_gp**2 + ss) / (NOISE_PRIOR_DOF + dof))

    def _point_estimates(self) -> PointEstimates:
        """Per measured point: indices, mean log objective, mean log constraint/threshold, P(feasible).

        The estimate of a point is the mean of its own measurements (unbiased, unlike the GP's
        smoothed mean at a rough optimum); its standard error uses the GP's noise estimate.
        """
        by_point: dict[int, list[Observation]] = {}
        for o in self.observations:
            by_point.setdefault(o.index, []).append(o)
        idx = sorted(by_point)
        lobj = np.array([np.mean([math.log(o.objective) for o in by_point[i]]) for i in idx])
        lcon = np.array([np.mean([math.log(o.constraint / self.threshold) for o in by_point[i]]) for i in idx])
        n = np.array([len(by_point[i]) for i in idx], dtype=float)
        se = np.maximum(self._constraint_noise_sd(by_point), 1e-3) / np.sqrt(n)
        est = PointEstimates(idx, lobj, lcon, se, ndtr(-lcon / se), n)
        if self._use_trends:
            lower, upper = self._trend_bounds(np.asarray(idx), est)
            est = est._replace(p=np.minimum(np.maximum(est.p, lower), upper))
        return est

    def _trend_bounds(self, points: np.ndarray, est: PointEstimates | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds on P(feasible) of ``points`` implied by the measured points (``est``,
        default: the current estimates) and the knobs' latency trends (see ``CBOSettings.monotone_slack``)."""
        idx, _, lcon, se, _, _ = est if est is not None else self._point_estimates()
        slack = math.log1p(self.settings.monotone_slack or 0.0)
        p_up, p_lo = ndtr((slack - lcon) / se), ndtr((-slack - lcon) / se)
        lower, upper = np.zeros(len(points)), np.ones(len(points))
        s_m, u_m = self._slowness[idx], self._untrended[idx]
        for start in range(0, len(points), self.settings.max_batch):
            sl = slice(start, start + self.settings.max_batch)
            s_c, u_c = self._slowness[points[sl]][:, None, :], self._untrended[points[sl]][:, None, :]
            same = (u_c == u_m[None]).all(-1)
            slower = same & (s_c >= s_m[None]).all(-1)  # the point is at least as slow as measured m
            faster = same & (s_c <= s_m[None]).all(-1)
            upper[sl] = np.where(slower, p_up[None], 1.0).min(1)
            lower[sl] = np.where(faster, p_lo[None], 0.0).max(1)
        return lower, upper

    # ----- ask --------------------------------------------------------------------------------------
    def _initial_point(self) -> int:
        left = self.unmeasured()
        target = self._sobol.draw(1).to(DTYPE)[:, : self.X_all.shape[1]]
        d = ((self.X_all[left] - target) ** 2).sum(-1)
        return int(left[int(torch.argmin(d))])

    def ask(self, remaining: int | None = None) -> int:
        left = self.unmeasured()
        if len(left) == 0:
            self.stop_reason = "every point of the space has been measured"
            rec = self.recommend()
            return rec.index if rec.index is not None else self.observations[-1].index
        if len(self.observations) < self.settings.n_init:
            return self._initial_point()

        if remaining is not None and remaining <= self.settings.recheck_reserve:
            recheck = self._uncertain_pick(remaining)
            if recheck is not None:
                return recheck

        est = self._point_estimates()
        lobj, feasible = est.lobj, est.p >= 0.5
        model = self.model()
        choices = self.X_all[left]
        sure = est.p >= self.settings.confidence
        late = self.settings.confident_best_after is not None and len(self.observations) >= self.settings.confident_best_after
        cons = {1: (None, 0.0)}
        if feasible.any():
            # early: improve on the best point believed feasible (race to the optimum); late: on the
            # point that would be recommended, so that a slightly costlier point that can be
            # confirmed feasible still has value when the best one sits on the latency boundary
            best_f = float(lobj[sure].min()) if late and sure.any() else float(lobj[feasible].min())
            acq = LogConstrainedExpectedImprovement(
                model, best_f=best_f, objective_index=0, constraints=cons, maximize=False
            )
        else:
            acq = LogProbabilityOfFeasibility(model, constraints=cons)
        values = self._evaluate(acq, choices)
        if self._use_trends:
            # swap the GP's feasibility factor for one clipped to what the latency trends imply
            log_pof = (
                self._evaluate(LogProbabilityOfFeasibility(model, constraints=cons), choices)
                if feasible.any()
                else values  # the acquisition already is the log P(feasible)
            )
            lower, upper = self._trend_bounds(left, est)
            lo, hi = torch.as_tensor(np.log(np.maximum(lower, 1e-300))), torch.as_tensor(np.log(np.maximum(upper, 1e-300)))
            values = values - log_pof + torch.minimum(torch.maximum(log_pof, lo), hi)
        best = int(torch.argmax(values))
        self.last_acq_value = float(values[best])
        pick = int(left[best])
        if late and self.settings.recheck_compete:
            # both are expected relative improvements of the recommendation: re-measure when that pays more
            recheck, value = self._recheck_value(remaining, est)
            if recheck is not None and math.log(value) > self.last_acq_value:
                return recheck
        if (
            feasible.any()
            and len(self.observations) >= self.settings.min_evals
            and self.last_acq_value < math.log(self.settings.ei_stop)
        ):
            recheck = self._uncertain_pick(remaining)
            if recheck is not None:
                return recheck
            self.stop_reason = (
                f"expected improvement below {self.settings.ei_stop:.2%} of the objective"
            )
        return pick

    def _evaluate(self, acq: torch.nn.Module, X: torch.Tensor) -> torch.Tensor:
        """Acquisition values at every row of ``X`` (q = 1), in batches of ``settings.max_batch``."""
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.cat([acq(X[i : i + self.settings.max_batch].unsqueeze(1)) for i in range(0, len(X), self.settings.max_batch)])

    def _uncertain_pick(self, remaining: int | None = None) -> int | None:
        j, _ = self._recheck_value(remaining)
        return j

    def _recheck_value(self, remaining: int | None = None, est: PointEstimates | None = None) -> tuple[int | None, float]:
        """A measured point worth re-measuring and the value of doing so (an expected relative saving on
        the recommendation's objective), or (None, 0.0). ``est``: the current point estimates, if at hand.

        Candidates: points better than the current recommendation whose feasibility is uncertain
        (``recheck_min_p`` <= P < confidence) and that have fewer than ``max_repeats`` measurements.
        Each is valued by the relative objective it would save over the recommendation times the
        probability that ``k`` more measurements (up to ``max_repeats`` and the ``remaining`` budget)
        raise its P(feasible) to the confidence: the preposterior of its mean log constraint is
        normal around the current mean with variance sd^2 (1/n - 1/(n+k)). The most valuable wins;
        a point just under the threshold beats a cheaper one that is most likely infeasible.
        """
        idx, lobj, lcon, se, p, n = est if est is not None else self._point_estimates()
        conf = self.settings.confidence
        sure = p >= conf
        rec_lobj = float(lobj[sure].min()) if sure.any() else math.inf
        k = np.maximum(self.settings.max_repeats - n, 0.0)
        if remaining is not None:
            k = np.minimum(k, max(remaining, 0))
        sd = se * np.sqrt(n)
        z = float(ndtri(conf))
        pred_sd = sd * np.sqrt(np.maximum(1.0 / n - 1.0 / (n + k), 1e-12))
        p_reach = ndtr((-z * sd / np.sqrt(n + k) - lcon) / pred_sd)
        gain = 1.0 - np.exp(np.minimum(lobj - rec_lobj, 0.0))  # 1 when nothing is confidently feasible
        value = np.where((k > 0) & ~sure & (p >= self.settings.recheck_min_p) & (lobj < rec_lobj), gain * p_reach, 0.0)
        j = int(np.argmax(value))
        return (idx[j], float(value[j])) if value[j] > 0 else (None, 0.0)

    # ----- recommend --------------------------------------------------------------------------------
    def recommend(self) -> Recommendation:
        if len(self.observations) < 2:
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


__all__ = ["CBOSettings", "ConstrainedBO"]
