"""The control-socket protocol: request and reply lines, the one list of commands, field checks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from polythrottle.cli import notify
from polythrottle.daemon import protocol
from polythrottle.daemon.protocol import COMMANDS, EVENTS, ModelUpdated, command_of, decode_request, encode_request
from polythrottle.errors import BadInputError


def test_a_request_is_one_json_line_and_decodes_back():
    line = encode_request("model-updated", model_version="v2", force=True)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_request(line.strip()) == {"command": "model-updated", "model_version": "v2", "force": True}


@pytest.mark.parametrize("line, words", [
    (b"hello", "not a JSON object"), (b'["status"]', "JSON object"), (b'{"command": 7}', "no \"command\""),
    (b'{"x": 1}', "no \"command\""), (b"[" * 100_000, "not a JSON object"), (b'{"command": "\xff"}', "not a JSON"),
    (b'{"command": "status", "x": ' + b"9" * 5000 + b"}", "not a JSON object"),  # over Python's int digit limit
])
def test_bad_request_lines_are_refused_with_the_reason(line, words):
    with pytest.raises(BadInputError, match=words):
        decode_request(line)


def test_commands_are_declared_once():
    assert set(EVENTS) < set(COMMANDS) and protocol.STATUS in COMMANDS
    assert all(command_of({"command": c}) == c for c in COMMANDS)
    with pytest.raises(BadInputError, match="unknown command 'x'; expected one of: status, model-updated, reload"):
        command_of({"command": "x"})
    with pytest.raises(BadInputError) as e:
        command_of({"command": "y" * 10_000})
    assert len(str(e.value)) < 200
    parser = argparse.ArgumentParser()
    notify.register(parser.add_subparsers())  # `polythrottle notify` offers exactly the events
    assert parser.parse_args(["notify", "reload"]).event == "reload"
    with pytest.raises(SystemExit):
        parser.parse_args(["notify", "status"])


def test_model_updated_fields():
    m = ModelUpdated.parse({"command": "model-updated", "model_version": "v2", "force": True})
    assert m == ModelUpdated("v2", None, True) and m.fields() == {"model_version": "v2", "force": True}
    assert ModelUpdated.parse({"model_files": ["/m/a.bin"]}).fields() == {"model_files": ["/m/a.bin"]}
    assert ModelUpdated().fields() == {}


@pytest.mark.parametrize("fields, words", [
    ({"model_version": ""}, "model_version"), ({"model_version": 3}, "model_version"),
    ({"model_version": "v" * 201}, "at most 200"), ({"model_version": "a\nb"}, "printable"),
    ({"model_files": "/m"}, "model_files"), ({"model_files": []}, "model_files"), ({"model_files": [1]}, "model_files"),
    ({"model_files": ["/x"] * 1025}, "model_files"), ({"model_files": [""]}, "model_files"),
    ({"force": "yes"}, "force must be true or false"),
])
def test_malformed_model_updated_fields_are_refused(fields, words):
    with pytest.raises(BadInputError, match=words):
        ModelUpdated.parse(fields)


def test_replies():
    assert protocol.decode_reply(protocol.encode_reply(protocol.ok(job=3))) == {"ok": True, "job": 3}
    assert protocol.decode_reply(b"garbage") is None and protocol.decode_reply(b"[1]") is None
    assert protocol.decode_reply(b'{"ok": true, "x": ' + b"9" * 5000 + b"}") is None
    assert protocol.is_busy(protocol.refused("busy: 32 requests in progress"))
    assert not protocol.is_busy(protocol.refused("unknown command")) and not protocol.is_busy(protocol.ok())
    assert json.loads(protocol.encode_reply({"ok": True, "path": Path("/run/x.sock")}))["path"] == "/run/x.sock"
