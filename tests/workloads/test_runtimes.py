"""onnx: and llm: workloads measured end to end through the nvml device (NVML faked at the pynvml
boundary, tests/fake_nvml.py; the workloads run on the CPU): knobs, tune, profile, the SLO metric,
TTFT/TPOT/energy per token, and bad inputs as one line each."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import polythrottle as pt
from polythrottle.cli import main
from polythrottle.daemon.config import ConfigError, parse_config
from polythrottle.devices import DeviceOptions
from polythrottle.devices.base import Device
from polythrottle.devices.nvml import open_device
from polythrottle.errors import BadInputError, UnsupportedError
from polythrottle.measure.harness import HarnessSettings
from polythrottle.workloads import load_workload
from tests.conftest import ROOT
from tests.fake_nvml import FakeGpu

# pytest-xdist (--dist loadgroup): every test here on one worker, so that the module-scoped `models` fixture is made once
pytestmark = pytest.mark.xdist_group("test_runtimes")

pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")
torch.set_num_threads(1)
FAST = HarnessSettings(window_s=0.01, warmup_s=0.0, warmup_batches=1, repeats=2, min_batches=2)
LLM = "llm:llama-tiny?prompt_tokens=8&new_tokens=4&batch_sizes=1,2"


def export(model: torch.nn.Module, x: torch.Tensor, path: Path, dynamic: dict[int, str] | None) -> Path:
    """torch.onnx.export: the TorchScript exporter where torch still has it (0.2 s), else torch.export's."""
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": dynamic} if dynamic else None, dynamo=False)
        except Exception:  # noqa: BLE001 - a torch without the TorchScript exporter
            shapes = ({k: torch.export.Dim(v) for k, v in dynamic.items()},) if dynamic else None
            torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamic_shapes=shapes)
    return path


def conv_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 4))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    x = torch.randn(1, 3, 16, 16)
    return {
        "fp32": export(conv_net(), x, d / "net.onnx", {0: "batch"}),
        "fp16": export(conv_net().half(), x.half(), d / "net_fp16.onnx", {0: "batch"}),
        "fixed": export(conv_net(), torch.randn(2, 3, 16, 16), d / "net_b2.onnx", None),
        "hw": export(conv_net(), x, d / "net_hw.onnx", {0: "batch", 2: "height", 3: "width"}),
    }


@pytest.fixture
def gpu(monkeypatch) -> FakeGpu:
    g = FakeGpu(power_w=100.0, forbid_writes=True)
    g.install(monkeypatch.setattr)
    monkeypatch.setattr("polythrottle.measure.live.cuda_device_for", lambda uuid, index: torch.device("cpu"))
    return g


def open_gpu(tmp_path: Path, workload: str, slo_metric: str | None = None) -> Device:
    opts = DeviceOptions(workload=workload, no_clock_control=True, state_dir=tmp_path / "state", slo_metric=slo_metric)
    return open_device("0", opts, torch_device="cpu", harness=FAST, rapl_root=tmp_path / "no-rapl")


def knobs_of(dev: Device) -> dict[str, tuple]:
    return {k.name: k.values for k in dev.space().knobs}


# ----- the harness: a runner's own latencies and items per batch (fake clock and meter) ---------------
class _Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


class _Generation:
    """Each batch: 4 sequences x 5 tokens in 50 ms; first token after 10 ms, then one every 10 ms."""

    batch_size, items_per_batch, item_name = 4, 20, "token"

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock

    def run_batch(self) -> None:
        self.clock.t += 0.050
        self.batch_latencies_s = {"ttft": [0.010], "tpot": [0.010], "itl": [0.010] * 4}

    def synchronize(self) -> None:
        pass


class _Meter:
    name = "fake"

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock

    def begin(self) -> None:
        self.t0 = self.clock()

    def end(self):
        from polythrottle.energy.base import EnergyWindow

        return EnergyWindow(200.0 * (self.clock() - self.t0), self.clock() - self.t0, 2)


