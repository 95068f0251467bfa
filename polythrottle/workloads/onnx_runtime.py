"""``onnx:MODEL.onnx[?OPTIONS]``: an ONNX model run by ONNX Runtime (the ``onnx`` extra).

One file, or one file per precision variant: ``onnx:fp32=model.onnx,fp16=model_fp16.onnx`` (the
``precision`` knob then picks the file; the first one is the default; labels are free-form words).
Options after ``?``, joined by ``&``:

- ``provider=tensorrt|cuda|cpu`` (or a full ONNX Runtime name, e.g. ``OpenVINOExecutionProvider``):
  force one execution provider. Default: the best one that works here: TensorRT, then CUDA (both on
  a CUDA device only), then CPU. A provider this onnxruntime build lacks is an UnsupportedError.
- ``dims=NAME:SIZE,...``: sizes of symbolic dimensions other than the batch (by the dimension's name,
  or ``INPUT.AXIS`` for an unnamed one).
- ``batch_sizes=1,4,16``: the batch sizes offered when the batch dimension is dynamic (default 1..128).

Inputs are synthesized once per config from each input's declared shape and element type (floats
~ N(0, 1), integers and booleans 1) and kept where the provider reads them: with CUDA and TensorRT
they are bound on the GPU (IO binding, outputs left on the GPU), so no host copy is timed. The batch
dimension is the first dimension of the inputs: when it is symbolic, ``batch_size`` offers
``batch_sizes``; when it is fixed, its size is the only value. ``InferenceSession.run`` is
synchronous: one batch = one run. Sessions are created once per file when the device opens.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polythrottle.errors import BadInputError, DeviceError, UnsupportedError, first_line
from polythrottle.space import Knob, KnobStatus, Value
from polythrottle.workloads.base import DEFAULT_BATCH_SIZES, parse_int, parse_int_list, split_options

OPTIONS = {"provider": "tensorrt|cuda|cpu", "dims": "NAME:SIZE,...", "batch_sizes": "1,4,16"}
SHORT_PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
                   "cpu": "CPUExecutionProvider"}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU = "CPUExecutionProvider"
INSTALL_HINT = "pip install 'polythrottle[onnx]' (or onnxruntime-gpu for the CUDA and TensorRT providers)"
ELEMENT_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}
_LABEL = re.compile(r"[A-Za-z0-9_.-]+")


def import_ort() -> Any:
    """The onnxruntime module. Raises UnsupportedError (one line, naming the extra) if it is missing."""
    try:
        import onnxruntime  # type: ignore[import-untyped]
    except ImportError as e:
        raise UnsupportedError(f"onnx: workloads need onnxruntime ({e}); {INSTALL_HINT}") from None
    return onnxruntime



def _device_of(device: Any) -> tuple[str, int]:
    """("cuda", index) or ("cpu", 0) for a torch device or its string."""
    kind, _, index = str(device).partition(":")
    return kind, int(index) if index.isdigit() else 0


@dataclass(frozen=True)
class _Input:
    name: str
    shape: tuple[int | str, ...]  # ints, or "batch" where the batch size goes
    dtype: Any


class OnnxWorkload:
    """The ``onnx:`` workload (a ``RuntimeWorkload``): files by precision label, options, and the
    sessions made for one device. See the module docstring."""

    latency_metrics: tuple[str, ...] = ()
    default_slo_metric = "batch"

    def __init__(self, name: str, files: list[tuple[str, Path]], labelled: bool, provider: str | None,
                 dims: dict[str, int], batch_sizes: tuple[int, ...] | None) -> None:
        self.name, self.files, self.labelled = name, files, labelled
        self.forced_provider, self.dims, self.user_batch_sizes = provider, dims, batch_sizes
        self.sessions: dict[str, Any] = {}
        self.inputs: dict[str, list[_Input]] = {}
        self.provider = ""
        self.batch_sizes: tuple[int, ...] = ()
        self._device: tuple[str, int] = ("cpu", 0)
        self._tried: list[str] = []

    # ----- sessions -----------------------------------------------------------------------------
    def _chain(self, provider: str, available: list[str]) -> list[Any]:
        """The providers list given to the session: the provider, then its fallbacks for nodes it
        does not run (TensorRT -> CUDA -> CPU), with the GPU's device id."""
        names = [provider]
        if provider == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in available:
            names.append("CUDAExecutionProvider")
        if provider != CPU:
            names.append(CPU)
        return [(n, {"device_id": str(self._device[1])}) if n in GPU_PROVIDERS else n for n in names]

    def _session(self, ort: Any, path: Path, provider: str, available: list[str]) -> Any:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: a provider that cannot load is reported by us
        try:
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=self._chain(provider, available))
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
            msg = first_line(e)
            if any(w in msg for w in ("INVALID_PROTOBUF", "INVALID_GRAPH", "NO_SUCHFILE", "Protobuf parsing")):
                raise BadInputError(f"onnx: cannot load {path}: {msg}") from None
            raise _ProviderFailed(f"{provider}: {msg}") from None
        if provider not in sess.get_providers():
            raise _ProviderFailed(f"{provider} did not load (onnxruntime fell back to {', '.join(sess.get_providers())})")
        return sess

    def _open_sessions(self, device: Any) -> None:
        ort = import_ort()
        self.release()
        self._device = _device_of(device)
        available = list(ort.get_available_providers())
        gpu = self._device[0] == "cuda"
        if self.forced_provider is not None:
            p = self.forced_provider
            if p in GPU_PROVIDERS and not gpu:
                raise UnsupportedError(f"onnx provider {p} needs a CUDA device; this workload runs on the CPU")
            if p not in available:
                raise UnsupportedError(f"onnx provider {p} is not available in this onnxruntime build "
                                       f"(available: {', '.join(available)}); {INSTALL_HINT}")
            candidates = [p]
        else:
            candidates = [p for p in (*GPU_PROVIDERS, CPU) if p in available and (gpu or p not in GPU_PROVIDERS)]
        self._tried = []
        for p in candidates:
            try:
                sessions = {label: self._session(ort, path, p, available) for label, path in self.files}
            except _ProviderFailed as e:
                self._tried.append(str(e))
                continue
            self.sessions, self.provider = sessions, p
            break
        else:
            why = "; ".join(self._tried) or f"none of {', '.join(candidates) or 'the providers'} is available"
            raise UnsupportedError(f"onnx: no execution provider could run {self.files[0][1].name}: {why}")
        self.inputs = {label: self._inputs(label, s) for label, s in self.sessions.items()}
        self.batch_sizes = self._batch_sizes()

    def _inputs(self, label: str, sess: Any) -> list[_Input]:
        """Each input's shape with the batch dimension marked "batch" and other symbolic dims resolved."""
        declared = list(sess.get_inputs())
        firsts = [i.shape[0] for i in declared if len(i.shape) > 0]
        batch_names = {d for d in firsts if not isinstance(d, int)}
        out = []
        for i in declared:
            if i.type not in ELEMENT_TYPES:
                raise BadInputError(f"onnx: input {i.name!r} of {self._file(label)} has element type {i.type}, "
                                    f"which polythrottle cannot synthesize ({', '.join(ELEMENT_TYPES)})")
            shape: list[int | str] = []
            for axis, d in enumerate(i.shape):
                if isinstance(d, int) and d >= 0:
                    shape.append(d)
                elif axis == 0 or (d is not None and d in batch_names):
                    shape.append("batch")
                else:
                    key = d if isinstance(d, str) and d else f"{i.name}.{axis}"
                    if key not in self.dims:
                        raise BadInputError(f"onnx: input {i.name!r} of {self._file(label)}: dimension {axis} "
                                            f"({key}) is symbolic; give its size with ?dims={key}:SIZE")
                    shape.append(self.dims[key])
            out.append(_Input(i.name, tuple(shape), ELEMENT_TYPES[i.type]))
        return out

    def _file(self, label: str) -> str:
        return dict(self.files)[label].name

    def _batch_sizes(self) -> tuple[int, ...]:
        offers: dict[str, tuple[int, ...]] = {}
        for label, sess in self.sessions.items():
            firsts = [i.shape[0] for i in sess.get_inputs() if len(i.shape) > 0]
            if not firsts:
                offers[label] = (1,)  # scalars only: nothing to batch
            elif any(not isinstance(d, int) or d < 0 for d in firsts):
                offers[label] = self.user_batch_sizes or DEFAULT_BATCH_SIZES
            else:
                if self.user_batch_sizes is not None:
                    raise BadInputError(f"onnx: {self._file(label)} has a fixed batch size of {firsts[0]}; "
                                        "batch_sizes= applies to models with a dynamic batch dimension")
                offers[label] = (int(firsts[0]),)
        distinct = set(offers.values())
        if len(distinct) > 1:
            desc = "; ".join(f"{self._file(lb)}: {', '.join(map(str, v))}" for lb, v in offers.items())
            raise BadInputError(f"onnx: the precision variants disagree on the batch sizes they take ({desc})")
        return distinct.pop()

    # ----- RuntimeWorkload ----------------------------------------------------------------------
    def software_knobs(self, device: Any) -> tuple[list[Knob], list[KnobStatus]]:
        """Open a session per file on ``device`` and offer ``batch_size`` (and ``precision`` when
        there are variants). Raises BadInputError / UnsupportedError (see the module docstring)."""
        self._open_sessions(device)
        knobs = [Knob("batch_size", self.batch_sizes)]
        dynamic = len(self.batch_sizes) > 1 or self.user_batch_sizes is not None
        status = [KnobStatus("batch_size", True, "" if dynamic else "the model's batch dimension is fixed")]
        if self.labelled:
            knobs.append(Knob("precision", tuple(label for label, _ in self.files)))
            status.append(KnobStatus("precision", True))
        else:
            status.append(KnobStatus("precision", False, "one model file (give variants as "
                                                         "onnx:fp32=a.onnx,fp16=b.onnx)"))
        return knobs, status

    def make_runner(self, config: Mapping[str, Value], device: Any) -> OnnxRunner:
        if not self.sessions:
            self._open_sessions(device)
        return OnnxRunner(self, config)

    def details(self) -> dict[str, str]:
        d = {"onnx provider": self.provider, "onnx files": ", ".join(f"{lb}={p.name}" if self.labelled else p.name
                                                                     for lb, p in self.files)}
        ort = import_ort()
        d["onnx providers available"] = ", ".join(ort.get_available_providers())
        d["onnxruntime"] = str(ort.__version__)
        if self._tried:
            d["onnx providers skipped"] = "; ".join(self._tried)
        return d

    def release(self) -> None:
        self.sessions = {}


