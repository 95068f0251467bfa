"""The control socket's protocol, shared by the daemon's server and its client: commands, lines, limits.

A client connects to the daemon's Unix stream socket and sends one line, a JSON object
``{"command": NAME, ...fields}``; the daemon answers one line ``{"ok": true, ...}`` or
``{"ok": false, "error": "...", "exit_code": N}`` and closes (``exit_code``, where the refusal is a typed error:
what ``polythrottle notify`` exits with; 2 for a refused config or request). ``"busy: ..."`` means every handler is
taken: try again.

Commands (``COMMANDS``): ``status`` (the daemon's status snapshot), ``model-updated`` (optional
``model_version``, ``model_files``, ``force``: the model changed, re-tune) and ``reload`` (re-read the
config file). A request must arrive whole within ``REQUEST_DEADLINE_S`` and be at most
``MAX_REQUEST_BYTES``; a request that is not a JSON object on one line, or names no command, is
answered with an error line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from polythrottle.errors import BadInputError, brief

STATUS = "status"
MODEL_UPDATED = "model-updated"
RELOAD = "reload"
COMMANDS = (STATUS, MODEL_UPDATED, RELOAD)
"""Every command the daemon answers."""
EVENTS = (MODEL_UPDATED, RELOAD)
"""The commands that queue work (what ``polythrottle notify`` sends)."""

MAX_REQUEST_BYTES = 64 * 1024
REQUEST_DEADLINE_S = 5.0
"""The whole request must arrive within this (a deadline for the request, not for each read)."""
MAX_VERSION_CHARS = 200
MAX_MODEL_FILES = 1024
MAX_PATH_CHARS = 4096
BUSY = "busy:"
"""The error of a reply that means "every handler is taken, try again"."""


# ----- requests -------------------------------------------------------------------------------------------
def encode_request(command: str, **fields: Any) -> bytes:
    """The request line for ``command`` with ``fields`` (values JSON cannot hold are sent as text)."""
    return (json.dumps({"command": command, **fields}, default=str) + "\n").encode()


def decode_request(line: bytes) -> dict[str, Any]:
    """Parse one request line into a dict with a string ``command``. Raises BadInputError with the reason."""
    try:
        req = json.loads(line.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: JSONDecodeError, an int over 4300 digits
        raise BadInputError("request is not a JSON object on one line, e.g. {\"command\": \"status\"}") from None
    if not isinstance(req, dict):
        raise BadInputError("request must be a JSON object with a \"command\" field")
    if not isinstance(req.get("command"), str):
        raise BadInputError("request has no \"command\" (a string)")
    return req


def command_of(req: Mapping[str, Any]) -> str:
    """The request's command if the daemon knows it. Raises BadInputError naming the known ones."""
    cmd = req.get("command")
    if cmd not in COMMANDS:
        raise BadInputError(f"unknown command {brief(cmd, 40)}; expected one of: {', '.join(COMMANDS)}")
    return str(cmd)


@dataclass(frozen=True)
class ModelUpdated:
    """A ``model-updated`` request: the new version, or which files changed (None: the configured ones)."""

    model_version: str | None = None
    model_files: list[str] | None = None
    force: bool = False

    @classmethod
    def parse(cls, req: Mapping[str, Any]) -> ModelUpdated:
        """Check the fields' types and sizes (not the paths: the daemon checks them against its config).
        Raises BadInputError naming the field."""
        version = req.get("model_version")
        if version is not None and (not isinstance(version, str) or not version.strip()):
            raise BadInputError("model_version must be a non-empty string")
        if version is not None and (len(version) > MAX_VERSION_CHARS or not version.isprintable()):
            raise BadInputError(f"model_version must be at most {MAX_VERSION_CHARS} printable characters")
        files = req.get("model_files")
        if files is not None and (not isinstance(files, list) or not files or len(files) > MAX_MODEL_FILES
                                  or not all(isinstance(f, str) and 0 < len(f) <= MAX_PATH_CHARS for f in files)):
            raise BadInputError("model_files must be a non-empty list of paths")
        force = req.get("force", False)
        if not isinstance(force, bool):
            raise BadInputError(f"force must be true or false, got {brief(force, 20)}")
        return cls(version, None if files is None else list(files), force)

    def fields(self) -> dict[str, Any]:
        """The request's fields as sent (those not given left out)."""
        out: dict[str, Any] = {}
        if self.model_version is not None:
            out["model_version"] = self.model_version
        if self.model_files is not None:
            out["model_files"] = list(self.model_files)
        if self.force:
            out["force"] = True
        return out


# ----- replies --------------------------------------------------------------------------------------------
def ok(**fields: Any) -> dict[str, Any]:
    """A reply saying yes, with ``fields``."""
    return {"ok": True, **fields}


def refused(error: str, exit_code: int | None = None) -> dict[str, Any]:
    """A reply saying no, with the reason (one line) and, where the reason is a typed error, its exit code
    (``polythrottle.errors``: 2 for a refused config or request), which the client exits with."""
    reply: dict[str, Any] = {"ok": False, "error": error}
    if exit_code is not None:
        reply["exit_code"] = exit_code
    return reply


REPLY_EXIT_CODES = frozenset({2, 4, 5, 6})
"""The exit codes a refusal may carry to the client: any other (none, 0, 1, a daemon's garbage) is 1, a failure."""


def exit_code_of(reply: Mapping[str, Any]) -> int:
    """The exit code a refused ``reply`` asks the client for: its ``exit_code`` when that is one of
    ``REPLY_EXIT_CODES`` (a hostile or older daemon cannot make a refusal exit 0), else 1."""
    code = reply.get("exit_code")
    return code if isinstance(code, int) and not isinstance(code, bool) and code in REPLY_EXIT_CODES else 1


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    return (json.dumps(dict(reply), default=str) + "\n").encode()


def decode_reply(data: bytes) -> dict[str, Any] | None:
    """The reply object, or None if ``data`` is not one (nothing, garbage, not an object)."""
    try:
        reply = json.loads(data.decode() or "null")
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: JSONDecodeError, an int over 4300 digits
        return None
    return reply if isinstance(reply, dict) else None


def is_busy(reply: Mapping[str, Any]) -> bool:
    """Whether ``reply`` says every handler was taken (the request may be sent again)."""
    return not reply.get("ok", False) and str(reply.get("error", "")).startswith(BUSY)


__all__ = ["BUSY", "COMMANDS", "EVENTS", "MAX_MODEL_FILES", "MAX_PATH_CHARS", "MAX_REQUEST_BYTES", "MAX_VERSION_CHARS",
           "MODEL_UPDATED", "RELOAD", "REPLY_EXIT_CODES", "REQUEST_DEADLINE_S", "STATUS", "ModelUpdated", "command_of", "decode_reply",
           "decode_request", "encode_reply", "encode_request", "exit_code_of", "is_busy", "ok", "refused"]
