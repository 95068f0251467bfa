"""When a constrained-BO tune ends itself: the probability that a better feasible config remains among
the unmeasured ones (sampled from the GP's joint posterior), and which measured point is still worth
re-measuring (and how much) before the recommendation can be trusted. ``Stopping`` is mixed into
``ConstrainedBO`` (it uses ``self.settings``, ``self.model``, ``self.exact`` and ``self._point_estimates``)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.special import log_ndtr, ndtr, ndtri

from polythrottle.optim.cbo_state import CBOState
from polythrottle.optim.estimates import CandidateView, PointEstimates
from polythrottle.optim.gp_model import DTYPE, standardization


class Stopping(CBOState):
    """Stopping and re-measuring decisions."""

    def stop_delta(self) -> float:
        """The saving worth looking further for: ``stop_delta``, or (``stop_delta_noise``) the relative
        noise of one objective measurement if larger (a saving one measurement cannot tell from noise)."""
        if not self.settings.stop_delta_noise or self.exact:
            return self.settings.stop_delta
        return max(self.settings.stop_delta, -math.expm1(-self._objective_noise_sd()))

    def p_better(self, view: CandidateView, delta: float) -> tuple[np.ndarray, float] | None:
        """Per unmeasured candidate of ``view``, P(feasible by the view's margin and ``delta`` cheaper than
        the recommendation) (marginal: each on its own), and the log objective that is ``delta`` cheaper;
        None while nothing is confidently feasible."""
        sure = view.est.p >= self.settings.confidence
        if not sure.any():
            return None
        target = float(view.est.lobj[sure].min()) + math.log1p(-delta)
        return np.exp(view.log_pof_c + log_ndtr((target - view.mean[:, 0]) / view.std[:, 0])), target

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
            z = torch.randn((self.settings.stop_samples, 2, k), generator=gen, dtype=DTYPE)
            # one (2, k, k) @ (2, k, samples) product: broadcasting the factor over the samples instead
            # copied it per sample (~50x slower, most of the stop test's time)
            draws = (loc.unsqueeze(-1) + chol @ z.permute(1, 2, 0)).permute(2, 0, 1)  # (samples, 2, k), standardised
            means, stdvs = (x.reshape(2, 1) for x in standardization(model))
            draws = (draws * stdvs + means).numpy()
        if self._trend_all is not None:
            draws[:, 0] += self._trend_all[left[top]][None]
        u = torch.rand((self.settings.stop_samples, k), generator=gen, dtype=DTYPE).numpy()
        hit = (draws[:, 0] < target) & (draws[:, 1] <= -margin) & (u < upper[top][None])
        return float(hit.any(1).mean())

    def _unconfirmed_pick(self, est: PointEstimates) -> int | None:
        """The recommendation, if it was measured only once and either no config has been measured twice
        (its P(feasible) then rests on a noise level the GP inferred from differences between configs,
        which no repeat has checked: a lucky measurement just under the threshold looks safe) or another
        confidently feasible config is within two noise sd of its log objective (the lowest of noisy
        estimates is biased low; a second measurement settles which is cheaper). Else None."""
        sure = est.p >= self.settings.confidence
        if not sure.any():
            return None
        j = int(np.flatnonzero(sure)[np.argmin(est.lobj[sure])])
        if est.n[j] >= 2:
            return None
        if not (est.n > 1).any():
            return est.idx[j]
        # a rival confidently feasible within two noise sd of the pick's objective: the pick may have
        # won on one lucky measurement (the winner's curse); a second measurement settles it
        rivals = sure & (est.lobj - est.lobj[j] <= 2.0 * self._objective_noise_sd())
        rivals[j] = False
        return est.idx[j] if rivals.any() else None

    def _recheck_before_stop(self, remaining: int | None, est: PointEstimates, converged: bool) -> int | None:
        """What to re-measure before the tune ends (``converged``, or nothing left to explore): a cheaper
        config whose feasibility is still uncertain (``_uncertain_pick``), else a pick measured once that
        needs confirming (``_unconfirmed_pick``, with ``confirm_pick``); None with exact measurements.

        A converged tune gives up looking for a config ``stop_delta`` cheaper with probability
        ``stop_p``: a measured config is worth re-measuring then only by the same measure (it would save
        at least ``stop_delta`` and repeats confirm it with P >= ``stop_p``); a config measured just over
        the threshold and barely cheaper is not re-measured up to ``max_repeats`` times. With nothing
        left to explore every recheck of value is made (the budget has no other use)."""
        if self.exact:
            return None
        min_gain, min_p_reach = (self.stop_delta(), self.settings.stop_p) if converged else (0.0, 0.0)
        recheck, _ = self._recheck_value(remaining, est, min_gain, min_p_reach)
        if recheck is None and self.settings.confirm_pick:
            recheck = self._unconfirmed_pick(est)
        return recheck

    def _uncertain_pick(self, remaining: int | None = None, est: PointEstimates | None = None) -> int | None:
        j, _ = self._recheck_value(remaining, est)
        return j

    def _recheck_value(self, remaining: int | None = None, est: PointEstimates | None = None, min_gain: float = 0.0,
                       min_p_reach: float = 0.0) -> tuple[int | None, float]:
        """A measured point worth re-measuring and the value of doing so (an expected relative saving on
        the recommendation's objective), or (None, 0.0). ``est``: the current point estimates, if at hand.
        Only points that would save at least ``min_gain`` (relative) with a probability ``min_p_reach`` of
        being confirmed count.

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
        worth = (gain >= min_gain) & (p_reach >= min_p_reach)
        value = np.where(worth & (k > 0) & ~sure & (p >= self.settings.recheck_min_p) & (lobj < rec_lobj), gain * p_reach, 0.0)
        j = int(np.argmax(value))
        return (idx[j], float(value[j])) if value[j] > 0 else (None, 0.0)


__all__ = ["Stopping"]
