"""What the daemon trusts: its config file, and the files and directories the config names.

- A control-socket client may say that the model changed, and which of the configured model files did;
  it may not name a file the config does not (``configured_model_file``): the root daemon would read
  it and publish its hash prefix.
- A user's workload (``FILE.py:FUNCTION`` or ``MODULE:FUNCTION``) is Python the daemon executes. Run as
  root, every file that import would execute must be owned by root and not writable by group or others,
  nor may its directory be (``check_workload``), as sudo demands of sudoers: otherwise whoever can write
  it runs code as root. Checked without importing anything (``daemon --check`` imports no workload).
  ``builtin:`` and ``torchvision:`` workloads are PolyThrottle's and torchvision's own code.
"""

from __future__ import annotations

import importlib.machinery
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polythrottle.errors import BadInputError, brief

PACKAGED_SCHEMES = ("builtin", "torchvision")


def is_user_workload(spec: str | None) -> bool:
    """Whether ``spec`` names a user's code (``FILE.py:F``, ``MODULE:F``) rather than a built-in workload
    or a twin workload name (``sim:`` devices)."""
    if not spec or ":" not in spec:
        return False
    return spec.partition(":")[0] not in PACKAGED_SCHEMES


def workload_files(spec: str) -> list[Path]:
    """The files importing a user's workload would execute (the file, or the module and its packages'
    ``__init__.py``), found without executing any. Raises BadInputError if one cannot be found."""
    target = spec.rpartition(":")[0]
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise BadInputError(f"workload {brief(spec, 80)}: file {brief(str(path), 80)} not found")
        return [path]
    files: list[Path] = []
    search: Any = None
    parts = target.split(".")
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        found = importlib.machinery.PathFinder.find_spec(name, search)
        if found is None:
            if i == 0 and (name in sys.builtin_module_names or _frozen(name)):
                return files
            raise BadInputError(f"workload {brief(spec, 80)}: cannot find module {brief(name, 60)}")
        if found.origin and found.has_location:
            files.append(Path(found.origin))
        search = found.submodule_search_locations
    return files


def _frozen(name: str) -> bool:
    return importlib.machinery.FrozenImporter.find_spec(name) is not None


def _unsafe(path: Path) -> str:
    """Why ``path`` (a file or directory) may not be executed as root; '' if it may."""
    try:
        st = path.stat()
    except OSError as e:
        return f"cannot stat it ({e.strerror})"
    if st.st_uid != 0:
        return f"it is owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (path.is_dir() and st.st_mode & stat.S_ISVTX):
        return "it is writable by group or others"
    return ""


def check_workload(cfg: Any, *, as_root: bool | None = None) -> None:
    """Refuse a user's workload the daemon must not execute (see the module docstring). Raises
    BadInputError naming the file and the reason. Does nothing for built-in workloads or non-root."""
    spec = getattr(cfg, "workload", None)
    if spec is None or not is_user_workload(spec):
        return
    files = workload_files(spec)
    if as_root is None:
        as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if not as_root:
        return
    for f in files:
        for p in (f, f.parent):
            why = _unsafe(p)
            if why:
                raise BadInputError(
                    f"workload {brief(spec, 80)}: refusing to run {p} as root: {why} (make it root-owned and "
                    "not writable by group or others, like sudoers)"
                )


def configured_model_file(path: str, configured: Sequence[Path]) -> Path:
    """``path`` if it is one of the ``configured`` model files or lies inside a configured directory
    (without ``..`` and without a link out of it). Raises BadInputError otherwise."""
    p = Path(path)
    if not p.is_absolute() or ".." in p.parts:
        raise BadInputError(f"model_files: {brief(path, 80)} is not an absolute path without '..'")
    for c in configured:
        if p == c:
            return p
        if c.is_dir() and p.is_relative_to(c):
            real, real_dir = Path(os.path.realpath(p)), Path(os.path.realpath(c))
            if real.is_relative_to(real_dir):
                return p
    raise BadInputError(f"model_files: {brief(path, 80)} is not one of the daemon config's model_files "
                        "(a client may only say which of those changed)")


__all__ = ["check_workload", "configured_model_file", "is_user_workload", "workload_files"]
