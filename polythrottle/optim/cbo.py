"""Safe constrained Bayesian optimization over a finite candidate set (BoTorch / GPyTorch).

Model: one GP per outcome, on log(objective) and log(constraint / threshold), both standardised,
inputs in [0, 1] (clocks and batch sizes on a log axis, categorical values in their known speed order,
see ``Knob.encode``).

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
improvement (and in the last ``recheck_reserve`` measurements). With exact measurements (every
observation reports a relative noise of 0) nothing is measured twice.

The optimizer ends the tune itself (``stop_reason``) when
* no config can meet the threshold: nothing measured is feasible and no unmeasured config has
  P(feasible) >= ``impossible_p`` (the fastest configs were measured and everything else is slower);
* a better feasible config is unlikely to remain: after ``min_evals`` measurements, with a confident
  recommendation and no re-measurement worth making, no unmeasured config has a probability >=
  ``stop_p`` of being feasible and at least ``stop_delta`` cheaper than the recommendation;
* every config has been measured.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from botorch.acquisition.analytic import _log_ei_helper
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, LogNormalPrior
from scipy.special import log_ndtr, ndtr, ndtri, owens_t

from polythrottle.optim.base import Observation, Optimizer, Recommendation
from polythrottle.space import SearchSpace

DTYPE = torch.double
NOISE_PRIOR_DOF = 2.0
EXACT_SE = 1e-9
"""Standard error of a point's mean log constraint when measurements are exact."""


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
    impossible_p: stop as infeasible when nothing measured and no unmeasured config has P(feasible) >= this.
    recheck_reserve: in the last measurements of a budget, re-measuring a point of uncertain feasibility
      competes with new points (as from ``confident_best_after`` on).
    max_repeats: most measurements of one point.
    recheck_min_p: a measured point with at least this P(feasible) may be re-measured (see ``_recheck_value``).
    reported_noise: how observations' own noise estimates (``objective_rel_std``...) are used:
      "fixed" as the exact noise; "floor" as a lower bound, the GP learning extra homoscedastic noise on
      top (live windows of one measurement miss the spread between measurements); "ignore": inferred.
    confident_best_after: from this many observations on, expected improvement is measured from the
      confidently feasible incumbent (the recommendation) rather than from the best point with P >= 0.5.
      None: never.
    recheck_compete: from ``confident_best_after`` on, re-measure a point whenever the value of doing so
      (see ``_recheck_value``) beats the best expected improvement of a new point.
    prune_dominated: explore only points not dominated by the knobs' speed ranks (a point with the same
      other values and a higher-ranked precision, CUDA graphs on, ... is no slower and no costlier);
      a rank that measurements contradict is dropped.
    pessimistic_mean: the GP's prior mean is the highest (costliest, slowest) measured value, not fitted.
    initial_design: move along the knobs' known energy trends first (see ``_design_point``).
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
    stop_p: float = 0.3
    min_evals: int = 6
    impossible_p: float = 0.01
    prune_dominated: bool = True
    confirm_margin: bool = True
    lengthscale_prior: tuple[str, float, float] = ("lognormal", -0.1, 1.0)
    initial_design: bool = True
    pessimistic_mean: bool = True
    smooth_objective: bool = True
    energy_dominance: bool = True
    stop_candidates: int = 64
    stop_samples: int = 512
    slack_as_sd: bool = False
    max_batch: int = 4096
    warm_maxiter: int = 30
    recheck_reserve: int = 5
    max_repeats: int = 4
    reported_noise: str = "floor"
    monotone_slack: float | None = 0.05
    recheck_min_p: float = 0.1
    confident_best_after: int | None = 6
    recheck_compete: bool = True


def matern_kernel(dims: int, lengthscale_prior: tuple[str, float, float]) -> ScaleKernel:
    """Scaled Matern-5/2 with ARD over ``dims`` inputs for the two outcomes (batch of 2), a lengthscale
    prior ("gamma", concentration, rate) or ("lognormal", loc, scale) and BoTorch's Gamma(2, 0.15)
    outputscale prior."""
    batch = torch.Size([2])
    kind, a, b = lengthscale_prior
    prior = GammaPrior(a, b) if kind == "gamma" else LogNormalPrior(a, b)
    return ScaleKernel(
        MaternKernel(nu=2.5, ard_num_dims=dims, batch_shape=batch, lengthscale_prior=prior),
        batch_shape=batch, outputscale_prior=GammaPrior(2.0, 0.15),
    )


