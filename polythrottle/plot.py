"""Figures of a tune (matplotlib, the ``plot`` extra, imported only when drawing).

- convergence: every measurement's energy per inference against its number (colour: its latency met
  the SLO or not; marker: baseline, new config, recheck), the best feasible energy so far as a step
  line, the baseline's energy as a line;
- trade-off: energy per inference against latency for every measured config (means over its
  measurements), the SLO as a line with the region over it shaded, the measured Pareto front (configs
  no other beats on both), the baseline and the pick labelled.

"Feasible" is judged on the measured data alone (``polythrottle.tune_trace``): a config's mean
latency over its measurements meets the SLO. The legends say so. Figures are drawn with the
object-oriented API (``matplotlib.figure.Figure``), so no GUI backend is ever touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polythrottle.errors import BadInputError, MissingDependencyError
from polythrottle.tune_trace import TuneTrace, config_key, short_device

KINDS = ("both", "convergence", "tradeoff")
FORMATS = (".png", ".svg", ".pdf")
MEETS, OVER, BEST, FRONT, BASE = "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#555555"


def require_matplotlib() -> Any:
    """The ``matplotlib.figure`` module; raises MissingDependencyError (exit 5) when it is not installed."""
    try:
        from matplotlib import figure
    except ImportError:
        raise MissingDependencyError(
            "plotting needs matplotlib, which is not installed: pip install 'polythrottle[plot]'"
        ) from None
    return figure


def context_line(trace: TuneTrace) -> str:
    """``device · workload · SLO 100 ms · 20 measurements (cbo)``: what every figure is about."""
    parts = [short_device(trace.device) or "device ?"]
    if trace.workload:
        parts.append(trace.workload)
    parts.append(f"SLO {trace.slo_ms:g} ms")
    parts.append(f"{len(trace.points)} measurements" + (f" ({trace.optimizer})" if trace.optimizer else ""))
    return " · ".join(parts)


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _versus(saving_pct: float) -> str:
    """``40.1% less`` / ``3.2% more`` (a baseline over the SLO can be cheaper than the pick)."""
    return f"{saving_pct:.1f}% less" if saving_pct >= 0 else f"{-saving_pct:.1f}% more"


def config_label(trace: TuneTrace, config: Any, sep: str = ", ") -> str:
    """The tuned knobs' values of ``config``: ``gpu_mhz=1236.75, batch_size=6``."""
    return sep.join(f"{k}={_fmt(config[k])}" for k in trace.tuned_knobs() if k in config)


