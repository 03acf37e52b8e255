"""The report's pictures, drawn as SVG by matplotlib.

Why matplotlib: a long-maintained, widely packaged library whose SVG backend needs no
browser, JavaScript or network to draw, writes plain inline ``<svg>`` a report page can
carry in one file, and can be made byte-for-byte reproducible (fixed hash salt, no date).
The object API (``Figure``, no ``pyplot``) keeps no global state, so concurrent tasks in
one worker process cannot draw into each other's figures.
"""

from __future__ import annotations

import io
import re

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from slipway.reports.durations import human_duration
from slipway.reports.timeline import Span, Timeline

COLOURS = {
    "passed": "#4c9a2a",
    "back-in-service": "#3b75af",
    "quarantined": "#d98c1f",
    "running": "#9e9e9e",
    "unfinished": "#9e9e9e",
    "failed": "#c0392b",
    "rolled-back": "#8e44ad",
}
ROW_INCHES = 0.26
# Beyond this many rows the labels would overlap: bars are still drawn, one per node.
MAX_LABELLED_ROWS = 120
GID_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    # Text stays text (searchable, small); fixed salt and no date make the output reproducible.
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "slipway"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buffer.getvalue()
    # Inline in HTML: drop the XML prologue and DOCTYPE, keep the <svg> element.
    return text[text.index("<svg") :]


def _time_axis(seconds: float) -> FuncFormatter:
    # Ticks read like the text: "+3 min", not 180.
    return FuncFormatter(lambda x, _pos: "0" if x <= 0 else f"+{human_duration(x)}")


def gid(kind: str, label: str) -> str:
    """The SVG id of one bar (``node-general-00``): lets tests and stylesheets find it."""
    return f"{kind}-{GID_SAFE.sub('_', label)}"


def timeline_svg(timeline: Timeline) -> str:
    """A Gantt chart: phases, then batches, then each node's time out of service."""
    rows: list[tuple[str, str, Span]] = [("phase", s.label, s) for s in timeline.phases]
    rows += [("batch", s.label, s) for s in timeline.batches]
    rows += [("node", s.label, s) for s in timeline.nodes]
    height = max(2.0, ROW_INCHES * len(rows) + 1.2)
    figure = Figure(figsize=(10, height))
    axes = figure.add_subplot()
    for y, (kind, label, span) in enumerate(rows):
        # A bar of zero width would vanish: a second is the least anything took.
        (bar,) = axes.barh(
            y, max(span.seconds, 1.0), left=span.start, height=0.7, color=COLOURS.get(span.state, "#777777")
        )
        bar.set_gid(gid(kind, label))
        if len(rows) <= MAX_LABELLED_ROWS:
            # Offset in points: a leading space would collapse in the SVG's text.
            axes.annotate(
                human_duration(span.seconds),
                (span.end, y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
                color="#333",
            )
    labelled = len(rows) <= MAX_LABELLED_ROWS
    axes.set_yticks(range(len(rows)) if labelled else [])
    if labelled:
        axes.set_yticklabels([f"{label}" for _, label, _ in rows], fontsize=8)
    axes.invert_yaxis()
    # Rules between the three groups.
    for edge in (len(timeline.phases), len(timeline.phases) + len(timeline.batches)):
        if 0 < edge < len(rows):
            axes.axhline(edge - 0.5, color="#cccccc", linewidth=0.8)
    axes.set_xlim(0, max(timeline.seconds, 1.0) * 1.08)
    axes.xaxis.set_major_formatter(_time_axis(timeline.seconds))
    axes.xaxis.set_major_locator(MaxNLocator(8))
    axes.set_xlabel(f"time since the run started ({timeline.started_at.isoformat()})", fontsize=8)
    axes.tick_params(axis="x", labelsize=7)
    axes.grid(axis="x", color="#eeeeee")
    axes.set_axisbelow(True)
    _legend(axes, {span.state for _, _, span in rows})
    return _svg(figure)


def _legend(axes: object, states: set[str]) -> None:
    from matplotlib.patches import Patch

    names = {
        "back-in-service": "node out of service (cordon to uncordon)",
        "quarantined": "node quarantined (still cordoned)",
    }
    handles = [Patch(color=COLOURS[s], label=names.get(s, s)) for s in COLOURS if s in states]
    if handles:
        # Above the bars, never over them.
        axes.legend(  # type: ignore[attr-defined]
            handles=handles, fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=4, frameon=False
        )


def latency_svg(timeline: Timeline) -> str:
    """Each latency signal's p99 over the run (solid) against its baseline (dashed, same colour)."""
    figure = Figure(figsize=(10, 3.2))
    axes = figure.add_subplot()
    values = []
    for index, series in enumerate(timeline.latency):
        colour = f"C{index % 10}"
        if series.span is not None:
            (_, p99, base) = series.points[0]
            start, end = series.span
            axes.hlines(p99, start, end, colors=colour, linewidth=2.5, label=f"{series.label}: {p99:.1f} ms")
            axes.hlines(base, start, end, colors=colour, linestyles="dashed", linewidth=1.2)
            values += [p99, base]
            continue
        xs = [x for x, _, _ in series.points]
        axes.plot(xs, [p for _, p, _ in series.points], marker="o", color=colour, label=series.label)
        axes.plot(xs, [b for _, _, b in series.points], linestyle="dashed", color=colour, linewidth=1.2)
        values += [v for _, p, b in series.points for v in (p, b)]
    positive = [v for v in values if v > 0]
    # Signals range from a few ms (reads) to hundreds (lists): a log axis keeps them all legible.
    if positive and max(positive) / min(positive) > 20:
        axes.set_yscale("log")
    axes.set_xlim(0, max(timeline.seconds, 1.0) * 1.02)
    axes.xaxis.set_major_formatter(_time_axis(timeline.seconds))
    axes.xaxis.set_major_locator(MaxNLocator(8))
    axes.set_ylabel("p99 latency (ms)", fontsize=8)
    axes.set_xlabel(
        "time since the run started; dashed: the baseline measured before the upgrade", fontsize=8
    )
    axes.tick_params(labelsize=7)
    axes.grid(color="#eeeeee")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.set_axisbelow(True)
    return _svg(figure)
