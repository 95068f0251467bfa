"""Live runs of the runtime workloads on one NVIDIA GPU (software knobs only: never writes a hardware
setting; the device is opened with no_clock_control): an exhaustive table and a tune for an ONNX
ResNet-50 (exported from torchvision with random weights inside the run) with whatever onnxruntime
provider works there, and for a small Llama-style LM with random weights under a TPOT SLO.

  run     (GPU) python experiments/live_runtimes.py run --out DIR [--deadline-s 510]
          writes DIR/details.json (environment, every config's measurement or the reason it failed,
          SLO rules, timings), DIR/{onnx,llm}_table.csv (replay format: knobs, energy_j, latency_ms,
          throughput_ips, power_w) and DIR/{onnx,llm}_tune.json (the tune's result, each measurement
          with every latency metric). Configs that fail (out of memory, a compile error) or run past
          their time limit are recorded with the reason and skipped; the whole run keeps to the deadline.
  report  (anywhere) python experiments/live_runtimes.py report --in DIR --out experiments/results --prefix h200
          copies those files to OUT/PREFIX_runtimes_* and writes OUT/PREFIX_runtimes.md: per workload the
          default config, the table's best feasible config under the tune's SLO, the tune's pick and
          its distance to that best, and inferences (tokens) per joule at the pick vs the default.

The SLO rule (fixed before the run, as in experiments/live_gpu.py): half the latency of the table's
lowest-energy config (2 significant digits), so that the unconstrained optimum is infeasible; if
fewer than 3 configs of the table meet it, the 25th percentile of the table's latencies instead.
experiments/live_runtimes.sh runs it; see its header for the device command.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("energy_j", "latency_ms", "throughput_ips", "power_w")
LLM_SPEC = "llm:llama-200m?prompt_tokens=128&new_tokens=64&batch_sizes=1,8,32,128&precisions=fp32,bf16"
LLM_BUDGET = 12
ONNX_BUDGET = 5


class ConfigTimeout(BaseException):
    """A config ran past its limit (BaseException: not swallowed by the library's ``except Exception``)."""


def _alarm(signum: int, frame: Any) -> None:
    raise ConfigTimeout()


class Limit:
    """``with Limit(s):`` raises ConfigTimeout after s seconds (SIGALRM; the main thread only)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = max(1.0, seconds)

    def __enter__(self) -> None:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)


class Run:
    """Deadline, the details document (rewritten after every config) and the log."""

    def __init__(self, out: Path, deadline_s: float) -> None:
        self.out, self.t0, self.deadline_s = out, time.monotonic(), deadline_s
        self.details: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "deadline_s": deadline_s}
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline_s - (time.monotonic() - self.t0)

    def log(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", flush=True)

    def save(self) -> None:
        tmp = self.out / "details.json.tmp"
        tmp.write_text(json.dumps(self.details, indent=1, default=str) + "\n")
        tmp.replace(self.out / "details.json")


def harness():
    from polythrottle.measure.harness import HarnessSettings

    # 2 windows of >= 1 s (>= 2 batches each) after one warm-up batch: as long as the budget allows
    return HarnessSettings(window_s=1.0, warmup_s=0.0, warmup_batches=1, repeats=2, min_batches=2, percentile=99.0)


def open_gpu(workload: str, slo_metric: str | None = None):
    from polythrottle.devices import DeviceOptions
    from polythrottle.devices.nvml import open_device

    return open_device("0", DeviceOptions(workload=workload, no_clock_control=True, slo_metric=slo_metric),
                       harness=harness())


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    env: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for pkg in ("transformers", "onnxruntime", "onnxruntime-gpu", "onnx", "torchvision", "nvidia-ml-py", "botorch",
                "triton"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    try:
        import onnxruntime as ort

        env["onnxruntime providers available"] = ort.get_available_providers()
        env["onnxruntime device"] = ort.get_device()
    except ImportError as e:
        env["onnxruntime providers available"] = f"import failed: {e}"
    return env


def row_of(config: dict, m: Any) -> dict[str, Any]:
    d = {"config": config, **m.to_dict()}
    lat = m.extra.get("latencies_ms")
    if lat:
        d["latencies_ms"] = lat
    return d


def measure_table(run: Run, name: str, dev: Any, configs: list[dict], limit_s: Any, reserve_s: float) -> list[dict]:
    """Measure each config (apply + measure under its time limit); failures recorded, never fatal.
    ``limit_s(config) -> seconds``; stops when less than ``reserve_s`` of the deadline is left."""
    rows: list[dict] = []
    run.details[f"{name}_table"] = rows
    knobs = list(configs[0]) if configs else []
    table = run.out / f"{name}_table.csv"
    skip_graphs = ""
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*knobs, *METRICS])
        for i, cfg in enumerate(configs):
            if run.left() < reserve_s:
                if not any(r.get("error", "").startswith("not measured") for r in rows):
                    run.log(f"{name}: out of time for the table; {len(configs) - i} configs not measured")
                rows.append({"config": cfg, "error": f"not measured: {reserve_s:.0f} s kept for the tune"})
                continue
            if skip_graphs and cfg.get("kv_cache") == "static_graphs":
                rows.append({"config": cfg, "error": f"skipped: {skip_graphs}"})
                continue
            lim = min(limit_s(cfg), run.left() - reserve_s)
            t = time.monotonic()
            try:
                with Limit(lim):
                    dev.apply(cfg)
                    t_apply = time.monotonic() - t
                    m = dev.measure()
            except ConfigTimeout:
                err = f"timed out after {lim:.0f} s"
                rows.append({"config": cfg, "error": err})
                run.log(f"{name} {i + 1}/{len(configs)} {cfg}: {err}")
                if cfg.get("kv_cache") == "static_graphs":
                    skip_graphs = f"an earlier static_graphs config {err}"
                run.save()
                continue
            except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
                err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                rows.append({"config": cfg, "error": err})
                run.log(f"{name} {i + 1}/{len(configs)} {cfg}: FAILED {err}")
                if cfg.get("kv_cache") == "static_graphs":
                    skip_graphs = f"an earlier static_graphs config failed ({err})"
                run.save()
                continue
            r = row_of(cfg, m)
            r.update(apply_s=round(t_apply, 2), total_s=round(time.monotonic() - t, 2))
            rows.append(r)
            w.writerow([*(cfg[k] for k in knobs), *(f"{getattr(m, k):.6g}" if getattr(m, k) is not None else ""
                                                   for k in METRICS)])
            f.flush()
            run.log(f"{name} {i + 1}/{len(configs)} {cfg}: {m.energy_j:.4g} J, {m.latency_ms:.4g} ms "
                    f"({r['total_s']} s)")
            run.save()
    return rows


def restrict(spec: str, rows: list[dict], values: dict[str, list]) -> tuple[str, str]:
    """The workload spec for the tune: without the knob values whose configs the table could not measure,
    so the tune neither dies on them (a DeviceError ends a tune) nor picks a config the table lacks.
    Missing static_graphs configs drop their precisions when other precisions' graphs were measured,
    else static_graphs; another missing config drops its batch size and every larger one (memory grows
    with the batch). ``values``: the knobs' values in the table. Returns (spec, what was dropped)."""
    missing = [r["config"] for r in rows if "energy_j" not in r]
    if not missing:
        return spec, ""
    opts = dict(q.split("=", 1) for q in spec.partition("?")[2].split("&") if q)
    dropped = []
    graphs_missing = {c["precision"] for c in missing if c.get("kv_cache") == "static_graphs"}
    graphs_measured = {r["config"]["precision"] for r in rows
                       if "energy_j" in r and r["config"].get("kv_cache") == "static_graphs"}
    if graphs_missing and graphs_measured - graphs_missing:
        keep = [p for p in values["precision"] if p not in graphs_missing]
        opts["precisions"] = ",".join(keep)
        dropped.append(f"precision {', '.join(sorted(graphs_missing))} (its static_graphs configs)")
    elif graphs_missing:
        opts["kv_cache"] = "dynamic,static"
        dropped.append("kv_cache=static_graphs")
    kept_prec = opts.get("precisions", ",".join(map(str, values.get("precision", [])))).split(",")
    others = [c for c in missing if c.get("kv_cache") != "static_graphs" and
              ("precision" not in c or c["precision"] in kept_prec)]
    if others:
        lo = min(int(c["batch_size"]) for c in others)
        keep_b = [b for b in values["batch_size"] if int(b) < lo]
        if not keep_b:
            return "", f"every batch size has a config the table lacks ({len(others)} missing)"
        opts["batch_sizes"] = ",".join(map(str, keep_b))
        dropped.append(f"batch_size >= {lo}")
    base = spec.partition("?")[0]
    return f"{base}?{'&'.join(f'{k}={v}' for k, v in opts.items())}", "; ".join(dropped)


def slo_rule(rows: list[dict]) -> tuple[float, str]:
    ok = [r for r in rows if "energy_j" in r]
    best = min(ok, key=lambda r: r["energy_j"])
    slo = float(f"{0.5 * best['latency_ms']:.2g}")
    if sum(r["latency_ms"] <= slo for r in ok) >= 3:
        return slo, "half the latency of the lowest-energy config"
    lat = sorted(r["latency_ms"] for r in ok)
    q = lat[max(0, math.ceil(0.25 * len(lat)) - 1)]
    step = 10 ** (math.floor(math.log10(q)) - 2)  # rounded up to 3 significant digits: q itself is feasible
    return round(math.ceil(q / step) * step, 12), \
        "25th percentile of the table's latencies (fewer than 3 configs met half the lowest-energy config's)"


def tune(run: Run, name: str, dev: Any, slo_ms: float, budget: int, limit_s: float) -> None:
    import polythrottle as pt

    run.log(f"{name} tune: SLO {slo_ms:g} ms, budget {budget}, {limit_s:.0f} s allowed")
    t = time.monotonic()
    try:
        with Limit(limit_s):
            result = pt.tune(dev, slo_ms=slo_ms, budget=budget, seed=0)
    except ConfigTimeout:
        run.details[f"{name}_tune_error"] = "timed out at the run's deadline"
        run.log(f"{name} tune timed out")
        return
    except Exception as e:  # noqa: BLE001
        run.details[f"{name}_tune_error"] = f"{type(e).__name__}: {e}"
        run.log(f"{name} tune FAILED: {type(e).__name__}: {e}")
        return
    payload = result.to_dict()
    for row, rec in zip(payload["history"], result.history):
        lat = rec.measurement.extra.get("latencies_ms")
        if lat:
            row["latencies_ms"] = lat
        row["throughput_ips"] = rec.measurement.throughput_ips
        payload.setdefault("slo_metric", rec.measurement.extra.get("slo_metric", "batch"))
    info = dev.info()
    payload.update(device_info={"name": info.name, "details": info.details}, tune_s=round(time.monotonic() - t, 1),
                   default_config=dev.default_config(), space={k.name: list(k.values) for k in dev.space().knobs})
    (run.out / f"{name}_tune.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    best = payload["best"]
    run.log(f"{name} tune: {len(result.history)} measurements in {payload['tune_s']} s; best "
            f"{best['config'] if best else None}")


def export_resnet50(tmp: Path, fp16: bool) -> dict[str, Path]:
    """ResNet-50 (torchvision, random weights) to ONNX with a dynamic batch: fp32, and fp16 if asked."""
    import warnings

    import torch
    import torchvision

    files = {}
    for label in ("fp32", "fp16") if fp16 else ("fp32",):
        torch.manual_seed(0)
        model = torchvision.models.resnet50(weights=None).eval()
        x = torch.randn(1, 3, 224, 224)
        if label == "fp16":
            where = "cuda" if torch.cuda.is_available() else "cpu"
            model, x = model.to(where).half(), x.to(where).half()
        path = tmp / f"resnet50_{label}.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:  # the TorchScript exporter: seconds, where torch still has it
                torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17,
                                  dynamic_axes={"x": {0: "batch"}}, dynamo=False)
            except Exception:  # noqa: BLE001
                torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"],
                                  dynamic_shapes=({0: torch.export.Dim("batch", max=1024)},))
        files[label] = path
    return files


