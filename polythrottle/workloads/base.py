"""What a workload is: a PyTorch model plus a factory of input batches (``WorkloadSpec``), or a
workload that runs on its own runtime and builds its own runners (``RuntimeWorkload``: ONNX Runtime
sessions, Hugging Face generation).

This is the contract of ``module:function`` workloads: the function takes no arguments and returns a
``WorkloadSpec`` (or a ``(model, make_input)`` tuple, or a dict with those keys). ``make_input(n)``
returns one batch of ``n`` inputs as a tensor (on any device, fp32; the runner moves and casts it).
The model is used in eval mode under ``torch.inference_mode()``; weights may be random.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

if TYPE_CHECKING:
    from polythrottle.space import Knob, KnobStatus, Value

from polythrottle.errors import BadInputError

DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
SloMetric = Literal["ttft", "tpot", "batch"]
SLO_METRICS: tuple[str, ...] = get_args(SloMetric)
"""Latencies an SLO can bound: ``batch`` (one batch, launch to completion; every workload), ``ttft``
(time to first token) and ``tpot`` (time per output token after the first; ``llm:`` workloads). The one
list: the spec's ``slo_metric`` field, ``--slo-metric``, the daemon's ``slo_metric:``, ``open_device`` and
the runner all read it."""


@dataclass
class WorkloadSpec:
    """A model and its inputs. ``batch_sizes``: the batch sizes offered as the ``batch_size`` knob."""

    name: str
    model: Any  # torch.nn.Module (kept untyped so this module imports without torch)
    make_input: Callable[[int], Any]
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES

    def __post_init__(self) -> None:
        sizes = [int(b) for b in self.batch_sizes]
        if not sizes or any(b < 1 for b in sizes) or len(set(sizes)) != len(sizes):
            raise BadInputError(f"workload {self.name}: batch_sizes must be distinct positive integers")
        self.batch_sizes = tuple(sorted(sizes))
        if not callable(self.make_input):
            raise BadInputError(f"workload {self.name}: make_input must be callable")
        if not callable(getattr(self.model, "forward", None)):
            raise BadInputError(f"workload {self.name}: model must be a torch.nn.Module")


def coerce_spec(obj: Any, name: str) -> WorkloadSpec:
    """Accept a WorkloadSpec, a ``(model, make_input)`` tuple or a dict with those keys."""
    if isinstance(obj, WorkloadSpec):
        return obj
    if isinstance(obj, dict) and "model" in obj and "make_input" in obj:
        return WorkloadSpec(name=str(obj.get("name", name)), model=obj["model"], make_input=obj["make_input"],
                            batch_sizes=obj.get("batch_sizes", DEFAULT_BATCH_SIZES))
    if isinstance(obj, tuple) and len(obj) == 2:
        return WorkloadSpec(name=name, model=obj[0], make_input=obj[1])
    raise BadInputError(
        f"workload {name} returned {type(obj).__name__}; expected a WorkloadSpec, (model, make_input) or "
        "a dict with 'model' and 'make_input'"
    )


class RuntimeWorkload(Protocol):
    """A workload with its own runtime (``onnx:``, ``llm:``): it offers software knobs on a device
    and builds a runner (the harness's ``Runnable``) for one config of them.

    latency_metrics: SLO metrics its runners time besides "batch" (see ``SLO_METRICS``);
    default_slo_metric: the one bounded when the user names none. ``make_runner`` raises
    BadInputError for a bad value and DeviceError when the runtime fails (out of memory, ...).
    ``release`` frees what the workload keeps between runners (sessions, model copies).
    """

    name: str
    latency_metrics: tuple[str, ...]
    default_slo_metric: str

    def software_knobs(self, device: Any) -> tuple[list[Knob], list[KnobStatus]]: ...

    def make_runner(self, config: Mapping[str, Value], device: Any) -> Any: ...

    def details(self) -> dict[str, str]: ...

    def release(self) -> None: ...


def split_options(spec: str, known: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """``"model.onnx?provider=cpu&dims=seq:128"`` -> ``("model.onnx", {"provider": "cpu", "dims": "seq:128"})``.

    ``spec`` is the workload spec after its scheme (``onnx:``, ``llm:``), for error messages.
    ``known``: option name -> what it takes. Raises BadInputError for an unknown, repeated or empty option.
    """
    target, _, query = spec.partition("?")
    opts: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        name, eq, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if name not in known:
            valid = "; ".join(f"{k}={v}" for k, v in known.items())
            raise BadInputError(f"workload option {name!r} is unknown; valid: {valid}")
        if not eq or not value:
            raise BadInputError(f"workload option {name} needs a value: {name}={known[name]}")
        if name in opts:
            raise BadInputError(f"workload option {name} is given twice")
        opts[name] = value
    return target.strip(), opts


def parse_int_list(name: str, text: str, lo: int = 1) -> tuple[int, ...]:
    """``"1,4,16"`` -> ``(1, 4, 16)`` (sorted, distinct, each >= lo). Raises BadInputError."""
    try:
        values = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise BadInputError(f"workload option {name}={text}: expected comma-separated integers") from None
    if not values or values[0] < lo:
        raise BadInputError(f"workload option {name}={text}: expected integers >= {lo}")
    return tuple(values)


def parse_int(name: str, text: str, lo: int) -> int:
    """One integer option (>= lo). Raises BadInputError."""
    try:
        value = int(text)
    except ValueError:
        raise BadInputError(f"workload option {name}={text}: expected an integer") from None
    if value < lo:
        raise BadInputError(f"workload option {name}={text}: must be >= {lo}")
    return value
