"""Kernel files (sysfs, procfs, debugfs) read and written under a filesystem root.

Every path the hardware backends use is written as on a real board (``/sys/...``) and resolved under
the root ``POLYTHROTTLE_ROOT`` (default ``/``), so a copy of a Jetson's ``/sys``, ``/proc`` and debugfs
can stand in for the board (dry runs, tests). Writes go only to clock files: plain paths in one of the
kernel subtrees a clock control uses (``CLOCK_SUBTREES``: devfreq, cpufreq, the EMC debugfs clock) that
resolve, links followed, under ``ROOT/sys`` and into such a subtree again. Anything else (``/sys/power/state``,
a GPIO, a power monitor, a link in a copied tree that leads out of it, a profile path with ``..``) is refused
before anything is written; board profiles are held to the same subtrees when they are loaded.
Errors become typed exceptions with one clear line:
EACCES/EPERM/EROFS -> PermissionDeniedError (exit 4, "needs root"); EINVAL -> KernelRefusedError;
anything else -> DeviceError.
"""

from __future__ import annotations

import errno
import glob
import os
import posixpath
import re
from pathlib import Path

from polythrottle.errors import BadInputError, DeviceError, PermissionDeniedError, brief

ROOT_ENV = "POLYTHROTTLE_ROOT"

ROOT_HINT = "changing clocks needs root: run as root (sudo) or as the polythrottle systemd unit"


CLOCK_SUBTREES: dict[str, tuple[re.Pattern[str], ...]] = {
    "devfreq": (re.compile(r"/sys/class/devfreq/[^/]+(/.+)?"),
                re.compile(r"/sys/devices/([^/]+/)*devfreq/[^/]+(/.+)?"),
                re.compile(r"/sys/devices/([^/]+/)*devfreq_dev(/.+)?")),  # newer Orin kernels (facts.md)
    "cpufreq": (re.compile(r"/sys/devices/system/cpu/cpu[0-9]+/cpufreq(/.+)?"),
                re.compile(r"/sys/devices/system/cpu/cpufreq/policy[0-9]+(/.+)?")),
    "emc-bpmp": (re.compile(r"/sys/kernel/debug/bpmp/debug/clk/emc(/.+)?"),),  # TX2, Xavier, Orin
    "emc-override": (re.compile(r"/sys/kernel/debug/clk/override\.emc(/.+)?"),),  # Nano, TX1 (tegra210)
}
"""The only places a write may go, by kind (board paths, matched whole): a devfreq device, a cpufreq
policy, the EMC clock in the BPMP debugfs or the tegra210 clock override. Power monitors, thermal zones,
``/sys/kernel/nvpmodel_emc_cap`` and every other file are read, never written."""


def clock_subtree(board_path: str, kinds: tuple[str, ...] | None = None) -> str | None:
    """The kind (key of ``CLOCK_SUBTREES``, among ``kinds`` if given) whose subtree holds ``board_path``,
    else None."""
    for kind, patterns in CLOCK_SUBTREES.items():
        if (kinds is None or kind in kinds) and any(p.fullmatch(board_path) for p in patterns):
            return kind
    return None


NOT_A_CLOCK = "not a clock file (writes go only to devfreq, cpufreq and the EMC debugfs clock)"


class KernelRefusedError(DeviceError):
    """The kernel rejected a value (EINVAL), e.g. a minimum above the current maximum."""


class WritesDisabledError(BadInputError):
    """A write was attempted through a read-only SysfsIO (``--no-clock-control``)."""


