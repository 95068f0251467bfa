"""Warm-started constrained BO: re-tune after a model update from what was learned on the previous version.

Hardware-agnostic: it is given prior observations (points of the same search space and their measured
objective and constraint, e.g. energy and latency of the previous model version), nothing else.

Model. A model update shifts the landscape: in log space, new(x) = old(x) + shift(x). A GP fitted on the
prior alone gives old(x). At every step the shift of each outcome is estimated from the new measurements
(residuals new - old at the measured points): a mean offset ``delta`` and a spread ``tau`` (beyond
measurement noise). The prior observations, moved by ``delta``, join the new ones in the usual
constrained-BO GP (``ConstrainedBO``) with their noise variance raised by ``tau**2``, so they guide the
search where nothing new was measured and yield to new measurements where there are some.

Order of measurements: the tuner's baseline, then the previous best (what ``ConstrainedBO`` recommends
from the prior observations alone; skipped when the estimated shift makes it infeasible), then the safe
constrained EI of ``ConstrainedBO`` as usual. Recommendations use new measurements only
(``ConstrainedBO.recommend``), with one rule on top: once the previous best re-measures feasible (mean
new latency under the threshold), nothing costlier than it (mean new energy) is recommended; the
previous best itself is recommended when no confidently feasible config is cheaper.

Large shifts: when the residual spread exceeds ``WarmStartSettings.max_tau`` (the landscape changed
shape, not just level) the prior is dropped and the tune continues as a cold start (``fallback_reason``
says why); a pure level shift, however large, is absorbed by ``delta``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood

from polythrottle.errors import BadInputError
from polythrottle.optim.base import Observation, Recommendation
from polythrottle.optim.cbo import DTYPE, CBOSettings, ConstrainedBO
from polythrottle.optim.gp_model import standardization
from polythrottle.space import SearchSpace


@dataclass(frozen=True)
class WarmStartSettings:
    """Tunables of the warm start (log units: 0.1 is about 10%).

    tau_prior: assumed spread of the shift before two new points allow estimating it.
    tau_floor: the spread never counts as smaller than this (old data are never as good as new).
    max_tau: a spread above this (with at least ``min_points_for_fallback`` new points) drops the prior.
    max_prior: most prior observations used (the latest ones).
    """

    tau_prior: float = 0.10
    tau_floor: float = 0.03
    max_tau: float = 0.30
    min_points_for_fallback: int = 3
    max_prior: int = 400


WARM_CBO_SETTINGS = CBOSettings(n_init=1, min_evals=4)
"""Defaults of the underlying BO for a re-tune: no random initial design; may stop after 4 measurements."""


class WarmStartBO(ConstrainedBO):
    """``ConstrainedBO`` with prior observations from a previous model version (same space).

    prior: observations of the previous version (indices into ``space``); empty = a cold start.
    Raises BadInputError (via ``Optimizer.tell`` rules) for a prior observation outside the space.
    """

    name = "warm-cbo"

    def __init__(
        self,
        space: SearchSpace,
        threshold: float,
        seed: int | None = None,
        prior: Sequence[Observation] = (),
        settings: CBOSettings | None = None,
        warm: WarmStartSettings | None = None,
    ) -> None:
        self._cold_settings = settings or CBOSettings()
        super().__init__(space, threshold, seed, settings or (WARM_CBO_SETTINGS if prior else None))
        self.warm = warm or WarmStartSettings()
        for o in prior:
            if not 0 <= o.index < len(space) or not (o.objective > 0 and o.constraint > 0):
                raise BadInputError(f"prior observation {o} is outside the space or not positive")
        self.prior: list[Observation] = list(prior)[-self.warm.max_prior :]
        self.fallback_reason: str | None = None
        self.shift: tuple[float, float] = (0.0, 0.0)
        """Estimated mean shift (log units) of (objective, constraint) against the prior."""
        self.spread: tuple[float, float] = (self.warm.tau_prior, self.warm.tau_prior)
        """Estimated spread (log units) of the shift around its mean."""
        self._prior_model: SingleTaskGP | None = None
        self._prior_noise: tuple[float, float] = (1e-3, 1e-3)
        self._prior_pick_done = False
        self._transfer_n = -1
        self.previous_best: int | None = None
        """What the prior observations alone recommend (index), or None."""
        if self.prior:
            self._fit_prior()
            self.previous_best = self._recommend_from_prior()

    @property
    def prior_active(self) -> bool:
        return bool(self.prior) and self.fallback_reason is None

    # ----- the prior's own model ------------------------------------------------------------------
    def _log_y(self, obs: Sequence[Observation]) -> torch.Tensor:
        return torch.tensor(
            [[math.log(o.objective), math.log(o.constraint / self.threshold)] for o in obs], dtype=DTYPE
        )

    def _fit_prior(self) -> None:
        X = self.X_all[[o.index for o in self.prior]]
        Y = self._log_y(self.prior)
        model = SingleTaskGP(X, Y, outcome_transform=Standardize(m=2))
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fit_gpytorch_mll(mll)
            except Exception:  # noqa: BLE001 - keep the default hyper-parameters if fitting fails
                pass
        model.eval()
        noise = model.likelihood.noise.detach().reshape(-1)
        stdvs = standardization(model)[1].detach().reshape(-1)
        sd = (noise * stdvs**2).sqrt()
        self._prior_noise = (max(float(sd[0]), 1e-3), max(float(sd[-1]), 1e-3))
        self._prior_model = model

    def prior_posterior(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The prior GP's mean and variance of (log objective, log constraint/threshold) at ``indices``,
        each of shape (n, 2)."""
        assert self._prior_model is not None
        with torch.no_grad():
            post = self._prior_model.posterior(self.X_all[list(indices)])
            return post.mean.numpy(), post.variance.clamp_min(0.0).numpy()

    # ----- shift estimate ---------------------------------------------------------------------------
    def _new_noise(self) -> tuple[float, float]:
        """Measurement noise (log std) of the new observations: their own rel_std, else the prior's."""
        obs = self.observations
        if obs and all(o.objective_rel_std is not None and o.constraint_rel_std is not None for o in obs):
            return (
                max(float(np.mean([o.objective_rel_std for o in obs])), 1e-3),
                max(float(np.mean([o.constraint_rel_std for o in obs])), 1e-3),
            )
        return self._prior_noise

    def _update_transfer(self) -> None:
        """Re-estimate ``shift``/``spread`` from the new observations; drop the prior if the spread is large.

        Residual r_i = new_i - prior_mean(x_i) has variance spread**2 + prior_var(x_i) + noise**2; the
        shift is the precision-weighted mean of the residuals, the spread what their scatter leaves
        after the prior's own uncertainty and the noise are taken out.
        """
        if not self.prior_active or self._transfer_n == len(self.observations) or not self.observations:
            return
        self._transfer_n = len(self.observations)
        idx = [o.index for o in self.observations]
        mean, pvar = self.prior_posterior(idx)
        resid = self._log_y(self.observations).numpy() - mean
        known = pvar + (np.asarray(self._new_noise()) ** 2 + np.asarray(self._prior_noise) ** 2)
        if len(resid) >= 3:
            # A point far from every prior observation can be mispredicted beyond the prior GP's own
            # variance (extrapolation): residuals more than 3 robust scales from the median are left out.
            med = np.median(resid, axis=0)
            mad = 1.4826 * np.median(np.abs(resid - med), axis=0)
            scale = np.maximum(mad, np.sqrt(self.warm.tau_prior**2 + np.median(known, axis=0)))
            inlier = (np.abs(resid - med) <= 3.0 * scale).all(axis=1)
            resid, known = resid[inlier], known[inlier]
        n = len(resid)
        w = 1.0 / (known + self.warm.tau_prior**2)
        delta = (w * resid).sum(axis=0) / w.sum(axis=0)
        if n >= 2:
            excess = ((resid - delta) ** 2 - known).sum(axis=0) / (n - 1)
            raw = np.sqrt(np.maximum(excess, 0.0))
            # Shrink toward the prior spread while there are few points (a weighted pooled variance).
            a = (n - 1) / (n - 1 + 2.0)
            tau2 = a * np.maximum(excess, 0.0) + (1 - a) * self.warm.tau_prior**2
            tau = np.sqrt(np.maximum(tau2, self.warm.tau_floor**2))
            if n >= self.warm.min_points_for_fallback and raw.max() > self.warm.max_tau:
                which = "energy" if raw[0] >= raw[1] else "latency"
                self.fallback_reason = (
                    f"large shift after {len(self.observations)} measurements: the {which} moved unevenly "
                    f"(spread {raw.max():.2f} in log units > {self.warm.max_tau}); continuing as a cold start"
                )
                self.settings = self._cold_settings
                self._hyper = None
                self._model = None
                return
        else:
            tau = np.full(2, self.warm.tau_prior)
        self.shift = (float(delta[0]), float(delta[1]))
        self.spread = (float(tau[0]), float(tau[1]))
        self._model = None  # the training data changed

    # ----- hooks into ConstrainedBO -----------------------------------------------------------------
    def _train_data(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        X, Y, var = super()._train_data()
        if not self.prior_active:
            return X, Y, var
        self._update_transfer()
        if not self.prior_active:
            return X, Y, var
        new_sd = self._new_noise()
        if var is None:
            var = torch.tensor([[new_sd[0] ** 2, new_sd[1] ** 2]], dtype=DTYPE).expand(len(Y), 2)
        Xp = self.X_all[[o.index for o in self.prior]]
        Yp = self._log_y(self.prior) + torch.tensor(self.shift, dtype=DTYPE)
        pv = [self._prior_noise[j] ** 2 + self.spread[j] ** 2 for j in range(2)]
        varp = torch.tensor([pv], dtype=DTYPE).expand(len(Yp), 2)
        return torch.cat([X, Xp]), torch.cat([Y, Yp]), torch.cat([var, varp])

    def noise_std(self) -> tuple[float, float]:
        if not self.prior_active:
            return super().noise_std()
        return self._new_noise()

    def _recommend_from_prior(self) -> int | None:
        """The previous best: what ``ConstrainedBO`` (cold settings) recommends from the prior alone."""
        cold = ConstrainedBO(self.space, self.threshold, self.seed, self._cold_settings)
        for o in self.prior:
            cold.tell(o)
        try:
            return cold.recommend().index
        except Exception:  # noqa: BLE001 - a prior the GP cannot fit: no previous best, a plain warm start
            return None

    def _prior_pick(self) -> int | None:
        """The previous best, unless the estimated latency shift makes it infeasible (its mean prior
        latency moved by the shift is over the threshold)."""
        i = self.previous_best
        if i is None:
            return None
        lcon = [math.log(o.constraint / self.threshold) for o in self.prior if o.index == i]
        return i if float(np.mean(lcon)) + self.shift[1] <= 0.0 else None

    def ask(self, remaining: int | None = None) -> int:
        self._update_transfer()
        if self.prior_active and not self._prior_pick_done and self.observations:
            self._prior_pick_done = True
            pick = self._prior_pick()
            if pick is not None and pick not in self.measured:
                return pick
        return super().ask(remaining)

    def recommend(self) -> Recommendation:
        """``ConstrainedBO.recommend``, but never costlier than the previous best once that re-measures
        feasible (mean new latency under the threshold); then the previous best itself, unless a
        confidently feasible config is cheaper."""
        rec = super().recommend()
        i = self.previous_best
        new = [o for o in self.observations if o.index == i]
        if i is None or not new:
            return rec
        lobj = float(np.mean([math.log(o.objective) for o in new]))
        lcon = float(np.mean([math.log(o.constraint / self.threshold) for o in new]))
        if lcon > 0.0 or (rec.index is not None and rec.objective is not None and rec.objective <= math.exp(lobj)):
            return rec
        est = self._point_estimates()
        p = float(est.p[est.idx.index(i)])
        return Recommendation(i, math.exp(lobj), math.exp(lcon) * self.threshold, p,
                              "the previous model version's best, re-measured feasible (mean of its new measurements)")


def configs_to_prior(
    space: SearchSpace, items: Sequence[tuple[dict, float, float]]
) -> list[Observation]:
    """Prior observations from ``(config, objective, constraint)`` triples; configs outside ``space`` are skipped."""
    out = []
    for config, objective, constraint in items:
        try:
            i = space.index_of({k: config[k] for k in space.names})
        except (KeyError, BadInputError):  # a config of another space: not usable here
            continue
        if objective > 0 and constraint > 0:
            out.append(Observation(i, float(objective), float(constraint)))
    return out


__all__ = ["WARM_CBO_SETTINGS", "WarmStartBO", "WarmStartSettings", "configs_to_prior"]
