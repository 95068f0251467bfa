"""Optuna's GPSampler with the latency constraint (log constrained EI), Optuna defaults otherwise, seeded."""

from __future__ import annotations

from typing import Any

from polythrottle.optim.optuna_base import OptunaOptimizer


class OptunaGP(OptunaOptimizer):
    name = "optuna-gp"

    def make_sampler(self, seed: int | None) -> Any:
        import optuna

        return optuna.samplers.GPSampler(seed=seed)
