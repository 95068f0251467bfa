"""Exhaustive-grid order: the sweep a user would script by hand, cut short by the budget.

Points are measured in the space's own row order (lexicographic over the knobs' value indices, each
knob's values ascending), skipping points already measured. Deterministic: the seed is ignored.
Recommends the lowest measured energy among measured-feasible points, as a sweep would.
"""

from __future__ import annotations

from polythrottle.optim.base import Optimizer


class GridSweep(Optimizer):
    name = "grid"

    def ask(self, remaining: int | None = None) -> int:
        left = self.unmeasured()
        if len(left) == 0:
            self.stop_reason = "every point of the space has been measured"
            return self.observations[-1].index if self.observations else 0
        return int(left[0])