def fs_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The filesystem root: ``root`` if given, else ``$POLYTHROTTLE_ROOT``, else ``/``."""
    text = os.fspath(root) if root is not None else os.environ.get(ROOT_ENV, "") or "/"
    return Path(text).expanduser().absolute()


def is_root_user() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _permission_denied(verb: str, path: str) -> PermissionDeniedError:
    hint = ROOT_HINT
    if is_root_user():  # root passes the permission checks: the kernel refuses this file itself
        hint += " (this process is already root: the file is read-only, or the kernel is locked down)"
    return PermissionDeniedError(f"cannot {verb} {path}: permission denied; {hint}")


class SysfsIO:
    """Read/write kernel files under ``root``. Paths are absolute board paths such as ``/sys/...``.

    Values are text; reads strip whitespace and trailing NULs (device-tree strings end in NUL).
    Writes open the existing file write-only (never create it) and write the whole value at once,
    as ``echo VALUE > FILE`` does. Subclass ``_write_raw`` to emulate kernel semantics in tests.
    ``writes_allowed=False`` (``--no-clock-control``) refuses every write before it happens.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, writes_allowed: bool = True) -> None:
        self.root = fs_root(root)
        self.writes_allowed = writes_allowed

    @property
    def is_real_root(self) -> bool:
        return self.root == Path("/")

    def path(self, board_path: str) -> Path:
        """The local path of ``board_path`` (``/sys/x`` -> ``ROOT/sys/x``)."""
        return self.root / board_path.lstrip("/")

    def board_path(self, local: str | os.PathLike[str]) -> str:
        """Inverse of ``path``: a local path under the root -> ``/sys/...``."""
        rel = os.path.relpath(os.fspath(local), self.root)
        if rel.startswith(".."):
            raise DeviceError(f"{local} lies outside the filesystem root {self.root}")
        return "/" + ("" if rel == "." else rel)

    # False, not PermissionError, for a path this user may not look up (debugfs is mode 0700: EMC's files are a
    # knob a user cannot set, not an error; pathlib raises EACCES, and ENAMETOOLONG, where it hides ENOENT)
    def exists(self, board_path: str) -> bool:
        try:
            return self.path(board_path).exists()
        except OSError:
            return False

    def is_file(self, board_path: str) -> bool:
        try:
            return self.path(board_path).is_file()
        except OSError:
            return False

    def is_dir(self, board_path: str) -> bool:
        try:
            return self.path(board_path).is_dir()
        except OSError:
            return False

    def glob(self, pattern: str) -> list[str]:
        """Board paths matching ``pattern`` (a board path with shell wildcards), sorted."""
        return sorted(self.board_path(p) for p in glob.glob(os.fspath(self.path(pattern))))

    def resolve(self, board_path: str) -> str:
        """``board_path`` with symlinks resolved (links must stay inside the root)."""
        return self.board_path(os.path.realpath(self.path(board_path)))

    def listdir(self, board_path: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(board_path)))
        except OSError:
            return []

    def read(self, board_path: str) -> str:
        """The file's text, stripped. Raises PermissionDeniedError or DeviceError."""
        try:
            with open(self.path(board_path), "rb") as f:
                data = f.read()
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                raise PermissionDeniedError(
                    f"cannot read {board_path}: permission denied; reading it needs root"
                ) from None
            raise DeviceError(f"cannot read {board_path}: {os.strerror(e.errno or 0)}") from None
        return data.decode("utf-8", "replace").replace("\x00", "").strip()

    def read_int(self, board_path: str) -> int:
        text = self.read(board_path)
        try:
            return int(text.split()[0])
        except (ValueError, IndexError):
            raise DeviceError(f"{board_path}: expected an integer, read {brief(text, 60)}") from None

    def read_ints(self, board_path: str) -> list[int]:
        """Whitespace-separated integers (e.g. ``available_frequencies``)."""
        text = self.read(board_path)
        try:
            return [int(t) for t in text.split()]
        except ValueError:
            raise DeviceError(f"{board_path}: expected integers, read {brief(text, 60)}") from None

    def writable(self, board_path: str) -> bool:
        """Whether a write would pass the permission check (root passes DAC checks)."""
        return os.access(self.path(board_path), os.W_OK)

    def check_write_target(self, board_path: str) -> None:
        """DeviceError unless ``board_path`` is a clock file a write may go to: a plain absolute path under
        ``/sys`` (no ``..``, ``.`` or ``//``) in one of ``CLOCK_SUBTREES``, whose local file, links followed,
        lies under ``ROOT/sys`` and in one of ``CLOCK_SUBTREES`` too."""
        shown = brief(board_path, 100)
        if (not isinstance(board_path, str) or not board_path.startswith("/sys/")
                or posixpath.normpath(board_path) != board_path):
            raise DeviceError(f"refusing to write {shown}: not a plain path under /sys")
        if clock_subtree(board_path) is None:
            raise DeviceError(f"refusing to write {shown}: {NOT_A_CLOCK}")
        real_root = os.path.realpath(self.root)
        allowed = os.path.join(real_root, "sys")
        real = os.path.realpath(self.path(board_path))
        if os.path.commonpath([allowed, real]) != allowed:
            raise DeviceError(f"refusing to write {shown}: it leads to {brief(real, 100)}, outside {allowed}")
        if clock_subtree("/" + os.path.relpath(real, real_root)) is None:
            raise DeviceError(f"refusing to write {shown}: it leads to {brief(real, 100)}, {NOT_A_CLOCK}")

    def write(self, board_path: str, value: int | str) -> None:
        """Write ``value`` to ``board_path`` (``check_write_target`` first). Raises PermissionDeniedError,
        KernelRefusedError, DeviceError."""
        text = str(value)
        if not self.writes_allowed:
            raise WritesDisabledError(f"refusing to write {text} to {board_path}: --no-clock-control is set")
        self.check_write_target(board_path)
        try:
            self._write_raw(self.path(board_path), text)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise _permission_denied("write", board_path) from None
            if e.errno == errno.EINVAL:
                raise KernelRefusedError(
                    f"the kernel refused {text} for {board_path} (invalid argument)"
                ) from None
            raise DeviceError(f"cannot write {text} to {board_path}: {os.strerror(e.errno or 0)}") from None

    def _write_raw(self, local: Path, text: str) -> None:
        fd = os.open(local, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def open_io(root: str | os.PathLike[str] | None = None, *, writes_allowed: bool = True) -> SysfsIO:
    """The SysfsIO for ``root`` (default: ``$POLYTHROTTLE_ROOT`` or ``/``)."""
    return IO_CLASS(root, writes_allowed=writes_allowed)


IO_CLASS: type[SysfsIO] = SysfsIO
"""The class ``open_io`` instantiates; tests swap in a double that enforces kernel semantics."""
