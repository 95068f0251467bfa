"""Predict the latency of an inference batch while a fine-tuning iteration may share the GPU.

The PolyThrottle paper's model (see ../shared/reference/facts.md), fitted by non-negative least squares
(``scipy.optimize.nnls``) on a few measured samples::

    t = th0 + th1*FLOPs_inf + th2*AI_inf + th3*FLOPs_ft + th4*AI_ft + th5*batch

(FLOPs in GFLOP, AI = arithmetic intensity in FLOP/byte, both 0 for fine-tuning when none runs).
Time-sharing slows every inference kernel, so the extra latency grows with the inference batch; the
``"interaction"`` feature set adds ``ft_on*FLOPs_inf`` and ``ft_on*batch`` for that. ``fit_best``
picks the set with the lower leave-one-out error on the samples (the paper's set unless the data
say otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from polythrottle.checks import is_int, is_real
from polythrottle.errors import BadInputError, brief
from polythrottle.finetune.features import WorkloadFeatures

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "paper": ("const", "flops_inf", "ai_inf", "flops_ft", "ai_ft", "batch"),
    "interaction": ("const", "flops_inf", "ai_inf", "flops_ft", "ai_ft", "batch", "ft_flops_inf", "ft_batch"),
}


@dataclass(frozen=True)
class LatencySample:
    """One measurement: inference batch latency (ms) at ``inference_batch`` while a fine-tuning
    iteration of ``finetune_batch`` samples ran alongside (0: none)."""

    inference_batch: int
    finetune_batch: int
    latency_ms: float

    def __post_init__(self) -> None:
        if not is_int(self.inference_batch) or self.inference_batch < 1:
            raise BadInputError(f"latency sample: inference_batch must be an integer >= 1, got "
                                f"{brief(self.inference_batch, 40)}")
        if not is_int(self.finetune_batch) or self.finetune_batch < 0:
            raise BadInputError(f"latency sample: finetune_batch must be an integer >= 0, got "
                                f"{brief(self.finetune_batch, 40)}")
        if not is_real(self.latency_ms) or not (math.isfinite(self.latency_ms) and self.latency_ms > 0):
            raise BadInputError(f"latency sample: latency_ms must be a finite number > 0, got {brief(self.latency_ms, 40)}")


class LatencyPredictor:
    """Inference latency (ms) as a non-negative linear function of workload features.

    inference/finetune: FLOPs and bytes of the inference and fine-tuning workloads (``measure_features``).
    features: a key of ``FEATURE_SETS``. Raises BadInputError for an unknown set or unusable samples.
    """

    def __init__(self, inference: WorkloadFeatures, finetune: WorkloadFeatures, features: str = "paper") -> None:
        if features not in FEATURE_SETS:
            raise BadInputError(f"unknown feature set {features!r}; expected one of: {', '.join(FEATURE_SETS)}")
        self.inference = inference
        self.finetune = finetune
        self.features = features
        self.theta: np.ndarray | None = None
        self._scale: np.ndarray | None = None

    def design(self, inference_batch: int, finetune_batch: int) -> np.ndarray:
        """The feature row of one (inference batch, fine-tuning batch) pair. Raises BadInputError for a batch
        that is not an integer >= 0."""
        for name, v in (("inference_batch", inference_batch), ("finetune_batch", finetune_batch)):
            if not is_int(v) or v < 0:
                raise BadInputError(f"{name} must be an integer >= 0, got {brief(v, 40)}")
        b, fb = int(inference_batch), int(finetune_batch)
        on = 1.0 if fb > 0 else 0.0
        vals = {
            "const": 1.0,
            "flops_inf": self.inference.gflops(b),
            "ai_inf": self.inference.intensity(b),
            "flops_ft": self.finetune.gflops(fb) if fb > 0 else 0.0,
            "ai_ft": self.finetune.intensity(fb) if fb > 0 else 0.0,
            "batch": float(b),
            "ft_flops_inf": on * self.inference.gflops(b),
            "ft_batch": on * float(b),
        }
        return np.array([vals[name] for name in FEATURE_SETS[self.features]])

    def fit(self, samples: Sequence[LatencySample]) -> LatencyPredictor:
        """Fit by NNLS. Needs at least two samples with positive latency."""
        if len(samples) < 2:
            raise BadInputError(f"the latency predictor needs at least 2 samples, got {len(samples)}")
        if not all(isinstance(s, LatencySample) for s in samples):
            raise BadInputError("latency samples must be LatencySample(inference_batch, finetune_batch, latency_ms)")
        A = np.stack([self.design(s.inference_batch, s.finetune_batch) for s in samples])
        y = np.array([s.latency_ms for s in samples])
        scale = np.abs(A).max(axis=0)
        scale[scale == 0] = 1.0  # a feature that is always 0 gets coefficient 0
        # Relative errors matter (a 2 ms error is large at 3 ms, small at 80 ms): weight rows by 1/y.
        w = 1.0 / y
        coef, _ = nnls(A / scale * w[:, None], y * w)
        self.theta = coef / scale
        return self

    def predict(self, inference_batch: int, finetune_batch: int = 0) -> float:
        """Predicted inference batch latency (ms). Raises BadInputError before ``fit``."""
        if self.theta is None:
            raise BadInputError("the latency predictor has not been fitted")
        return float(self.design(inference_batch, finetune_batch) @ self.theta)

    def coefficients(self) -> dict[str, float]:
        if self.theta is None:
            return {}
        return dict(zip(FEATURE_SETS[self.features], map(float, self.theta)))

    def loo_error(self, samples: Sequence[LatencySample]) -> float:
        """Leave-one-out median absolute relative error of this feature set on ``samples``."""
        errs = []
        for i in range(len(samples)):
            rest = [s for j, s in enumerate(samples) if j != i]
            p = LatencyPredictor(self.inference, self.finetune, self.features).fit(rest)
            s = samples[i]
            errs.append(abs(p.predict(s.inference_batch, s.finetune_batch) - s.latency_ms) / s.latency_ms)
        return float(np.median(errs))

    @classmethod
    def fit_best(
        cls, samples: Sequence[LatencySample], inference: WorkloadFeatures, finetune: WorkloadFeatures
    ) -> tuple[LatencyPredictor, dict[str, float]]:
        """Fit every feature set; keep the paper's unless another has a clearly lower leave-one-out
        error (by 10% of it and by 0.5 percentage points). Returns the fitted predictor and each set's error.
        Needs at least 3 samples (each left out in turn, 2 remain to fit); BadInputError otherwise."""
        if len(samples) < 3:
            raise BadInputError(f"fit_best needs at least 3 latency samples (leave-one-out), got {len(samples)}")
        errors = {name: cls(inference, finetune, name).loo_error(samples) for name in FEATURE_SETS}
        best = "paper"
        for name, err in errors.items():
            if err < 0.9 * errors[best] and errors[best] - err > 0.005:
                best = name
        return cls(inference, finetune, best).fit(samples), errors


__all__ = ["FEATURE_SETS", "LatencyPredictor", "LatencySample"]
