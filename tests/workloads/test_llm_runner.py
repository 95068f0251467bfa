"""``LlmRunner``: a device or runtime failure of ``generate`` is a one-line DeviceError; a programming error
(TypeError, AttributeError, ...) surfaces as itself instead of being reported as a device failure."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from polythrottle.errors import DeviceError
from polythrottle.workloads.llm_runner import LlmRunner

NEW_TOKENS = 3


class FakeModel:
    """``generate`` streams a prompt and NEW_TOKENS tokens; ``fail`` (an exception) is raised from the
    ``after``-th call on (0: at the first, in the runner's warm-up)."""

    def __init__(self, fail: BaseException | None = None, after: int = 0) -> None:
        self.generation_config = SimpleNamespace(pad_token_id=0, disable_compile=False)
        self.fail, self.after, self.calls = fail, after, 0

    def generate(self, ids: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.fail is not None and self.calls > self.after:
            raise self.fail
        for _ in range(NEW_TOKENS + 1):
            kwargs["streamer"].put(ids)
        return ids


def workload(model: FakeModel) -> Any:
    return SimpleNamespace(name="fake-llm", device="cpu", batch_sizes=(1,), new_tokens=NEW_TOKENS, prompt_tokens=4,
                           vocab_size=16, model_for=lambda precision: model)


CONFIG = {"batch_size": 1, "precision": "fp32", "kv_cache": "dynamic"}


def test_a_generation_that_works_times_every_token() -> None:
    r = LlmRunner(workload(FakeModel()), CONFIG)
    r.run_batch()
    assert set(r.batch_latencies_s) == {"ttft", "tpot", "itl"} and len(r.batch_latencies_s["itl"]) == NEW_TOKENS - 1


@pytest.mark.parametrize("error, words", [
    (RuntimeError("CUDA error: an illegal memory access was encountered\nmore"), "an illegal memory access"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory"),
    (OSError("driver went away"), "driver went away"),
])
def test_a_device_failure_is_a_device_error(error: BaseException, words: str) -> None:
    r = LlmRunner(workload(FakeModel(error, after=1)), CONFIG)  # the warm-up works, the next batch fails
    with pytest.raises(DeviceError) as e:
        r.run_batch()
    assert str(e.value).startswith("fake-llm batch 1 fp32 kv_cache=dynamic: ") and words in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(DeviceError, match=words):  # in the warm-up too
        LlmRunner(workload(FakeModel(error)), CONFIG)


@pytest.mark.parametrize("error", [TypeError("generate() got an unexpected keyword argument 'x'"),
                                   AttributeError("'NoneType' object has no attribute 'put'"), KeyError("ids")])
def test_a_programming_error_surfaces_as_itself(error: BaseException) -> None:
    """These were reported as a DeviceError ("fake-llm batch 1 ...: generate() got an unexpected ..."), which
    the tuner treats as a config the device cannot run."""
    r = LlmRunner(workload(FakeModel(error, after=1)), CONFIG)
    with pytest.raises(type(error)):
        r.run_batch()
    with pytest.raises(type(error)):  # in the warm-up too
        LlmRunner(workload(FakeModel(error)), CONFIG)
