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

Parameters come from a profile's ``sim`` block (board) and ``polythrottle.twin.workloads`` (workloads,
overridable per board under ``sim.workloads``). Invalid parameters raise ProfileError naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from polythrottle.profiles import DeviceProfile, FieldReader

PRECISIONS = ("fp16", "fp32", "native")
"""fp32: the reference; fp16: faster math and half the bytes; native: as measured (factors 1)."""


@dataclass(frozen=True)
class GpuParams:
    fp32_gflops_per_mhz: float  # peak FP32 GFLOP/s per MHz (2 x CUDA cores / 1000)
    fp16_speedup: float  # peak FP16 / FP32 throughput on plain CUDA cores
    tensor_speedup: float  # extra FP16 factor for workloads that use tensor cores (1: none)
    dyn_w: float  # dynamic power at the top step, 100% busy (W)
    idle_frac: float  # fraction of dynamic power while clocked but idle
    leak_w: float  # leakage at v_max (W), scales with (V/v_max)^2
    v_min: float  # volts, flat below v_knee_mhz
    v_max: float  # volts at the top step
    v_knee_mhz: float
    v_exp: float = 1.0  # shape of the voltage rise above the knee (1: linear, >1: convex)
    roofline_p: float = 2.0  # smooth-max exponent of the compute/memory split


@dataclass(frozen=True)
class EmcParams:
    bus_bytes: float  # bytes per DDR transfer (bus width / 8)
    efficiency: float  # achievable fraction of peak bandwidth
    w_per_ghz: float  # background EMC + DRAM power per GHz of memory clock (W)
    j_per_gb: float  # energy per GB moved (J)


@dataclass(frozen=True)
class CpuParams:
    cores: int
    dyn_w: float  # all cores busy at the top step (W)
    v_min: float
    v_max: float
    v_knee_mhz: float
    ipc_scale: float  # per-MHz speed relative to the 1 GHz reference core of the workloads


@dataclass(frozen=True)
class Workload:
    """Intrinsics of one inference workload at FP32 (times at a 1 GHz reference CPU core)."""

    name: str
    gflop: float  # FP32 GFLOP per inference
    weights_mb: float  # MB read once per batch (weights)
    act_mb: float  # MB of activation traffic per inference
    compute_eff: float  # fraction of peak GPU throughput at a very large batch
    batch_half: float  # batch size reaching half of that throughput
    overhead_ms: float  # serial framework / launch / sync time per batch
    pre_ms: float  # CPU pre-processing per inference, one core
    pre_threads: int  # cores used for pre-processing
    tensor_cores: bool  # FP16 uses tensor cores (board gpu.tensor_speedup applies)
    batch_sizes: tuple[int, ...] | None = None  # override the board's batch sizes
    precisions: tuple[str, ...] | None = None  # override the board's precisions
    description: str = ""


@dataclass(frozen=True)
class BoardParams:
    name: str
    static_w: float
    gpu: GpuParams
    emc: EmcParams
    cpu: CpuParams
    target_util: float
    gpu_steps: tuple[float, ...]
    emc_steps: tuple[float, ...]
    cpu_steps: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    precisions: tuple[str, ...]
    workloads: dict[str, Workload]


# ----- parsing ----------------------------------------------------------------------------------
_POSITIVE_OK_ZERO = {"idle_frac", "leak_w", "w_per_ghz", "j_per_gb", "overhead_ms", "pre_ms", "act_mb",
                     "weights_mb", "batch_half", "dyn_w", "static_w"}


def _dataclass_from(cls: type, node: FieldReader, skip: tuple[str, ...] = ()) -> Any:
    node.unknown_keys({f.name for f in fields(cls)} - set(skip))
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in skip:
            continue
        child = node.get(f.name, required=_required(f))
        if child is None:
            continue
        if f.type in ("int",):
            v: Any = child.integer()
            if v < 1:
                raise child.fail(f"must be >= 1, got {v}")
        elif f.type == "bool":
            if not isinstance(child.value, bool):
                raise child.fail(f"expected true or false, got {child.value!r}")
            v = child.value
        elif f.type == "str":
            v = child.string()
        elif f.type.startswith("tuple[int"):
            v = tuple(c.integer() for c in child.items())
            if not v or list(v) != sorted(set(v)) or v[0] < 1:
                raise child.fail("expected ascending, unique, positive integers")
        elif f.type.startswith("tuple[str"):
            v = tuple(c.string() for c in child.items())
            if not v or len(set(v)) != len(v) or any(p not in PRECISIONS for p in v):
                raise child.fail(f"expected unique values from: {', '.join(PRECISIONS)}")
        else:
            v = child.number()
            if v < 0 or (v == 0 and f.name not in _POSITIVE_OK_ZERO):
                raise child.fail(f"must be positive, got {v:g}")
        kwargs[f.name] = v
    return kwargs


def _required(f: Any) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


def parse_workload(name: str, node: FieldReader) -> Workload:
    kw = _dataclass_from(Workload, node, skip=("name",))
    wl = Workload(name=name, **kw)
    if wl.compute_eff > 1:
        raise node.child("compute_eff").fail(f"must be <= 1, got {wl.compute_eff:g}")
    return wl


