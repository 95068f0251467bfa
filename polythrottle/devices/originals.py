"""The saved-originals store: hardware values as they were before PolyThrottle first changed them.

(What a process changed, crash leftovers and kept settings are the session's job:
``polythrottle.devices.originals_session``; this module is the file format and its lock.)

One JSON file per device id (``jetson``, ``nvml:0``, ...) in the state directory, mapping a setting
key (a sysfs path, an NVML setting name, ...) to its original value. Rules:

- a value is recorded before the first write to that setting, and a later apply never overwrites it
  (``record`` keeps the first value it saw);
- writes are atomic (temporary file, fsync, rename, fsync of the directory), so a crash or a power
  cut leaves either the old or the new file, never a torn one;
- ``lock(device_id)`` is an exclusive ``flock`` so two processes never interleave their writes;
- ``restore`` in any later process (after a crash too) reads the file and puts the values back;
- the file is data, not a capability: ``load`` checks its structure and types (a malformed, tampered
  or newer-format file raises ``SavedStateError``, one line, exit 2), and each device checks every
  entry against the settings it can own before writing any of them.

State directory: ``--state-dir``, else ``$POLYTHROTTLE_STATE_DIR``, else ``/var/lib/polythrottle``
when running as root, else ``$XDG_STATE_HOME/polythrottle`` (``~/.local/state/polythrottle``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polythrottle.atomicfile import atomic_write_text, fsync_dir
from polythrottle.errors import DeviceBusyError, DeviceError, PermissionDeniedError, brief
from polythrottle.paths import state_dir

FORMAT_VERSION = 1
MAX_KEY_CHARS = 4096
MAX_VALUE_CHARS = 256
MAX_ENTRIES = 4096
MAX_FILE_BYTES = 1 << 20
LOCK_TIMEOUT_S = 30.0


class SavedStateError(DeviceError):
    """The saved-originals file is unreadable, malformed, tampered with or of an unknown format. Exit 2:
    nothing is written; restore by hand or remove the file."""

    exit_code = 2


def default_state_dir() -> Path:
    """The state directory (``polythrottle.paths.state_dir``): ``$POLYTHROTTLE_STATE_DIR``, else
    /var/lib/polythrottle as root, else the XDG state dir."""
    return state_dir()


def _file_stem(device_id: str) -> str:
    """``nvml:GPU-1`` -> ``nvml_GPU-1``; the file also names its device, checked on load."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", device_id).strip("._") or "device"


@dataclass
class SavedState:
    """Originals of one device. ``originals`` keeps insertion order (the order they were recorded)."""

    device_id: str
    originals: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0
    pid: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "device": self.device_id,
            "originals": self.originals,
            "meta": self.meta,
            "created": self.created,
            "updated": self.updated,
            "pid": self.pid,
        }


def _bad(path: Path, problem: str) -> SavedStateError:
    return SavedStateError(f"saved originals {path} are malformed ({problem}); restore by hand or remove the file")


def _number(raw: dict[str, Any], key: str, path: Path, kind: type = float) -> Any:
    v = raw.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else int):
        raise _bad(path, f"{key!r} must be {'a number' if kind is float else 'an integer'}, got {brief(v, 40)}")
    return kind(v)


def _value_ok(v: Any) -> bool:
    if isinstance(v, bool) or v is None:
        return False
    if isinstance(v, str):
        return len(v) <= MAX_VALUE_CHARS
    if isinstance(v, (int, float)):
        return True
    return isinstance(v, list) and len(v) <= 16 and all(_value_ok(x) and not isinstance(x, list) for x in v)


@dataclass(frozen=True)
class OriginalsLocation:
    """Where a device's saved originals are kept: the store's directory, the device's id in it, its file."""

    directory: Path
    device_id: str
    file: Path


def _parse_state(raw: Any, path: Path, device_id: str) -> SavedState:
    """Check the structure and types of a parsed saved-originals file. Raises SavedStateError."""
    if not isinstance(raw, dict) or not isinstance(raw.get("originals"), dict):
        raise _bad(path, "no 'originals' object")
    fmt = raw.get("format", FORMAT_VERSION)
    if isinstance(fmt, bool) or fmt != FORMAT_VERSION:
        raise SavedStateError(f"saved originals {path} have format {brief(fmt, 20)}; this PolyThrottle reads "
                              f"format {FORMAT_VERSION}: restore by hand or with the version that wrote them")
    device = raw.get("device", device_id)
    if not isinstance(device, str):
        raise _bad(path, f"'device' must be a string, got {brief(device, 40)}")
    if device != device_id:
        raise SavedStateError(f"saved originals {path} belong to {brief(device, 60)}, not {device_id!r}")
    originals = raw["originals"]
    if len(originals) > MAX_ENTRIES:
        raise _bad(path, f"{len(originals)} entries")
    for k, v in originals.items():
        if len(k) > MAX_KEY_CHARS or not k:
            raise _bad(path, f"entry {brief(k, 60)} is not a setting name")
        if not _value_ok(v):
            raise _bad(path, f"entry {brief(k, 60)} has the value {brief(v, 40)}")
    meta = raw.get("meta") or {}
    if not isinstance(meta, dict):
        raise _bad(path, f"'meta' must be an object, got {brief(meta, 40)}")
    return SavedState(
        device_id=device,
        originals=dict(originals),
        meta=dict(meta),
        created=_number(raw, "created", path),
        updated=_number(raw, "updated", path),
        pid=_number(raw, "pid", path, int),
    )


