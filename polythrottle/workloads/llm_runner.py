"""One config of an ``llm:`` workload run as the harness's ``Runnable``: a batch is one greedy ``generate``
of exactly M tokens per sequence, timed per token from when each reaches the host (TTFT, TPOT, gaps).
See ``polythrottle.workloads.llm`` for the workload, its knobs and options."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from polythrottle.errors import BadInputError, DeviceError, first_line
from polythrottle.space import Value
from polythrottle.workloads.runner import is_cuda

PRECISIONS = {"fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16"}
KV_CACHES = ("dynamic", "static", "static_graphs")


class LlmSource(Protocol):
    """What a runner needs of its workload (``polythrottle.workloads.llm.LlmWorkload``)."""

    name: str
    device: Any
    batch_sizes: Any
    new_tokens: int
    prompt_tokens: int
    vocab_size: int

    def model_for(self, precision: str) -> Any: ...


RUNTIME_FAILURES: tuple[type[BaseException], ...] = (RuntimeError, OSError, MemoryError)
"""What generation raises when the device or the runtime fails: torch and CUDA (out of memory, a failed
launch), torch.compile (dynamo's and inductor's errors are RuntimeErrors), a driver or file (OSError), host
memory. These become DeviceError; anything else (TypeError, AttributeError, ...) is a programming error
and surfaces as itself."""


def is_oom(e: BaseException) -> bool:
    """True when ``e`` is a CUDA (or other) out-of-memory error."""
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def generate(model: Any, ids: Any, new_tokens: int, kv_cache: str, streamer: Any) -> Any:
    """One greedy ``generate`` of exactly ``new_tokens`` tokens per sequence."""
    import torch

    graphs = kv_cache == "static_graphs"
    gen_cfg = model.generation_config
    gen_cfg.disable_compile = not graphs  # transformers auto-compiles static caches on CUDA otherwise
    kwargs: dict[str, Any] = {
        "attention_mask": torch.ones_like(ids), "max_new_tokens": new_tokens, "min_new_tokens": new_tokens,
        "do_sample": False, "streamer": streamer, "disable_compile": not graphs,
        "pad_token_id": gen_cfg.pad_token_id if gen_cfg.pad_token_id is not None else 0,
    }
    if kv_cache != "dynamic":
        kwargs["cache_implementation"] = "static"
    if graphs:
        from transformers import CompileConfig

        kwargs["compile_config"] = CompileConfig(fullgraph=False, mode="reduce-overhead")
    with torch.inference_mode():
        return model.generate(ids, **kwargs)


def _cudagraph_skips() -> int:
    """How many graphs torch.compile has declined to capture as CUDA graphs in this process."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["inductor"]["cudagraph_skips"])
    except Exception:  # noqa: BLE001 - a torch without the counter: nothing to compare
        return 0


_TIMER: Any = None


def _timer() -> Any:
    """A streamer that records when each step's tokens reach the host (the first put is the prompt)."""
    global _TIMER
    if _TIMER is None:
        from transformers.generation.streamers import BaseStreamer

        class TokenTimes(BaseStreamer):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                self.times: list[float] = []

            def put(self, value: Any) -> None:
                self.times.append(time.perf_counter())

            def end(self) -> None:
                pass

        _TIMER = TokenTimes
    return _TIMER()


class LlmRunner:
    """One config (batch size, precision, KV cache) of an ``LlmWorkload``: the harness's ``Runnable``.
    A batch is one ``generate`` call; ``batch_latencies_s`` holds its ttft, tpot and itl (seconds).

    Raises BadInputError for a value the workload does not offer and DeviceError when generation
    fails on the device or runtime (``RUNTIME_FAILURES``: out of memory, a compile that fails); any other
    exception is a programming error and is raised as itself."""

    item_name = "token"

    def __init__(self, workload: LlmSource, config: Mapping[str, Value]) -> None:
        import torch

        self.workload = workload
        self.name = workload.name
        self.batch_size = int(config.get("batch_size", workload.batch_sizes[0]))
        self.precision = str(config.get("precision", "fp32"))
        self.kv_cache = str(config.get("kv_cache", "dynamic"))
        if self.precision not in PRECISIONS:
            raise BadInputError(f"precision={self.precision} is not one of {', '.join(PRECISIONS)}")
        if self.kv_cache not in KV_CACHES:
            raise BadInputError(f"kv_cache={self.kv_cache} is not one of {', '.join(KV_CACHES)}")
        if self.kv_cache == "static_graphs" and not is_cuda(workload.device):
            raise BadInputError("kv_cache=static_graphs needs a CUDA device")
        self.new_tokens = workload.new_tokens
        self.items_per_batch = self.batch_size * self.new_tokens
        self.batch_latencies_s: dict[str, list[float]] = {}
        self.cuda = is_cuda(workload.device)
        self.activate()
        try:
            self.model = workload.model_for(self.precision)
            gen = torch.Generator().manual_seed(0)
            self.ids = torch.randint(0, workload.vocab_size, (self.batch_size, workload.prompt_tokens),
                                     generator=gen).to(workload.device)
            skips = _cudagraph_skips()
            for _ in range(3 if self.kv_cache == "static_graphs" else 1):  # compile, record, replay
                self.run_batch()
            self.synchronize()
            if self.kv_cache == "static_graphs" and _cudagraph_skips() > skips:
                raise DeviceError(f"{self.describe()}: torch.compile skipped the CUDA graphs (its "
                                  "'skipping cudagraphs' warning says why)")
        except BaseException as e:
            self.close()  # whatever failed: the prompt batch and the model reference are dropped
            if isinstance(e, RUNTIME_FAILURES):
                raise DeviceError(f"{self.describe()}: {'out of memory' if is_oom(e) else first_line(e)}") from None
            raise

    def describe(self) -> str:
        return f"{self.name} batch {self.batch_size} {self.precision} kv_cache={self.kv_cache}"

    def activate(self) -> None:
        """Make this runner's global torch settings current (TF32 on for tf32 only)."""
        import torch

        tf32 = self.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32

    def run_batch(self) -> None:
        """One ``generate`` call (returns when every token is on the host); sets ``batch_latencies_s``."""
        timer = _timer()
        t0 = time.perf_counter()
        try:
            generate(self.model, self.ids, self.new_tokens, self.kv_cache, timer)
        except RUNTIME_FAILURES as e:
            raise DeviceError(f"{self.describe()}: {'out of memory' if is_oom(e) else first_line(e)}") from None
        times = timer.times[1:] if len(timer.times) == self.new_tokens + 1 else timer.times
        if len(times) != self.new_tokens:
            raise DeviceError(f"{self.describe()}: generate streamed {len(timer.times)} steps, "
                              f"expected {self.new_tokens} tokens after the prompt")
        gaps = np.diff(times)
        self.batch_latencies_s = {"ttft": [times[0] - t0], "tpot": [(times[-1] - times[0]) / (len(times) - 1)],
                                  "itl": gaps.tolist()}

    def synchronize(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.workload.device)

    def close(self) -> None:
        """Drop the prompt batch (the model copy stays with the workload for the next config)."""
        for attr in ("ids", "model"):
            if hasattr(self, attr):
                delattr(self, attr)


__all__ = ["RUNTIME_FAILURES", "LlmRunner", "generate"]
