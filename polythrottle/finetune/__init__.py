"""Fine-tuning alongside inference: workload features, the latency predictor and the SLO-aware scheduler."""

from polythrottle.finetune.features import WorkloadFeatures, measure_features
from polythrottle.finetune.predictor import LatencyPredictor, LatencySample
from polythrottle.finetune.scheduler import Decision, FineTuneScheduler, SchedulerSettings

__all__ = [
    "Decision",
    "FineTuneScheduler",
    "LatencyPredictor",
    "LatencySample",
    "SchedulerSettings",
    "WorkloadFeatures",
    "measure_features",
]