def stage_onnx(run: Run, stage_s: float) -> None:
    import onnxruntime as ort

    end = run.left() - stage_s
    gpu_ep = any(p in ort.get_available_providers() for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
    batches = "1,8,32,128" if gpu_ep else "1,8,32"
    tmp = Path(tempfile.mkdtemp(prefix="onnx_"))
    t = time.monotonic()
    files = export_resnet50(tmp, fp16=True)
    run.details["onnx_export_s"] = round(time.monotonic() - t, 1)
    spec = f"onnx:{','.join(f'{k}={v}' for k, v in files.items())}?batch_sizes={batches}"
    run.log(f"onnx: exported in {run.details['onnx_export_s']} s; {spec}")
    try:
        dev = open_gpu(spec)
    except Exception as e:  # noqa: BLE001 - e.g. a provider that cannot run the fp16 file: fp32 alone
        run.details["onnx_fp16_error"] = f"{type(e).__name__}: {e}"
        run.log(f"onnx: {type(e).__name__}: {e}; going on with the fp32 file alone")
        spec = f"onnx:{files['fp32']}?batch_sizes={batches}"
        dev = open_gpu(spec)
    run.details["onnx_workload"] = spec
    try:
        info = dev.info()
        run.details["onnx_device"] = {"details": info.details, "default_config": dev.default_config(),
                                      "knobs": {k.name: list(k.values) for k in dev.space().knobs}}
        run.log(f"onnx provider: {info.details.get('onnx provider')} (available: "
                f"{info.details.get('onnx providers available')})")
        space = dev.space()
        configs = [space.config(i) for i in range(len(space))]
        reserve = ONNX_BUDGET * 7.0
        rows = measure_table(run, "onnx", dev, configs, lambda c: 45.0, reserve_s=max(0.0, end) + reserve)
        if sum("energy_j" in r for r in rows) < 2:
            return
        slo, why = slo_rule(rows)
        run.details["onnx_slo"] = {"slo_ms": slo, "rule": why}
        tune_spec, dropped = restrict(spec, rows, run.details["onnx_device"]["knobs"])
        run.details["onnx_tune_workload"], run.details["onnx_tune_dropped"] = tune_spec, dropped
        if not tune_spec:
            run.details["onnx_tune_error"] = f"not run: {dropped}"
            return
        if tune_spec != spec:
            dev.close()
            dev = open_gpu(tune_spec)
        tune(run, "onnx", dev, slo, ONNX_BUDGET, limit_s=run.left() - max(0.0, end))
    finally:
        dev.close()
        shutil.rmtree(tmp, ignore_errors=True)


def stage_llm(run: Run) -> None:
    import torch

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):  # several model copies and batch sizes: allow more graphs
            setattr(torch._dynamo.config, name, 256)
    run.details["llm_workload"] = LLM_SPEC
    t = time.monotonic()
    dev = open_gpu(LLM_SPEC, slo_metric="tpot")
    try:
        info = dev.info()
        run.details["llm_open_s"] = round(time.monotonic() - t, 1)
        run.details["llm_device"] = {"details": info.details, "default_config": dev.default_config(),
                                     "knobs": {k.name: list(k.values) for k in dev.space().knobs},
                                     "knob_status": [vars(k) for k in info.knobs]}
        run.log(f"llm: {info.details.get('llm')}; knobs {run.details['llm_device']['knobs']}")
        space = dev.space()
        configs = [space.config(i) for i in range(len(space))]
        # eager configs first; graphs last, grouped by precision (one compile each)
        configs.sort(key=lambda c: (c["kv_cache"] == "static_graphs", c["precision"], c["kv_cache"], c["batch_size"]))
        reserve = LLM_BUDGET * 10.0
        rows = measure_table(run, "llm", dev, configs,
                             lambda c: 240.0 if c["kv_cache"] == "static_graphs" else 60.0, reserve_s=reserve)
        if sum("energy_j" in r for r in rows) < 2:
            return
        slo, why = slo_rule(rows)
        run.details["llm_slo"] = {"slo_ms": slo, "rule": why, "metric": "tpot"}
        tune_spec, dropped = restrict(LLM_SPEC, rows, run.details["llm_device"]["knobs"])
        run.details["llm_tune_workload"], run.details["llm_tune_dropped"] = tune_spec, dropped
        if not tune_spec:
            run.details["llm_tune_error"] = f"not run: {dropped}"
            return
        if tune_spec != LLM_SPEC:  # tune over what the table measured (a reopen loads the model again)
            dev.close()
            dev = open_gpu(tune_spec, slo_metric="tpot")
        tune(run, "llm", dev, slo, LLM_BUDGET, limit_s=run.left() - 5)
    finally:
        dev.close()


