"""``polythrottle notify``: a malformed request is refused here (exit 2), before the daemon is asked."""

import pytest

from polythrottle.cli import main


@pytest.mark.parametrize("version, words", [("", "model_version"), (" ", "model_version"),
                                            ("v" * 300, "at most 200"), ("a\tb", "printable")])
def test_bad_model_version_is_refused_before_sending(tmp_path, capsys, version, words):
    code = main(["notify", "model-updated", "--model-version", version, "--socket", str(tmp_path / "none.sock")])
    _, err = capsys.readouterr()
    assert code == 2 and words in err and err.count("\n") == 1  # not exit 1 "no daemon control socket"
