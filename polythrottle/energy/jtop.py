"""Board energy from jtop (jetson-stats, the optional ``polythrottle[jetson]`` extra), sampled and integrated.

jtop reads the same INA3221 rails through its root service (``jtop.service``, socket
``/run/jtop.sock``) and publishes them every ``interval`` seconds; this meter samples the published
power at that period (default 0.1 s; jtop's own minimum applies) and integrates it with
``PowerSampler``. Its resolution is therefore jtop's interval, coarser than ``INA3221Meter``; use it
where this process may not read the sensors itself. ``jtop`` is imported only when used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from polythrottle.energy.sampling import Clock, SampledPowerMeter
from polythrottle.errors import DeviceError, UnsupportedError

JTOP_SOCKET = "/run/jtop.sock"


def jtop_status() -> tuple[bool, str]:
    """(usable, reason): whether jetson-stats is installed and its service socket exists."""
    try:
        import jtop  # noqa: F401
    except ImportError:
        return False, "jetson-stats not installed (optional: pip install 'polythrottle[jetson]')"
    if not os.path.exists(JTOP_SOCKET):
        return False, f"jtop service not running (no {JTOP_SOCKET})"
    return True, "jtop service running"


def total_power_w(power: dict[str, Any], rails: Sequence[str] | None = None) -> float:
    """Board power (W) from jtop's ``power`` dict: the sum of ``rails``, else its total (mW -> W)."""
    try:
        if rails:
            return sum(float(power["rail"][r]["power"]) for r in rails) / 1000.0
        return float(power["tot"]["power"]) / 1000.0
    except (KeyError, TypeError, ValueError) as e:
        raise DeviceError(f"jtop power reading lacks {e}") from None


class JtopMeter(SampledPowerMeter):
    """Energy from jtop's published power (see the module docstring). Raises UnsupportedError without jtop."""

    name = "jtop"

    def __init__(self, rails: Sequence[str] | None = None, *, period_s: float = 0.1, clock: Clock = time.monotonic):
        ok, why = jtop_status()
        if not ok:
            raise UnsupportedError(why)
        from jtop import jtop

        self.rails = list(rails or [])
        self._jtop = jtop(interval=period_s)
        self._jtop.start()
        if not self._jtop.ok():
            raise UnsupportedError("jtop service did not answer")
        super().__init__(lambda: total_power_w(self._jtop.power, self.rails), period_s, clock)

    def close(self) -> None:
        super().close()
        try:
            self._jtop.close()
        except Exception:  # noqa: BLE001 - closing a dead connection must not mask the real error
            pass