def _log_if_wide(ax: Any, axis: str, values: list[float], ratio: float) -> None:
    """A log axis with plain tick labels (0.3, 0.5, 1, 2, ...) when ``values`` span more than ``ratio``."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if not values or max(values) / min(values) <= ratio:
        return
    decades = math.log10(max(values) / min(values))
    subs = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0) if decades < 1 else (1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def _legend_below(ax: Any) -> None:
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)


@dataclass(frozen=True)
class _Label:
    """A text to place next to data point ``xy`` where it hides the fewest points (see ``_place``)."""

    xy: tuple[float, float]
    text: str
    color: str


# offsets (points) tried for a label, in order of preference
_OFFSETS = [(dx * r, dy * r) for r in (1.0, 1.8, 2.8)
            for dx, dy in ((22.0, 30.0), (-22.0, -30.0), (22.0, -30.0), (-22.0, 30.0), (34.0, 0.0), (-34.0, 0.0),
                           (0.0, 40.0), (0.0, -40.0))]


def draw_convergence(ax: Any, trace: TuneTrace) -> tuple[list[_Label], list[tuple[float, float]]]:
    """Each measurement's energy by number; best feasible so far; the baseline's energy. Returns the
    labels still to place and the data points they should not hide."""
    labels: list[_Label] = []
    pts = trace.points
    n = list(range(1, len(pts) + 1))
    groups = {
        ("baseline", True): {"marker": "*", "s": 160, "color": BASE, "label": "baseline"},
        ("baseline", False): {"marker": "*", "s": 160, "color": OVER, "label": "baseline, over SLO"},
        ("explore", True): {"marker": "o", "s": 42, "color": MEETS, "label": "new config, latency met SLO"},
        ("explore", False): {"marker": "X", "s": 52, "color": OVER, "label": "new config, over SLO"},
        ("recheck", True): {"marker": "D", "s": 46, "facecolors": "none", "edgecolors": MEETS, "linewidths": 1.5,
                            "label": "recheck (same config again), met SLO"},
        ("recheck", False): {"marker": "D", "s": 46, "facecolors": "none", "edgecolors": OVER, "linewidths": 1.5,
                             "label": "recheck (same config again), over SLO"},
    }
    for (role, ok), style in groups.items():
        sel = [(i, p.energy_j) for i, p in zip(n, pts)
               if (p.role if p.role in ("baseline", "recheck") else "explore") == role
               and (p.latency_ms <= trace.slo_ms) == ok]
        if sel:
            ax.scatter([s[0] for s in sel], [s[1] for s in sel], zorder=3, **style)
    base = trace.baseline
    base_stats = trace.stats_of(base.config) if base else None
    if base_stats is not None:
        ax.axhline(base_stats.energy_j, color=BASE, ls="--", lw=1.2, zorder=1,
                   label=f"baseline energy {base_stats.energy_j:.4g} J")
    best = trace.best_so_far()
    xs = [i for i, b in zip(n, best) if b is not None]
    ys = [b for b in best if b is not None]
    if xs:
        ax.step(xs + [n[-1] + 0.5], ys + [ys[-1]], where="post", color=BEST, lw=2.2, zorder=2,
                label="best feasible so far\n(feasible: mean measured latency ≤ SLO)")
        final = trace.best()
        if final is not None and base_stats is not None:
            saving = 100 * (base_stats.energy_j - final.energy_j) / base_stats.energy_j
            labels.append(_Label((n[-1], ys[-1]), f"best {final.energy_j:.4g} J\n{_versus(saving)} than baseline",
                                 BEST))
    else:
        ax.plot([], [], " ", label="no config's mean latency met the SLO")
    _log_if_wide(ax, "y", [p.energy_j for p in pts], 4.0)
    ax.set_xlim(0.3, n[-1] + 0.7)
    ax.set_xlabel("measurement number")
    ax.set_ylabel("energy per inference (J)")
    ax.set_title("Convergence: energy of each measurement and the best so far")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
    _legend_below(ax)
    return labels, [(float(i), p.energy_j) for i, p in zip(n, pts)] + [(float(x), y) for x, y in zip(xs, ys)]


def _place(ax: Any, renderer: Any, labels: list[_Label], avoid: list[tuple[float, float]],
           taken: list[Any] | None = None) -> None:
    """Annotate each label at the offset whose text box covers the fewest ``avoid`` points, earlier labels
    and ``taken`` boxes (display units) and stays inside the axes (first such offset in ``_OFFSETS`` order)."""
    from matplotlib.text import Text

    pts = ax.transData.transform(avoid) if avoid else []
    frame = ax.get_window_extent(renderer)
    taken = list(taken or [])
    for lab in labels:
        best: tuple[float, Any] | None = None
        for rank, (dx, dy) in enumerate(_OFFSETS):
            ann = ax.annotate(
                lab.text, xy=lab.xy, xytext=(dx, dy), textcoords="offset points", fontsize=8.5, color=lab.color,
                fontweight="bold", ha="left" if dx > 0 else "right" if dx < 0 else "center",
                va="bottom" if dy > 0 else "top" if dy < 0 else "center", zorder=5,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": lab.color, "lw": 0.8, "alpha": 0.92},
                arrowprops={"arrowstyle": "-", "color": lab.color, "lw": 0.9, "shrinkB": 6},
            )
            ann.set_in_layout(False)
            ann.update_positions(renderer)  # Text's own extent (not the arrow's) needs the positions first
            box = Text.get_window_extent(ann, renderer).padded(5)
            hidden = sum(1 for x, y in pts if box.contains(x, y))
            inside = box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1
            clash = sum(1 for t in taken if box.overlaps(t))
            score = 10.0 * hidden + 100.0 * (not inside) + 100.0 * clash + 0.1 * rank
            if best is None or score < best[0]:
                if best is not None:
                    best[1].remove()
                best = (score, ann)
            else:
                ann.remove()
        assert best is not None
        taken.append(Text.get_window_extent(best[1], renderer).padded(5))


def _draw_configs(ax: Any, trace: TuneTrace, small: bool = False) -> None:
    """Measured configs (means; single measurements of repeated ones), the Pareto front, the SLO line and
    the pick's ring: what the trade-off plot and its zoom share."""
    k = 0.6 if small else 1.0
    stats = trace.config_stats()
    repeated = {config_key(s.config) for s in stats if s.measurements > 1}
    raw = [p for p in trace.points if config_key(p.config) in repeated]
    if raw:
        ax.scatter([p.latency_ms for p in raw], [p.energy_j for p in raw], s=10 * k, color="#999999", alpha=0.6,
                   zorder=2, label="single measurements of re-measured configs")
    for ok, style in ((True, {"marker": "o", "s": 44 * k, "color": MEETS, "label": "config, mean latency meets SLO"}),
                      (False, {"marker": "X", "s": 52 * k, "color": OVER, "label": "config, mean latency over SLO"})):
        sel = [s for s in stats if s.feasible == ok]
        if sel:
            ax.scatter([s.latency_ms for s in sel], [s.energy_j for s in sel], zorder=3, **style)
    front = trace.pareto_front()
    if len(front) > 1:
        ax.step([s.latency_ms for s in front], [s.energy_j for s in front], where="post", color=FRONT,
                lw=1.6 * k, zorder=2, label="measured Pareto front")
    ax.axvline(trace.slo_ms, color=OVER, ls="--", lw=1.3 * k, zorder=1, label=f"SLO {trace.slo_ms:g} ms")
    pick = trace.stats_of(trace.pick)
    if pick is not None:
        ax.scatter([pick.latency_ms], [pick.energy_j], marker="o", s=210 * k, facecolors="none", edgecolors=BEST,
                   linewidths=2.2 * k, zorder=4, label="pick (recommended config)")


