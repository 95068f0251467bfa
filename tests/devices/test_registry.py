"""polythrottle.devices.registry: device specs, their schemes and options."""

from __future__ import annotations

import pytest

from polythrottle.devices.registry import SCHEMES, SIMULATED_SCHEMES, is_simulated


@pytest.mark.parametrize(("spec", "simulated"), [
    ("sim:jetson-agx-orin", True),
    ("replay:table.csv", True),
    (" SIM:jetson-agx-orin", True),  # the scheme as open_device reads it: stripped, any case
    ("Replay:t.csv", True),
    ("jetson", False),
    ("jetson:jetson-agx-orin", False),
    ("nvml:0", False),
    ("simulator:x", False),
])
def test_is_simulated_reads_the_scheme_as_open_device_does(spec: str, simulated: bool) -> None:
    assert is_simulated(spec) is simulated


def test_simulated_schemes_are_device_schemes() -> None:
    assert set(SIMULATED_SCHEMES) <= set(SCHEMES)
