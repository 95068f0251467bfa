"""``replay:PATH``: a measured table (CSV, see ``polythrottle.devices.table``) replayed as a device: a table
measurer, no control. With ``--noise`` each measured value is multiplied by ``1 + noise * N(0, 1)``.
Touches no hardware."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from polythrottle.devices.base import Device
from polythrottle.devices.registry import DeviceOptions
from polythrottle.devices.table import ReplayTable, TableMeasurer
from polythrottle.errors import BadInputError, every_face
from polythrottle.identity import DeviceIdentity
from polythrottle.measure.measurement import Measurement
from polythrottle.space import Value


class ReplayDevice(Device):
    """Replays ``table``; measurements get multiplicative Gaussian noise (seeded). Every replayed table is
    one device (board and unit unknown)."""

    def __init__(self, table: ReplayTable, noise: float = 0.0, seed: int | None = None) -> None:
        super().__init__(DeviceIdentity("replay", "", ""), name=f"replay:{table.path}",
                         measurer=TableMeasurer(table, noise=noise, seed=seed))
        self.table = table

    def truth(self, config: Mapping[str, Value]) -> Measurement:
        """The table's own (noise-free) values for ``config``."""
        return self.table.truth(config)


def open_device(arg: str, options: DeviceOptions) -> ReplayDevice:
    if not arg:
        raise BadInputError("replay device needs a path: replay:PATH.csv")
    if options.workload:
        raise BadInputError(f"a replay device replays one measured workload; a workload ({every_face('workload')}) "
                            "does not apply")
    return ReplayDevice(ReplayTable(Path(arg).expanduser()), noise=options.noise, seed=options.seed)
