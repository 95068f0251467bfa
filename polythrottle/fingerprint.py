"""Model fingerprints: a short stable string that changes when the model's weights change.

The history store keys measurements by model version; a fingerprint is the version when the user
gives none. ``sha256:`` + the first 16 hex digits of a SHA-256 over the weights (files or tensors).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from polythrottle.errors import BadInputError, brief

PREFIX = "sha256:"


CHUNK_BYTES = 1 << 20


def _file_sha256(path: Path) -> bytes:
    """SHA-256 of a file's contents, read in 1 MiB chunks (``hashlib.file_digest`` needs Python 3.11)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            h.update(chunk)
    return h.digest()


def model_file_problem(path: Path) -> str | None:
    """What makes ``path`` unusable as a model file (``"not found"``, ``"is not a regular file or a
    directory"``: a FIFO or a device such as /dev/zero, never read), None when it is a file or a directory."""
    if path.is_dir() or path.is_file():
        return None
    return "is not a regular file or a directory" if path.exists() else "not found"


def fingerprint_files(paths: Iterable[str | os.PathLike[str]]) -> str:
    """Fingerprint of the contents of ``paths`` (in the given order; a directory counts every file under
    it, sorted by relative path; one path given as text is one path, never read letter by letter). Raises
    BadInputError if a path is missing or unreadable."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, Iterable):
        raise BadInputError(f"model files must be paths (a list of them), got {brief(paths, 40)}")
    h = hashlib.sha256()
    n = 0
    for p in paths:
        if not isinstance(p, (str, os.PathLike)) or not isinstance(os.fspath(p), str):
            raise BadInputError(f"model files must be paths, got {brief(p, 40)}")
        path = Path(p).expanduser()
        if path.is_dir():
            try:
                files = sorted(f for f in path.rglob("*") if f.is_file())
            except OSError as e:
                raise BadInputError(f"model files in {path}: cannot list ({e.strerror or e})") from None
        elif path.is_file():
            files = [path]
        else:
            raise BadInputError(f"model file {path} {model_file_problem(path) or 'not found'}")
        for f in files:
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + b"\0")
            try:
                h.update(_file_sha256(f))
            except OSError as e:
                raise BadInputError(f"model file {f}: cannot read ({e.strerror})") from None
            n += 1
    if n == 0:
        raise BadInputError("no model files to fingerprint")
    return PREFIX + h.hexdigest()[:16]


def fingerprint_state_dict(state: Mapping[str, Any] | Any) -> str:
    """Fingerprint of a PyTorch module or ``state_dict`` (names, dtypes, shapes and bytes of every tensor).

    Tensors are copied to the CPU one at a time; costs about one pass over the weights. Raises
    BadInputError for anything else.
    """
    import torch  # only when fingerprinting tensors

    if hasattr(state, "state_dict") and callable(state.state_dict):
        state = state.state_dict()
    if not isinstance(state, Mapping):
        raise BadInputError(f"model=: must be a PyTorch module or a state_dict, got {type(state).__name__}")
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        h.update(name.encode() + b"\0")
        if isinstance(t, torch.Tensor):
            t = t.detach().to("cpu").contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(t).encode())
    return PREFIX + h.hexdigest()[:16]


__all__ = ["fingerprint_files", "fingerprint_state_dict"]
