"""A workload (``tests.devices.lost_signal_workload:make``) whose first batch makes the process SIGTERM itself
inside a bare ``except``, as a lazily imported Cython module's init does around its ``collections.abc``
registrations: the signal's handler runs there and the exception it raises is dropped. The deterministic
form of a SIGTERM from outside landing at that moment (``test_nvml.py``)."""

from __future__ import annotations

import signal

import torch
from torch import nn

from polythrottle.workloads.base import WorkloadSpec

forwards = 0  # per process: the runner copies the model for each config


class LosesTheFirstSignal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        global forwards
        forwards += 1
        if forwards == 1:
            try:
                signal.raise_signal(signal.SIGTERM)  # its handler runs (and raises) in here
            except BaseException:  # noqa: BLE001 - Cython's `except: pass`
                pass
        return self.layer(x)


def make() -> WorkloadSpec:
    return WorkloadSpec("lost-signal", LosesTheFirstSignal(), lambda n: torch.randn(n, 16), batch_sizes=(1, 2))