class _ProviderFailed(Exception):
    """A provider could not run the model (internal: the next provider is tried)."""


class OnnxRunner:
    """One config (file, batch size) of an ``OnnxWorkload``: the harness's ``Runnable``.

    Raises BadInputError for a value the workload does not offer, DeviceError when the session fails
    on the first run (e.g. out of GPU memory, a TensorRT engine that does not build)."""

    def __init__(self, workload: OnnxWorkload, config: Mapping[str, Value]) -> None:
        ort = import_ort()
        labels = [label for label, _ in workload.files]
        self.batch_size = int(config.get("batch_size", workload.batch_sizes[0]))
        self.precision = str(config.get("precision", labels[0]))
        if self.batch_size not in workload.batch_sizes:
            raise BadInputError(f"batch_size={self.batch_size} is not offered by {workload.name} "
                                f"({', '.join(map(str, workload.batch_sizes))})")
        if self.precision not in workload.sessions:
            raise BadInputError(f"precision={self.precision} is not one of {', '.join(labels)}")
        self.name = workload.name
        self._sess = workload.sessions[self.precision]
        rng = np.random.default_rng(0)
        arrays = {}
        for i in workload.inputs[self.precision]:
            shape = tuple(self.batch_size if d == "batch" else int(d) for d in i.shape)
            if np.issubdtype(i.dtype, np.floating):
                arrays[i.name] = rng.standard_normal(shape).astype(i.dtype)
            else:
                arrays[i.name] = np.ones(shape, dtype=i.dtype)
        self._binding: Any = None
        self._feeds: dict[str, np.ndarray] = arrays
        try:
            if workload.provider in GPU_PROVIDERS:
                dev_id = workload._device[1]
                self._values = [ort.OrtValue.ortvalue_from_numpy(a, "cuda", dev_id) for a in arrays.values()]
                self._binding = self._sess.io_binding()
                for name, value in zip(arrays, self._values):
                    self._binding.bind_ortvalue_input(name, value)
                for out in self._sess.get_outputs():
                    self._binding.bind_output(out.name, "cuda", dev_id)
            self.run_batch()  # first run: allocations, TensorRT engine build for this shape
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
            self.close()
            raise DeviceError(f"{self.describe()}: {first_line(e)}") from None

    def describe(self) -> str:
        return f"{self.name} batch {self.batch_size} {self.precision}"

    def run_batch(self) -> None:
        """One synchronous run."""
        if self._binding is not None:
            self._sess.run_with_iobinding(self._binding)
        else:
            self._sess.run(None, self._feeds)

    def synchronize(self) -> None:
        if self._binding is not None:
            self._binding.synchronize_outputs()

    def close(self) -> None:
        self._binding, self._values, self._feeds = None, [], {}


