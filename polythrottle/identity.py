"""Who a device is, and the history key of a tune on it: the one place every face (CLI, Python API,
daemon) takes them from, so measurements stored by one face are found by the others.

A device's identity is its kind, its board and its unit:

- ``sim:PROFILE``: board = the profile's name (``sim:jetson-agx-orin``, ``sim:./jetson-agx-orin.yaml``
  and ``sim:/abs/jetson-agx-orin.yaml`` are the same board); unit = ``"0"``.
- ``jetson[:PROFILE]``: board = the matched (or forced) profile's name; unit = the board's serial
  number (``/proc/device-tree/serial-number``; ``""`` where the kernel has none).
- ``nvml[:INDEX]``: board = the GPU's product name, slugged (``NVIDIA H200`` -> ``nvidia-h200``);
  unit = the GPU's UUID (the index is not an identity: it changes with ``CUDA_VISIBLE_DEVICES``).
- ``replay:TABLE.csv``: board ``""``, unit ``""``: every replayed table is one device, so a table
  measured for a new model version warm-starts from an older table's history.

The history key is (``identity.device``, the workload, the fingerprint of the tuned knob space and
the values of the knobs held fixed); the model version and the unit are stored with each tune.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the device layer imports this module; the history store loads only when a key is made
    from polythrottle.history import HistoryKey
    from polythrottle.space import SearchSpace, Value

KINDS = ("sim", "replay", "jetson", "nvml")


def slug(text: str) -> str:
    """``"NVIDIA H200 NVL"`` -> ``"nvidia-h200-nvl"`` (lower case, runs of other characters -> ``-``)."""
    return re.sub(r"[^a-z0-9.]+", "-", text.strip().lower()).strip("-.")


@dataclass(frozen=True)
class DeviceIdentity:
    """kind: ``sim``, ``replay``, ``jetson`` or ``nvml``. board: the board profile's name or the GPU's
    product (slugged); ``""`` for replayed tables. unit: which physical unit of that board (serial
    number, GPU UUID, twin unit number); ``""`` when unknown."""

    kind: str
    board: str
    unit: str = ""

    @property
    def device(self) -> str:
        """The device part of a history key: ``kind:board`` (``replay`` for replayed tables)."""
        return f"{self.kind}:{self.board}" if self.board else self.kind

    def describe(self) -> str:
        return self.device + (f" (unit {self.unit})" if self.unit else "")


def history_key(
    identity: DeviceIdentity, workload: str, space: SearchSpace, fixed: Mapping[str, Value] | None = None
) -> HistoryKey:
    """The key of a tune of ``space`` (the tuned knobs) with ``fixed`` (the other knobs' values) for
    ``workload`` (the device's canonical workload name, ``""`` if none) on the device ``identity``."""
    from polythrottle.history import HistoryKey, space_fingerprint

    return HistoryKey(identity.device, workload, space_fingerprint(space, fixed))


__all__ = ["KINDS", "DeviceIdentity", "history_key", "slug"]