def _zoom(ax: Any, trace: TuneTrace, renderer: Any) -> Any:
    """When the cheap configs near the SLO (latency from SLO/1.5 to 1.3 x SLO, energy within 25% of the
    lowest there) are squeezed together by a wide latency axis, a zoomed inset of them in the corner of the
    plot that hides the fewest points; returns its window extent (None: no inset)."""
    near = [s for s in trace.config_stats() if trace.slo_ms / 1.5 <= s.latency_ms <= trace.slo_ms * 1.3]
    lat = [p.latency_ms for p in trace.points]
    if len(near) < 3 or max(lat) / min(lat) < 20:
        return None
    cap = 1.25 * min(s.energy_j for s in near)
    near = [s for s in near if s.energy_j <= cap]
    if len(near) < 3:
        return None
    x0, x1 = min(min(s.latency_ms for s in near), trace.slo_ms), max(max(s.latency_ms for s in near), trace.slo_ms)
    y0, y1 = min(s.energy_j for s in near), max(s.energy_j for s in near)
    raw = [p for p in trace.points if x0 <= p.latency_ms <= x1 and p.energy_j <= cap]
    y0, y1 = min([y0, *(p.energy_j for p in raw)]), max([y1, *(p.energy_j for p in raw)])
    dx, dy = (x1 - x0) * 0.08 or x0 * 0.02, (y1 - y0) * 0.12 or y0 * 0.02
    window = (x0 - dx, x1 + dx, y0 - dy, y1 + dy)
    pts = ax.transData.transform([(p.latency_ms, p.energy_j) for p in trace.points])
    region = ax.transData.transform([(window[0], window[2]), (window[1], window[3])])
    frame = ax.get_window_extent(renderer)
    best = None
    for bounds in ([0.57, 0.57, 0.4, 0.38], [0.57, 0.05, 0.4, 0.38], [0.04, 0.57, 0.4, 0.38], [0.04, 0.05, 0.4, 0.38]):
        bx0, by0 = frame.x0 + bounds[0] * frame.width, frame.y0 + bounds[1] * frame.height
        bx1, by1 = bx0 + bounds[2] * frame.width, by0 + bounds[3] * frame.height
        hidden = sum(1 for x, y in pts if bx0 <= x <= bx1 and by0 <= y <= by1)
        covers = not (region[1][0] < bx0 or region[0][0] > bx1 or region[1][1] < by0 or region[0][1] > by1)
        score = hidden + 100 * covers
        if best is None or score < best[0]:
            best = (score, bounds)
    assert best is not None
    ins = ax.inset_axes(best[1])
    _draw_configs(ins, trace, small=True)
    ins.set_xlim(window[0], window[1])
    ins.set_ylim(window[2], window[3])
    ins.tick_params(labelsize=7)
    ins.set_title(f"zoom: near the SLO ({trace.slo_ms:g} ms)", fontsize=8)
    ins.grid(True, alpha=0.3)
    ins.set_facecolor("white")
    ax.indicate_inset_zoom(ins, edgecolor="#444444")
    return ins.get_window_extent(renderer).padded(30)  # tick labels and title around it


