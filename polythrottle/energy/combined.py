"""Several meters read over the same window and summed (e.g. GPU counter + CPU package RAPL)."""

from __future__ import annotations

from collections.abc import Sequence

from polythrottle.energy.base import EnergyMeter, EnergyWindow


class CombinedMeter(EnergyMeter):
    """Begins meters in order and ends them in reverse order, so the first meter's window (e.g. one
    aligned to counter steps) contains the others. Details: ``<name>_energy_j`` per meter, plus each
    meter's own details."""

    def __init__(self, meters: Sequence[EnergyMeter]) -> None:
        self.meters = list(meters)
        self.name = "+".join(m.name for m in self.meters)

    def begin(self) -> None:
        for m in self.meters:
            m.begin()

    def end(self) -> EnergyWindow:
        windows = [m.end() for m in reversed(self.meters)][::-1]
        details: dict[str, float] = {}
        for m, w in zip(self.meters, windows):
            details[f"{m.name}_energy_j"] = w.energy_j
            details.update(w.details)
        return EnergyWindow(sum(w.energy_j for w in windows), windows[0].duration_s,
                            sum(w.samples for w in windows), details)

    def close(self) -> None:
        for m in self.meters:
            m.close()