@pytest.mark.parametrize("metric, latency_ms", [("batch", 50.0), ("ttft", 10.0), ("tpot", 10.0)])
def test_harness_counts_items_and_bounds_the_chosen_latency(metric, latency_ms):
    from polythrottle.errors import DeviceError
    from polythrottle.measure.harness import measure

    clock = _Clock()
    wl = _Generation(clock)
    wl.slo_metric = metric
    s = HarnessSettings(window_s=1.0, warmup_s=0.0, warmup_batches=1, repeats=2)
    m = measure(wl, _Meter(clock), s, clock=clock)
    assert m.energy_j == pytest.approx(200.0 * 0.050 / 20)  # J per token: 200 W x 50 ms over 20 tokens
    assert m.throughput_ips == pytest.approx(20 / 0.050) and m.extra["batch_size"] == 4
    assert m.latency_ms == pytest.approx(latency_ms)
    assert m.extra["slo_metric"] == metric and m.extra["energy_per"] == "token" and m.extra["items_per_batch"] == 20
    assert m.extra["latencies_ms"]["batch_p99"] == pytest.approx(50.0)
    assert m.extra["latencies_ms"]["itl_p50"] == pytest.approx(10.0)
    wl.slo_metric = "e2e"
    with pytest.raises(DeviceError, match="reported no 'e2e' latencies"):
        measure(wl, _Meter(clock), s, clock=clock)


# ----- onnx: ---------------------------------------------------------------------------------------
def test_onnx_precision_variants_and_dynamic_batch_tune(gpu, tmp_path, models):
    spec = f"onnx:fp32={models['fp32']},fp16={models['fp16']}?batch_sizes=1,4"
    with open_gpu(tmp_path, spec) as dev:
        assert knobs_of(dev) == {"batch_size": (1, 4), "precision": ("fp32", "fp16")}
        assert dev.default_config() == {"batch_size": 1, "precision": "fp32"}
        info = dev.info().details
        assert info["onnx provider"] == "CPUExecutionProvider" and info["slo metric"] == "batch"
        result = pt.tune(dev, slo_ms=10_000, budget=4, optimizer="random", seed=0)
    assert result.feasible and len(result.history) == 4
    for rec in result.history:
        m = rec.measurement
        assert m.energy_j > 0 and m.latency_ms > 0 and m.extra["batch_size"] == rec.config["batch_size"]
        assert "latencies_ms" not in m.extra  # a batch-timed workload reports as before
    assert not gpu.setter_calls()


def test_onnx_fixed_batch_offers_the_declared_size(gpu, tmp_path, models):
    with open_gpu(tmp_path, f"onnx:{models['fixed']}") as dev:
        assert knobs_of(dev) == {"batch_size": (2,)}
        assert {k.name: k.available for k in dev.info().knobs if k.name in ("batch_size", "precision")} == \
            {"batch_size": True, "precision": False}
        dev.apply(dev.default_config())
        m = dev.measure()
        assert m.extra["batch_size"] == 2 and m.throughput_ips > 0
    with pytest.raises(BadInputError, match="fixed batch size of 2"):
        open_gpu(tmp_path, f"onnx:{models['fixed']}?batch_sizes=1,2")


def test_onnx_symbolic_dims_need_sizes(gpu, tmp_path, models):
    with pytest.raises(BadInputError, match=r"dimension 2 \(height\) is symbolic; give its size with \?dims=height"):
        open_gpu(tmp_path, f"onnx:{models['hw']}")
    with open_gpu(tmp_path, f"onnx:{models['hw']}?dims=height:8,width:12&batch_sizes=2") as dev:
        dev.apply(dev.default_config())
        assert dev.measure().extra["batch_size"] == 2


def test_onnx_profile_through_the_cli(gpu, tmp_path, models):
    out = tmp_path / "t.csv"
    rc = main(["profile", "--device", "nvml:0", "--no-clock-control", "--workload",
               f"onnx:fp32={models['fp32']},fp16={models['fp16']}?batch_sizes=1,2", "--window-s", "0.01",
               "--repeats", "1", "--out", str(out), "--state-dir", str(tmp_path / "s")])
    assert rc == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("batch_size,precision,energy_j,latency_ms") and len(lines) == 5


