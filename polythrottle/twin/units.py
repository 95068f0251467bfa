"""Manufacturing spread: the twin of one physical unit of a board (``sim:PROFILE?unit=N``).

Units of one board differ: each Tegra chip is fused with its own voltage table (speed/process bin), its
leakage depends on its process corner, regulators and DRAM parts vary, and a memory part's timing changes
the achievable bandwidth. Unit 0 is the nominal board (the profile's parameters, unchanged); unit N >= 1
draws multiplicative factors ``exp(sigma * z)`` (``z`` standard normal, seeded by the board's name and N,
so a unit is the same in every run) for:

| parameter | sigma | why |
|---|---|---|
| ``static_w`` | 0.05 | board idle power; Orin Nano kits idle at 2.2-2.6 W (facts.md) |
| ``gpu.leak_w`` | 0.15 | leakage varies most between process corners ("silicon lottery") |
| ``gpu.dyn_w`` | 0.03 | switched capacitance varies little |
| ``gpu.v_max``, ``gpu.v_min`` | 0.015 | per-chip DVFS voltage tables (speedo bins) |
| ``gpu.v_knee_mhz`` | 0.05 | where the voltage starts to rise differs between bins |
| ``gpu.compute_eff`` (all workloads) | 0.01 | the same silicon design: compute throughput barely moves |
| ``emc.efficiency`` | 0.04 | DRAM parts and their timings (SKUs differ up to ~45% at one EMC step, facts.md) |
| ``emc.w_per_ghz``, ``emc.j_per_gb`` | 0.06 | DRAM and EMC power of different memory parts |
| ``cpu.dyn_w`` | 0.05 | CPU cluster power bins |

With these, units of the AGX Orin and Orin Nano twins differ per config by a few percent in latency and
a few to about ten percent in energy (``experiments/fleet.py`` reports the measured spread), and their
optimal configs can differ (a memory-bound config crosses the SLO on a slower unit).
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np

from polythrottle.twin.params import BoardParams

SIGMA: dict[str, float] = {
    "static_w": 0.05,
    "gpu.leak_w": 0.15,
    "gpu.dyn_w": 0.03,
    "gpu.v_max": 0.015,
    "gpu.v_min": 0.015,
    "gpu.v_knee_mhz": 0.05,
    "workload.compute_eff": 0.01,
    "emc.efficiency": 0.04,
    "emc.w_per_ghz": 0.06,
    "emc.j_per_gb": 0.06,
    "cpu.dyn_w": 0.05,
}
"""Log-normal spread (standard deviation of the log factor) of each parameter across units."""


def unit_factors(board_name: str, unit: int) -> dict[str, float]:
    """The multiplicative factor of each parameter of ``SIGMA`` for ``unit`` of ``board_name`` (all 1.0
    for unit 0). Deterministic: seeded by the board's name and the unit number."""
    if unit == 0:
        return {k: 1.0 for k in SIGMA}
    rng = np.random.default_rng([zlib.crc32(board_name.encode()), int(unit)])
    z = rng.standard_normal(len(SIGMA))
    return {k: float(np.exp(s * zi)) for (k, s), zi in zip(SIGMA.items(), z)}


def unit_board(board: BoardParams, unit: int) -> BoardParams:
    """``board`` as unit ``unit`` of it (unit 0: ``board`` itself). The voltage range stays ordered."""
    if unit == 0:
        return board
    f = unit_factors(board.name, unit)
    gpu = board.gpu
    v_max = gpu.v_max * f["gpu.v_max"]
    v_min = min(gpu.v_min * f["gpu.v_min"], v_max)
    gpu = gpu.model_copy(update={"leak_w": gpu.leak_w * f["gpu.leak_w"], "dyn_w": gpu.dyn_w * f["gpu.dyn_w"],
                                 "v_max": v_max, "v_min": v_min, "v_knee_mhz": gpu.v_knee_mhz * f["gpu.v_knee_mhz"]})
    emc = board.emc.model_copy(update={"efficiency": min(board.emc.efficiency * f["emc.efficiency"], 1.0),
                                       "w_per_ghz": board.emc.w_per_ghz * f["emc.w_per_ghz"],
                                       "j_per_gb": board.emc.j_per_gb * f["emc.j_per_gb"]})
    cpu = board.cpu.model_copy(update={"dyn_w": board.cpu.dyn_w * f["cpu.dyn_w"]})
    workloads = {name: w.model_copy(update={"compute_eff": min(w.compute_eff * f["workload.compute_eff"], 1.0)})
                 for name, w in board.workloads.items()}
    return replace(board, static_w=board.static_w * f["static_w"], gpu=gpu, emc=emc, cpu=cpu, workloads=workloads)


__all__ = ["SIGMA", "unit_board", "unit_factors"]
