"""``llm:DIR_OR_CONFIG[?OPTIONS]``: text generation with a Hugging Face causal LM (the ``llm`` extra).

DIR_OR_CONFIG: a local model directory (``config.json`` and weights; with no weight files the model
gets random weights), a ``config.json`` file (random weights), or a preset with random weights:
``llama-tiny`` (2 layers, hidden 64: tests), ``llama-200m`` (12 layers, hidden 1024, 201M
parameters), ``llama-1b`` (16 layers, hidden 2048, Llama-3.2-1B-shaped). Nothing is downloaded:
``HF_HUB_OFFLINE=1`` is set (unless already set) and files are read with ``local_files_only``.
Options after ``?``, joined by ``&``:

- ``prompt_tokens=N`` (default 128) and ``new_tokens=M`` (default 64, at least 2): one batch = each
  of ``batch_size`` sequences reads a random N-token prompt and generates exactly M tokens (greedy,
  end-of-sequence suppressed);
- ``batch_sizes=1,8,32``: the concurrent sequences offered (default 1, 2, 4, ..., 64);
- ``precisions=fp32,bf16`` and ``kv_cache=dynamic,static``: offer only these values of those knobs.

Knobs (only values the device supports are offered): ``batch_size``; ``precision`` (``fp32``;
``tf32``, CUDA compute capability 8.0+; ``fp16``, CUDA only; ``bf16``), the weights converted;
``kv_cache``: ``dynamic`` (transformers' DynamicCache), ``static`` (a StaticCache, eager; offered if
the model generates with one) and ``static_graphs`` (a StaticCache with the forward pass compiled by
transformers' automatic ``torch.compile``, mode "reduce-overhead", i.e. CUDA graphs: CUDA only, needs
triton; a config's first batch compiles, which takes tens of seconds; a config where torch skips the
CUDA graphs fails with the reason instead of being measured without them. Each precision and batch
size may need its own compiled graph: keep ``torch._dynamo.config.recompile_limit`` above their number).

Measured for each batch (one ``generate`` call), from the times tokens reach the host (a streamer):
``ttft`` = time to the first generated token (the prompt's prefill included), ``tpot`` = (time of the
last token - time of the first) / (M - 1), ``itl`` = every gap between consecutive tokens. Energy
and throughput are per generated token (``batch_size`` x M per batch). Default SLO metric: tpot.
Every precision a tune visits keeps one copy of the weights on the device (freed when the device
closes, or all at once when the device runs out of memory).
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polythrottle.errors import BadInputError, DeviceError, UnsupportedError, first_line
from polythrottle.space import Knob, KnobStatus, Value
from polythrottle.workloads.base import parse_int, parse_int_list, split_options
from polythrottle.workloads.llm_runner import KV_CACHES, PRECISIONS, is_oom
from polythrottle.workloads.runner import is_cuda, torch_precisions

if TYPE_CHECKING:
    from polythrottle.workloads.llm_runner import LlmRunner

OPTIONS = {"prompt_tokens": "N", "new_tokens": "M", "batch_sizes": "1,8,32", "precisions": "fp32,bf16",
           "kv_cache": "dynamic,static,static_graphs"}
DEFAULT_PROMPT_TOKENS = 128
DEFAULT_NEW_TOKENS = 64
DEFAULT_LLM_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
INSTALL_HINT = "pip install 'polythrottle[llm]'"
_LLAMA = {"rms_norm_eps": 1e-5, "hidden_act": "silu"}
PRESETS: dict[str, dict[str, Any]] = {
    "llama-tiny": dict(_LLAMA, vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048),
    "llama-200m": dict(_LLAMA, vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=12,
                       num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=4096),
    "llama-1b": dict(_LLAMA, vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                     tie_word_embeddings=True),
}
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def import_transformers() -> Any:
    """The transformers module (HF_HUB_OFFLINE=1 set first, unless set). Raises UnsupportedError naming
    the extra if it is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError as e:
        raise UnsupportedError(f"llm: workloads need transformers ({e}); {INSTALL_HINT}") from None
    return transformers




