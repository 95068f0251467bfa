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


@pytest.mark.parametrize("command", [["status"], ["notify", "reload"]])
def test_help_gives_the_default_socket_a_user_gets(command, capsys, monkeypatch, tmp_path):
    """`--help` said the default was /run/polythrottle/control.sock, but a user (not root, no system socket) gets
    $XDG_RUNTIME_DIR/polythrottle/control.sock: the help states the whole rule of ``paths.socket_path``."""
    from polythrottle import paths

    monkeypatch.delenv("POLYTHROTTLE_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(paths, "is_root", lambda: False)
    monkeypatch.setattr(paths, "SYSTEM_SOCKET", tmp_path / "no-run" / "control.sock")
    assert paths.socket_path() == tmp_path / "polythrottle" / "control.sock"
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "$XDG_RUNTIME_DIR/polythrottle/control.sock" in text and "as root or when it exists" in text


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["notify", "reload"],
                                     ["notify", "model-updated"]])
def test_a_socket_path_too_long_for_a_unix_socket_is_bad_input(command, capsys, monkeypatch, tmp_path):
    """A --socket (or $POLYTHROTTLE_SOCKET) longer than ``sun_path`` takes can never be connected to: one line
    naming it, exit 2 (it was exit 1, 'AF_UNIX path too long')."""
    long = tmp_path / ("d" * 120) / "c.sock"
    code = main([*command, "--socket", str(long)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "bytes long" in err and "at most 107" in err and str(long)[:50] in err
    monkeypatch.setenv("POLYTHROTTLE_SOCKET", str(long))
    code = main(command)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "$POLYTHROTTLE_SOCKET" in err
