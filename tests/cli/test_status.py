"""``polythrottle status``: how a status is shown, and a status it cannot show (a daemon of another version)."""

from __future__ import annotations

import pytest

from polythrottle.cli.status import print_status
from polythrottle.errors import PolyThrottleError

FULL = {"state": "serving", "pid": 7, "uptime_s": 12.0, "config": "/etc/polythrottle/daemon.yaml",
        "device": "sim:jetson-agx-orin", "workload": "efficientnet-b0", "slo_ms": 25.0, "knobs": ["gpu_mhz"],
        "model_version": "v1", "applied": {"gpu_mhz": 1300.5}}


def test_a_full_status_is_shown() -> None:
    print_status(FULL)  # no error


@pytest.mark.parametrize("snap, why", [
    ({k: v for k, v in FULL.items() if k != "uptime_s"}, "no field 'uptime_s'"),  # was "KeyError: 'uptime_s'"
    ({**FULL, "slo_ms": "fast"}, "Unknown format code 'g' for object of type 'str'"),
    ({**FULL, "applied": "x"}, "'str' object has no attribute 'items'"),
])
def test_a_status_it_cannot_show_is_one_error_and_no_half_table(capsys, snap, why) -> None:
    with pytest.raises(PolyThrottleError) as e:
        print_status(snap)
    assert str(e.value) == (f"the daemon's status cannot be shown ({why}); `polythrottle status --json` prints "
                            "it as sent") and e.value.exit_code == 1
    assert capsys.readouterr().out == ""
