"""``polythrottle apply`` on a fake Jetson tree: what it says it did."""

from __future__ import annotations

from pathlib import Path

import pytest

from polythrottle.cli import main
from tests import fake_jetson as fj


def test_an_apply_that_writes_nothing_does_not_claim_saved_originals(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A value the board already holds is not written and no originals are saved: the command said "originals saved
    in STATE_DIR" anyway (also for a --state-dir that is a file)."""
    root = tmp_path / "root"
    fj.build(root, "agx-orin-jp6")
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(root))
    state = tmp_path / "state"
    assert main(["apply", "--device", "jetson", "--set", "gpu_mhz=420.75", "--state-dir", str(state)]) == 0
    assert f"originals saved in {state}" in capsys.readouterr().out
    for other in (tmp_path / "other-state", tmp_path / "a-file"):
        if other.name == "a-file":
            other.write_text("not a directory")
        assert main(["apply", "--device", "jetson", "--set", "gpu_mhz=420.75", "--state-dir", str(other)]) == 0
        out = capsys.readouterr().out
        assert "nothing written" in out and "originals saved" not in out
    assert main(["restore", "--device", "jetson", "--state-dir", str(state)]) == 0


@pytest.mark.parametrize("extra, message", [
    ([], "give --set KNOB=VALUE (one or more) or --config RESULT.json\n"),
    (["--set", "gpu_mhz=420.75", "--config", "result.json"], "give --set KNOB=VALUE or --config RESULT.json, not both\n"),
])
def test_set_and_config_neither_or_both(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Both given was answered as if neither had been ("give --set ... or --config ...")."""
    assert main(["apply", "--device", "jetson", *extra]) == 2
    err = capsys.readouterr().err
    assert err.endswith(message) and err.count("\n") == 1