class LlmWorkload:
    """The ``llm:`` workload (a ``RuntimeWorkload``): the model source and generation settings, the
    model loaded for one device and its copies by precision. See the module docstring."""

    latency_metrics: tuple[str, ...] = ("ttft", "tpot")
    default_slo_metric = "tpot"

    def __init__(self, name: str, source: str, config: Any, weights_dir: Path | None, prompt_tokens: int,
                 new_tokens: int, batch_sizes: tuple[int, ...], precisions: tuple[str, ...] | None,
                 kv_caches: tuple[str, ...] | None) -> None:
        self.name, self.source, self.config, self.weights_dir = name, source, config, weights_dir
        self.prompt_tokens, self.new_tokens, self.batch_sizes = prompt_tokens, new_tokens, batch_sizes
        self.want_precisions, self.want_kv_caches = precisions, kv_caches
        self._base: Any = None
        self._models: dict[str, Any] = {}
        self.device: Any = None
        self.vocab_size = 0
        self.parameters = 0

    # ----- the model ----------------------------------------------------------------------------
    def _load_base(self) -> Any:
        if self._base is not None:
            return self._base
        transformers = import_transformers()
        import torch

        try:
            if self.weights_dir is not None:
                model = transformers.AutoModelForCausalLM.from_pretrained(str(self.weights_dir), local_files_only=True)
            else:
                torch.manual_seed(0)  # the same random weights every time
                model = transformers.AutoModelForCausalLM.from_config(self.config)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise BadInputError(f"llm: cannot build the model of {self.source}: {first_line(e)}") from None
        model.eval()
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        self.parameters = sum(p.numel() for p in model.parameters())
        self._base = model
        return model

    def model_for(self, precision: str) -> Any:
        """The model on the device in ``precision``'s dtype (one copy per dtype, kept). Raises DeviceError."""
        import torch

        key = PRECISIONS[precision]
        if key in self._models:
            return self._models[key]
        base = self._load_base()
        for attempt in (0, 1):
            try:
                model = copy.deepcopy(base).to(device=self.device, dtype=getattr(torch, key)).eval()
                break
            except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                if attempt == 0 and is_oom(e) and self._models:
                    self._free_copies()  # make room: drop the other precisions' copies and retry once
                    continue
                raise DeviceError(f"{self.name}: cannot put the model on {self.device} in {precision}: "
                                  f"{first_line(e)}") from None
        self._models[key] = model
        return model

    def _free_copies(self) -> None:
        self._models.clear()
        gc.collect()
        if is_cuda(self.device):
            import torch

            torch.cuda.empty_cache()

    # ----- RuntimeWorkload ----------------------------------------------------------------------
    def software_knobs(self, device: Any) -> tuple[list[Knob], list[KnobStatus]]:
        """Load the model and offer ``batch_size``, ``precision`` and ``kv_cache`` on ``device``.
        Raises BadInputError for an option value the device cannot run."""
        if self.device is not None and str(self.device) != str(device):
            self._free_copies()
        self.device = device
        self._load_base()
        cuda = is_cuda(device)
        precisions = self._restrict("precisions", torch_precisions(device), self.want_precisions, "precision")
        status = [KnobStatus("batch_size", True), KnobStatus("precision", True)]
        caches = ["dynamic"]
        why_static = self._probe_static(precisions[0])
        if why_static:
            status.append(KnobStatus("kv_cache=static", False, why_static))
        else:
            caches.append("static")
            if not cuda:
                status.append(KnobStatus("kv_cache=static_graphs", False, "needs a CUDA device"))
            elif importlib.util.find_spec("triton") is None:
                status.append(KnobStatus("kv_cache=static_graphs", False, "torch.compile needs triton"))
            else:
                caches.append("static_graphs")
        caches = self._restrict("kv_cache", caches, self.want_kv_caches, "kv_cache")
        status.insert(2, KnobStatus("kv_cache", True))
        knobs = [Knob("batch_size", self.batch_sizes), Knob("precision", tuple(precisions)),
                 Knob("kv_cache", tuple(caches))]
        return knobs, status

    def _restrict(self, option: str, offered: list[str], wanted: tuple[str, ...] | None, knob: str) -> list[str]:
        if wanted is None:
            return offered
        missing = [v for v in wanted if v not in offered]
        if missing:
            raise BadInputError(f"{self.name}: {knob} {', '.join(missing)} cannot run on {self.device} "
                                f"(offered here: {', '.join(offered)})")
        return [v for v in offered if v in wanted]

    def _probe_static(self, precision: str) -> str:
        """"" if the model generates with a static cache on the device, else why not."""
        import torch

        model = self.model_for(precision)
        ids = torch.ones((1, min(4, self.prompt_tokens)), dtype=torch.long, device=self.device)
        try:
            from polythrottle.workloads.llm_runner import generate

            generate(model, ids, 2, "static", None)
        except Exception as e:  # noqa: BLE001 - any failure means: no static cache for this model here
            return f"transformers cannot generate with a static cache here: {first_line(e)}"
        return ""

    def make_runner(self, config: Mapping[str, Value], device: Any) -> LlmRunner:
        from polythrottle.workloads.llm_runner import LlmRunner

        if self.device is None or str(self.device) != str(device):
            self.device = device
        return LlmRunner(self, config)

    def details(self) -> dict[str, str]:
        transformers = import_transformers()
        weights = f"weights from {self.weights_dir}" if self.weights_dir is not None else "random weights"
        d = {"llm": f"{self.source} ({self.config.model_type}, {weights}, {self.parameters / 1e6:.1f}M parameters)",
             "prompt tokens": str(self.prompt_tokens), "new tokens": str(self.new_tokens),
             "transformers": str(transformers.__version__)}
        return d

    def release(self) -> None:
        self._base = None
        self._free_copies()


