"""Random search without replacement: the baseline every optimizer must beat."""

from __future__ import annotations

from polythrottle.optim.base import Optimizer


class RandomSearch(Optimizer):
    name = "random"

    def ask(self, remaining: int | None = None) -> int:
        left = self.unmeasured()
        if len(left) == 0:
            self.stop_reason = "every point of the space has been measured"
            return int(self.rng.integers(len(self.space)))
        return int(self.rng.choice(left))
