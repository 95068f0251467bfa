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


def result_table(result: TuneResult) -> Table:
    t = Table(title=f"PolyThrottle: SLO {result.slo_ms:g} ms, {len(result.history)} measurements ({result.optimizer})")
    t.add_column("")
    t.add_column("config")
    t.add_column("energy/inference (J)", justify="right")
    t.add_column("latency (ms)", justify="right")
    t.add_column("measured", justify="right")
    b = result.baseline
    t.add_row("baseline", fmt_config(b.config), f"{b.energy_j:.4g}", f"{b.latency_ms:.4g}", str(b.measurements))
    if result.best is not None:
        r = result.best
        t.add_row("[bold green]best[/]", fmt_config(r.config), f"{r.energy_j:.4g}", f"{r.latency_ms:.4g}",
                  str(r.measurements))
    return t


def print_result(result: TuneResult, console: Console) -> None:
    console.print(result_table(result))
    if result.best is None:
        console.print(
            f"[red]No configuration met the {result.slo_ms:g} ms SLO[/]; lowest latency seen: "
            f"{result.lowest_latency_ms:.4g} ms."
        )
    else:
        p = result.best.p_feasible
        conf = f" (P(feasible) {p:.3f})" if p is not None else ""
        console.print(f"Saving against baseline: [bold]{result.saving_pct:.1f}%[/] energy per inference{conf}.")
    console.print(f"Stopped: {result.stop_reason}.")
