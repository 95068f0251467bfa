"""``builtin:NAME``: small models that run anywhere (CPU included), for tests and smoke runs.

mlp: 3-layer MLP on 256 features. tiny-cnn: 3 conv layers on 3x32x32 images (channels_last applies).
transformer-encoder: a BERT-base-sized encoder on 128-token sequences (meant for GPUs).
"""

from __future__ import annotations

from polythrottle.errors import BadInputError, brief
from polythrottle.workloads.base import WorkloadSpec


def _mlp() -> WorkloadSpec:
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    return WorkloadSpec("builtin:mlp", model, lambda n: torch.randn(n, 256), batch_sizes=(1, 4, 16, 64))


def _tiny_cnn() -> WorkloadSpec:
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )
    return WorkloadSpec("builtin:tiny-cnn", model, lambda n: torch.randn(n, 3, 32, 32), batch_sizes=(1, 4, 16))


def _transformer_encoder() -> WorkloadSpec:
    """BERT-base-sized encoder (12 layers, d_model 768, 12 heads, FFN 3072) on 128-token sequences."""
    import torch
    from torch import nn

    layer = nn.TransformerEncoderLayer(768, 12, 3072, dropout=0.0, batch_first=True, activation="gelu")
    model = nn.TransformerEncoder(layer, 12, enable_nested_tensor=False)
    return WorkloadSpec("builtin:transformer-encoder", model, lambda n: torch.randn(n, 128, 768),
                        batch_sizes=(1, 4, 16, 64))


BUILTINS = {"mlp": _mlp, "tiny-cnn": _tiny_cnn, "transformer-encoder": _transformer_encoder}


def load(arg: str) -> WorkloadSpec:
    if arg not in BUILTINS:
        raise BadInputError(f"unknown builtin workload {brief(arg, 60)}; expected one of: {', '.join(BUILTINS)}")
    return BUILTINS[arg]()
