"""The Python API on the fake-sysfs Jetson (in process): the board's clocks are back after a tune that ends,
fails in the caller's callback or is interrupted; a second device object on the same board is refused while
the first holds changes; a closed device writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

import polythrottle as pt
from polythrottle.errors import BadInputError, DeviceBusyError, DeviceError
from tests import fake_jetson as fj


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "root"
    fj.build(root, "agx-orin-jp5")
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(root))
    fj.install(monkeypatch.setattr)  # the kernel double and the torch-free builtin:fake workload
    return root


def clocks(root: Path) -> dict[str, str]:
    return {k: v.strip() for k, v in fj.snapshot(root).items() if "cur_freq" not in k}


def test_tune_restores_an_open_device_whatever_ends_it(board: Path) -> None:
    before = clocks(board)
    with pt.open_device("jetson", workload="builtin:fake") as dev:
        pt.tune(dev, 1000.0, budget=4, optimizer="random", seed=0)
        assert clocks(board) == before  # not left at the last config measured

        def fail_at_step_2(r) -> None:
            if r.step == 2:
                raise RuntimeError("the caller's callback failed")

        with pytest.raises(RuntimeError, match="callback failed"):
            pt.tune(dev, 1000.0, budget=6, optimizer="random", seed=1, on_record=fail_at_step_2)
        assert clocks(board) == before

        def interrupt(r) -> None:
            if r.step == 1:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            pt.tune(dev, 1000.0, budget=6, optimizer="random", seed=2, on_record=interrupt)
        assert clocks(board) == before
        again = pt.tune(dev, 1000.0, budget=3, optimizer="random", seed=3)  # no stale state after a failure
        assert len(again.history) == 3 and clocks(board) == before


def test_a_second_device_object_on_the_same_board_is_refused(board: Path) -> None:
    before = clocks(board)
    first = pt.open_device("jetson")
    second = pt.open_device("jetson")
    pt.apply(first, {"gpu_mhz": 420.75})
    with pytest.raises(DeviceBusyError, match="another device object in this process"):
        pt.apply(second, {"gpu_mhz": 624.75})
    assert fj.read(board, "/sys/devices/17000000.ga10b/devfreq/17000000.ga10b/max_freq") == "420750000"
    first.close()  # its changes are back: the second may write now
    pt.apply(second, {"gpu_mhz": 624.75})
    second.close()
    assert clocks(board) == before


def test_a_closed_device_writes_nothing(board: Path) -> None:
    before = clocks(board)
    dev = pt.open_device("jetson")
    dev.close()
    with pytest.raises(DeviceError, match="is closed"):
        pt.apply(dev, {"gpu_mhz": 420.75})
    with pytest.raises(BadInputError, match="device=: .* is closed"):
        pt.tune(dev, 100.0, budget=3)
    assert clocks(board) == before
