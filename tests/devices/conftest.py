"""Fixtures of the device tests: the fake GPU installed at NVML's library boundary (``gpu``) and an empty
sysfs tree (``fake_sysfs_root``; the NVML test modules use it for every test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fake_nvml import FakeGpu


@pytest.fixture
def fake_sysfs_root(tmp_path, monkeypatch) -> Path:
    """Kernel files resolve under an empty tree (never the real /sys), subprocesses included."""
    root = tmp_path / "sysroot"
    root.mkdir()
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(root))
    return root


@pytest.fixture
def gpu(monkeypatch) -> FakeGpu:
    g = FakeGpu()
    g.install(monkeypatch.setattr)
    return g