def draw_tradeoff(ax: Any, trace: TuneTrace) -> tuple[list[_Label], list[tuple[float, float]]]:
    """Energy against latency per measured config; SLO; measured Pareto front; baseline and pick.
    Returns the labels still to place and the data points they should not hide."""
    labels: list[_Label] = []
    stats = trace.config_stats()
    _draw_configs(ax, trace)
    lat = [p.latency_ms for p in trace.points]
    energy = [p.energy_j for p in trace.points]
    _log_if_wide(ax, "x", lat, 10.0)
    _log_if_wide(ax, "y", energy, 4.0)
    ax.margins(x=0.08, y=0.12)
    lo, hi = ax.get_xlim()
    if hi > trace.slo_ms:
        ax.axvspan(trace.slo_ms, hi, color=OVER, alpha=0.06, zorder=0)
        ax.set_xlim(lo, hi)
    base = trace.stats_of(trace.baseline.config) if trace.baseline else None
    pick = trace.stats_of(trace.pick)
    if base is not None:
        labels.append(_Label((base.latency_ms, base.energy_j), "baseline\n" + config_label(trace, base.config, "\n"),
                             BASE))
        ax.scatter([base.latency_ms], [base.energy_j], marker="*", s=190, color=BASE, zorder=4)
    if pick is not None:
        text = "pick\n" + config_label(trace, pick.config, "\n") + f"\n{pick.energy_j:.4g} J, {pick.latency_ms:.4g} ms"
        if base is not None:
            text += f"\n{_versus(100 * (base.energy_j - pick.energy_j) / base.energy_j)} energy"
        labels.insert(0, _Label((pick.latency_ms, pick.energy_j), text, BEST))
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("energy per inference (J)")
    ax.set_title("Energy vs latency of every measured config")
    ax.grid(True, which="major", alpha=0.3)
    _legend_below(ax)
    avoid = [(p.latency_ms, p.energy_j) for p in trace.points] + [(s.latency_ms, s.energy_j) for s in stats]
    return labels, avoid


def render(trace: TuneTrace, out: str | Path, kind: str = "both") -> Path:
    """Draw ``kind`` (convergence, tradeoff or both side by side) to ``out`` (.png, .svg or .pdf).
    Raises BadInputError (kind, format, unwritable file) or MissingDependencyError (no matplotlib)."""
    out = Path(out)
    if kind not in KINDS:
        raise BadInputError(f"unknown plot kind {kind!r}; expected one of: {', '.join(KINDS)}")
    if out.suffix.lower() not in FORMATS:
        raise BadInputError(f"--out {out}: unsupported format {out.suffix or '(none)'!r}; "
                            f"expected one of: {', '.join(FORMATS)}")
    figure = require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    panels = ["convergence", "tradeoff"] if kind == "both" else [kind]
    fig = figure.Figure(figsize=(7.6 * len(panels), 6.6), layout="constrained")
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    drawn = [(ax, (draw_convergence if panel == "convergence" else draw_tradeoff)(ax, trace))
             for ax, panel in zip(axes, panels)]
    title = context_line(trace)
    if len(panels) == 1 and len(title) > 70:  # two lines on a single panel
        cut = title.rfind(" · ", 0, 70)
        title = title[:cut] + "\n" + title[cut + 3:]
    fig.suptitle(title, fontsize=12, fontweight="bold")
    canvas.draw()  # lay the figure out, so labels are placed where they will be drawn
    renderer = canvas.get_renderer()
    for (ax, (labels, avoid)), panel in zip(drawn, panels):
        inset = _zoom(ax, trace, renderer) if panel == "tradeoff" else None
        _place(ax, renderer, labels, avoid, [inset] if inset is not None else None)
    try:
        fig.savefig(out, dpi=130)
    except OSError as e:
        raise BadInputError(f"--out {out}: cannot write ({e.strerror or e})") from None
    return out


__all__ = ["FORMATS", "KINDS", "context_line", "draw_convergence", "draw_tradeoff", "render", "require_matplotlib"]
