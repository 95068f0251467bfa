"""The digital twin's parameters, declared: a board's ``sim`` block and the workloads (pydantic models).

``board_from_profile`` validates a profile's ``sim`` block into ``BoardParams``; the generic workloads
of ``polythrottle.twin.workloads`` are validated too, and a board may override any of their fields or
add workloads under ``sim.workloads``. Units: clocks MHz, power W, energy J, times ms, data MB.
Errors are one line naming the file and the field (``profile X.yaml: field sim.gpu.v_knee_mhz: ...``):
``ProfileError``, exit 2. ``with_params`` makes an unchecked copy with overrides (for fitting).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, ValidationInfo, field_validator, model_validator

from polythrottle.boards.schema import DeviceProfile
from polythrottle.boards.validation import Bool, Int, Number, Section, Str, fail, validate
from polythrottle.errors import ProfileError

PRECISIONS = ("fp16", "fp32", "native")
"""fp32: the reference; fp16: faster math and half the bytes; native: as measured (factors 1)."""
GENERIC_FILE = "polythrottle/twin/workloads.py"


def _positive(v: float) -> float:
    if v <= 0:
        raise fail(f"must be positive, got {v:g}")
    return v


def _non_negative(v: float) -> float:
    if v < 0:
        raise fail(f"must be >= 0, got {v:g}")
    return v


def _at_least_one(v: int) -> int:
    if v < 1:
        raise fail(f"must be >= 1, got {v}")
    return v


def _fraction(v: float) -> float:
    if v > 1:
        raise fail(f"must be <= 1, got {v:g}")
    return v


def _batch_sizes(v: tuple[int, ...]) -> tuple[int, ...]:
    if not v or list(v) != sorted(set(v)) or v[0] < 1:
        raise fail("expected ascending, unique, positive integers")
    return v


def _precisions(v: tuple[str, ...]) -> tuple[str, ...]:
    if not v or len(set(v)) != len(v) or any(p not in PRECISIONS for p in v):
        raise fail(f"expected unique values from: {', '.join(PRECISIONS)}")
    return v


Positive = Annotated[Number, AfterValidator(_positive)]
NonNegative = Annotated[Number, AfterValidator(_non_negative)]
Fraction = Annotated[Number, AfterValidator(_non_negative), AfterValidator(_fraction)]
Efficiency = Annotated[Number, AfterValidator(_positive), AfterValidator(_fraction)]
Count = Annotated[Int, AfterValidator(_at_least_one)]
BatchSizes = Annotated[tuple[Int, ...], AfterValidator(_batch_sizes)]
Precisions = Annotated[tuple[Str, ...], AfterValidator(_precisions)]


def _volts_ordered(p: GpuParams | CpuParams) -> None:
    if p.v_min > p.v_max:
        raise fail(f"v_min {p.v_min:g} is above v_max {p.v_max:g}", at=("v_min",))


class GpuParams(Section):
    fp32_gflops_per_mhz: Positive  # peak FP32 GFLOP/s per MHz (2 x CUDA cores / 1000)
    fp16_speedup: Positive  # peak FP16 / FP32 throughput on plain CUDA cores
    tensor_speedup: Positive  # extra FP16 factor for workloads that use tensor cores (1: none)
    dyn_w: NonNegative  # dynamic power at the top step, 100% busy (W)
    idle_frac: Fraction  # fraction of dynamic power while clocked but idle
    leak_w: NonNegative  # leakage at v_max (W), scales with (V/v_max)^2
    v_min: Positive  # volts, flat below v_knee_mhz
    v_max: Positive  # volts at the top step
    v_knee_mhz: Positive
    v_exp: Positive = 1.0  # shape of the voltage rise above the knee (1: linear, >1: convex)
    roofline_p: Positive = 2.0  # smooth-max exponent of the compute/memory split

    @model_validator(mode="after")
    def _volts(self) -> GpuParams:
        _volts_ordered(self)
        return self


class EmcParams(Section):
    bus_bytes: Positive  # bytes per DDR transfer (bus width / 8)
    efficiency: Positive  # achievable fraction of peak bandwidth
    w_per_ghz: NonNegative  # background EMC + DRAM power per GHz of memory clock (W)
    j_per_gb: NonNegative  # energy per GB moved (J)


class CpuParams(Section):
    cores: Count
    dyn_w: NonNegative  # all cores busy at the top step (W)
    v_min: Positive
    v_max: Positive
    v_knee_mhz: Positive
    ipc_scale: Positive  # per-MHz speed relative to the 1 GHz reference core of the workloads

    @model_validator(mode="after")
    def _volts(self) -> CpuParams:
        _volts_ordered(self)
        return self


def _utilisation(v: float) -> float:
    if not 0 < v <= 1:
        raise fail(f"must be in (0, 1], got {v:g}")
    return v


class GovernorParams(Section):
    target_util: Annotated[Number, AfterValidator(_utilisation)]  # GPU load the devfreq governor settles at


class Workload(Section):
    """Intrinsics of one inference workload at FP32 (times at a 1 GHz reference CPU core)."""

    derived: ClassVar[tuple[str, ...]] = ("name",)
    name: str = ""  # the key under ``sim.workloads`` (or in GENERIC_WORKLOADS)
    gflop: Positive  # FP32 GFLOP per inference
    weights_mb: NonNegative  # MB read once per batch (weights)
    act_mb: NonNegative  # MB of activation traffic per inference
    compute_eff: Efficiency  # fraction of peak GPU throughput at a very large batch
    batch_half: NonNegative  # batch size reaching half of that throughput
    overhead_ms: NonNegative  # serial framework / launch / sync time per batch
    pre_ms: NonNegative  # CPU pre-processing per inference, one core
    pre_threads: Count  # cores used for pre-processing
    tensor_cores: Bool  # FP16 uses tensor cores (board gpu.tensor_speedup applies)
    batch_sizes: BatchSizes | None = None  # override the board's batch sizes
    precisions: Precisions | None = None  # override the board's precisions
    description: Str = ""


class SimParams(Section):
    """A profile's ``sim`` block. Validate with ``context={"cpu_mhz": the board's knobs.cpu_mhz.steps}``."""

    cpu_mhz: tuple[Number, ...]  # subset of knobs.cpu_mhz the twin uses
    batch_sizes: BatchSizes
    precisions: Precisions
    static_w: NonNegative  # board power that no knob changes (W)
    gpu: GpuParams
    emc: EmcParams
    cpu: CpuParams
    governor: GovernorParams
    workloads: dict[str, Workload] = {}  # board-specific workloads and overrides of generic ones

    @field_validator("cpu_mhz")
    @classmethod
    def _real_cpu_steps(cls, steps: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        if not steps or list(steps) != sorted(set(steps)):
            raise fail("expected ascending, unique steps")
        hardware = set((info.context or {}).get("cpu_mhz", ()))
        missing = [c for c in steps if c not in hardware]
        if missing:
            raise fail(f"{missing[0]:g} MHz is not one of knobs.cpu_mhz.steps")
        return steps

    @field_validator("workloads", mode="before")
    @classmethod
    def _over_generic(cls, workloads: Any) -> Any:
        """A workload of the generic set given here overrides only the fields it names."""
        from polythrottle.twin.workloads import GENERIC_WORKLOADS

        if not isinstance(workloads, Mapping):
            return workloads
        return {name: {**GENERIC_WORKLOADS[name], **data} if name in GENERIC_WORKLOADS and isinstance(data, Mapping)
                else data for name, data in workloads.items()}

    @field_validator("workloads")
    @classmethod
    def _workload_names(cls, workloads: dict[str, Workload]) -> dict[str, Workload]:
        return {name: w.model_copy(update={"name": name}) for name, w in workloads.items()}


@dataclass(frozen=True)
class BoardParams:
    """Everything the physics needs about one board: its ``sim`` parameters, clock steps (MHz) and workloads."""

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


def generic_workloads() -> dict[str, Workload]:
    """The workloads every board knows (``polythrottle.twin.workloads``), validated."""
    from polythrottle.twin.workloads import GENERIC_WORKLOADS

    return {name: validate(Workload, data, GENERIC_FILE, (name,)).model_copy(update={"name": name})
            for name, data in GENERIC_WORKLOADS.items()}


def board_from_profile(profile: DeviceProfile) -> BoardParams:
    """The twin parameters of ``profile`` (its ``sim`` block). Raises ProfileError naming the field."""
    hw_cpu = profile.steps("cpu_mhz") if "cpu_mhz" in profile.knobs else ()
    sim = validate(SimParams, profile.sim, profile.path, ("sim",), context={"cpu_mhz": hw_cpu})
    if "emc_mhz" not in profile.knobs:
        raise ProfileError(f"profile {profile.path}: field knobs.emc_mhz: missing (the twin needs it)")
    return BoardParams(
        name=profile.name, static_w=sim.static_w, gpu=sim.gpu, emc=sim.emc, cpu=sim.cpu,
        target_util=sim.governor.target_util, gpu_steps=profile.steps("gpu_mhz"), emc_steps=profile.steps("emc_mhz"),
        cpu_steps=sim.cpu_mhz, batch_sizes=sim.batch_sizes, precisions=sim.precisions,
        workloads={**generic_workloads(), **sim.workloads},
    )


def with_params(board: BoardParams, overrides: Mapping[str, float]) -> BoardParams:
    """A copy of ``board`` with dotted overrides such as ``{"gpu.dyn_w": 20, "static_w": 4}`` (not validated)."""
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
                wls[wname] = wls[wname].model_copy(update={field_name: v})
            top["workloads"] = wls
        else:
            top[head] = getattr(board, head).model_copy(update=vals)
    return replace(board, **top)
