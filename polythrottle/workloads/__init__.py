"""Workloads: what is measured. ``load_workload("torchvision:resnet50")`` -> WorkloadSpec.

Schemes: ``builtin:NAME`` (small CPU-friendly models), ``torchvision:NAME`` (random weights), and
anything else of the form ``MODULE:FUNCTION`` / ``FILE.py:FUNCTION`` (a user's workload).
"""

from __future__ import annotations

from polythrottle.errors import BadInputError, brief
from polythrottle.workloads.base import WorkloadSpec


def load_workload(spec: str | None) -> WorkloadSpec:
    """Raises BadInputError for a malformed or unknown spec, UnsupportedError if torchvision is missing."""
    if not spec or ":" not in spec:
        raise BadInputError(
            f"--workload {brief(spec, 60)}: expected builtin:NAME, torchvision:NAME or MODULE:FUNCTION"
        )
    scheme, _, arg = spec.partition(":")
    if scheme == "builtin":
        from polythrottle.workloads import builtin

        return builtin.load(arg)
    if scheme == "torchvision":
        from polythrottle.workloads import vision

        return vision.load(arg)
    from polythrottle.workloads import user

    return user.load(spec)


__all__ = ["WorkloadSpec", "load_workload"]
