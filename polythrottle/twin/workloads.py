"""Workloads the twin knows on every board, as FP32 intrinsics (see ``polythrottle.twin.model``).

Sources: FLOPs and parameter counts from the models' papers (EfficientNet B0/B4/B7: 0.39/4.2/37
GMAC, 5.3/19/66 M parameters at 224/380/600 px; ResNet-50: 4.1 GMAC, 25.6 M; BERT-base at sequence
length 128: about 11.2 GMAC, 110 M). Activation traffic, achieved efficiency, batching half-points,
framework overheads and pre-processing costs are engineering estimates, not measurements: they set
the compute- vs memory-bound split and the CPU share plausibly (EfficientNets' depthwise
convolutions run far below peak and are memory-heavy; BERT and ResNet GEMMs/convs use tensor cores
well). A board profile can override any field or add workloads under ``sim.workloads`` (the AGX
Xavier's ``triton-loudva`` is fitted to measurements there).
"""

from __future__ import annotations

from typing import Any

GENERIC_WORKLOADS: dict[str, dict[str, Any]] = {
    "efficientnet-b0": {
        "description": "EfficientNet-B0 image classification, 224x224, JPEG decode + resize on the CPU",
        "gflop": 0.78, "weights_mb": 21.0, "act_mb": 120.0, "compute_eff": 0.25, "batch_half": 3.0,
        "overhead_ms": 8.0, "pre_ms": 4.0, "pre_threads": 4, "tensor_cores": True,
    },
    "efficientnet-b4": {
        "description": "EfficientNet-B4 image classification, 380x380",
        "gflop": 8.4, "weights_mb": 77.0, "act_mb": 700.0, "compute_eff": 0.25, "batch_half": 2.0,
        "overhead_ms": 16.0, "pre_ms": 9.0, "pre_threads": 4, "tensor_cores": True,
    },
    "efficientnet-b7": {
        "description": "EfficientNet-B7 image classification, 600x600",
        "gflop": 74.0, "weights_mb": 264.0, "act_mb": 3500.0, "compute_eff": 0.28, "batch_half": 1.0,
        "overhead_ms": 14.0, "pre_ms": 18.0, "pre_threads": 4, "tensor_cores": True,
    },
    "resnet50": {
        "description": "ResNet-50 image classification, 224x224",
        "gflop": 8.2, "weights_mb": 102.0, "act_mb": 90.0, "compute_eff": 0.40, "batch_half": 2.0,
        "overhead_ms": 3.0, "pre_ms": 4.0, "pre_threads": 4, "tensor_cores": True,
    },
    "bert-base": {
        "description": "BERT-base sequence classification, sequence length 128, tokenisation on the CPU",
        "gflop": 22.4, "weights_mb": 440.0, "act_mb": 60.0, "compute_eff": 0.45, "batch_half": 1.5,
        "overhead_ms": 4.0, "pre_ms": 0.6, "pre_threads": 1, "tensor_cores": True,
    },
}
