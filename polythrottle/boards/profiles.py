"""Finding and loading board profiles: one YAML per board, shipped in the package (``polythrottle/device_profiles``,
the repository's ``device_profiles/``). ``$POLYTHROTTLE_PROFILE_DIR`` adds a directory of your own, searched
first (a profile there of the same name replaces the built-in one).

The schema is declared in ``polythrottle.boards.schema``. Every function raises ``ProfileError`` (a
``BadInputError``: exit 2) for a missing, unreadable or invalid profile, in one line naming the file
and the field.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import yaml

from polythrottle import safe_yaml
from polythrottle.boards.schema import DeviceProfile
from polythrottle.boards.validation import validate
from polythrottle.errors import ProfileError, brief, clip

PROFILE_ENV = "POLYTHROTTLE_PROFILE_DIR"
PROFILE_DIR = Path(str(resources.files("polythrottle").joinpath("device_profiles")))
"""The built-in profiles: package data (in a checkout, a link to the repository's ``device_profiles/``)."""


def profile_dirs() -> list[Path]:
    """Where profiles are searched, in order: ``$POLYTHROTTLE_PROFILE_DIR`` (if set), then the built-in ones.
    Raises ProfileError (exit 2) naming the variable when it names no directory this user may read: a path that
    is missing or a file was ignored, and the built-in profile of that name silently used instead."""
    user = os.environ.get(PROFILE_ENV, "").strip()
    if not user:
        return [PROFILE_DIR]
    path = Path(user).expanduser()
    where = f"{PROFILE_ENV}={brief(str(path), 200)}"
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as e:  # in a directory this user may not search, a name too long
        raise ProfileError(f"{where}: cannot read ({e.strerror or e})") from None
    if not exists:
        raise ProfileError(f"{where}: no such directory")
    if not is_dir:
        raise ProfileError(f"{where}: not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ProfileError(f"{where}: cannot read (permission denied)")
    return [path, PROFILE_DIR]


def list_profiles(directory: Path | None = None) -> list[str]:
    """Names of the profiles (file stems) in ``directory``, default every directory of ``profile_dirs()``, sorted."""
    dirs = [directory] if directory is not None else profile_dirs()
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})


def _is_file(path: Path, *, denied: bool = False) -> bool:
    """``path.is_file()``, False for a name the OS refuses to look up (ENAMETOOLONG, ...) instead of OSError; with
    ``denied``, ProfileError for one this user may not look up (in a directory it may not search: not 'not found')."""
    try:
        return path.is_file()
    except PermissionError:
        if denied:
            raise ProfileError(f"profile file {brief(str(path), 200)}: cannot read (permission denied)") from None
        return False
    except OSError:
        return False


def _named_profile(name: str) -> Path | None:
    for d in profile_dirs():
        path = d / f"{name}.yaml"
        if _is_file(path):
            return path
    return None


def profile_path(name_or_path: str | Path) -> Path:
    """The file for a profile name (``jetson-agx-orin``) or a path. Raises ProfileError if absent."""
    text = str(name_or_path).strip()
    if not text:
        raise ProfileError("empty profile name; expected one of: " + ", ".join(list_profiles()))
    p = Path(text).expanduser()
    if p.suffix in (".yaml", ".yml") or "/" in text or _is_file(p):
        if not _is_file(p, denied=True):
            raise ProfileError(f"profile file {brief(str(p), 200)} not found")
        return p
    found = _named_profile(text)
    if found is None:
        known = ", ".join(list_profiles()) or f"(none: no profiles in {', '.join(map(str, profile_dirs()))})"
        raise ProfileError(f"unknown profile {brief(text, 60)}; expected one of: {known} or a .yaml path")
    return found


def parse_profile(data: object, path: Path) -> DeviceProfile:
    """Validate parsed YAML ``data`` (from ``path``: its stem must be the profile's name). Raises ProfileError."""
    profile = validate(DeviceProfile, data, path, context={"path": path})
    return profile.model_copy(update={"path": path})


_CACHE: dict[tuple[Path, float], DeviceProfile] = {}


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load and validate a profile by built-in name or file path. Raises ProfileError (exit 2)."""
    path = profile_path(name_or_path)
    try:
        key = (path.resolve(), path.stat().st_mtime)
    except OSError as e:
        raise ProfileError(f"profile {path}: cannot read ({e.strerror})") from None
    if key in _CACHE:
        return _CACHE[key]
    try:
        text = safe_yaml.read_text(path)
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"profile {path}: cannot read ({clip(str(e), 120)})") from None
    try:
        data = safe_yaml.load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ProfileError(f"profile {path}: invalid YAML{where}: {clip(problem, 120)}") from None
    if data is None:
        raise ProfileError(f"profile {path}: file is empty")
    prof = parse_profile(data, path)
    _CACHE[key] = prof
    return prof


def _clean_model(text: str) -> str:
    return text.replace("\x00", "").strip()


def match_model(model: str, directory: Path | None = None) -> DeviceProfile | None:
    """The profile for a ``/proc/device-tree/model`` string, or None.

    An exact match of ``models`` wins; otherwise the profile with the longest ``model_substrings``
    entry contained in the string (case-insensitive).
    """
    want = _clean_model(model)
    if not want:
        return None
    if directory is not None:
        profiles = [load_profile(directory / f"{n}.yaml") for n in list_profiles(directory)]
    else:
        profiles = [load_profile(n) for n in list_profiles()]
    for p in profiles:
        if want in p.models:
            return p
    best: tuple[int, DeviceProfile] | None = None
    low = want.lower()
    for p in profiles:
        for s in p.model_substrings:
            if s.lower() in low and (best is None or len(s) > best[0]):
                best = (len(s), p)
    return best[1] if best else None
