"""Stand-in for ``polythrottle.state.StateStore`` (same three calls) until that module lands.

One JSON file per device id in the state directory: {setting: original value}. Atomic writes.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


def default_state_dir() -> Path:
    env = os.environ.get("POLYTHROTTLE_STATE_DIR")
    if env:
        return Path(env).expanduser()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/polythrottle")
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "polythrottle"


class StateStore:
    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_state_dir()

    def path(self, device_id: str) -> Path:
        return self.directory / (re.sub(r"[^A-Za-z0-9._-]+", "_", device_id) + ".json")

    def originals(self, device_id: str) -> dict[str, Any]:
        try:
            return dict(json.loads(self.path(device_id).read_text())["originals"])
        except FileNotFoundError:
            return {}

    def _save(self, device_id: str, originals: dict[str, Any]) -> None:
        path = self.path(device_id)
        if not originals:
            path.unlink(missing_ok=True)
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"device": device_id, "originals": originals}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def record(self, device_id: str, values: dict[str, Any]) -> list[str]:
        saved = self.originals(device_id)
        new = [k for k in values if k not in saved]
        if new:
            saved.update({k: values[k] for k in new})
            self._save(device_id, saved)
        return new

    def forget(self, device_id: str, keys: list[str] | None = None) -> None:
        saved = self.originals(device_id)
        for k in list(saved) if keys is None else keys:
            saved.pop(k, None)
        self._save(device_id, saved)
