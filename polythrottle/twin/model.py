"""The digital twin's physics: latency and energy per inference of a workload under a config.

Everything is vectorised over configs (numpy arrays), so a whole search space is evaluated at once.
Per batch of ``b`` inferences (times in ms, clocks in MHz, power in W):

* GPU compute: ``t_comp = gflop * (b + batch_half) / (peak_gflops * compute_eff)``; the peak is
  ``fp32_gflops_per_mhz * gpu_mhz`` times the precision's speed-up. ``batch_half`` is the batching
  efficiency: a batch of ``batch_half`` items reaches half the throughput of a very large batch.
* GPU memory: ``t_mem = (weights_mb + b * act_mb) * bytes_factor / bandwidth``, bandwidth
  ``emc_mhz * 2 * bus_bytes * efficiency`` (DDR); weights are read once per batch.
* ``t_gpu = (t_comp**p + t_mem**p) ** (1/p)``: a smooth roofline (compute- vs memory-bound split).
* CPU: a serial framework/launch overhead ``overhead_ms`` and pre-processing ``pre_ms`` per item
  (both at a 1 GHz reference core, scaled by ``1000 / (cpu_mhz * ipc_scale)``); pre-processing runs
  on ``pre_threads`` cores and overlaps the previous batch's inference (pipelined), so the period is
  ``T = max(t_pre, t_ovh + t_gpu)`` and the batch latency ``t_pre + t_ovh + t_gpu``.
* Power: ``static_w`` + GPU (dynamic ``dyn_w * f/f_top * (V/V_max)^2`` scaled by busy fraction,
  with ``idle_frac`` of it while clocked but idle, plus leakage ``leak_w * (V/V_max)^2``) + EMC
  (``w_per_ghz`` background per GHz of memory clock plus ``j_per_gb`` per GB moved) + CPU
  (``dyn_w * f/f_top * (V/V_max)^2`` times the fraction of cores busy). Voltage is flat at ``v_min``
  up to ``v_knee_mhz`` and rises to ``v_max`` at the top step as ``((f - knee) / (top - knee))**v_exp``
  (DVFS), which makes dynamic power super-linear in clock above the knee.
* Energy per inference ``E = P * T / b``; throughput ``b / T``.
* GPU range mode (``gpu_min_mhz``/``gpu_max_mhz``): a load-based devfreq governor settles on the
  lowest allowed step whose GPU load ``t_gpu / T`` is at most ``governor.target_util``. Small models
  leave the GPU idle between kernels, so the governor clocks them low; raising the minimum helps.

Parameters (``BoardParams``, ``Workload``) are declared and validated in ``polythrottle.twin.params``, from a
profile's ``sim`` block (board) and ``polythrottle.twin.workloads`` (overridable per board under ``sim.workloads``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from polythrottle.twin.params import BoardParams, Workload


def _volts(f: np.ndarray, v_min: float, v_max: float, knee: float, f_top: float, exp: float = 1.0) -> np.ndarray:
    span = max(f_top - knee, 1e-9)
    return v_min + (v_max - v_min) * np.clip((f - knee) / span, 0.0, 1.0) ** exp


def precision_factors(board: BoardParams, wl: Workload, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(compute speed-up, bytes factor) per config for precision names."""
    fp16 = precision == "fp16"
    speed16 = board.gpu.fp16_speedup * (board.gpu.tensor_speedup if wl.tensor_cores else 1.0)
    return np.where(fp16, speed16, 1.0), np.where(fp16, 0.5, 1.0)


@dataclass(frozen=True)
class Times:
    """Per-batch times of each config: GPU work, host overhead, preprocessing, the period between batches in
    steady state (the slower of preprocessing and overhead + GPU), the latency of one batch; MB moved."""

    t_gpu_ms: np.ndarray
    t_ovh_ms: np.ndarray
    t_pre_ms: np.ndarray
    period_ms: np.ndarray
    latency_ms: np.ndarray
    moved_mb: np.ndarray  # MB moved per batch


def times(board: BoardParams, wl: Workload, gpu_mhz: np.ndarray, emc_mhz: np.ndarray, cpu_mhz: np.ndarray,
          batch: np.ndarray, speed: np.ndarray, bytes_f: np.ndarray) -> Times:
    """Per-batch times (ms) for each config."""
    peak = board.gpu.fp32_gflops_per_mhz * gpu_mhz * speed  # GFLOP/s
    t_comp = 1000.0 * wl.gflop * (batch + wl.batch_half) / (peak * wl.compute_eff)
    mb = (wl.weights_mb + batch * wl.act_mb) * bytes_f
    bw = emc_mhz * 2.0 * board.emc.bus_bytes * board.emc.efficiency / 1000.0  # GB/s
    t_mem = mb / bw  # MB / (GB/s) = ms
    p = board.gpu.roofline_p
    t_gpu = (t_comp**p + t_mem**p) ** (1.0 / p)
    cpu_scale = 1000.0 / (cpu_mhz * board.cpu.ipc_scale)
    t_ovh = wl.overhead_ms * cpu_scale
    threads = np.minimum(batch, min(wl.pre_threads, board.cpu.cores))
    t_pre = wl.pre_ms * cpu_scale * batch / threads
    period = np.maximum(t_pre, t_ovh + t_gpu)
    return Times(t_gpu, t_ovh, t_pre, period, t_pre + t_ovh + t_gpu, mb)


