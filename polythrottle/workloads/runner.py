"""Run a WorkloadSpec under a software config: the software knobs and the per-batch runner.
``LiveWorkload`` also drives ``RuntimeWorkload``s (``onnx:``, ``llm:``), which build their own runners.

Software knobs (only values the torch device supports are offered):
- ``batch_size``: the spec's batch sizes.
- ``precision``: ``fp32`` (strict IEEE fp32, TF32 off), ``tf32`` (fp32 weights, TF32 tensor cores;
  CUDA compute capability >= 8.0), ``fp16`` (CUDA only), ``bf16`` (where torch supports it).
  The model and its input are converted (no autocast).
- ``cuda_graphs``: ``off``/``on``, CUDA only: the forward pass is captured once and replayed.
- ``channels_last``: ``off``/``on``, for 4-D (image) inputs only.

Inputs are generated once per config and stay on the device: one batch is the model's forward pass.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Mapping
from typing import Any

from polythrottle.errors import BadInputError, DeviceError
from polythrottle.space import Knob, KnobStatus, Value
from polythrottle.workloads.base import SLO_METRICS, RuntimeWorkload, WorkloadSpec

DTYPES = {"fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def is_cuda(device: Any) -> bool:
    return getattr(device, "type", str(device).split(":")[0]) == "cuda"


def torch_precisions(device: Any) -> list[str]:
    """The precisions torch runs on ``device``: fp32; on CUDA tf32 (compute capability >= 8), fp16 and bf16
    where supported; on the CPU bf16 (its kernels exist on every torch >= 2). Imports torch."""
    import torch

    precisions = ["fp32"]
    if is_cuda(device):
        major, _ = torch.cuda.get_device_capability(device)
        if major >= 8:
            precisions.append("tf32")
        precisions.append("fp16")
        if torch.cuda.is_bf16_supported():
            precisions.append("bf16")
    else:
        precisions.append("bf16")
    return precisions


def software_knobs(spec: WorkloadSpec, device: Any) -> tuple[list[Knob], list[KnobStatus]]:
    """The software knobs of ``spec`` on torch ``device``, and the status of every software knob."""
    cuda = is_cuda(device)
    status: list[KnobStatus] = [KnobStatus("batch_size", True), KnobStatus("precision", True)]
    knobs = [Knob("batch_size", tuple(spec.batch_sizes)), Knob("precision", tuple(torch_precisions(device)))]
    if cuda:
        knobs.append(Knob("cuda_graphs", ("off", "on")))
        status.append(KnobStatus("cuda_graphs", True))
    else:
        status.append(KnobStatus("cuda_graphs", False, "needs a CUDA device"))
    if _input_dim(spec) == 4:
        knobs.append(Knob("channels_last", ("off", "on")))
        status.append(KnobStatus("channels_last", True))
    else:
        status.append(KnobStatus("channels_last", False, "the workload's input is not a 4-D image batch"))
    return knobs, status


def _input_dim(spec: WorkloadSpec) -> int:
    try:
        return int(spec.make_input(1).dim())
    except Exception as e:  # noqa: BLE001 - a user's factory can fail in any way
        raise BadInputError(f"workload {spec.name}: make_input(1) failed: {type(e).__name__}: {e}") from None


class TorchRunner:
    """One software config of a workload, ready to run batches. Implements the harness's workload protocol.

    Raises BadInputError for a value the runner does not know and DeviceError when torch fails
    (e.g. out of memory at a large batch).
    """

    def __init__(self, spec: WorkloadSpec, config: Mapping[str, Value], device: Any) -> None:
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.batch_size = int(config.get("batch_size", spec.batch_sizes[0]))
        self.precision = str(config.get("precision", "fp32"))
        self.graphs = str(config.get("cuda_graphs", "off")) == "on"
        self.channels_last = str(config.get("channels_last", "off")) == "on"
        if self.precision not in DTYPES:
            raise BadInputError(f"precision={self.precision} is not one of {', '.join(DTYPES)}")
        if self.graphs and not self.cuda:
            raise BadInputError("cuda_graphs=on needs a CUDA device")
        self.name = spec.name
        dtype = getattr(torch, DTYPES[self.precision])
        self._set_fp32_mode()
        try:
            model = copy.deepcopy(spec.model).eval().to(self.device, dtype)
            x = spec.make_input(self.batch_size).to(self.device, dtype)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            self.model, self.x = model, x
            self._graph = self._capture() if self.graphs else None
            self.synchronize()
        except torch.cuda.OutOfMemoryError:
            self.close()
            raise DeviceError(f"{self.describe()}: out of GPU memory") from None
        except RuntimeError as e:
            self.close()
            raise DeviceError(f"{self.describe()}: {str(e).splitlines()[0]}") from None

    def describe(self) -> str:
        return (f"{self.name} batch {self.batch_size} {self.precision}"
                f"{' graphs' if self.graphs else ''}{' channels_last' if self.channels_last else ''}")

    def _set_fp32_mode(self) -> None:
        import torch

        tf32 = self.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True

    def _capture(self) -> Any:
        import torch

        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):
                self.model(self.x)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            self._out = self.model(self.x)
        return graph

    def run_batch(self) -> None:
        """Launch one batch (asynchronous on CUDA; call ``synchronize()`` to wait)."""
        import torch

        if self._graph is not None:
            self._graph.replay()
            return
        with torch.inference_mode():
            self.model(self.x)

    def synchronize(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)

    def activate(self) -> None:
        """Make this runner's global torch settings current (TF32 flags)."""
        self._set_fp32_mode()

    def close(self) -> None:
        """Free the model copy, input and graph (GPU memory)."""
        for attr in ("_graph", "_out", "model", "x"):
            if hasattr(self, attr):
                delattr(self, attr)
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.empty_cache()


