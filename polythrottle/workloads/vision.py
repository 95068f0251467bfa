"""``torchvision:NAME``: a torchvision classification model with random weights on 224x224 images
(299x299 for inception_v3). torchvision is imported only here; if it is missing, one clear error."""

from __future__ import annotations

from polythrottle.errors import BadInputError, UnsupportedError, brief
from polythrottle.workloads.base import WorkloadSpec


def load(arg: str) -> WorkloadSpec:
    if not arg:
        raise BadInputError("torchvision workload needs a model name, e.g. torchvision:resnet50")
    try:
        import torch
        import torchvision.models as tvm
    except ImportError as e:
        raise UnsupportedError(
            f"torchvision:{arg} needs torchvision, which is not installed ({e}); pip install torchvision"
        ) from None
    names = set(tvm.list_models(module=tvm))
    if arg not in names:
        raise BadInputError(f"unknown torchvision model {brief(arg, 60)}; e.g. resnet50, mobilenet_v3_large, vit_b_16")
    kwargs = {"aux_logits": False, "init_weights": False} if arg in ("inception_v3", "googlenet") else {}
    model = tvm.get_model(arg, weights=None, **kwargs)
    side = 299 if arg == "inception_v3" else 224
    return WorkloadSpec(f"torchvision:{arg}", model, lambda n: torch.randn(n, 3, side, side))
