"""What a workload is: a PyTorch model plus a factory of input batches.

This is the contract of ``module:function`` workloads: the function takes no arguments and returns a
``WorkloadSpec`` (or a ``(model, make_input)`` tuple, or a dict with those keys). ``make_input(n)``
returns one batch of ``n`` inputs as a tensor (on any device, fp32; the runner moves and casts it).
The model is used in eval mode under ``torch.inference_mode()``; weights may be random.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from polythrottle.errors import BadInputError

DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)


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
