"""Do the PolyThrottle paper's qualitative findings hold on the AGX Orin and TX2 twins?

Exhaustive over each twin (no optimizer, no noise), GPU in range mode (devfreq min/max with the
load-based governor in between), as in the paper:

1. Memory-clock tuning alone (TX2 and Orin): the energy-optimal EMC step with every other knob at the
   board default (GPU range min..max, CPU max, batch 1), saving vs the default EMC (maximum).
2. Raising the minimum GPU clock (Orin, FP16): the best gpu_min_mhz with gpu_max at the top and every
   other knob at the default, saving vs the default minimum (the governor free to go down).
3. Overall: every clock knob (GPU min/max, EMC, CPU) tuned at batch 1 under an SLO of 1.5x the default
   latency, and all knobs (batch size and precision too) under the same SLO.

Usage: python experiments/paper_findings.py --out experiments/results/twin_vs_paper.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polythrottle.devices.sim import SimDevice  # noqa: E402

WORKLOADS = ("efficientnet-b0", "efficientnet-b4", "efficientnet-b7", "bert-base")
PAPER_EMC_TX2 = {"efficientnet-b0": 14.9, "efficientnet-b4": 14.3, "efficientnet-b7": 12.0, "bert-base": 25.4}
PAPER_MIN_GPU_ORIN = {"efficientnet-b0": 47.6, "efficientnet-b4": 29.1, "efficientnet-b7": 8.8, "bert-base": 1.1}
PAPER_OVERALL = 36.0
SLO_FACTOR = 1.5


def subset(dev: SimDevice, fixed: dict) -> np.ndarray:
    """Indices of the points of ``dev.space()`` matching every knob in ``fixed``."""
    sp = dev.space()
    mask = np.ones(len(sp), dtype=bool)
    for j, k in enumerate(sp.knobs):
        if k.name in fixed:
            mask &= sp.rows[:, j] == k.index(fixed[k.name])
    return np.where(mask)[0]


def best(dev: SimDevice, idx: np.ndarray, slo_ms: float = np.inf) -> int:
    e, lat = dev.table.metric("energy_j")[idx], dev.table.metric("latency_ms")[idx]
    return int(idx[np.argmin(np.where(lat <= slo_ms, e, np.inf))])


def analyse(profile: str, workload: str, precision: str) -> dict:
    dev = SimDevice(profile, workload, gpu_mode="range")
    sp = dev.space()
    e, lat = dev.table.metric("energy_j"), dev.table.metric("latency_ms")
    base = dict(dev.default_config())
    base["precision"] = precision
    b = sp.index_of(base)
    e0, l0 = float(e[b]), float(lat[b])

    def saving(i: int) -> float:
        return 100.0 * (1.0 - float(e[i]) / e0)

    emc = best(dev, subset(dev, {k: v for k, v in base.items() if k != "emc_mhz"}))
    gmin = best(dev, subset(dev, {k: v for k, v in base.items() if k != "gpu_min_mhz"}))
    slo = SLO_FACTOR * l0
    clocks = best(dev, subset(dev, {"batch_size": base["batch_size"], "precision": precision}), slo)
    every = best(dev, np.arange(len(sp)), slo)
    return {
        "profile": profile, "workload": workload, "precision": precision,
        "base_energy_j": e0, "base_latency_ms": l0,
        "governor_gpu_mhz": float(dev.outcome.gpu_mhz[b]), "gpu_util": float(dev.outcome.gpu_util[b]),
        "emc_saving": saving(emc), "emc_pick": sp.config(emc)["emc_mhz"],
        "emc_latency_x": float(lat[emc]) / l0,
        "min_gpu_saving": saving(gmin), "min_gpu_pick": sp.config(gmin)["gpu_min_mhz"],
        "clocks_saving": saving(clocks), "clocks_pick": sp.config(clocks),
        "all_saving": saving(every), "all_pick": sp.config(every),
    }


def fmt_cfg(c: dict) -> str:
    short = {"gpu_min_mhz": "gmin", "gpu_max_mhz": "gmax", "emc_mhz": "emc", "cpu_mhz": "cpu", "batch_size": "b",
             "precision": ""}
    return " ".join(f"{short[k]}{'=' if short[k] else ''}{v:g}" if not isinstance(v, str) else v for k, v in c.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = {(p, w, pr): analyse(p, w, pr) for p in ("jetson-tx2", "jetson-agx-orin") for w in WORKLOADS
            for pr in ("fp16", "fp32")}
    L = [
        "# Twin vs paper: PolyThrottle's qualitative findings on the AGX Orin and TX2 twins",
        "",
        "Regenerate: `python experiments/paper_findings.py --out experiments/results/twin_vs_paper.md` "
        "(exhaustive over `sim:jetson-tx2?gpu=range` and `sim:jetson-agx-orin?gpu=range`, no noise).",
        "",
        "Defaults (the baseline): GPU devfreq range at its full span with the load-based governor, EMC and CPU at "
        "their maxima, batch 1. Paper figures: Yan, Wang, Venkataraman, arXiv 2310.19991 (see ../shared/reference/facts.md).",
        "The twins of TX2 and AGX Orin are NOT calibrated against measurements of these boards: board power figures "
        "and workload intrinsics are public specifications plus engineering estimates (see README).",
        "",
        "## 1. Memory-clock tuning alone (paper: TX2, 12-25%)",
        "",
        "| workload | paper TX2 | twin TX2 fp16 | twin TX2 fp32 | twin Orin fp16 | twin Orin fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for w in WORKLOADS:
        cells = []
        for p, pr in (("jetson-tx2", "fp16"), ("jetson-tx2", "fp32"), ("jetson-agx-orin", "fp16"), ("jetson-agx-orin", "fp32")):
            r = rows[(p, w, pr)]
            cells.append(f"{r['emc_saving']:.1f}% (EMC {r['emc_pick']:g} MHz, latency x{r['emc_latency_x']:.2f})")
        L.append(f"| {w} | {PAPER_EMC_TX2[w]:.1f}% | " + " | ".join(cells) + " |")
    L += [
        "",
        "## 2. Raising the minimum GPU clock (paper: Orin FP16, helps small models most)",
        "",
        "| workload | paper Orin FP16 | twin Orin fp16 | governor's clock / GPU load at default | best gpu_min | twin TX2 fp16 |",
        "|---|---|---|---|---|---|",
    ]
    for w in WORKLOADS:
        r, t = rows[("jetson-agx-orin", w, "fp16")], rows[("jetson-tx2", w, "fp16")]
        L.append(f"| {w} | {PAPER_MIN_GPU_ORIN[w]:.1f}% | {r['min_gpu_saving']:.1f}% | {r['governor_gpu_mhz']:g} MHz / "
                 f"{100 * r['gpu_util']:.0f}% | {r['min_gpu_pick']:g} MHz | {t['min_gpu_saving']:.1f}% |")
    L += [
        "",
        f"## 3. Overall saving (paper: up to {PAPER_OVERALL:.0f}%), SLO = {SLO_FACTOR:g} x default latency",
        "",
        "| board | workload | precision | default | clock knobs only (batch 1) | all knobs incl. batch and precision |",
        "|---|---|---|---|---|---|",
    ]
    for (p, w, pr), r in rows.items():
        L.append(f"| {p} | {w} | {pr} | {r['base_energy_j']:.3f} J, {r['base_latency_ms']:.1f} ms | "
                 f"{r['clocks_saving']:.1f}% ({fmt_cfg(r['clocks_pick'])}) | {r['all_saving']:.1f}% ({fmt_cfg(r['all_pick'])}) |")
    clock_max = max(r["clocks_saving"] for r in rows.values())
    emc_tx2 = [rows[("jetson-tx2", w, "fp16")]["emc_saving"] for w in WORKLOADS]
    gmin = [rows[("jetson-agx-orin", w, "fp16")]["min_gpu_saving"] for w in WORKLOADS]
    L += [
        "",
        "## Verdict",
        "",
        f"- Memory-clock tuning alone on the TX2 twin (fp16) saves {min(emc_tx2):.1f}-{max(emc_tx2):.1f}% "
        f"(paper 12.0-25.4%); BERT-base, compute-bound, saves the most in both "
        f"({'holds' if emc_tx2[3] == max(emc_tx2) else 'does NOT hold'} in the twin).",
        f"- Raising the minimum GPU clock on the Orin twin (fp16): {', '.join(f'{g:.1f}%' for g in gmin)} for "
        f"B0, B4, B7, BERT (paper 47.6, 29.1, 8.8, 1.1%); the saving "
        f"{'falls monotonically with model size as in the paper' if all(a >= b for a, b in zip(gmin, gmin[1:])) else 'does NOT fall monotonically with model size'}. "
        "Mechanism in the twin: small models leave the GPU idle between kernels (framework overhead), so the "
        "load-based governor settles on a low clock where static power dominates.",
        f"- Overall, clock knobs only at batch 1: up to {clock_max:.1f}% (paper: up to {PAPER_OVERALL:.0f}%). Adding batch "
        "size and precision saves far more in the twin, because batching amortises static power and weights traffic; the "
        "paper's 36% compares configurations differently (its exact baseline and SLOs are not public), so this column is "
        "not like-for-like.",
    ]
    text = "\n".join(L) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
