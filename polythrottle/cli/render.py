"""What a terminal shows of a tune (rich): each measurement as it is made, then the baseline and the pick.

Every line fits the console's width (80 columns when it is not a terminal): the live view gives each
measurement one line (number, role, energy, latency, SLO met or over, best feasible energy so far,
the tuned knobs' values), and the final table has a row per knob and a column for the baseline and
the pick, so it stays narrow whatever the number of knobs. "Best" follows ``polythrottle.tuning.trace``:
the lowest mean energy among configs whose mean measured latency meets the SLO.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from polythrottle.carbon import CarbonIntensity
from polythrottle.cli.common import printable
from polythrottle.space import Config
from polythrottle.tuning.trace import TracePoint, TuneTrace, short_device

if TYPE_CHECKING:  # the tuner imports the optimizers; `polythrottle --help` should not
    from polythrottle.tuning.tuner import TuneRecord, TuneResult

# (width, alignment, gap after) of: #, role, energy J, latency ms, SLO, best J; the config takes the rest
_COLS = ((3, ">", 1), (8, "<", 1), (8, ">", 1), (10, ">", 2), (4, "<", 0), (9, ">", 2))
_HEADS = ("#", "role", "energy J", "latency ms", "SLO", "best J")
MIN_CONFIG_WIDTH = 12


def fmt_value(v: object) -> str:
    """A knob value as shown; control characters as ``\\xNN`` (a replayed table's text must not drive the terminal)."""
    return f"{v:g}" if isinstance(v, float) else printable(v)


def fmt_config(config: Config) -> str:
    return ", ".join(f"{printable(k)}={fmt_value(v)}" for k, v in config.items())


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 1e4 else f"{x:.4g}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class LiveView:
    """Prints a header and one line per measurement (``on_record``), each at most ``console.width`` wide.

    knobs: the tuned knobs (their values make the config column; None: every knob of the first config).
    """

    def __init__(self, console: Console, slo_ms: float, budget: int, *, device: str = "",
                 knobs: Sequence[str] | None = None) -> None:
        self.console = console
        self.width = max(console.width, 60)
        self.trace = TuneTrace(slo_ms=slo_ms, device=device)
        self.budget = budget
        self.knobs = list(knobs) if knobs else None
        self._best: float | None = None

    def _line(self, cells: Sequence[str]) -> str:
        fixed = "".join(f"{c:{align}{w}}" + " " * gap for c, (w, align, gap) in zip(cells[:-1], _COLS))
        return fixed + _clip(cells[-1], max(self.width - len(fixed), MIN_CONFIG_WIDTH))

    def _print(self, text: str, style: str | None = None) -> None:
        self.console.print(escape(text), style=style, highlight=False, soft_wrap=True)

    def header(self) -> None:
        """The title, the knobs of the config column and the column heads (before the first line)."""
        where = f"{printable(short_device(self.trace.device))}: " if self.trace.device else ""
        self._print(_clip(f"Tuning {where}SLO {self.trace.slo_ms:g} ms, budget {self.budget}",
                          self.width), "bold")
        self._print(_clip("config = " + "/".join(printable(k) for k in self.knobs or []), self.width))
        self._print(self._line([*_HEADS, "config"]), "dim")

    def on_record(self, r: TuneRecord) -> None:
        """Print the line of measurement ``r`` (the TuneRecord callback of ``Tuner.run``)."""
        if not self.trace.points:  # printed now, so that bad input fails with one line and no header
            self.knobs = self.knobs or list(r.config)
            self.header()
        m = r.measurement
        self.trace.add(TracePoint(r.step, r.config, m.energy_j, m.latency_ms, r.role))
        best = self.trace.best()
        improved = best is not None and (self._best is None or best.energy_j < self._best)
        self._best = best.energy_j if best is not None else None
        best_text = "-" if best is None else f"{best.energy_j:.4g}" + ("*" if improved else " ")
        ok = m.latency_ms <= self.trace.slo_ms
        cells = [str(r.step + 1), r.role, _num(m.energy_j), _num(m.latency_ms), "ok" if ok else "over",
                 best_text, "/".join(fmt_value(r.config.get(k)) for k in self.knobs or [])]
        self._print(self._line(cells), None if ok else "red")


def no_config_line(result: TuneResult) -> str:
    """What to say when nothing met the SLO: the lowest latency reachable and the config that reaches it."""
    f = result.fastest
    if f is None:
        return f"lowest latency seen {result.lowest_latency_ms:.4g} ms"
    return f"lowest latency reachable {f.latency_ms:.4g} ms, with {fmt_config(f.config)}"


def result_table(result: TuneResult, carbon: CarbonIntensity | None = None) -> Table:
    """A row per knob (then energy, latency, CO2, measurements); a column for the baseline and the pick."""
    t = Table(title=f"SLO {result.slo_ms:g} ms, {len(result.history)} measurements ({result.optimizer})",
              title_justify="left")
    t.add_column("")
    t.add_column("baseline", justify="right")
    cols = [result.baseline]
    if result.best is not None:
        t.add_column("best", justify="right", style="bold green")
        cols.append(result.best)
    for k in result.baseline.config:
        tuned = k in result.tuned_knobs
        name = escape(printable(k))  # knob names and values come from tables and workloads: text, never markup
        t.add_row(name if tuned else f"[dim]{name} (fixed)[/]", *(escape(fmt_value(s.config[k])) for s in cols))
    t.add_row("energy per inference (J)", *(f"{s.energy_j:.4g}" for s in cols))
    t.add_row("latency (ms)", *(f"{s.latency_ms:.4g}" for s in cols))
    if carbon is not None:
        t.add_row("CO2 per million inferences (g)", *(f"{1e6 * carbon.co2_g(s.energy_j):.4g}" for s in cols))
    t.add_row("measurements", *(str(s.measurements) for s in cols))
    return t


def print_result(result: TuneResult, console: Console, carbon: CarbonIntensity | None = None) -> None:
    """The final table and a line each for the saving, the carbon intensity used and why the tune stopped."""
    console.print(result_table(result, carbon))
    if result.best is None:
        console.print(
            f"[red]No configuration met the {result.slo_ms:g} ms SLO[/]; {escape(no_config_line(result))}."
        )
    else:
        p = result.best.p_feasible
        conf = f" (P(feasible) {p:.3f})" if p is not None else ""
        console.print(f"Saving against baseline: [bold]{result.saving_pct:.1f}%[/] energy per inference{conf}.")
    if carbon is not None:
        console.print(f"CO2 at {escape(carbon.describe())}.", highlight=False)
    console.print(f"Stopped: {escape(result.stop_reason)}.", highlight=False)


__all__ = ["LiveView", "fmt_config", "fmt_value", "print_result", "result_table"]
