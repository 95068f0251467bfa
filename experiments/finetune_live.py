"""Issue 7 live experiment: inference with an SLO plus fine-tuning of the same model on one GPU
(time-sharing only: two threads on two CUDA streams; no clock, power-limit, MPS or MIG changes).

1. Calibrate: FLOPs/bytes of inference and of a fine-tuning iteration (``measure_features``), the
   latency of an inference batch alone and while fine-tuning runs, the iteration's duration; fit the
   paper's NNLS predictor (and the interaction variant; ``LatencyPredictor.fit_best`` keeps the better).
2. For each arrival process (uniform, Poisson), SLO and rate: serve requests for ``--duration-s``
   with fine-tuning iterations requested back to back, under ``none`` (inference only), ``greedy``
   and ``adaptive`` scheduling (``FineTuneScheduler``). Inference uses SLO-aware dynamic batching
   (``FineTuneScheduler.batch_plan``: serve at the target batch or when the oldest request has waited
   the plan's maximum), planned as if alone under ``none``/``greedy``, for co-running under ``adaptive``.
   Measured: SLO violation rate, latency percentiles, fine-tuning iterations completed, GPU energy from
   the NVML energy counter (read only).

SLOs and rates are given relative to the calibrated inference latency at batch 1 (``--slo-x``: SLO =
x * L(1); ``--load``: rate = load / L(1), the fraction of the GPU that batch-1 inference alone would
keep busy), so one command adapts to the GPU. ``--device cpu --model tiny`` runs a small CNN on the CPU
(for testing the harness only).
Usage: python experiments/finetune_live.py --out experiments/results/finetune_live.json [--duration-s 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polythrottle.finetune import (  # noqa: E402
    FineTuneScheduler,
    LatencyPredictor,
    LatencySample,
    measure_features,
)

CALIBRATION_BATCHES = [1, 2, 4, 8, 16, 32]
"""Batch sizes measured to fit the predictor; the server may use any batch size up to the largest."""
BATCH_SIZES = list(range(1, CALIBRATION_BATCHES[-1] + 1))


# ----- workload ---------------------------------------------------------------------------------------
def build_model(name: str) -> torch.nn.Module:
    if name == "tiny":
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3, stride=2, padding=1),
            torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10),
        )
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


class Workload:
    """An inference copy and a fine-tuning copy of one model, each on its own CUDA stream."""

    def __init__(self, model_name: str, device: str, image: int, ft_batch: int, max_batch: int) -> None:
        self.device = torch.device(device)
        self.ft_model = build_model(model_name).to(self.device).train()
        self.inf_model = copy.deepcopy(self.ft_model).eval()
        self.opt = torch.optim.SGD(self.ft_model.parameters(), lr=1e-3, momentum=0.9)
        self.x_inf = torch.randn(max_batch, 3, image, image, device=self.device)
        self.x_ft = torch.randn(ft_batch, 3, image, image, device=self.device)
        n_out = self.ft_model(self.x_ft[:1]).shape[-1]
        self.y_ft = torch.randint(0, n_out, (ft_batch,), device=self.device)
        self.loss = torch.nn.CrossEntropyLoss()
        cuda = self.device.type == "cuda"
        self.s_inf = torch.cuda.Stream() if cuda else None
        self.s_ft = torch.cuda.Stream() if cuda else None
        self.ft_batch = ft_batch
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}

    def capture_graphs(self, sizes) -> None:
        """One CUDA graph per inference batch size (one launch per batch: no per-kernel Python work)."""
        pool = torch.cuda.graph_pool_handle()
        with torch.inference_mode():
            for b in sorted(sizes, reverse=True):
                with torch.cuda.stream(self.s_inf):
                    for _ in range(3):
                        self.inf_model(self.x_inf[:b])
                self.s_inf.synchronize()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=pool):
                    self.inf_model(self.x_inf[:b])
                self.graphs[b] = g
        torch.cuda.synchronize()

    def _sync(self, stream) -> None:
        if stream is not None:
            stream.synchronize()

    def infer(self, b: int) -> None:
        ctx = torch.cuda.stream(self.s_inf) if self.s_inf is not None else _null()
        with ctx, torch.inference_mode():
            if b in self.graphs:
                self.graphs[b].replay()
            else:
                self.inf_model(self.x_inf[:b])
        self._sync(self.s_inf)

    def finetune_step(self) -> None:
        ctx = torch.cuda.stream(self.s_ft) if self.s_ft is not None else _null()
        with ctx:
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.ft_model(self.x_ft), self.y_ft).backward()
            self.opt.step()
        self._sync(self.s_ft)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ----- energy (read only) -----------------------------------------------------------------------------
class Energy:
    """NVML total-energy counter (mJ) of GPU 0; None where unavailable (CPU runs)."""

    def __init__(self) -> None:
        self.handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.read()
        except Exception:  # noqa: BLE001 - no NVML: energy is not reported
            self.handle = None

    def read(self) -> float | None:
        if self.handle is None:
            return None
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0

    def info(self) -> dict:
        if self.handle is None:
            return {}
        n = self.nvml
        return {
            "gpu": n.nvmlDeviceGetName(self.handle),
            "driver": n.nvmlSystemGetDriverVersion(),
            "graphics_clock_mhz": n.nvmlDeviceGetClockInfo(self.handle, n.NVML_CLOCK_GRAPHICS),
            "power_limit_w": n.nvmlDeviceGetPowerManagementLimit(self.handle) / 1000.0,
        }


# ----- calibration ------------------------------------------------------------------------------------
def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def calibrate(w: Workload, reps: int) -> dict:
    for b in range(1, BATCH_SIZES[-1] + 1):  # warm up every batch size the server may use
        w.infer(b)
        w.infer(b)
    for _ in range(3):
        w.finetune_step()
    alone_ts = {b: timed(lambda b=b: w.infer(b), reps) for b in CALIBRATION_BATCHES}
    alone = {b: statistics.median(ts) for b, ts in alone_ts.items()}
    alone_p90 = {b: float(np.percentile(ts, 90)) for b, ts in alone_ts.items()}
    ft_alone = statistics.median(timed(w.finetune_step, max(reps // 2, 5)))
    # inference while fine-tuning runs back to back on the other stream
    stop = threading.Event()
    ft_times: list[float] = []

    def ft_loop() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            w.finetune_step()
            ft_times.append((time.perf_counter() - t) * 1e3)

    th = threading.Thread(target=ft_loop, daemon=True)
    th.start()
    time.sleep(0.2)
    corun = {}
    corun_p90 = {}
    for b in CALIBRATION_BATCHES:
        ts = timed(lambda b=b: w.infer(b), reps)
        corun[b] = statistics.median(ts)
        corun_p90[b] = float(np.percentile(ts, 90))
    stop.set()
    th.join()
    return {
        "inference_alone_ms": alone,
        "inference_alone_p90_ms": alone_p90,
        "inference_corun_ms": corun,
        "inference_corun_p90_ms": corun_p90,
        "finetune_alone_ms": ft_alone,
        "finetune_corun_ms": statistics.median(ft_times) if ft_times else None,
    }


# ----- one run ----------------------------------------------------------------------------------------
def arrivals(kind: str, rate_per_ms: float, duration_s: float, seed: int) -> np.ndarray:
    n = int(rate_per_ms * duration_s * 1e3)
    if kind == "uniform":
        return (np.arange(n) + 0.5) / rate_per_ms / 1e3
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate_per_ms, size=n * 2)) / 1e3
    return t[t < duration_s]


def run_once(w: Workload, energy: Energy, predictor: LatencyPredictor, policy: str, kind: str,
             rate_per_ms: float, slo_ms: float, duration_s: float, seed: int) -> dict:
    arr = arrivals(kind, rate_per_ms, duration_s, seed)
    sched = FineTuneScheduler(predictor, slo_ms, batch_sizes=BATCH_SIZES, finetune_batch=w.ft_batch,
                              policy="greedy" if policy == "none" else policy)
    stop = threading.Event()
    ft_done = [0]
    ft_ms: list[float] = []

    def trainer() -> None:
        while not stop.is_set():
            if not sched.acquire(timeout_s=0.05):
                continue
            t = time.perf_counter()
            try:
                w.finetune_step()
            finally:
                d = (time.perf_counter() - t) * 1e3
                sched.release(d)
            if not stop.is_set():
                ft_done[0] += 1
                ft_ms.append(d)

    torch.cuda.synchronize() if w.device.type == "cuda" else None
    e0 = energy.read()
    t0 = time.perf_counter()
    th = None
    if policy != "none":
        th = threading.Thread(target=trainer, daemon=True)
        th.start()
    lat: list[float] = []
    batches: list[int] = []
    queue: deque[float] = deque()
    i, n = 0, len(arr)
    while i < n or queue:
        now = time.perf_counter() - t0
        while i < n and arr[i] <= now:
            queue.append(arr[i])
            sched.note_arrival(t0 + arr[i])
            i += 1
        sched.set_queue(len(queue), t0 + queue[0] if queue else None)
        plan = sched.batch_plan()
        if not queue or (len(queue) < plan.target and (now - queue[0]) * 1e3 < plan.max_wait_ms and i < n):
            # wait for the next arrival or the oldest request's deadline, whichever comes first
            until = arr[i] if i < n else now
            if queue:
                until = min(until, queue[0] + plan.max_wait_ms / 1e3)
            time.sleep(min(max(until - now, 0.0), 0.0005))
            continue
        b = max(sched.inference_batch(len(queue)), 1)
        batch = [queue.popleft() for _ in range(b)]
        sched.set_queue(len(queue), t0 + queue[0] if queue else None)
        sched.inference_started(b)
        start = time.perf_counter() - t0
        w.infer(b)
        done = time.perf_counter() - t0
        sched.inference_finished(b, (done - start) * 1e3)
        lat.extend((done - a) * 1e3 for a in batch)
        batches.append(b)
    wall = time.perf_counter() - t0
    stop.set()
    if th is not None:
        th.join()
    e1 = energy.read()
    lat_a = np.asarray(lat)
    st = sched.stats
    return {
        "policy": policy, "arrivals": kind, "rate_per_s": round(rate_per_ms * 1e3, 2), "slo_ms": round(slo_ms, 3),
        "requests": len(lat), "violation_pct": round(100.0 * float((lat_a > slo_ms).mean()), 2),
        "p50_ms": round(float(np.percentile(lat_a, 50)), 3), "p99_ms": round(float(np.percentile(lat_a, 99)), 3),
        "mean_batch": round(float(np.mean(batches)), 2), "finetune_iterations": ft_done[0],
        "finetune_ms_median": round(statistics.median(ft_ms), 2) if ft_ms else None,
        "wall_s": round(wall, 3),
        "energy_j": None if e0 is None or e1 is None else round(e1 - e0, 2),
        "power_w": None if e0 is None or e1 is None else round((e1 - e0) / wall, 1),
        "admitted_corun": st.admitted_corun, "admitted_gap": st.admitted_gap, "deferrals": st.deferrals,
        "shrunk_batches": st.shrunk_batches,
        "defer_reasons": dict(st.reasons), "correction": {str(k): round(v, 3) for k, v in sched._correction.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--ft-batch", type=int, default=32)
    ap.add_argument("--slo-x", default="4", help="SLOs as multiples of the batch-1 inference latency alone")
    ap.add_argument("--load", default="0.3", help="arrival rates as the GPU fraction batch-1 inference would use")
    ap.add_argument("--arrivals", default="uniform,poisson")
    ap.add_argument("--policies", default="none,greedy,adaptive")
    ap.add_argument("--duration-s", type=float, default=20.0)
    ap.add_argument("--reps", type=int, default=20, help="calibration repeats per point")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--graphs", action="store_true", help="serve inference with CUDA graphs (one per batch size)")
    ap.add_argument("--fit-on", default="p90", choices=["median", "p90"],
                    help="latency statistic the predictor is fitted on (the SLO is judged on the tail)")
    ap.add_argument("--switch-interval-ms", type=float, default=0.2,
                    help="Python GIL switch interval for both threads (default 5 ms is long against the SLO)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = True
    sys.setswitchinterval(args.switch_interval_ms / 1e3)
    energy = Energy()
    w = Workload(args.model, args.device, args.image, args.ft_batch, BATCH_SIZES[-1])
    if args.graphs:
        w.capture_graphs(range(1, BATCH_SIZES[-1] + 1))
    t_cal = time.perf_counter()
    inf_feat = measure_features(w.inf_model, lambda b: w.x_inf[:b])
    ft_feat = measure_features(copy.deepcopy(w.ft_model), lambda b: w.x_ft[:b], train=True,
                               loss_fn=lambda out: out.float().logsumexp(-1).sum())
    ft_feat_batch = ft_feat  # per-sample features; an iteration has --ft-batch samples
    cal = calibrate(w, args.reps)
    suffix = "_p90_ms" if args.fit_on == "p90" else "_ms"
    samples = [LatencySample(b, 0, v) for b, v in cal["inference_alone" + suffix].items()]
    samples += [LatencySample(b, args.ft_batch, v) for b, v in cal["inference_corun" + suffix].items()]
    predictor, loo = LatencyPredictor.fit_best(samples, inf_feat, ft_feat_batch)
    cal["calibration_s"] = round(time.perf_counter() - t_cal, 1)
    print(json.dumps(cal), flush=True)
    l1 = cal["inference_alone_ms"][1]
    runs = []
    for slo_x in [float(x) for x in args.slo_x.split(",")]:
        for load in [float(x) for x in args.load.split(",")]:
            rate = load / l1
            for kind in args.arrivals.split(","):
                for policy in args.policies.split(","):
                    r = run_once(w, energy, predictor, policy, kind, rate, slo_x * l1, args.duration_s, args.seed)
                    r.update(slo_x=slo_x, load=load)
                    runs.append(r)
                    print(json.dumps(r), flush=True)
    import botorch
    result = {
        "command": " ".join(["python", "experiments/finetune_live.py", *sys.argv[1:]]),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "cuda": torch.version.cuda, "botorch": botorch.__version__,
                     "torchvision": _version("torchvision"), "nvidia-ml-py": _version("nvidia-ml-py")},
        "gpu": energy.info(),
        "model": args.model, "image": args.image, "finetune_batch": args.ft_batch,
        "calibration_batches": CALIBRATION_BATCHES, "max_batch": BATCH_SIZES[-1],
        "features": {"inference": asdict(inf_feat), "finetune": asdict(ft_feat)},
        "calibration": cal,
        "predictor": {"features": predictor.features, "coefficients": predictor.coefficients(),
                      "loo_median_rel_error": loo,
                      "fit_rel_error": {f"{s.inference_batch}/{s.finetune_batch}":
                                        round(predictor.predict(s.inference_batch, s.finetune_batch) / s.latency_ms - 1, 3)
                                        for s in samples}},
        "runs": runs,
    }
    text = json.dumps(result, indent=1, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text[:2000])


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
