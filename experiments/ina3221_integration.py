"""INA3221 energy integration accuracy and sampler overhead on a fake AGX Orin hwmon tree.

Three rails change over time (sinusoids of different periods, written by a background thread every
~1 ms with atomic renames; one value in 40 of one rail is garbage, which the sampler must skip).
For each sampler period, several 1 s windows are integrated and compared with the analytic integral.

Regenerate:  python experiments/ina3221_integration.py > experiments/results/ina3221_integration.md
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from polythrottle.energy.ina3221 import INA3221Meter  # noqa: E402
from polythrottle.clocks.sysfs import SysfsIO  # noqa: E402
from tests import fake_jetson as fj  # noqa: E402

RAILS = ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"]


def main(windows: int = 8, window_s: float = 1.0) -> None:
    root = Path(tempfile.mkdtemp(prefix="pt-ina-"))
    fj.build(root, "agx-orin-jp5")
    hwmon = next(root.glob("sys/devices/platform/bus@0/*/i2c-1/1-0040/hwmon/hwmon*"))
    writer = fj.RailWriter(hwmon)
    writer.start()
    time.sleep(0.05)
    print(f"# INA3221 integration vs analytic integral ({windows} windows of {window_s} s per period)\n")
    print("| period ms | median abs err % | max abs err % | samples/window | failed reads/window | read time/sample us | overhead % |")
    print("|---|---|---|---|---|---|---|")
    try:
        for period in (0.01, 0.02, 0.05):
            meter = INA3221Meter(RAILS, io=SysfsIO(root), period_s=period)
            errs, samples, fails, read_us, overhead = [], [], [], [], []
            for _ in range(windows):
                meter.begin()
                time.sleep(window_s)
                w = meter.end()
                t0, t1 = meter.last_span
                truth = fj.rail_energy_j(t0, t1)
                s = meter.last_stats
                errs.append(abs(w.energy_j - truth) / truth * 100)
                samples.append(s.samples)
                fails.append(s.failures)
                read_us.append(s.read_s / max(s.samples + s.failures, 1) * 1e6)
                overhead.append(s.overhead * 100)
            meter.close()
            print(f"| {period * 1000:.0f} | {statistics.median(errs):.3f} | {max(errs):.3f} | "
                  f"{statistics.mean(samples):.0f} | {statistics.mean(fails):.1f} | "
                  f"{statistics.median(read_us):.0f} | {statistics.median(overhead):.2f} |")
    finally:
        writer.stop.set()
        writer.join()
    print("\nRead time includes contention with the writer thread for the GIL on this machine; on a board a")
    print("read is an I2C transaction (see polythrottle/energy/ina3221.py).")


if __name__ == "__main__":
    main()