@pytest.mark.parametrize("spec, error, words", [
    ("onnx:{dir}/missing.onnx", BadInputError, "model file"),
    ("onnx:{fp32}?provider=warp", BadInputError, "unknown provider 'warp'"),
    ("onnx:{fp32}?provider=cuda", UnsupportedError, "needs a CUDA device"),
    ("onnx:{fp32}?colour=red", BadInputError, "workload option 'colour' is unknown"),
    ("onnx:{fp32}?batch_sizes=0,2", BadInputError, "expected integers >= 1"),
    ("onnx:fp32={fp32},{fp16}", BadInputError, "give every file a precision label"),
    ("onnx:fp32={fp32},fp32={fp16}", BadInputError, "label is given twice"),
    ("onnx:{fixed_and_dynamic}", BadInputError, "disagree on the batch sizes"),
    ("onnx:{notonnx}", BadInputError, "cannot load"),
])
def test_onnx_bad_inputs_are_one_line(gpu, tmp_path, models, capsys, spec, error, words):
    notonnx = tmp_path / "x.onnx"
    notonnx.write_text("not a model")
    spec = spec.format(dir=tmp_path, fp32=models["fp32"], fp16=models["fp16"], notonnx=notonnx,
                       fixed_and_dynamic=f"a={models['fp32']},b={models['fixed']}")
    with pytest.raises(error, match=words):
        open_gpu(tmp_path, spec)
    rc = main(["tune", "--device", "nvml:0", "--no-clock-control", "--workload", spec, "--slo-ms", "10",
               "--state-dir", str(tmp_path / "s"), "--no-history"])
    err = capsys.readouterr().err
    assert rc == error.exit_code and err.count("\n") == 1 and words in err


def test_missing_runtime_names_the_extra(monkeypatch, models):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UnsupportedError, match=r"polythrottle\[onnx\]"):
        load_workload(f"onnx:{models['fp32']}")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UnsupportedError, match=r"polythrottle\[llm\]"):
        load_workload(LLM)


# ----- llm: ----------------------------------------------------------------------------------------
def test_llm_ttft_tpot_and_energy_per_token(gpu, tmp_path):
    with open_gpu(tmp_path, LLM) as dev:
        assert knobs_of(dev) == {"batch_size": (1, 2), "precision": ("fp32", "bf16"),
                                 "kv_cache": ("dynamic", "static")}
        assert dev.info().details["slo metric"] == "tpot"
        assert "needs a CUDA device" in {k.name: k.reason for k in dev.info().knobs}["kv_cache=static_graphs"]
        for cfg in ({"batch_size": 2, "precision": "fp32", "kv_cache": "dynamic"},
                    {"batch_size": 1, "precision": "bf16", "kv_cache": "static"}):
            dev.apply(cfg)
            m = dev.measure()
            lat, b = m.extra["latencies_ms"], cfg["batch_size"]
            assert m.extra["slo_metric"] == "tpot" and m.extra["energy_per"] == "token"
            assert m.extra["items_per_batch"] == 4 * b and m.extra["batch_size"] == b
            assert m.latency_ms == pytest.approx(lat["tpot_p99"])
            assert {"ttft_p50", "ttft_p99", "tpot_p50", "itl_p99", "batch_p99"} <= set(lat)
            # a batch is the first token plus 3 more gaps: its parts cannot add up to more than the whole
            assert 0 < lat["ttft_mean"] + 3 * lat["tpot_mean"] <= lat["batch_mean"] * 1.001
            assert lat["tpot_mean"] == pytest.approx(lat["itl_mean"], rel=1e-6)
            # per generated token (4 x b a batch), not per batch or sequence: the fake GPU draws 100 W over
            # the whole metered window, which holds every batch (so at least 100 W x batch time per 4 x b
            # tokens) plus the harness's own time between batches (load-dependent, so bounded loosely:
            # counting per sequence instead would read 4x, per batch 4 x b x)
            assert m.power_w == pytest.approx(100.0, rel=0.01)
            per_token_busy_j = 100.0 * lat["batch_mean"] / 1e3 / (4 * b)
            assert per_token_busy_j * 0.99 <= m.energy_j < per_token_busy_j * 3.5
            assert m.throughput_ips == pytest.approx(4 * b / (lat["batch_mean"] / 1e3), rel=0.5)


@pytest.mark.parametrize("metric, key", [("ttft", "ttft_p99"), ("batch", "batch_p99")])
def test_slo_metric_chooses_the_tuned_latency(gpu, tmp_path, metric, key):
    with open_gpu(tmp_path, LLM, slo_metric=metric) as dev:
        dev.apply({"batch_size": 1, "precision": "fp32", "kv_cache": "dynamic"})
        m = dev.measure()
        assert m.extra["slo_metric"] == metric and m.latency_ms == pytest.approx(m.extra["latencies_ms"][key])
        with pytest.raises(BadInputError, match="opened to bound"):
            pt.tune(dev, slo_ms=1000, budget=2, slo_metric="tpot")


