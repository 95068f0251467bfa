"""Optuna's TPE sampler with the latency constraint (c-TPE), Optuna defaults otherwise, seeded."""

from __future__ import annotations

from typing import Any

from polythrottle.optim.optuna_base import OptunaOptimizer


class OptunaTPE(OptunaOptimizer):
    name = "optuna-tpe"

    def make_sampler(self, seed: int | None) -> Any:
        import optuna

        return optuna.samplers.TPESampler(seed=seed)
