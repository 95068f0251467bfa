"""The packaged systemd unit verifies with systemd-analyze and keeps its hardening."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path):
    exe = tmp_path / "polythrottle"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m polythrottle \"$@\"\n")
    exe.chmod(0o755)
    unit = subprocess.run([sys.executable, "-m", "polythrottle", "install-service", "--exe", str(exe), "--print-unit"],
                          capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert f"ExecStart={exe} daemon --config /etc/polythrottle/daemon.yaml" in unit
    path = tmp_path / "polythrottle.service"
    path.write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "polythrottle.service" in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
    for key in ("Type=notify", "WatchdogSec=", "NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=on-failure",
                "CapabilityBoundingSet=\n", "ReadWritePaths=/sys/devices"):
        assert key in unit

