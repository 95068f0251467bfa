"""Training-framework callbacks that re-tune (or tell the daemon) after a checkpoint is saved.

``polythrottle.integrations.lightning.PolyThrottleCallback`` (PyTorch Lightning) and
``polythrottle.integrations.hf.PolyThrottleCallback`` (Hugging Face ``Trainer``) are imported only
on use, and only if their framework is installed; both delegate to ``CheckpointRetuner``.
"""

from polythrottle.integrations.retuner import CheckpointRetuner

__all__ = ["CheckpointRetuner"]