def _parse_files(target: str) -> tuple[list[tuple[str, Path]], bool]:
    items = [x.strip() for x in target.split(",") if x.strip()]
    if not items:
        raise BadInputError("onnx: expected onnx:MODEL.onnx or onnx:fp32=a.onnx,fp16=b.onnx")
    files: list[tuple[str, Path]] = []
    labelled = False
    for item in items:
        label, eq, where = item.partition("=")
        if eq and _LABEL.fullmatch(label.strip()):
            labelled = True
            files.append((label.strip(), Path(where.strip()).expanduser()))
        else:
            files.append(("", Path(item).expanduser()))
    if len(files) > 1 and any(not label for label, _ in files):
        raise BadInputError("onnx: give every file a precision label: onnx:fp32=a.onnx,fp16=b.onnx")
    labels = [label for label, _ in files]
    if len(set(labels)) != len(labels):
        raise BadInputError(f"onnx: a precision label is given twice: {', '.join(labels)}")
    for _, path in files:
        if not path.is_file():
            raise BadInputError(f"onnx: model file {path} not found")
    return files, labelled


def _provider(name: str, ort: Any) -> str:
    if name.lower() in SHORT_PROVIDERS:
        return SHORT_PROVIDERS[name.lower()]
    if name in ort.get_all_providers():
        return name
    raise BadInputError(f"onnx: unknown provider {name!r}; expected tensorrt, cuda, cpu or an onnxruntime "
                        "provider name (e.g. OpenVINOExecutionProvider)")


def _dims(text: str) -> dict[str, int]:
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, size = item.rpartition(":")
        if not sep or not name:
            raise BadInputError(f"workload option dims={text}: expected NAME:SIZE,... (e.g. dims=sequence:128)")
        out[name.strip()] = parse_int(f"dims {name.strip()}", size.strip(), 1)
    return out


def load(arg: str) -> OnnxWorkload:
    """Parse ``onnx:ARG`` (files exist, options valid, onnxruntime importable). Sessions are made when
    a device opens the workload. Raises BadInputError or UnsupportedError."""
    target, opts = split_options(arg, OPTIONS)
    files, labelled = _parse_files(target)
    ort = import_ort()
    provider = _provider(opts["provider"], ort) if "provider" in opts else None
    dims = _dims(opts["dims"]) if "dims" in opts else {}
    batch_sizes = parse_int_list("batch_sizes", opts["batch_sizes"]) if "batch_sizes" in opts else None
    return OnnxWorkload(f"onnx:{arg}", files, labelled, provider, dims, batch_sizes)
