"""FLOPs and arithmetic intensity of a PyTorch workload, the inputs of the paper's latency predictor.

FLOPs are counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
convolutions, forward; forward + backward for training). Bytes are a first-order estimate of memory
traffic: the weights (for training also their gradients and two optimizer-state reads/writes) plus
every leaf module's output activations (for training twice: saved, then their gradients).
Arithmetic intensity = FLOPs / bytes. Both scale linearly with the batch: ``fixed + batch * per_sample``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from polythrottle.checks import is_real
from polythrottle.errors import BadInputError, brief


@dataclass(frozen=True)
class WorkloadFeatures:
    """Per-sample FLOPs and bytes of a workload, and its batch-independent bytes (weights etc.).

    flops_per_sample: FLOPs of one sample. bytes_per_sample: activation bytes moved per sample.
    fixed_bytes: bytes moved once per batch (weights; gradients and optimizer state when training).
    """

    flops_per_sample: float
    bytes_per_sample: float
    fixed_bytes: float = 0.0

    def __post_init__(self) -> None:
        for name in ("flops_per_sample", "bytes_per_sample", "fixed_bytes"):
            v = getattr(self, name)
            if not is_real(v) or not math.isfinite(v) or v < 0:
                raise BadInputError(f"workload features: {name} must be a finite number >= 0, got {brief(v, 40)}")

    def gflops(self, batch: int) -> float:
        """GFLOPs of one batch."""
        return batch * self.flops_per_sample / 1e9

    def bytes(self, batch: int) -> float:
        return self.fixed_bytes + batch * self.bytes_per_sample

    def intensity(self, batch: int) -> float:
        """Arithmetic intensity (FLOP per byte) of one batch; 0 for an empty batch."""
        b = self.bytes(batch)
        return batch * self.flops_per_sample / b if batch > 0 and b > 0 else 0.0


def measure_features(
    model: Any,
    make_batch: Callable[[int], Any],
    *,
    train: bool = False,
    loss_fn: Callable[[Any], Any] | None = None,
    optimizer_state_factor: float = 2.0,
) -> WorkloadFeatures:
    """Count the FLOPs and estimate the bytes of ``model`` on ``make_batch(1)``.

    train: forward + backward (``loss_fn(output)``, default ``output.float().sum()``), weights counted
    with their gradients and ``optimizer_state_factor`` optimizer-state tensors per weight.
    Runs the model once on the current device; the model's parameters get gradients when ``train``.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if not isinstance(model, torch.nn.Module):
        raise BadInputError(f"model must be a PyTorch module, got {brief(model, 40)}")
    if not callable(make_batch):
        raise BadInputError(f"make_batch must be a function of the batch size, got {brief(make_batch, 40)}")
    act_bytes = 0

    def hook(_m: Any, _i: Any, out: Any) -> None:
        nonlocal act_bytes
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for t in outs:
            if isinstance(t, torch.Tensor):
                act_bytes += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    x = make_batch(1)
    try:
        with FlopCounterMode(display=False) as counter:
            if train:
                out = model(x)
                loss = loss_fn(out) if loss_fn else out.float().sum()
                loss.backward()
            else:
                with torch.no_grad():
                    model(x)
    finally:
        for h in handles:
            h.remove()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if train:
        fixed = weight_bytes * (2.0 + optimizer_state_factor)
        per_sample = 2.0 * act_bytes
    else:
        fixed = float(weight_bytes)
        per_sample = float(act_bytes)
    in_bytes = x.numel() * x.element_size() if isinstance(x, torch.Tensor) else 0
    return WorkloadFeatures(float(counter.get_total_flops()), per_sample + in_bytes, fixed)


__all__ = ["WorkloadFeatures", "measure_features"]