def bvn_cdf(h: np.ndarray, k: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """P(X <= h, Y <= k) for standard normals X, Y with correlation ``rho`` (|rho| < 1), elementwise
    (Owen's T-function formula)."""
    h = np.where(np.abs(h) < 1e-12, 1e-12, h)
    k = np.where(np.abs(k) < 1e-12, 1e-12, k)
    r = np.clip(rho, -0.999999, 0.999999)
    q = np.sqrt(1.0 - r * r)
    beta = np.where(h * k > 0, 0.0, 0.5)
    return 0.5 * ndtr(h) + 0.5 * ndtr(k) - owens_t(h, (k / h - r) / q) - owens_t(k, (h / k - r) / q) - beta


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


class SpeedOrder:
    """The partial order of a space's points by speed, from the knobs' semantics.

    ``slower(c, m)``: point c is at least as slow as point m (no faster on any ordered knob, equal on
    the unordered ones). ``log_slowdown(c, m)``: an upper bound on log(latency(c) / latency(m)) from the
    knobs' latency exponents (inf where no bound is known).
    """

    def __init__(self, space: SearchSpace, unranked: frozenset[int] = frozenset()) -> None:
        rows = space.rows
        self.unranked = unranked
        trended, ranked, other, exps, logv = [], [], [], [], []
        for j, k in enumerate(space.knobs):
            if j in unranked:  # its speed order was contradicted by measurements
                other.append(j)
            elif k.numeric and k.latency_trend:
                trended.append(j)
                v = np.asarray(k.values, dtype=float)
                ok = k.latency_exponent is not None and v.min() > 0
                exps.append(k.latency_exponent if ok else math.inf)
                # larger = slower, in log units of the value (0 where no exponent applies)
                logv.append(k.latency_trend * (np.log(v) if ok else np.zeros(len(v)))[rows[:, j]])
            elif k.speed_rank is not None:
                ranked.append(j)
            else:
                other.append(j)
        self.active = bool(trended or ranked)
        trend = np.array([space.knobs[j].latency_trend for j in trended], dtype=np.int64)
        self.slow = rows[:, trended].astype(np.int64) * trend  # larger = slower (value index order)
        self.logv = np.stack(logv, axis=1) if logv else np.zeros((len(rows), 0))
        self.exps = np.asarray(exps, dtype=float)
        self.rank = (
            np.stack([np.asarray(space.knobs[j].speed_rank)[rows[:, j]] for j in ranked], axis=1)
            if ranked else np.zeros((len(rows), 0), dtype=np.int64)
        )
        self.rval = rows[:, ranked]
        self.other = rows[:, other]
        self.ranked_cols = ranked
        self._unranked_key = rows[:, trended + other]

    def dominated(self) -> np.ndarray:
        """Per point: whether another point of the space has the same values of every knob without a
        speed rank and a rank at least as high on every ranked knob, higher on one (the same value
        where ranks tie). By the knobs' semantics it is then no slower and uses no more energy."""
        n = len(self.rval)
        if not self.ranked_cols:
            return np.zeros(n, dtype=bool)
        _, group = np.unique(self._unranked_key, axis=0, return_inverse=True)
        combos, combo = np.unique(self.rval, axis=0, return_inverse=True)
        group, combo = group.reshape(-1), combo.reshape(-1)
        rank = self.rank[np.unique(combo, return_index=True)[1]]  # rank of each combo
        ra, rb = rank[:, None, :], rank[None, :, :]
        eq = combos[:, None, :] == combos[None, :, :]
        geq = ((ra > rb) | eq).all(-1)
        strict = (ra > rb).any(-1)
        dom = geq & strict  # dom[a, b]: combo a dominates combo b
        exists = np.zeros((group.max() + 1, len(combos)), dtype=bool)
        exists[group, combo] = True
        return (exists[group] & dom[:, combo].T).any(-1)

    def contradicted(self, idx: np.ndarray, lobj: np.ndarray, lcon: np.ndarray, tol_obj: np.ndarray,
                     tol_con: np.ndarray) -> set[int]:
        """Ranked knobs (space columns) whose order measured points contradict: a point at least as
        fast by the order (equal on every other knob) measured slower or costlier than another by more
        than the tolerances (log units, per point)."""
        bad: set[int] = set()
        if not self.ranked_cols or len(idx) < 2:
            return bad
        key = self._unranked_key[idx]
        same = (key[:, None, :] == key[None]).all(-1)
        ra, rb = self.rank[idx][:, None, :], self.rank[idx][None]
        va, vb = self.rval[idx][:, None, :], self.rval[idx][None]
        geq = ((ra > rb) | (va == vb)).all(-1) & (ra > rb).any(-1) & same  # a dominates b
        tc = np.hypot(tol_con[:, None], tol_con[None])
        to = np.hypot(tol_obj[:, None], tol_obj[None])
        wrong = geq & ((lcon[:, None] > lcon[None] + tc) | (lobj[:, None] > lobj[None] + to))
        for a, b in zip(*np.nonzero(wrong)):
            bad.update(c for c, x, y in zip(self.ranked_cols, self.rval[idx[a]], self.rval[idx[b]]) if x != y)
        return bad

    def _cmp(self, c: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For candidates c and measured m (row indices): (same unordered values, c no faster on the
        trended knobs, c no faster on the ranked knobs), each (len(c), len(m))."""
        same = (self.other[c][:, None, :] == self.other[m][None]).all(-1)
        slow_t = (self.slow[c][:, None, :] >= self.slow[m][None]).all(-1)
        rc, rm = self.rank[c][:, None, :], self.rank[m][None]
        eq = self.rval[c][:, None, :] == self.rval[m][None]
        slow_r = ((rc < rm) | eq).all(-1)
        return same, slow_t, slow_r

    def relations(self, c: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(c at least as slow as m, c at least as fast as m), each (len(c), len(m))."""
        same, slow_t, slow_r = self._cmp(c, m)
        fast_t = (self.slow[c][:, None, :] <= self.slow[m][None]).all(-1)
        rc, rm = self.rank[c][:, None, :], self.rank[m][None]
        eq = self.rval[c][:, None, :] == self.rval[m][None]
        fast_r = ((rc > rm) | eq).all(-1)
        return same & slow_t & slow_r, same & fast_t & fast_r

    def log_slowdown(self, c: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Upper bounds on log(latency(c) / latency(m)), each (len(c), len(m)): the bound (inf where
        none is known), and the part of it the knobs with a latency exponent account for (the knobs
        without a known bound on their effect left out)."""
        same = (self.other[c][:, None, :] == self.other[m][None]).all(-1)
        rc, rm = self.rank[c][:, None, :], self.rank[m][None]
        eq = self.rval[c][:, None, :] == self.rval[m][None]
        no_slower_r = ((rc > rm) | eq).all(-1)
        slower_t = self.slow[c][:, None, :] > self.slow[m][None]
        bounded = np.isfinite(self.exps)
        d = np.maximum(self.logv[c][:, None, :] - self.logv[m][None], 0.0)
        f = (d[..., bounded] * self.exps[bounded]).sum(-1)
        unbounded = slower_t[..., ~bounded].any(-1)
        return np.where(same & no_slower_r & ~unbounded, f, math.inf), f


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
        self._set_order(frozenset())
        etrend = np.array([k.energy_trend or 0 for k in space.knobs], dtype=np.int64)
        self._energy_dir = space.rows.astype(np.int64) * -etrend  # larger = cheaper on the energy-trended knobs
        self._energy_free = etrend != 0
        # per energy-trended knob: the row one step the cheap way, all else equal (-1: none)
        self._cheaper_step = []
        for j in np.flatnonzero(etrend):
            step = np.full(len(space), -1, dtype=np.int64)
            for i, r in enumerate(space.rows):
                key = list(int(v) for v in r)
                key[j] -= int(etrend[j])
                step[i] = space._lookup.get(tuple(key), -1)
            self._cheaper_step.append(step)

    def _set_order(self, unranked: frozenset[int]) -> None:
        """Use the knobs' speed order, without the ranks of ``unranked`` knobs (contradicted by measurements)."""
        self.order = SpeedOrder(self.space, unranked)
        self._use_order = self.settings.monotone_slack is not None and self.order.active
        self.undominated = ~self.order.dominated() if self.settings.prune_dominated else np.ones(len(self.space), bool)
        """Points not dominated by the knobs' speed ranks (``SpeedOrder.dominated``): the only ones explored."""

    def _check_order(self) -> bool:
        """Drop the ranks that measurements contradict (beyond 10% and three standard errors); True if any."""
        if not self.settings.prune_dominated or not self.order.ranked_cols or len(self.measured) < 2:
            return False
        est = self._point_estimates()
        sd_obj = 0.0 if self.exact else self.noise_std()[0]
        tol_obj = math.log(1.1) / math.sqrt(2) + 3 * sd_obj / np.sqrt(est.n)
        tol_con = math.log(1.1) / math.sqrt(2) + 3 * est.se
        bad = self.order.contradicted(np.asarray(est.idx), est.lobj, est.lcon, tol_obj, tol_con)
        if bad - self.order.unranked:
            self._set_order(frozenset(self.order.unranked | bad))
            return True
        return False

    @property
    def exact(self) -> bool:
        """Whether every observation says it is exact (relative noise 0 on both outcomes)."""
        return bool(self.observations) and all(
            o.objective_rel_std == 0.0 and o.constraint_rel_std == 0.0 for o in self.observations
        )

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
        covar = matern_kernel(X.shape[-1], self.settings.lengthscale_prior)
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
        if self.settings.pessimistic_mean:
            # unexplored configs are predicted like the costliest and slowest measured ones, not like the
            # average of the (mostly near-optimal) measured ones: less exploration of far corners
            model.mean_module.raw_constant.data = model.train_targets.max(dim=-1).values.clone()
            model.mean_module.raw_constant.requires_grad_(False)
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
        """Posterior mean and std (latent, no observation noise) of both outcomes at ``indices``, each (n, 2)."""
        model = self.model()
        idx = np.asarray(indices, dtype=np.int64)
        means, stds = [], []
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(0, len(idx), self.settings.max_batch):
                # a batch of single points (n x 1 x d): marginals only, no n x n joint covariance
                post = model.posterior(self.X_all[idx[i : i + self.settings.max_batch]].unsqueeze(-2))
                means.append(post.mean.squeeze(-2).numpy())
                stds.append(post.variance.squeeze(-2).clamp_min(1e-12).sqrt().numpy())
        if not means:
            return np.zeros((0, 2)), np.zeros((0, 2))
        return np.concatenate(means), np.concatenate(stds)

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

    def _measured_order_bounds(self, est: PointEstimates) -> tuple[np.ndarray, np.ndarray]:
        """Bounds on the P(feasible) of measured points from the other measured points and the speed
        order: for a point i at least as slow as a measured j, P(i feasible | L_i >= L_j / (1 + slack)),
        the two estimates' normal errors conditioned on the order (an upper bound: the smallest over j);
        for i at least as fast as j, P(i feasible | L_i <= L_j (1 + slack)) (a lower bound: the largest).
        Unlike clipping to j's own probability, a point measured often is not overruled by one noisy
        measurement of a neighbour."""
        m = np.asarray(est.idx)
        k = len(m)
        lower, upper = np.zeros(k), np.ones(k)
        if k < 2:
            return lower, upper
        slower, faster = self.order.relations(m, m)
        np.fill_diagonal(slower, False)
        np.fill_diagonal(faster, False)
        if not (slower.any() or faster.any()):
            return lower, upper
        s = math.log1p(self.settings.monotone_slack or 0.0)
        mu, sd = est.lcon, est.se
        sd_d = np.sqrt(sd[:, None] ** 2 + sd[None] ** 2)
        mu_d = mu[:, None] - mu[None]
        rho = np.broadcast_to((sd[:, None] / sd_d), sd_d.shape)
        a = np.broadcast_to((-mu / sd)[:, None], sd_d.shape)
        base = ndtr(-mu / sd)
        with np.errstate(divide="ignore", invalid="ignore"):
            b_up = (-s - mu_d) / sd_d  # i slower than j: D = L_i - L_j >= -s
            den_up = ndtr(-b_up)
            cond_up = (ndtr(a) - bvn_cdf(a, b_up, rho)) / den_up
            b_lo = (s - mu_d) / sd_d  # i faster than j: D <= s
            den_lo = ndtr(b_lo)
            cond_lo = bvn_cdf(a, b_lo, rho) / den_lo
        use_up = slower & (den_up > 1e-6)  # a pair the measurements flatly contradict says nothing
        use_lo = faster & (den_lo > 1e-6)
        upper = np.where(use_up, np.clip(cond_up, 0.0, 1.0), 1.0).min(1)
        lower = np.where(use_lo, np.clip(cond_lo, 0.0, 1.0), 0.0).max(1)
        return np.minimum(lower, np.maximum(base, upper)), upper

    def _trend_bounds(self, points: np.ndarray, est: PointEstimates | None = None,
                      margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds on P(feasible) of ``points`` implied by the measured points (``est``,
        default: the current estimates) and the knobs' speed order (see ``CBOSettings.monotone_slack``);
        with ``margin``, on P(log(constraint / threshold) <= -margin)."""
        idx, _, lcon, se, _, _ = est if est is not None else self._point_estimates()
        slack = math.log1p(self.settings.monotone_slack or 0.0)
        if self.settings.slack_as_sd:
            sd = np.sqrt(se**2 + slack**2)
            p_up = p_lo = ndtr((-margin - lcon) / sd)
        else:
            p_up, p_lo = ndtr((slack - margin - lcon) / se), ndtr((-slack - margin - lcon) / se)
        lower, upper = np.zeros(len(points)), np.ones(len(points))
        m = np.asarray(idx)
        for start in range(0, len(points), self.settings.max_batch):
            sl = slice(start, start + self.settings.max_batch)
            slower, faster = self.order.relations(np.asarray(points[sl]), m)
            upper[sl] = np.where(slower, p_up[None], 1.0).min(1)
            lower[sl] = np.where(faster, p_lo[None], 0.0).max(1)
        return lower, upper

    def latency_bound(self, points: np.ndarray, est: PointEstimates | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Upper bounds on log(constraint / threshold) of ``points`` from the measured points and the
        knobs' latency exponents: (the bound, inf where no measured point gives one; the step bound,
        from the points believed feasible (else the fastest measured one) with the effect of the knobs
        without a known bound left out, i.e. what the point's latency would be at most if those knobs
        did not matter)."""
        idx, _, lcon, se, p, _ = est if est is not None else self._point_estimates()
        anchor = lcon + se  # a measured point's latency, one standard error up
        step_from = p >= 0.5
        if not step_from.any():
            step_from = anchor <= anchor.min()
        out, step = np.full(len(points), math.inf), np.full(len(points), math.inf)
        m = np.asarray(idx)
        for start in range(0, len(points), self.settings.max_batch):
            sl = slice(start, start + self.settings.max_batch)
            full, partial = self.order.log_slowdown(np.asarray(points[sl]), m)
            out[sl] = (full + anchor[None]).min(1)
            step[sl] = (partial + anchor[None])[:, step_from].min(1)
        return out, step

    # ----- ask --------------------------------------------------------------------------------------
    def _initial_point(self) -> int:
        left = self.unmeasured()
        target = self._sobol.draw(1).to(DTYPE)[:, : self.X_all.shape[1]]
        d = ((self.X_all[left] - target) ** 2).sum(-1)
        return int(left[int(torch.argmin(d))])

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
        log_hard = math.log(max(self.settings.bound_factor, self.settings.safety_factor))
        bound, step = self.latency_bound(points, est)
        fastest = float((est.lcon + est.se).min()) + 1e-12
        feasible_known = bool((est.p >= 0.5).any())
        step_ok = np.isinf(bound) & (step <= (1e-12 if feasible_known else fastest))
        hard_ok = (bound <= max(log_hard, fastest)) | step_ok
        soft_ok = (bound <= max(log_k, fastest)) | (ndtr((log_k - mean[:, 1]) / std[:, 1]) >= self.settings.safety_p)
        allowed = hard_ok & soft_ok
        if not allowed.any():
            allowed = step <= step.min() + 1e-12
        return allowed

    def _design_point(self, left: np.ndarray, est: PointEstimates, allowed: np.ndarray, margin: float) -> int | None:
        """Safe initial design along the knobs' known energy trends (``Knob.energy_trend``, e.g. a larger
        batch is cheaper per inference): from the cheapest config believed feasible, if nothing has been
        measured along those knobs from it yet, the config that moves them furthest the cheap way while
        the latency bound keeps it under the threshold (by ``margin``). None when there is no such move."""
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
        cand = left[same[left] & allowed & (self._energy_dir[left] >= self._energy_dir[anchor]).all(1)]
        if len(cand) == 0:
            return None
        bound, _ = self.latency_bound(cand, est)
        cand = cand[bound <= -margin]
        if len(cand) == 0:
            return None
        gain = (self._energy_dir[cand] - self._energy_dir[anchor]).sum(1)
        return int(cand[int(np.argmax(gain))]) if gain.max() > 0 else None

    def ask(self, remaining: int | None = None) -> int:
        if len(self.observations) < self.settings.n_init:
            return self._initial_point()
        self._check_order()
        left = self.unmeasured()
        left = left[self.undominated[left]]
        if len(left) == 0:
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
            self.stop_reason = (
                f"no config can meet the threshold: none of the {len(est.idx)} measured configs does, and no "
                f"other has P(feasible) >= {self.settings.impossible_p:g} (highest {p_max:.2g})"
            )
            return int(left[int(np.argmax(values))])

        allowed = self.allowed(left, est, mean, std)
        design = self._design_point(left, est, allowed, margin)
        if design is not None:
            return design
        if self.settings.energy_dominance and self._cheaper_step and feasible.any():
            values = values + self._log_cheaper_infeasible(left, est, log_pof)
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
        if len(self.observations) >= self.settings.min_evals:
            p_remain = self.p_better_remains(view, self.settings.stop_delta)
            if p_remain is not None and p_remain < self.settings.stop_p:
                recheck = None if exact else self._uncertain_pick(remaining)
                if recheck is not None:
                    return recheck
                self.stop_reason = (
                    f"converged: P(an unmeasured config is feasible and >= {self.settings.stop_delta:.0%} cheaper "
                    f"than the recommendation) = {p_remain:.2g} < {self.settings.stop_p:g} after "
                    f"{len(self.observations)} measurements"
                )
        return pick

    def _log_cheaper_infeasible(self, left: np.ndarray, est: PointEstimates, log_pof: np.ndarray) -> np.ndarray:
        """log P(the config one step the cheap way on each energy-trended knob is infeasible), per
        candidate: energy per inference falls with the batch, so a config is only worth its expected
        improvement where the next larger batch (all else equal) does not fit under the threshold."""
        p_all = np.zeros(len(self.space))
        p_all[left] = np.exp(log_pof)
        p_all[np.asarray(est.idx)] = est.p
        out = np.zeros(len(left))
        for step in self._cheaper_step:
            nxt = step[left]
            has = nxt >= 0
            out[has] += np.log(np.maximum(1.0 - p_all[nxt[has]], 1e-12))
        return out

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

    def p_better_remains(self, view: CandidateView, delta: float) -> float | None:
        """P(an unmeasured config is feasible and ``delta`` cheaper than the recommendation); None while
        nothing is confidently feasible."""
        sure = view.est.p >= self.settings.confidence
        if not sure.any():
            return None
        target = float(view.est.lobj[sure].min()) + math.log1p(-delta)
        p_better = np.exp(view.log_pof_c + log_ndtr((target - view.mean[:, 0]) / view.std[:, 0]))
        return self._p_better_remains(view.left, p_better, target, view.margin, view.upper_c)

    def _p_better_remains(self, left: np.ndarray, p_better: np.ndarray, target: float, margin: float,
                          upper: np.ndarray) -> float:
        """P(at least one unmeasured config is feasible (by ``margin``) with log objective < ``target``),
        by sampling the GP's joint posterior at the ``stop_candidates`` configs with the highest marginal
        probability ``p_better`` (neighbouring configs are correlated: their chances do not add up);
        a config's feasibility is also capped by its speed-order bound ``upper``. Seeded: reproducible."""
        k = min(self.settings.stop_candidates, len(left))
        if k == 0 or float(p_better.max()) < 1e-4:
            return float(p_better.max()) if k else 0.0
        top = np.argsort(p_better)[-k:]
        model = self.model()
        gen = torch.Generator().manual_seed(len(self.observations) * 7919 + (self.seed or 0))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = self.X_all[left[top]]
            mvn = model(x.unsqueeze(0).expand(2, *x.shape))  # latent, standardised; batch of two outcomes
            loc, cov = mvn.loc, mvn.covariance_matrix
            cov = cov + 1e-9 * torch.eye(k, dtype=DTYPE)
            chol = torch.linalg.cholesky(cov)
            z = torch.randn((self.settings.stop_samples, 2, k, 1), generator=gen, dtype=DTYPE)
            draws = (loc.unsqueeze(-1) + chol @ z).squeeze(-1)  # (samples, 2, k), standardised units
            stdvs = model.outcome_transform.stdvs.reshape(2, 1)
            means = model.outcome_transform.means.reshape(2, 1)
            draws = (draws * stdvs + means).numpy()
        u = torch.rand((self.settings.stop_samples, k), generator=gen, dtype=DTYPE).numpy()
        hit = (draws[:, 0] < target) & (draws[:, 1] <= -margin) & (u < upper[top][None])
        return float(hit.any(1).mean())

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
        With exact measurements nothing is worth re-measuring.
        """
        if self.exact:
            return None, 0.0
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


__all__ = ["CBOSettings", "ConstrainedBO", "SpeedOrder"]
