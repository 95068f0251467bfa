"""polythrottle.devices.probe: what devices this machine offers (the ``devices`` command renders it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from polythrottle.boards.profiles import list_profiles
from polythrottle.devices.probe import probe_all, sim_boards
from polythrottle.devices.registry import DeviceOptions


def test_every_board_profile_is_a_simulated_board_with_its_workloads() -> None:
    boards = sim_boards()
    assert [b.name for b in boards] == [f"sim:{n}" for n in list_profiles()]
    assert all(b.kind == "sim" and b.found and b.details["workloads"] for b in boards)


def test_no_jetson_under_an_empty_root_and_no_nvml_probe_there(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(tmp_path))
    infos = probe_all(DeviceOptions(state_dir=tmp_path / "state"))
    assert [(i.kind, i.found) for i in infos] == [("jetson", False)]
    assert "no Jetson found" in infos[0].notes[0]
