"""The one gate every hardware write of a live device goes through (NVML setters, kernel files).

A ``WriteGuard`` built with ``allowed=False`` (``--no-clock-control``) refuses every write before it
happens, restore writes included, by raising ``ClockControlDisabledError``. Devices never call
``pynvml.nvmlDeviceSet*``/``nvmlDeviceReset*`` or write files under /sys themselves: they call
``guard.nvml(...)`` / ``guard.write_file(...)``. Each allowed write is logged in ``guard.writes``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml

from polythrottle.errors import PolyThrottleError

NVML_WRITE_PREFIXES = ("nvmlDeviceSet", "nvmlDeviceReset", "nvmlDeviceClear", "nvmlSystemSet", "nvmlUnitSet")


class ClockControlDisabledError(PolyThrottleError):
    """A hardware write was attempted while clock control is disabled (a bug if it ever shows)."""


@dataclass
class WriteGuard:
    """allowed: whether hardware writes may happen. reason: shown when one is refused."""

    allowed: bool
    reason: str = "--no-clock-control is set"
    writes: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

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

    def write_file(self, path: str | os.PathLike[str], text: str) -> None:
        """Write ``text`` to an existing kernel file (never creates one). OSError propagates."""
        self.check(f"{text!r} > {path}")
        fd = os.open(Path(path), os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        self.writes.append((os.fspath(path), (text,)))
