"""Clock domains set through kernel files: devfreq (Jetson GPU), cpufreq (CPU), EMC (memory).

Each control validates a value against the steps the device reports, computes the ordered writes
that take its files from their current values to the target (an order the kernel accepts), and
knows which files hold its state, so originals can be saved before the first write and put back.
"""

from polythrottle.clocks.base import ClockControl, Write, check_read_back, execute_writes, pair_writes, read_back
from polythrottle.clocks.cpufreq import CpufreqControl
from polythrottle.clocks.devfreq import DevfreqControl
from polythrottle.clocks.emc import EmcControl, EmcProtocol

__all__ = [
    "ClockControl",
    "CpufreqControl",
    "DevfreqControl",
    "EmcControl",
    "EmcProtocol",
    "Write",
    "check_read_back",
    "execute_writes",
    "pair_writes",
    "read_back",
]
