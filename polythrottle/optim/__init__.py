"""Optimizers over a finite search space: they know points and measurements, nothing of hardware."""

from __future__ import annotations

from collections.abc import Callable

from polythrottle.errors import BadInputError
from polythrottle.optim.base import Observation, Optimizer, Recommendation
from polythrottle.space import SearchSpace

OptimizerFactory = Callable[[SearchSpace, float, int | None], Optimizer]


def _cbo(space: SearchSpace, threshold: float, seed: int | None) -> Optimizer:
    from polythrottle.optim.cbo import ConstrainedBO  # imports torch: only when used

    return ConstrainedBO(space, threshold, seed)


def _random(space: SearchSpace, threshold: float, seed: int | None) -> Optimizer:
    from polythrottle.optim.random_search import RandomSearch

    return RandomSearch(space, threshold, seed)


OPTIMIZERS: dict[str, OptimizerFactory] = {"cbo": _cbo, "random": _random}


def make_optimizer(name: str, space: SearchSpace, threshold: float, seed: int | None = None) -> Optimizer:
    """Optimizer by name (see ``OPTIMIZERS``). Raises BadInputError for an unknown name."""
    try:
        factory = OPTIMIZERS[name]
    except KeyError:
        raise BadInputError(f"unknown optimizer {name!r}; expected one of: {', '.join(OPTIMIZERS)}") from None
    return factory(space, threshold, seed)


__all__ = ["OPTIMIZERS", "Observation", "Optimizer", "Recommendation", "make_optimizer"]