def board_from_profile(profile: DeviceProfile) -> BoardParams:
    """The twin parameters of ``profile`` (its ``sim`` block). Raises ProfileError naming the field."""
    from polythrottle.twin.workloads import GENERIC_WORKLOADS

    root = FieldReader(profile.path, "sim", profile.sim)
    root.unknown_keys({"cpu_mhz", "batch_sizes", "precisions", "static_w", "gpu", "emc", "cpu", "governor",
                       "workloads"})
    gpu = GpuParams(**_dataclass_from(GpuParams, root.get("gpu")))  # type: ignore[arg-type]
    emc = EmcParams(**_dataclass_from(EmcParams, root.get("emc")))  # type: ignore[arg-type]
    cpu = CpuParams(**_dataclass_from(CpuParams, root.get("cpu")))  # type: ignore[arg-type]
    for name, p in (("gpu", gpu), ("cpu", cpu)):
        if p.v_min > p.v_max:
            raise root.child(name).child("v_min").fail(f"v_min {p.v_min:g} is above v_max {p.v_max:g}")
    if gpu.idle_frac > 1:
        raise root.child("gpu").child("idle_frac").fail("must be <= 1")
    gov = root.get("governor")
    gov.unknown_keys({"target_util"})  # type: ignore[union-attr]
    target = gov.get("target_util").number()  # type: ignore[union-attr]
    if not 0 < target <= 1:
        raise gov.child("target_util").fail(f"must be in (0, 1], got {target:g}")  # type: ignore[union-attr]
    static = root.get("static_w").number()  # type: ignore[union-attr]
    if static < 0:
        raise root.child("static_w").fail("must be >= 0")

    cpu_node = root.get("cpu_mhz")
    cpu_steps = tuple(c.number() for c in cpu_node.items())  # type: ignore[union-attr]
    hw_cpu = set(profile.steps("cpu_mhz")) if "cpu_mhz" in profile.knobs else set()
    if not cpu_steps or list(cpu_steps) != sorted(set(cpu_steps)):
        raise cpu_node.fail("expected ascending, unique steps")  # type: ignore[union-attr]
    missing = [c for c in cpu_steps if c not in hw_cpu]
    if missing:
        raise cpu_node.fail(f"{missing[0]:g} MHz is not one of knobs.cpu_mhz.steps")  # type: ignore[union-attr]
    batch_node = root.get("batch_sizes")
    batch = tuple(c.integer() for c in batch_node.items())  # type: ignore[union-attr]
    if not batch or list(batch) != sorted(set(batch)) or batch[0] < 1:
        raise batch_node.fail("expected ascending, unique, positive integers")  # type: ignore[union-attr]
    prec_node = root.get("precisions")
    precs = prec_node.strings()  # type: ignore[union-attr]
    if not precs or len(set(precs)) != len(precs) or any(p not in PRECISIONS for p in precs):
        raise prec_node.fail(f"expected unique values from: {', '.join(PRECISIONS)}")  # type: ignore[union-attr]

    workloads = {}
    for name, data in GENERIC_WORKLOADS.items():
        workloads[name] = parse_workload(name, FieldReader("polythrottle/twin/workloads.py", name, data))
    wnode = root.get("workloads", required=False)
    if wnode is not None:
        for name in wnode.mapping():
            child = wnode.child(name)
            data = dict(child.mapping())
            if name in GENERIC_WORKLOADS:  # a board override of a generic workload: merge
                data = {**GENERIC_WORKLOADS[name], **data}
                child = FieldReader(profile.path, child.where, data)
            workloads[str(name)] = parse_workload(str(name), child)
    return BoardParams(
        name=profile.name, static_w=static, gpu=gpu, emc=emc, cpu=cpu, target_util=target,
        gpu_steps=profile.steps("gpu_mhz"), emc_steps=profile.steps("emc_mhz"), cpu_steps=cpu_steps,
        batch_sizes=batch, precisions=precs, workloads=workloads,
    )


# ----- physics ----------------------------------------------------------------------------------
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
    t_gpu: np.ndarray
    t_ovh: np.ndarray
    t_pre: np.ndarray
    period: np.ndarray
    latency: np.ndarray
    mb: np.ndarray  # MB moved per batch


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
        ok = (~settled) & (s >= gpu_min - 1e-9) & (s <= gpu_max + 1e-9) & (t.t_gpu / t.period <= board.target_util)
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
    util = t.t_gpu / t.period
    p_gpu = g.dyn_w * (f / f_top) * vg**2 * (util + g.idle_frac * (1.0 - util)) + g.leak_w * vg**2
    p_emc = board.emc.w_per_ghz * emc / 1000.0 + board.emc.j_per_gb * t.mb / t.period
    c_top = board.cpu_steps[-1]
    vc = _volts(cpu, c.v_min, c.v_max, c.v_knee_mhz, c_top) / c.v_max
    threads = np.minimum(batch, min(wl.pre_threads, c.cores))
    cpu_busy = np.minimum((t.t_pre * threads + t.t_ovh) / (t.period * c.cores), 1.0)
    p_cpu = c.dyn_w * (cpu / c_top) * vc**2 * cpu_busy
    power = board.static_w + p_gpu + p_emc + p_cpu
    return Outcome(
        latency_ms=t.latency,
        energy_j=power * t.period / batch / 1000.0,
        power_w=power,
        throughput_ips=1000.0 * batch / t.period,
        gpu_mhz=f,
        gpu_util=util,
    )


def with_params(board: BoardParams, overrides: Mapping[str, float]) -> BoardParams:
    """A copy of ``board`` with dotted overrides such as ``{"gpu.dyn_w": 20, "static_w": 4}``."""
    groups: dict[str, dict[str, float]] = {}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            groups.setdefault(head, {})[rest] = value
        else:
            top[key] = value
    for head, vals in groups.items():
        if head == "workloads":
            wls = dict(board.workloads)
            for k, v in vals.items():
                wname, _, field_name = k.rpartition(".")
                wls[wname] = replace(wls[wname], **{field_name: v})
            top["workloads"] = wls
        else:
            top[head] = replace(getattr(board, head), **vals)
    return replace(board, **top)
