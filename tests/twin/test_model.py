"""polythrottle.twin.model: the twin's per-batch times and what it derives from them."""

from __future__ import annotations

import numpy as np

from polythrottle.boards.profiles import load_profile
from polythrottle.twin.model import evaluate, precision_factors, times
from polythrottle.twin.params import board_from_profile


def test_times_are_in_ms_and_the_period_is_the_slower_stage() -> None:
    board = board_from_profile(load_profile("jetson-agx-orin"))
    wl = next(iter(board.workloads.values()))
    gpu = np.array(board.gpu_steps, dtype=float)
    n = len(gpu)
    ones = np.ones(n)
    speed, bytes_f = precision_factors(board, wl, np.array(["fp32"] * n, dtype=object))
    t = times(board, wl, gpu, ones * board.emc_steps[-1], ones * board.cpu_steps[-1], ones * 4, speed, bytes_f)
    assert np.allclose(t.period_ms, np.maximum(t.t_pre_ms, t.t_ovh_ms + t.t_gpu_ms))
    assert np.allclose(t.latency_ms, t.t_pre_ms + t.t_ovh_ms + t.t_gpu_ms)
    assert np.all(t.moved_mb > 0)
    out = evaluate(board, wl, gpu_mhz=gpu, emc_mhz=board.emc_steps[-1], cpu_mhz=board.cpu_steps[-1], batch_size=4,
                   precision="fp32")
    assert np.allclose(out.latency_ms, t.latency_ms)
    assert np.allclose(out.throughput_ips, 1000.0 * 4 / t.period_ms)
    assert np.allclose(out.energy_j, out.power_w * t.period_ms / 4 / 1000.0)
