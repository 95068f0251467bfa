"""The surrogate (polythrottle/optim/gp_model.py)."""

from __future__ import annotations

import warnings

from gpytorch.utils.warnings import NumericalWarning

from polythrottle.optim import Observation, make_optimizer
from tests.optim.cbo_problem import ENERGY, LATENCY, SLO, SPACE


def test_tiny_reported_noise_warns_nobody():
    # a live measurement can report a spread far under GPyTorch's smallest fixed noise; it is rounded up
    # silently (the CLI printed GPyTorch's NumericalWarning on every step of a live H200 tune)
    opt = make_optimizer("cbo", SPACE, SLO, 0)
    for i in (5, 17, 30, 44):
        opt.tell(Observation(i, ENERGY[i], LATENCY[i], 1e-5, 1e-5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NumericalWarning)
        assert opt.ask(remaining=10) not in (5, 17, 30, 44)
