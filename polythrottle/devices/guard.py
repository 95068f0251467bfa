"""The one gate every hardware write of a live device goes through (NVML setters, kernel files).

A ``WriteGuard`` built with ``allowed=False`` (``--no-clock-control``) refuses every write before it
happens, restore writes included. Devices never call ``pynvml.nvmlDeviceSet*``/``nvmlDeviceReset*``
or write kernel files themselves: NVML setters go through ``guard.nvml(...)`` (refused with
``ClockControlDisabledError``; each allowed call is logged in ``guard.writes``) and kernel files
through ``guard.io`` (a ``polythrottle.clocks.sysfs.SysfsIO`` built with the same permission, which refuses
with ``WritesDisabledError``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pynvml

from polythrottle.clocks.sysfs import SysfsIO, open_io
from polythrottle.errors import PolyThrottleError

NVML_WRITE_PREFIXES = ("nvmlDeviceSet", "nvmlDeviceReset", "nvmlDeviceClear", "nvmlSystemSet", "nvmlUnitSet")


class ClockControlDisabledError(PolyThrottleError):
    """A hardware write was attempted while clock control is disabled (a bug if it ever shows)."""


@dataclass
class WriteGuard:
    """allowed: whether hardware writes may happen. reason: shown when one is refused.
    sysfs_root: the filesystem root of kernel files (default ``$POLYTHROTTLE_ROOT`` or /)."""

    allowed: bool
    reason: str = "--no-clock-control is set"
    sysfs_root: str | os.PathLike[str] | None = None
    writes: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.io: SysfsIO = open_io(self.sysfs_root, writes_allowed=self.allowed)

    def check(self, what: str) -> None:
        if not self.allowed:
            raise ClockControlDisabledError(f"refused hardware write {what}: {self.reason}")

    def nvml(self, setter: str, handle: Any, *args: Any) -> Any:
        """Call the NVML setter named ``setter`` (e.g. "nvmlDeviceSetGpuLockedClocks") on ``handle``."""
        if not setter.startswith(NVML_WRITE_PREFIXES):
            raise ValueError(f"{setter} is not an NVML setter")
        self.check(f"{setter}{args}")
        result = getattr(pynvml, setter)(handle, *args)
        self.writes.append((setter, args))
        return result
