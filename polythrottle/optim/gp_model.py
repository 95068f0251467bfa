"""The surrogate of constrained BO: one GP per outcome (log objective, log constraint / threshold), its
fit, posterior and noise estimates (BoTorch / GPyTorch). ``OutcomeGP`` is mixed into ``ConstrainedBO``
(it uses ``self.observations``, ``self.threshold``, ``self.settings`` and ``self.X_all``)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gpytorch
import numpy as np
import torch
import torch.fx.experimental.symbolic_shapes  # see below
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, LogNormalPrior
from gpytorch.utils.warnings import NumericalWarning
from scipy.optimize import minimize

from polythrottle.optim.base import Observation
from polythrottle.optim.cbo_state import CBOState

# GPyTorch's kernels call torch.broadcast_shapes, whose first call imports torch.fx's symbolic shapes (and
# sympy): ~0.9 s. Imported with this module, so that it is paid once at import, not by the first proposal.
DTYPE = torch.double
NOISE_PRIOR_DOF = 2.0
POSTERIOR_GROUP = 16  # points per batch element of a posterior over many points (see ``posterior``)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch's intra-op threads set to one for the duration (restored after). The optimizer's matrices are
    tiny: a second thread costs more in hand-offs than it saves (a fit ~2x slower on two threads), and
    threads that spin while the machine is busy (an inference workload, a fine-tuning job) made a
    proposal several times slower (measured on 2 cores)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def matern_kernel(dims: int, lengthscale_prior: tuple[str, float, float]) -> ScaleKernel:
    """Scaled Matern-5/2 with ARD over ``dims`` inputs for the two outcomes (batch of 2), a lengthscale
    prior ("gamma", concentration, rate) or ("lognormal", loc, scale) and BoTorch's Gamma(2, 0.15)
    outputscale prior."""
    batch = torch.Size([2])
    kind, a, b = lengthscale_prior
    # validate_args=False: the values a prior sees are kept positive by their constraints, and checking
    # each one costs ~3% of a fit (GPyTorch's GammaPrior already skips it)
    prior = GammaPrior(a, b) if kind == "gamma" else LogNormalPrior(a, b, validate_args=False)
    return ScaleKernel(
        MaternKernel(nu=2.5, ard_num_dims=dims, batch_shape=batch, lengthscale_prior=prior),
        batch_shape=batch, outputscale_prior=GammaPrior(2.0, 0.15),
    )


def standardization(model: SingleTaskGP) -> tuple[torch.Tensor, torch.Tensor]:
    """The means and standard deviations the model's ``Standardize`` outcome transform applied (each of
    the two outcomes); TypeError if the model standardizes otherwise."""
    t = model.outcome_transform
    if not isinstance(t, Standardize):
        raise TypeError(f"expected a Standardize outcome transform, got {type(t).__name__}")
    means: torch.Tensor = getattr(t, "means")  # noqa: B009 - buffers: typed through nn.Module.__getattr__
    stdvs: torch.Tensor = getattr(t, "stdvs")  # noqa: B009
    return means, stdvs


class OutcomeGP(CBOState):
    """The GP over (log objective, log constraint / threshold) of ``self.observations``."""

    def _train_data(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        obs = self.observations
        X = self.X_all[[o.index for o in obs]]
        Y = torch.tensor(
            [[math.log(o.objective), math.log(o.constraint / self.threshold)] for o in obs], dtype=DTYPE
        )
        reported = [(o.objective_rel_std, o.constraint_rel_std) for o in obs]
        if self.settings.reported_noise != "ignore" and all(e is not None and c is not None for e, c in reported):
            var = torch.tensor(
                [[max(e or 0.0, 1e-3) ** 2, max(c or 0.0, 1e-3) ** 2] for e, c in reported], dtype=DTYPE
            )
            return X, Y, var
        return X, Y, None

    def _clock_log_ratio(self, X: torch.Tensor) -> tuple[list[int], np.ndarray]:
        """The clocks (knobs whose latency falls as they rise, numeric, positive, no known energy trend)
        and log(value / the knob's highest value) of each at the encoded points ``X`` (n x clocks)."""
        cols, out = [], []
        Xn = X.detach().numpy()
        for j, k in enumerate(self.space.knobs):
            if k.latency_trend != -1 or k.energy_trend or len(k.values) < 2:
                continue
            v = np.asarray(k.values, dtype=float)
            if v.min() <= 0:
                continue
            c = Xn[:, j]
            if k.log_scale:
                lr = (c - 1.0) * math.log(v.max() / v.min())
            else:
                lr = np.log((v.min() + c * (v.max() - v.min())) / v.max())
            cols.append(j)
            out.append(lr)
        return cols, (np.stack(out, axis=1) if out else np.zeros((len(Xn), 0)))

    def _fit_power_trend(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        """Fit the clocks' power trend (``power_trend``) to the measured log(objective / constraint)."""
        self._trend_q = None
        if not self.settings.power_trend:
            return
        cols, lr = self._clock_log_ratio(X)
        if not cols:
            return
        varied = np.array([len(np.unique(np.round(lr[:, i], 9))) >= 2 for i in range(lr.shape[1])])
        if not varied.any():
            return
        z = (Y[:, 0] - Y[:, 1]).detach().numpy()
        others = [j for j in range(X.shape[1]) if j not in cols]
        F = np.concatenate([np.ones((len(z), 1)), X.detach().numpy()[:, others]], axis=1)
        if len(z) < F.shape[1] + int(varied.sum()) + 1:
            return
        k = self.settings.power_exponent
        drop = 1.0 - np.exp(k * lr[:, varied])  # how far below the top each clock's dynamic power is
        ridge = np.diag([0.0] + [1e-2] * (F.shape[1] - 1))

        def rss(q: np.ndarray) -> float:
            h = np.log(np.clip(1.0 - drop @ q, 1e-6, None))
            beta = np.linalg.solve(F.T @ F + ridge, F.T @ (z - h))
            r = z - h - F @ beta
            return float(r @ r)

        m = int(varied.sum())
        best = minimize(rss, np.full(m, 0.3 / m), method="L-BFGS-B", bounds=[(0.0, 0.95 / m)] * m)
        q = np.zeros(len(cols))
        q[varied] = best.x
        self._trend_q = (cols, q, lr.min(0), lr.max(0))

    def power_trend(self, X: torch.Tensor) -> np.ndarray:
        """The trend the GP of log objective sits on at the encoded points ``X`` (zeros when none was fitted):
        log(dynamic + static power relative to the top clocks) = log(1 - sum_j q_j (1 - r_j^k)), r_j a
        clock's value over its highest, k ``power_exponent``. Energy per inference is latency times power;
        the GP sees the latency's share (about linear in log clock) and this convex power curve adds the
        dip that makes energy U-shaped in a clock, which a GP interpolating two clocks cannot see."""
        if self._trend_q is None:
            return np.zeros(len(X))
        _, q, lo, hi = self._trend_q
        if X is self.X_all:  # every point of the space, at every fit: their clock ratios never change
            if self._lr_all is None:
                self._lr_all = self._clock_log_ratio(X)[1]
            lr = self._lr_all
        else:
            _, lr = self._clock_log_ratio(X)
        # within the clocks measured only: beyond them the curve is an extrapolation, and unexplored
        # configs keep the pessimistic prior
        drop = 1.0 - np.exp(self.settings.power_exponent * np.clip(lr, lo, hi))
        return np.log(np.clip(1.0 - drop @ q, 1e-6, None))

    def model(self) -> SingleTaskGP:
        """The GP over (log objective, log constraint/threshold), refitted when observations changed."""
        if self._model is not None and self._model_n == len(self.observations):
            return self._model
        X, Y, var = self._train_data()
        self._fit_power_trend(X, Y)
        self._trend_all = self.power_trend(self.X_all) if self._trend_q is not None else None
        if self._trend_all is not None:
            Y = Y.clone()
            Y[:, 0] -= torch.as_tensor(self.power_trend(X), dtype=DTYPE)
        # Matern-5/2 with the settings' lengthscale prior rather than BoTorch's dimension-scaled default:
        # on 2-4 knobs the default's long lengthscales made the GP overconfident and runs stopped early far
        # from the optimum (experiments/results/bench.md)
        covar = matern_kernel(X.shape[-1], self.settings.lengthscale_prior)
        with warnings.catch_warnings():
            # a live measurement's reported noise can be tinier than GPyTorch's smallest fixed noise
            # (1e-6 once standardized), which it rounds up with a NumericalWarning: harmless, and not
            # for a user's terminal
            warnings.simplefilter("ignore", NumericalWarning)
            model = SingleTaskGP(X, Y, train_Yvar=var, outcome_transform=Standardize(m=2), covar_module=covar)
            if var is not None and self.settings.reported_noise == "floor":
                # the noise beyond the reported spread is learned, with the same prior as inferred noise
                prior = self._noise_prior(model)
                floor_likelihood = FixedNoiseGaussianLikelihood(
                    noise=model.likelihood.noise_covar.noise, learn_additional_noise=True,
                    batch_shape=model._aug_batch_shape, noise_prior=prior,
                    noise_constraint=GreaterThan(1e-4, transform=None),
                )
                floor_likelihood.second_noise = prior.mode.clamp_min(2e-4)
                model.likelihood = floor_likelihood
        if var is None:
            model.likelihood = self._inferred_noise_likelihood(model)
        if self._hyper is not None and (var is None) == self._hyper_inferred_noise:
            # Warm start from the previous fit: ~50x faster than a cold fit with restarts.
            model.load_state_dict(self._hyper, strict=False)
        if self.settings.pessimistic_mean:
            # unexplored configs are predicted like the costliest and slowest measured ones, not like the
            # average of the (mostly near-optimal) measured ones: less exploration of far corners
            constant = model.train_targets.max(dim=-1).values.clone()
            if self._trend_all is not None:
                # ... the power trend included: no unexplored config predicted cheaper than that for lying
                # at lower clocks than the measured ones (the trend shapes the data's neighbourhood only)
                constant[0] -= float(self._trend_all.min()) / float(standardization(model)[1].reshape(-1)[0])
            model.mean_module.raw_constant.data = constant
            model.mean_module.raw_constant.requires_grad_(False)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        kwargs: dict[str, Any] = {} if self._hyper is None else {"optimizer_kwargs": {"options": {"maxiter": self.settings.warm_maxiter}}}
        # kernels evaluated at once: the training covariance is tiny (n <= a few dozen), and GPyTorch's lazy
        # kernel tensors cost more bookkeeping than the evaluation they defer (same values, ~10% faster)
        with warnings.catch_warnings(), gpytorch.settings.lazily_evaluate_kernels(False):
            warnings.simplefilter("ignore")
            try:
                with one_torch_thread():
                    fit_gpytorch_mll(mll, **kwargs)
            except Exception:  # noqa: BLE001 - keep the prior hyper-parameters if fitting fails
                pass
        model.eval()
        # fitted values only: a prior's buffers (the noise prior's location moves with the standardization)
        # belong to the model they were made for
        self._hyper = {
            k: v.clone() for k, v in model.state_dict().items()
            if k.startswith(("likelihood", "covar_module", "mean_module")) and "_prior." not in k
        }
        self._hyper_inferred_noise = var is None
        self._model, self._model_n = model, len(self.observations)
        return model

    def _noise_prior(self, model: SingleTaskGP) -> LogNormalPrior:
        """The prior of the noise the GP learns (all of it when observations report none, the part beyond
        the reported spread otherwise): LogNormal with its mode at ``settings.noise_prior_rel_sd`` of
        relative noise per measurement (log units, the same on every landscape), expressed in the
        standardized units the GP sees (one per outcome).

        BoTorch's default LogNormal(-4, 1) is a prior on the *standardized* noise variance, so the noise
        it implies grows with the spread of the measured values; with a dozen points the fit stays near
        that prior, and the estimate followed each landscape's spread rather than its noise (live on an
        H200, 4% where repeats spread by 1%)."""
        stdvs = standardization(model)[1].detach().reshape(2, 1)
        scale = 1.0
        # LogNormal(mu, s) on the variance has its mode at exp(mu - s^2)
        loc = 2.0 * torch.log(self.settings.noise_prior_rel_sd / stdvs) + scale**2
        return LogNormalPrior(loc=loc, scale=torch.full_like(loc, scale), validate_args=False)

    def _inferred_noise_likelihood(self, model: SingleTaskGP) -> GaussianLikelihood:
        """The likelihood when observations report no noise: homoscedastic noise per outcome with
        ``_noise_prior``."""
        prior = self._noise_prior(model)
        likelihood = GaussianLikelihood(noise_prior=prior, batch_shape=model._aug_batch_shape,
                                        noise_constraint=GreaterThan(1e-4, transform=None))
        likelihood.noise = prior.mode.clamp_min(2e-4)
        return likelihood

    def posterior(self, indices: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std (latent, no observation noise) of both outcomes at ``indices``, each (n, 2)."""
        model = self.model()
        idx = np.asarray(indices, dtype=np.int64)
        means, stds = [], []
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(0, len(idx), self.settings.max_batch):
                # batches of POSTERIOR_GROUP points (n / g x g x d): marginals only, no n x n joint covariance;
                # GPyTorch copies the training data's factors once per batch, so single points (n x 1 x d)
                # took ~1.7x as long (measured on 18,200 points)
                chunk = idx[i : i + self.settings.max_batch]
                padded = np.concatenate([chunk, np.repeat(chunk[-1:], -len(chunk) % POSTERIOR_GROUP)])
                post = model.posterior(self.X_all[padded].reshape(-1, POSTERIOR_GROUP, self.X_all.shape[-1]))
                means.append(post.mean.reshape(-1, 2)[: len(chunk)].numpy())
                stds.append(post.variance.reshape(-1, 2)[: len(chunk)].clamp_min(1e-12).sqrt().numpy())
        if not means:
            return np.zeros((0, 2)), np.zeros((0, 2))
        mean = np.concatenate(means)
        if self._trend_all is not None:
            mean[:, 0] += self._trend_all[idx]
        return mean, np.concatenate(stds)

    def noise_std(self) -> tuple[float, float]:
        """Per-measurement noise std of (log objective, log constraint), from the fitted GP."""
        model = self.model()
        _, _, var = self._train_data()
        stdvs = standardization(model)[1].detach().reshape(-1)
        if var is not None:
            v = var.mean(0)
            extra = getattr(model.likelihood, "second_noise", 0.0)  # learned noise beyond the reported
            v = v + torch.as_tensor(extra, dtype=DTYPE).detach().reshape(-1) * stdvs**2
            return tuple(float(x) for x in v.sqrt())  # type: ignore[return-value]
        noise = model.likelihood.noise.detach().reshape(-1)
        sd = (noise * stdvs**2).sqrt()
        return float(sd[0]), float(sd[-1])

    def _constraint_noise_sd(self, by_point: dict[int, list[Observation]]) -> float:
        """Per-measurement noise sd of log constraint (see ``_pooled_noise_sd``)."""
        return self._pooled_noise_sd(by_point, 1)

    def _objective_noise_sd(self) -> float:
        """Per-measurement noise sd of log objective (see ``_pooled_noise_sd``)."""
        by_point: dict[int, list[Observation]] = {}
        for o in self.observations:
            by_point.setdefault(o.index, []).append(o)
        return self._pooled_noise_sd(by_point, 0)

    def _pooled_noise_sd(self, by_point: dict[int, list[Observation]], outcome: int) -> float:
        """Per-measurement noise sd of log objective (``outcome`` 0) or log constraint (1).

        The GP's noise estimate also absorbs model misfit on rough landscapes, so it overstates pure
        measurement noise. Replicated points measure the noise itself: their pooled within-point
        variance updates the GP's estimate as a prior worth ``NOISE_PRIOR_DOF`` degrees of freedom.
        """
        sd_gp = self.noise_std()[outcome]
        ss, dof = 0.0, 0
        for obs in by_point.values():
            if len(obs) > 1:
                logs = np.log([o.objective if outcome == 0 else o.constraint for o in obs])
                ss += float(((logs - logs.mean()) ** 2).sum())
                dof += len(obs) - 1
        return math.sqrt((NOISE_PRIOR_DOF * sd_gp**2 + ss) / (NOISE_PRIOR_DOF + dof))


__all__ = ["DTYPE", "OutcomeGP", "matern_kernel", "one_torch_thread"]
