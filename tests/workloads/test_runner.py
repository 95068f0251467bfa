"""polythrottle.workloads.runner: the torch runner's software knobs."""

from __future__ import annotations

import pytest
import torch

from polythrottle.workloads.runner import torch_precisions


def test_cpu_precisions() -> None:
    assert torch_precisions(torch.device("cpu")) == ["fp32", "bf16"]
    assert torch_precisions("cpu") == ["fp32", "bf16"]


@pytest.mark.parametrize(("capability", "bf16", "expected"), [
    ((9, 0), True, ["fp32", "tf32", "fp16", "bf16"]),
    ((8, 7), False, ["fp32", "tf32", "fp16"]),
    ((7, 5), False, ["fp32", "fp16"]),
])
def test_cuda_precisions_follow_the_gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], bf16: bool,
                                        expected: list[str]) -> None:
    """The one list both the torch runner and the llm: workloads offer (they wrote it twice before)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert torch_precisions("cuda:0") == expected
