"""Optimizers over a finite search space: they know points and measurements, nothing of hardware."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from polythrottle.errors import BadInputError
from polythrottle.optim.base import Observation, Optimizer, Recommendation
from polythrottle.space import SearchSpace

OptimizerFactory = Callable[[SearchSpace, float, int | None], Optimizer]


def _lazy(module: str, cls: str) -> OptimizerFactory:
    """A factory importing ``module`` only when used (torch, Optuna: heavy or optional)."""

    def factory(space: SearchSpace, threshold: float, seed: int | None) -> Optimizer:
        return getattr(importlib.import_module(module), cls)(space, threshold, seed)

    return factory


OPTIMIZERS: dict[str, OptimizerFactory] = {
    "cbo": _lazy("polythrottle.optim.cbo", "ConstrainedBO"),
    "random": _lazy("polythrottle.optim.random_search", "RandomSearch"),
    "grid": _lazy("polythrottle.optim.grid", "GridSweep"),
    "optuna-tpe": _lazy("polythrottle.optim.optuna_tpe", "OptunaTPE"),
    "optuna-gp": _lazy("polythrottle.optim.optuna_gp", "OptunaGP"),
}


def make_optimizer(name: str, space: SearchSpace, threshold: float, seed: int | None = None) -> Optimizer:
    """Optimizer by name (see ``OPTIMIZERS``). Raises BadInputError for an unknown name."""
    try:
        factory = OPTIMIZERS[name]
    except KeyError:
        raise BadInputError(f"unknown optimizer {name!r}; expected one of: {', '.join(OPTIMIZERS)}") from None
    return factory(space, threshold, seed)


__all__ = ["OPTIMIZERS", "Observation", "Optimizer", "Recommendation", "make_optimizer"]