def owner_alive(pid: int, started: Any = None) -> bool:
    """Whether process ``pid`` exists and, when ``started`` (its start time, ``process_start``) was
    recorded, is still the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    if started is None:
        return True
    now = process_start(pid)
    return now is None or now == started


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (``/proc/PID/stat``), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class OriginalsStore:
    """Saved originals of every device, in ``directory`` (see the module docstring for the default)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_state_dir()
        self._held: dict[str, tuple[int, int]] = {}  # device id -> (fd, depth): re-entrant per process

    # ----- files --------------------------------------------------------------------------------
    def path(self, device_id: str) -> Path:
        return self.directory / f"{_file_stem(device_id)}.json"

    def location(self, device_id: str) -> OriginalsLocation:
        return OriginalsLocation(self.directory, device_id, self.path(device_id))

    def _ensure_dir(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        except PermissionError:
            raise PermissionDeniedError(
                f"cannot create the state directory {self.directory}: permission denied; "
                "pass --state-dir or set POLYTHROTTLE_STATE_DIR to a writable directory"
            ) from None
        except OSError as e:
            raise DeviceError(f"cannot create the state directory {self.directory}: {e.strerror}") from None

    @contextmanager
    def lock(self, device_id: str) -> Iterator[None]:
        """Exclusive lock on ``device_id`` across processes (blocks until free). Re-entrant."""
        if device_id in self._held:
            fd, depth = self._held[device_id]
            self._held[device_id] = (fd, depth + 1)
            try:
                yield
            finally:
                fd, depth = self._held[device_id]
                self._held[device_id] = (fd, depth - 1)
            return
        self._ensure_dir()
        lock_path = self.directory / f"{_file_stem(device_id)}.lock"
        try:  # never through a link: root would create or open whatever file it names
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except PermissionError:
            raise PermissionDeniedError(f"cannot open {lock_path}: permission denied") from None
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise DeviceError(f"cannot open {lock_path}: {e.strerror}") from None
            fd = -1
        if fd < 0 or not stat.S_ISREG(os.fstat(fd).st_mode):
            if fd >= 0:
                os.close(fd)
            raise SavedStateError(f"the lock file {lock_path} is a link or not a regular file; refusing to use it "
                                  "(nothing written): remove it")
        try:
            self._acquire(fd, device_id)
            self._held[device_id] = (fd, 1)
            try:
                yield
            finally:
                del self._held[device_id]
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _acquire(self, fd: int, device_id: str) -> None:
        """flock ``fd``, waiting at most ``LOCK_TIMEOUT_S`` (a writer holds it for milliseconds; one stuck
        in a kernel write must not hang every later command). Raises DeviceBusyError."""
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DeviceBusyError(
                        f"the saved originals of {device_id} in {self.directory} have been locked by another "
                        f"process for {LOCK_TIMEOUT_S:g} s; is a polythrottle command stuck?"
                    ) from None
                time.sleep(0.02)

    def load(self, device_id: str) -> SavedState | None:
        """The saved state of ``device_id``, or None. Raises SavedStateError (exit 2) if the file is
        unreadable, malformed or of another format, PermissionDeniedError if it cannot be read."""
        path = self.path(device_id)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except PermissionError:
            raise PermissionDeniedError(f"cannot read saved originals {path}: permission denied") from None
        except OSError as e:
            raise SavedStateError(f"saved originals {path} are unreadable ({e.strerror}); restore by hand") from None
        if len(data) > MAX_FILE_BYTES:
            raise SavedStateError(f"saved originals {path} are larger than {MAX_FILE_BYTES >> 20} MiB; restore by hand")
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as e:
            reason = "not JSON" if isinstance(e, RecursionError) else brief(str(e), 60)
            raise SavedStateError(f"saved originals {path} are unreadable ({reason}); restore by hand") from None
        return _parse_state(raw, path, device_id)

    def _save(self, state: SavedState) -> None:
        self._ensure_dir()
        path = self.path(state.device_id)
        data = json.dumps(state.to_json(), indent=2, sort_keys=False) + "\n"
        try:
            atomic_write_text(path, data, mode=0o600, sync_dir=True)
        except PermissionError:
            raise PermissionDeniedError(f"cannot write in the state directory {self.directory}") from None

    # ----- API ----------------------------------------------------------------------------------
    def record(self, device_id: str, values: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> list[str]:
        """Record original ``values`` for settings not recorded yet; returns the keys newly recorded.

        Values already recorded are kept (the first value seen is the original). Atomic.
        """
        with self.lock(device_id):
            state = self.load(device_id)
            now = time.time()
            if state is None:
                state = SavedState(device_id, created=now)
            new = [k for k in values if k not in state.originals]
            if not new and (not meta or all(state.meta.get(k) == v for k, v in meta.items())):
                return []
            for k in new:
                state.originals[k] = values[k]
            state.meta.update(meta or {})
            state.updated, state.pid = now, os.getpid()
            self._save(state)
            return new

    def originals(self, device_id: str) -> dict[str, Any]:
        """The recorded originals of ``device_id`` (empty if none)."""
        state = self.load(device_id)
        return dict(state.originals) if state else {}

    def forget(self, device_id: str, keys: Iterable[str] | None = None) -> None:
        """Drop ``keys`` (default: every key) once they are restored; the file goes when empty."""
        with self.lock(device_id):
            state = self.load(device_id)
            if state is None:
                return
            if keys is None:
                state.originals.clear()
            else:
                for k in keys:
                    state.originals.pop(k, None)
            if state.originals:
                state.updated, state.pid = time.time(), os.getpid()
                self._save(state)
            else:
                try:
                    self.path(device_id).unlink()
                except FileNotFoundError:
                    pass
                fsync_dir(self.directory)

    def device_ids(self) -> list[str]:
        """Every device id with saved originals."""
        out = []
        for p in sorted(self.directory.glob("*.json")):
            try:
                raw = json.loads(p.read_text())
                out.append(str(raw["device"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out