def test_cli_tune_llm_json_has_every_latency(gpu, tmp_path, capsys):
    rc = main(["tune", "--device", "nvml:0", "--no-clock-control", "--workload", LLM, "--slo-metric", "ttft",
               "--knobs", "batch_size,kv_cache", "--slo-ms", "10000", "--budget", "3", "--seed", "0", "--optimizer", "random",
               "--window-s", "0.01", "--repeats", "2", "--json", "--state-dir", str(tmp_path / "s"), "--no-history"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["slo_metric"] == "ttft" and res["energy_per"] == "token" and res["feasible"]
    assert res["knobs"] == ["batch_size", "kv_cache"] and res["device_info"]["details"]["slo metric"] == "ttft"
    for row in res["history"]:
        assert row["latency_ms"] == pytest.approx(row["latencies_ms"]["ttft_p99"])
        assert row["latencies_ms"]["tpot_p50"] > 0


@pytest.mark.parametrize("workload, options, error, words", [
    ("llm:gpt-17", {}, BadInputError, "neither a preset"),
    ("llm:llama-tiny?new_tokens=1", {}, BadInputError, "new_tokens=1: must be >= 2"),
    ("llm:llama-tiny?prompt_tokens=4000", {}, BadInputError, "exceeds the model's max_position_embeddings"),
    ("llm:llama-tiny?precisions=fp16", {}, BadInputError, "fp16 cannot run on cpu"),
    ("llm:llama-tiny?kv_cache=static_graphs", {}, BadInputError, "static_graphs cannot run on cpu"),
    ("llm:llama-tiny?kv_cache=graphs", {}, BadInputError, "expected some of dynamic, static, static_graphs"),
    ("builtin:mlp", {"slo_metric": "tpot"}, BadInputError, "times only batch"),
])
def test_llm_bad_inputs(gpu, tmp_path, workload, options, error, words):
    with pytest.raises(error, match=words):
        open_gpu(tmp_path, workload, **options)


def test_llm_from_a_config_file_and_metric_checks(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                               "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 64}))
    wl = load_workload(f"llm:{cfg}?new_tokens=3")
    assert wl.config.hidden_size == 32 and wl.new_tokens == 3
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(BadInputError, match="not a causal LM"):
        load_workload(f"llm:{tmp_path / 'vit'}")
    with pytest.raises(BadInputError, match="applies to live workloads"):
        pt.open_device("sim:jetson-agx-orin", workload="resnet50", slo_metric="tpot")
    raw = {"device": "nvml:0", "slo_ms": 20, "workload": LLM, "slo_metric": "ttft"}
    assert parse_config(raw, tmp_path / "d.yaml").slo_metric == "ttft"
    with pytest.raises(ConfigError, match="slo_metric: must be one of ttft, tpot, batch"):
        parse_config({**raw, "slo_metric": "p99"}, tmp_path / "d.yaml")


def test_import_and_help_load_no_runtime():
    code = ("import sys, polythrottle, polythrottle.cli as c\n"
            "try:\n    c.main(['tune', '--help'])\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in ('onnxruntime', 'transformers') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert "--slo-metric {ttft,tpot,batch}" in r.stdout


def test_jetson_tunes_an_onnx_model_the_same_way(tmp_path, monkeypatch, models, capsys):
    from tests import fake_jetson as fj

    root = tmp_path / "root"
    fj.build(root, "agx-orin-jp5")
    monkeypatch.setenv("POLYTHROTTLE_ROOT", str(root))
    monkeypatch.setattr("polythrottle.clocks.sysfs.IO_CLASS", fj.FakeKernelIO)
    rc = main(["tune", "--device", "jetson", "--no-clock-control", "--workload", f"onnx:{models['fp32']}?batch_sizes=1,2",
               "--slo-ms", "10000", "--budget", "2", "--seed", "0", "--window-s", "0.05", "--repeats", "1", "--json",
               "--state-dir", str(tmp_path / "s"), "--no-history"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["knobs"] == ["batch_size"] and res["feasible"]
    assert res["device_info"]["details"]["onnx provider"] == "CPUExecutionProvider"
    assert not fj.write_log(root)
