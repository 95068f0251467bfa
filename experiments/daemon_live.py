"""Run the daemon end to end on one device and record what it did (a live check, not a unit test).

    PYTHONPATH=. python3 experiments/daemon_live.py --config CFG.yaml --out DIR [--label NAME]

The config must list one model file in ``model_files``. Steps: start ``polythrottle daemon`` as a
subprocess with a real AF_UNIX datagram socket as $NOTIFY_SOCKET (and WATCHDOG_USEC=10 s); time READY
and the first applied config; poll ``status`` while it tunes (answer times); change the model file
and time the warm re-tune; scrape /metrics; SIGTERM and time the exit. Writes DIR/NAME.json (every
status, timings) and DIR/NAME.md (a summary).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.daemon_helpers import DaemonProcess, NotifyListener, wait_for


def poll_until(d: DaemonProcess, pred, timeout: float, what: str, answer_ms: list[float]) -> dict:
    """Poll status every 0.2 s until ``pred``; record each answer's round trip (ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        s = d.try_status()
        if s is not None:
            answer_ms.append((time.perf_counter() - t0) * 1000)
            if pred(s):
                return s
        if d.proc.poll() is not None:
            break
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}; see {d.log}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--label", default="daemon_live")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(args.config.read_text())
    model = Path(cfg["model_files"][0])
    if not model.is_absolute():
        model = args.config.parent / model
    model.write_bytes(b"model version 1")

    notify = NotifyListener(args.out / f"{args.label}.notify")
    log = args.out / f"{args.label}.log"
    t_start = time.monotonic()
    d = DaemonProcess(args.config, notify, log, env={"WATCHDOG_USEC": "10000000"})
    rec: dict = {"config": cfg}
    try:
        wait_for(lambda: notify.seen("READY", "1"), args.timeout, "READY=1", d.proc, log)
        rec["ready_s"] = time.monotonic() - t_start
        answers_initial: list[float] = []
        s1 = poll_until(d, lambda s: s["state"] == "serving", args.timeout, "the first applied config", answers_initial)
        rec["serving_s"] = time.monotonic() - t_start
        rec["status_after_initial"] = s1
        time.sleep(max(1.0, 2.5 * float(cfg.get("monitor_interval_s", 0) or 0)))  # a few serving measurements

        model.write_bytes(b"model version 2")
        t_change = time.monotonic()
        answers_retune: list[float] = []
        s2 = poll_until(d, lambda s: s["tunes"] >= 2 and s["state"] in ("serving", "error"), args.timeout,
                        "the re-tune", answers_retune)
        rec["retune_s"] = time.monotonic() - t_change
        rec["status_after_retune"] = s2
        rec["status_answer_ms"] = {"during_initial_tune_max": max(answers_initial, default=None),
                                   "during_retune_max": max(answers_retune, default=None),
                                   "polls": len(answers_initial) + len(answers_retune)}
        if s2.get("metrics_url"):
            rec["metrics"] = urllib.request.urlopen(s2["metrics_url"], timeout=10).read().decode()
        t_term = time.monotonic()
        rec["exit_code"] = d.stop(signal.SIGTERM, timeout=60)
        rec["stop_s"] = time.monotonic() - t_term
    finally:
        d.kill()
        notify.close()
    rec["notify_messages"] = notify.messages
    rec["watchdog_pings"] = sum("WATCHDOG" in m for m in notify.messages)
    rec["log"] = log.read_text()
    (args.out / f"{args.label}.json").write_text(json.dumps(rec, indent=2, default=str))
    (args.out / f"{args.label}.md").write_text(summary(args, rec))
    print(summary(args, rec))
    return 0 if rec["exit_code"] == 0 else 1


def summary(args: argparse.Namespace, rec: dict) -> str:
    s1, s2 = rec["status_after_initial"], rec["status_after_retune"]
    t1, t2 = s1["last_tune"], s2["last_tune"]

    def tune_line(t: dict) -> str:
        warm = f"warm from {t['warm_start']['from_version']}" if t.get("warm_start") else "cold"
        best = t["best"] or {}
        saving = "n/a" if t["saving_pct"] is None else f"{t['saving_pct']:.1f}%"
        return (f"{t['kind']}: {t['measurements']} measurements ({warm}) in {t['duration_s']:.1f} s; best "
                f"{best.get('config')} {best.get('energy_j', float('nan')):.4g} J/inference "
                f"{best.get('latency_ms', float('nan')):.4g} ms; saving vs baseline {saving}")

    a = rec["status_answer_ms"]
    cur = s2.get("current") or {}
    return "\n".join([
        f"# {args.label}: `polythrottle daemon` end to end",
        "",
        f"Command: `PYTHONPATH=. python3 experiments/daemon_live.py --config {args.config} --out {args.out} "
        f"--label {args.label}`",
        "",
        f"- device `{s1['device']}`, workload `{s1['workload']}`, SLO {s1['slo_ms']:g} ms, knobs {s1['knobs']}",
        f"- READY=1 after {rec['ready_s']:.1f} s; first config applied after {rec['serving_s']:.1f} s",
        f"- initial tune — {tune_line(t1)}",
        f"- model file changed -> re-tune applied after {rec['retune_s']:.1f} s — {tune_line(t2)}",
        f"- current (serving measurement): {cur.get('energy_j', float('nan')):.4g} J/inference, "
        f"{cur.get('latency_ms', float('nan')):.4g} ms, {cur.get('co2_per_inference_g', float('nan')):.3g} g CO2 "
        f"per inference at {s2['carbon_intensity_g_per_kwh']:g} g/kWh",
        f"- SLO violations: {s2['slo_violations']}",
        f"- status answered while tuning: max {a['during_initial_tune_max']:.1f} ms (initial), "
        f"{a['during_retune_max']:.1f} ms (re-tune) over {a['polls']} polls",
        f"- watchdog pings: {rec['watchdog_pings']}; SIGTERM -> exit {rec['exit_code']} after {rec['stop_s']:.2f} s",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
