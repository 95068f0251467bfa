"""PyTorch Lightning callback: re-tune (or notify the daemon) after each checkpoint is saved.

    from polythrottle.integrations.lightning import PolyThrottleCallback
    trainer = Trainer(callbacks=[ModelCheckpoint(...), PolyThrottleCallback(notify=True)])

Lightning has no hook after the file is written: ``on_save_checkpoint`` (just before the write)
fingerprints the checkpoint's ``state_dict``; the action runs at the next hook (next training batch
or epoch, or the end of training), when the file exists. In distributed training only the global rank 0
(``trainer.is_global_zero``) acts. Needs ``lightning`` or ``pytorch_lightning``.
"""

from __future__ import annotations

from typing import Any

from polythrottle.integrations.retuner import CheckpointRetuner

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name
    try:
        from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef]
    except ImportError as e:
        raise ImportError(
            "polythrottle.integrations.lightning needs PyTorch Lightning: pip install lightning"
        ) from e


class PolyThrottleCallback(Callback):
    """Arguments: those of ``CheckpointRetuner`` (``device``+``slo_ms``, or ``notify=True``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.retuner = CheckpointRetuner(**kwargs)
        self._pending: str | None = None

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        from polythrottle.fingerprint import fingerprint_state_dict

        if not getattr(trainer, "is_global_zero", True):
            return  # every rank builds the checkpoint; one device re-tune is enough

        state = checkpoint.get("state_dict")
        self._pending = fingerprint_state_dict(state if state is not None else pl_module)

    def _flush(self, trainer: Any) -> None:
        if self._pending is None:
            return
        version, self._pending = self._pending, None
        self.retuner.checkpoint_saved(model_version=version)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._flush(trainer)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._flush(trainer)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._flush(trainer)
        self.retuner.wait()


__all__ = ["PolyThrottleCallback"]
