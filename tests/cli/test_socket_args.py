"""--timeout of ``status`` and ``notify`` (and ``notify --wait-timeout``): a finite number of seconds > 0."""

import pytest

from polythrottle.cli import main


@pytest.mark.parametrize("argv", [
    ["status", "--timeout", "nan"], ["status", "--timeout", "inf"], ["status", "--timeout", "-5"],
    ["status", "--timeout", "0"], ["notify", "reload", "--timeout", "nan"],
    ["notify", "model-updated", "--wait", "--wait-timeout", "-1"], ["notify", "reload", "--timeout", "soon"],
])
def test_timeouts_must_be_positive_seconds(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--socket", str(tmp_path / "none.sock")])
    _, err = capsys.readouterr()
    assert e.value.code == 2 and err.count("\n") == 1 and "timeout" in err and "Traceback" not in err