def cmd_run(args: argparse.Namespace) -> int:
    run = Run(args.out, args.deadline_s)
    run.details["environment"] = environment()
    run.details["harness"] = vars(harness())
    run.log(f"environment: {json.dumps(run.details['environment'])}")
    run.save()
    stages = args.stages.split(",")
    for stage in stages:
        try:
            if stage == "onnx":
                stage_onnx(run, stage_s=args.onnx_s)
            elif stage == "llm":
                stage_llm(run)
        except BaseException as e:  # noqa: BLE001 - record and go on to the next stage
            run.details[f"{stage}_error"] = f"{type(e).__name__}: {e}"
            run.details[f"{stage}_traceback"] = traceback.format_exc()[-4000:]
            run.log(f"stage {stage} FAILED: {type(e).__name__}: {e}")
            if isinstance(e, KeyboardInterrupt):
                break
        run.save()
    run.details["elapsed_s"] = round(time.monotonic() - run.t0, 1)
    run.save()
    run.log("done")
    return 0


# ----- report (no GPU) ------------------------------------------------------------------------------
def fmt_cfg(c: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in c.items())


def report_workload(name: str, title: str, unit: str, d: dict, tune_path: Path, lines: list[str]) -> None:
    rows = [r for r in d.get(f"{name}_table", []) if "energy_j" in r]
    failed = [r for r in d.get(f"{name}_table", []) if "error" in r]
    dev = d.get(f"{name}_device", {})
    lines += [f"## {title}", ""]
    if not rows:
        lines += [f"No config measured ({d.get(f'{name}_error', 'see details.json')}).", ""]
        return
    key = {json.dumps(r["config"], sort_keys=True): r for r in rows}
    default = key.get(json.dumps(dev.get("default_config"), sort_keys=True))
    per = "token" if unit == "tokens" else "inference"
    extra = dev.get("details", {})
    lines += [f"Workload `{d.get(f'{name}_workload')}`; " + "; ".join(
        f"{k}: {v}" for k, v in extra.items() if k.startswith(("onnx", "llm", "slo", "prompt", "new", "transformers"))),
        "", f"Table: {len(rows)} configs measured, {len(failed)} not"
        + (" (" + "; ".join(sorted({r['error'] for r in failed}))[:600] + ")" if failed else "") + ".", ""]
    if default is not None:
        lines.append(f"- Default config ({fmt_cfg(default['config'])}): {default['energy_j'] * 1e3:.4g} mJ/{per}, "
                     f"{1 / default['energy_j']:.4g} {unit}/J, latency {default['latency_ms']:.4g} ms.")
    slo = d.get(f"{name}_slo")
    if not tune_path.exists() or slo is None:
        lines += [f"- No tune ({d.get(f'{name}_tune_error', 'not run')}).", ""]
    else:
        t = json.loads(tune_path.read_text())
        s = t["slo_ms"]
        space = t.get("space") or {}
        inside = [r for r in rows if all(r["config"].get(k) in v for k, v in space.items())]
        feas = [r for r in inside if r["latency_ms"] <= s]
        opt = min(feas, key=lambda r: r["energy_j"]) if feas else None
        dropped = d.get(f"{name}_tune_dropped")
        lines.append(f"- Tune: SLO {s:g} ms on {t.get('slo_metric', 'batch')} p99 ({slo['rule']}), {t['measurements']} "
                     f"measurements over {len(inside)} configs ({fmt_cfg(space)}"
                     + (f"; dropped as the table lacks them: {dropped}" if dropped else "")
                     + f"), {t.get('tune_s')} s, stop: {t['stop_reason']}.")
        if opt is not None:
            lines.append(f"- Table's best feasible: {fmt_cfg(opt['config'])}: {opt['energy_j'] * 1e3:.4g} mJ/{per} "
                         f"({1 / opt['energy_j']:.4g} {unit}/J), {opt['latency_ms']:.4g} ms.")
            near = [h for h in t.get("history", []) if (r := key.get(json.dumps(h["config"], sort_keys=True)))
                    and r["latency_ms"] <= s and r["energy_j"] <= 1.05 * opt["energy_j"]]
            if near:
                lines.append(f"- Measurements until the tune measured a config within 5% of the table's best "
                             f"feasible (baseline = 1): {near[0]['step'] + 1}.")
            again = [h["latency_ms"] for h in t.get("history", []) if h["config"] == opt["config"]]
            if again:
                over = sum(x > s for x in again)
                lines.append(f"- The table's best feasible as the tune measured it: {len(again)} time(s), latency "
                             + ", ".join(f"{x:.4g}" for x in again) + f" ms: over the SLO in {over} of them"
                             + (" (its feasibility could not be confirmed at the tuner's 97.5% confidence, so the "
                                "tune recommends a config it can confirm)" if over else "") + ".")
        best = t.get("best")
        if best is None:
            lines.append("- The tune found no feasible config.")
        else:
            trow = key.get(json.dumps(best["config"], sort_keys=True))
            lines.append(f"- Tune's pick: {fmt_cfg(best['config'])}: measured by the tune {best['energy_j'] * 1e3:.4g} "
                         f"mJ/{per} ({1 / best['energy_j']:.4g} {unit}/J), {best['latency_ms']:.4g} ms.")
            if trow is not None and opt is not None:
                dist = 100 * (trow["energy_j"] / opt["energy_j"] - 1)
                ok = "within 5%" if dist <= 5 else "NOT within 5%"
                feas_t = "feasible" if trow["latency_ms"] <= s else "INFEASIBLE"
                lines.append(f"- The pick in the table: {trow['energy_j'] * 1e3:.4g} mJ/{per}, {trow['latency_ms']:.4g} "
                             f"ms ({feas_t} there): {dist:+.1f}% vs the table's best feasible ({ok}).")
            elif trow is None:
                lines.append("- The pick is not in the table (not measured there): no distance.")
            if default is not None:
                ref = trow if trow is not None else best
                lines.append(f"- {unit.capitalize()} per joule at the pick vs the default config: "
                             f"{1 / ref['energy_j']:.4g} vs {1 / default['energy_j']:.4g} "
                             f"({default['energy_j'] / ref['energy_j']:.2f}x; table values)"
                             + (f"; the tune's own measurements {1 / best['energy_j']:.4g} vs its baseline "
                                f"({fmt_cfg(t['baseline']['config'])}) {1 / t['baseline']['energy_j']:.4g}"
                                if t.get("baseline") else "") + ".")
    cols = ["config", f"mJ/{per}", f"{unit}/J", "latency p99 (ms)"]
    cols += ["TTFT p50 (ms)", "TPOT p50 (ms)", "tokens/s"] if unit == "tokens" else ["inferences/s"]
    lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: r["energy_j"]):
        lat = r.get("latencies_ms", {})
        cells = [fmt_cfg(r["config"]), f"{r['energy_j'] * 1e3:.4g}", f"{1 / r['energy_j']:.4g}", f"{r['latency_ms']:.4g}"]
        if unit == "tokens":
            cells += [f"{lat.get('ttft_p50', float('nan')):.4g}", f"{lat.get('tpot_p50', float('nan')):.4g}"]
        cells.append(f"{r.get('throughput_ips') or float('nan'):.4g}")
        lines.append("| " + " | ".join(cells) + " |")
    for r in failed:
        lines.append("| " + " | ".join([fmt_cfg(r["config"]), r["error"][:120], *[""] * (len(cols) - 2)]) + " |")
    lines.append("")


