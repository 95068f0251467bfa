"""Workloads: what is measured. ``load_workload("torchvision:resnet50")`` -> WorkloadSpec.

Schemes: ``builtin:NAME`` (small CPU-friendly models), ``torchvision:NAME`` (random weights),
``onnx:MODEL.onnx[?...]`` (ONNX Runtime, ``workloads/onnx_runtime.py``), ``llm:DIR_OR_CONFIG[?...]``
(Hugging Face causal LM generation, ``workloads/llm.py``), and anything else of the form
``MODULE:FUNCTION`` / ``FILE.py:FUNCTION`` (a user's workload). onnxruntime and transformers are
imported only for their schemes.
"""

from __future__ import annotations

from polythrottle.errors import BadInputError, brief, every_face
from polythrottle.workloads.base import RuntimeWorkload, WorkloadSpec


def load_workload(spec: str | None) -> WorkloadSpec | RuntimeWorkload:
    """Raises BadInputError for a malformed or unknown spec, UnsupportedError if the package a scheme
    needs (torchvision, onnxruntime, transformers) is missing."""
    if not spec or ":" not in spec:
        raise BadInputError(
            f"workload {brief(spec, 60)} ({every_face('workload')}): expected builtin:NAME, torchvision:NAME, "
            "onnx:MODEL.onnx, llm:DIR_OR_CONFIG or MODULE:FUNCTION"
        )
    scheme, _, arg = spec.partition(":")
    if scheme == "onnx":
        from polythrottle.workloads import onnx_runtime

        return onnx_runtime.load(arg)
    if scheme == "llm":
        from polythrottle.workloads import llm

        return llm.load(arg)
    if scheme == "builtin":
        from polythrottle.workloads import builtin

        return builtin.load(arg)
    if scheme == "torchvision":
        from polythrottle.workloads import vision

        return vision.load(arg)
    from polythrottle.workloads import user

    return user.load(spec)


__all__ = ["RuntimeWorkload", "WorkloadSpec", "load_workload"]
