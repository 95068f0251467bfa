"""The optional jtop meter, with the jtop module faked at its boundary (jetson-stats is not installed here)."""

import sys
import time
import types

import pytest

from polythrottle.energy import jtop as jtop_meter
from polythrottle.errors import UnsupportedError


def test_absent_jetson_stats_is_a_clear_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "jtop", None)  # import fails
    ok, why = jtop_meter.jtop_status()
    assert not ok and "jetson-stats not installed" in why
    with pytest.raises(UnsupportedError, match="jetson-stats"):
        jtop_meter.JtopMeter()


def test_integrates_published_power(monkeypatch, tmp_path):
    class FakeJtop:
        def __init__(self, interval):
            self.interval = interval

        def start(self):
            pass

        def ok(self):
            return True

        def close(self):
            self.closed = True

        @property
        def power(self):
            return {"rail": {"VDD_IN": {"power": 5000}, "VDD_SOC": {"power": 1000}}, "tot": {"power": 6000}}

    monkeypatch.setitem(sys.modules, "jtop", types.SimpleNamespace(jtop=FakeJtop))
    sock = tmp_path / "jtop.sock"
    sock.write_text("")
    monkeypatch.setattr(jtop_meter, "JTOP_SOCKET", str(sock))
    m = jtop_meter.JtopMeter(["VDD_IN"], period_s=0.01)
    m.begin()
    time.sleep(0.2)
    w = m.end()
    m.close()
    assert w.power_w == pytest.approx(5.0)
    assert jtop_meter.total_power_w(FakeJtop(1).power) == pytest.approx(6.0)