def _resolve(target: str, transformers: Any) -> tuple[str, Any, Path | None]:
    """(source description, config, weights directory or None for random weights)."""
    if target in PRESETS:
        return target, transformers.LlamaConfig(**PRESETS[target]), None
    path = Path(target).expanduser()
    try:
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise BadInputError(f"llm: {path} has no config.json")
            config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
            has_weights = any(any(path.glob(p)) for p in WEIGHT_PATTERNS)
            return str(path), config, path if has_weights else None
        if path.is_file():
            try:
                raw = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise BadInputError(f"llm: cannot read {path} as a JSON config: {first_line(e)}") from None
            if not isinstance(raw, dict) or "model_type" not in raw:
                raise BadInputError(f"llm: {path} is not a transformers config (no model_type)")
            model_type = raw.pop("model_type")
            return str(path), transformers.AutoConfig.for_model(model_type, **raw), None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"llm: cannot read the config of {path}: {first_line(e)}") from None
    raise BadInputError(f"llm: {target!r} is neither a preset ({', '.join(PRESETS)}) nor a model directory "
                        "nor a config.json file")


def _choices(option: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    values = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise BadInputError(f"workload option {option}={text}: expected some of {', '.join(allowed)}")
    return values


def load(arg: str) -> LlmWorkload:
    """Parse ``llm:ARG`` and read the model's config (no weights yet: they load when a device opens the
    workload). Raises BadInputError, or UnsupportedError when transformers is missing."""
    target, opts = split_options(arg, OPTIONS)
    if not target:
        raise BadInputError(f"llm: expected llm:DIR, llm:CONFIG.json or a preset ({', '.join(PRESETS)})")
    prompt = parse_int("prompt_tokens", opts["prompt_tokens"], 1) if "prompt_tokens" in opts else DEFAULT_PROMPT_TOKENS
    new = parse_int("new_tokens", opts["new_tokens"], 2) if "new_tokens" in opts else DEFAULT_NEW_TOKENS
    batch_sizes = parse_int_list("batch_sizes", opts["batch_sizes"]) if "batch_sizes" in opts \
        else DEFAULT_LLM_BATCH_SIZES
    precisions = _choices("precisions", opts["precisions"], tuple(PRECISIONS)) if "precisions" in opts else None
    kv_caches = _choices("kv_cache", opts["kv_cache"], KV_CACHES) if "kv_cache" in opts else None
    transformers = import_transformers()
    source, config, weights = _resolve(target, transformers)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise BadInputError(f"llm: {source} is a {config.model_type!r} model, not a causal LM transformers "
                            "can generate with")
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(text_config, "max_position_embeddings", None)
    if isinstance(limit, int) and prompt + new > limit:
        raise BadInputError(f"llm: prompt_tokens + new_tokens = {prompt + new} exceeds the model's "
                            f"max_position_embeddings ({limit})")
    return LlmWorkload(f"llm:{arg}", source, config, weights, prompt, new, batch_sizes, precisions, kv_caches)
