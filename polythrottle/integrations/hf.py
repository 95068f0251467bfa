"""Hugging Face ``transformers.Trainer`` callback: re-tune (or notify the daemon) after each checkpoint.

    from polythrottle.integrations.hf import PolyThrottleCallback
    trainer = Trainer(..., callbacks=[PolyThrottleCallback(device="sim:jetson-agx-orin", slo_ms=40)])

``on_save`` runs after the Trainer wrote ``OUTPUT_DIR/checkpoint-STEP``; the model version is the
fingerprint of the model's weights (or of that folder when no model is passed). In distributed training
only the main process (``state.is_world_process_zero``) acts: every rank calls ``on_save``, one device
re-tune is enough. Needs ``transformers``.
"""

from __future__ import annotations

import os
from typing import Any

from polythrottle.integrations.retuner import CheckpointRetuner

try:
    from transformers import TrainerCallback
except ImportError as e:
    raise ImportError("polythrottle.integrations.hf needs transformers: pip install transformers") from e


class PolyThrottleCallback(TrainerCallback):
    """Arguments: those of ``CheckpointRetuner`` (``device``+``slo_ms``, or ``notify=True``)."""

    def __init__(self, **kwargs: Any) -> None:
        self.retuner = CheckpointRetuner(**kwargs)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if not getattr(state, "is_world_process_zero", True):
            return control
        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        self.retuner.checkpoint_saved(path=path, model=kwargs.get("model"))
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.retuner.wait()
        return control


__all__ = ["PolyThrottleCallback"]
