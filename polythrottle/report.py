"""Human-facing output of a tune: a progress bar while tuning and a short table at the end (rich)."""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from polythrottle.space import Config
from polythrottle.tuner import TuneRecord, TuneResult


def fmt_config(config: Config) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


@contextmanager
def tune_progress(console: Console, budget: int, slo_ms: float) -> Iterator[callable]:
    """A progress bar; yields a callback taking each TuneRecord."""
    best: list[float] = []
    with Progress(
        TextColumn("[bold]tuning[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("tune", total=budget, status="")

        def on_record(r: TuneRecord) -> None:
            if r.feasible:
                best.append(r.measurement.energy_j)
            status = (
                f"last {r.measurement.energy_j:.4g} J {r.measurement.latency_ms:.4g} ms"
                + (f" | best feasible {min(best):.4g} J" if best else f" | none under {slo_ms:g} ms yet")
            )
            progress.update(task, advance=1, status=status)

        yield on_record


def no_config_line(result: TuneResult) -> str:
    """What to say when nothing met the SLO: the lowest latency reachable and the config that reaches it."""
    f = result.fastest
    if f is None:
        return f"lowest latency seen {result.lowest_latency_ms:.4g} ms"
    return f"lowest latency reachable {f.latency_ms:.4g} ms, with {fmt_config(f.config)}"


def result_table(result: TuneResult) -> Table:
    """Baseline and best side by side, one column per knob."""
    t = Table(title=f"PolyThrottle: SLO {result.slo_ms:g} ms, {len(result.history)} measurements ({result.optimizer})")
    knobs = list(result.baseline.config)
    t.add_column("")
    for k in knobs:
        t.add_column(k, justify="right")
    t.add_column("energy_j", justify="right")
    t.add_column("latency_ms", justify="right")
    t.add_column("n", justify="right")
    rows = [("baseline", result.baseline)]
    if result.best is not None:
        rows.append(("[bold green]best[/]", result.best))
    for label, s in rows:
        t.add_row(label, *(str(s.config[k]) for k in knobs), f"{s.energy_j:.4g}", f"{s.latency_ms:.4g}",
                  str(s.measurements))
    return t


def print_result(result: TuneResult, console: Console) -> None:
    console.print(result_table(result))
    if result.best is None:
        console.print(f"[red]No configuration met the {result.slo_ms:g} ms SLO[/]; {no_config_line(result)}.")
    else:
        p = result.best.p_feasible
        conf = f" (P(feasible) {p:.3f})" if p is not None else ""
        console.print(f"Saving against baseline: [bold]{result.saving_pct:.1f}%[/] energy per inference{conf}.")
    console.print(f"Stopped: {result.stop_reason}.")