def cmd_report(args: argparse.Namespace) -> int:
    src, out = args.input, args.out
    d = json.loads((src / "details.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    for name in ("details.json", "onnx_table.csv", "llm_table.csv", "onnx_tune.json", "llm_tune.json", "log.txt"):
        if (src / name).exists():
            shutil.copyfile(src / name, out / f"{args.prefix}_runtimes_{name}")
    env = d.get("environment", {})
    lines = [f"# Runtime workloads live on {env.get('gpu')} ({args.prefix})", "",
             ("Software knobs only (`no_clock_control`); energy from the NVML counter (GPU only; CPU energy "
              "counted only where RAPL is readable). Produced by `bash experiments/live_runtimes.sh OUT` on the "
              f"device, then `python experiments/live_runtimes.py report --in OUT --out {out} --prefix {args.prefix}`."),
             "", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "",
             f"Harness: {d.get('harness')}; the run took {d.get('elapsed_s')} s.", ""]
    report_workload("onnx", "ONNX ResNet-50 (torchvision, random weights), onnxruntime", "inferences", d,
                    src / "onnx_tune.json", lines)
    llm = d.get("llm_device", {}).get("details", {}).get("llm", "llm")
    report_workload("llm", f"LLM generation: {llm} (SLO on TPOT)", "tokens", d, src / "llm_tune.json", lines)
    for stage in ("onnx", "llm"):
        if f"{stage}_error" in d:
            lines += [f"Stage {stage} failed: {d[stage + '_error']}", ""]
    text = "\n".join(lines)
    (out / f"{args.prefix}_runtimes.md").write_text(text + "\n")
    print(text)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--deadline-s", type=float, default=540.0, help="the whole run, imports and exports included")
    p.add_argument("--onnx-s", type=float, default=110.0, help="time for the ONNX stage (the LLM gets the rest)")
    p.add_argument("--stages", default="onnx,llm")
    p = sub.add_parser("report")
    p.add_argument("--in", dest="input", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--prefix", default="h200")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return cmd_run(args) if args.cmd == "run" else cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