def governed_gpu_mhz(board: BoardParams, wl: Workload, gpu_min: np.ndarray, gpu_max: np.ndarray,
                     emc_mhz: np.ndarray, cpu_mhz: np.ndarray, batch: np.ndarray, speed: np.ndarray,
                     bytes_f: np.ndarray) -> np.ndarray:
    """The step a load-based governor settles on within [gpu_min, gpu_max] (see module doc)."""
    chosen = np.array(gpu_max, dtype=float)
    settled = np.zeros(len(chosen), dtype=bool)
    for s in board.gpu_steps:  # ascending: the first allowed step with load <= target wins
        f = np.full(len(chosen), s)
        t = times(board, wl, f, emc_mhz, cpu_mhz, batch, speed, bytes_f)
        ok = ((~settled) & (s >= gpu_min - 1e-9) & (s <= gpu_max + 1e-9)
              & (t.t_gpu_ms / t.period_ms <= board.target_util))
        chosen[ok] = s
        settled |= ok
    return chosen


@dataclass(frozen=True)
class Outcome:
    """Noise-free results per config."""

    latency_ms: np.ndarray
    energy_j: np.ndarray
    power_w: np.ndarray
    throughput_ips: np.ndarray
    gpu_mhz: np.ndarray  # the clock the GPU ran at (the governor's pick in range mode)
    gpu_util: np.ndarray


def evaluate(board: BoardParams, wl: Workload, *, emc_mhz: Any, cpu_mhz: Any, batch_size: Any, precision: Any,
             gpu_mhz: Any = None, gpu_min_mhz: Any = None, gpu_max_mhz: Any = None) -> Outcome:
    """Latency, energy per inference and power for configs (arrays or scalars, broadcast together).

    Give ``gpu_mhz`` (locked clock) or ``gpu_min_mhz`` and ``gpu_max_mhz`` (governor range).
    """
    emc, cpu, batch = (np.atleast_1d(np.asarray(x, dtype=float)) for x in (emc_mhz, cpu_mhz, batch_size))
    prec = np.atleast_1d(np.asarray(precision, dtype=object))
    if gpu_mhz is not None:
        arrays = np.broadcast_arrays(np.atleast_1d(np.asarray(gpu_mhz, dtype=float)), emc, cpu, batch, prec)
        f, emc, cpu, batch, prec = arrays
    else:
        arrays = np.broadcast_arrays(np.atleast_1d(np.asarray(gpu_min_mhz, dtype=float)),
                                     np.atleast_1d(np.asarray(gpu_max_mhz, dtype=float)), emc, cpu, batch, prec)
        fmin, fmax, emc, cpu, batch, prec = arrays
    speed, bytes_f = precision_factors(board, wl, prec)
    if gpu_mhz is None:
        f = governed_gpu_mhz(board, wl, fmin, fmax, emc, cpu, batch, speed, bytes_f)
    t = times(board, wl, f, emc, cpu, batch, speed, bytes_f)

    g, c = board.gpu, board.cpu
    f_top = board.gpu_steps[-1]
    vg = _volts(f, g.v_min, g.v_max, g.v_knee_mhz, f_top, g.v_exp) / g.v_max
    util = t.t_gpu_ms / t.period_ms
    p_gpu = g.dyn_w * (f / f_top) * vg**2 * (util + g.idle_frac * (1.0 - util)) + g.leak_w * vg**2
    p_emc = board.emc.w_per_ghz * emc / 1000.0 + board.emc.j_per_gb * t.moved_mb / t.period_ms
    c_top = board.cpu_steps[-1]
    vc = _volts(cpu, c.v_min, c.v_max, c.v_knee_mhz, c_top) / c.v_max
    threads = np.minimum(batch, min(wl.pre_threads, c.cores))
    cpu_busy = np.minimum((t.t_pre_ms * threads + t.t_ovh_ms) / (t.period_ms * c.cores), 1.0)
    p_cpu = c.dyn_w * (cpu / c_top) * vc**2 * cpu_busy
    power_w = board.static_w + p_gpu + p_emc + p_cpu
    return Outcome(
        latency_ms=t.latency_ms,
        energy_j=power_w * t.period_ms / batch / 1000.0,
        power_w=power_w,
        throughput_ips=1000.0 * batch / t.period_ms,
        gpu_mhz=f,
        gpu_util=util,
    )