class LiveWorkload:
    """A workload on one torch device: its software knobs and the runner of the current config.

    A new runner is built only when a software knob changes (building one copies the model and, with
    CUDA graphs, captures it). Used by live devices (nvml, jetson). ``spec`` is a ``WorkloadSpec``
    (run by ``TorchRunner``) or a ``RuntimeWorkload`` (builds its own runners). ``slo_metric``: the
    latency the SLO bounds (None: the workload's default; "batch" for PyTorch modules); raises
    BadInputError if the workload does not time it.
    """

    def __init__(self, spec: WorkloadSpec | RuntimeWorkload, device: Any, slo_metric: str | None = None) -> None:
        self.spec = spec
        self.device = device
        self._runner: Any = None
        self._config: dict[str, Value] | None = None
        if slo_metric is not None and slo_metric not in SLO_METRICS:
            raise BadInputError(f"--slo-metric {slo_metric!r}: expected one of {', '.join(SLO_METRICS)}")
        if isinstance(spec, WorkloadSpec):
            self.knobs, self.knob_status = software_knobs(spec, device)
            metrics: tuple[str, ...] = ("batch",)
            default = "batch"
        else:
            self.knobs, self.knob_status = spec.software_knobs(device)
            metrics, default = ("batch", *spec.latency_metrics), spec.default_slo_metric
        if slo_metric is not None and slo_metric not in metrics:
            self.close()
            raise BadInputError(f"--slo-metric {slo_metric}: workload {spec.name} times only {', '.join(metrics)} "
                                "(ttft and tpot need an llm: workload)")
        self.slo_metric = slo_metric or default

    def default_config(self) -> dict[str, Value]:
        """The first value of every knob: fp32, smallest batch, no graphs, no channels_last."""
        return {k.name: k.values[0] for k in self.knobs}

    def details(self) -> dict[str, str]:
        """Facts for ``Device.info()``: the SLO metric and what the runtime chose (provider, model)."""
        if isinstance(self.spec, WorkloadSpec):
            return {}
        return {"slo metric": self.slo_metric, **self.spec.details()}

    def set_config(self, config: Mapping[str, Value]) -> Any:
        sw = {k.name: config[k.name] for k in self.knobs if k.name in config}
        if self._runner is not None and sw == self._config:
            activate = getattr(self._runner, "activate", None)
            if activate is not None:
                activate()
            return self._runner
        self._close_runner()
        if isinstance(self.spec, WorkloadSpec):
            runner: Any = TorchRunner(self.spec, sw, self.device)
        else:
            runner = self.spec.make_runner(sw, self.device)
            runner.slo_metric = self.slo_metric
        self._runner, self._config = runner, sw
        return runner

    @property
    def runner(self) -> Any:
        if self._runner is None:
            raise DeviceError("measure() called before apply()")
        return self._runner

    def _close_runner(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner, self._config = None, None

    def close(self) -> None:
        """Close the runner; a RuntimeWorkload also frees its sessions/model copies."""
        self._close_runner()
        if not isinstance(self.spec, WorkloadSpec):
            self.spec.release()
