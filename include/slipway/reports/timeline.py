"""The run's timeline as plain spans and latency points, read from its run record.

Pure data for the charts (:mod:`slipway.reports.charts`): every time is seconds since the
run's first event, so the picture needs no clock and tests need no cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slipway.reports.run import PHASES


@dataclass(frozen=True)
class Span:
    label: str
    start: float
    end: float
    state: str  # colours the bar: passed, failed, rolled-back, running, back-in-service, quarantined

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class LatencySeries:
    """One signal's p99 at points in the run, and the baseline it is judged against."""

    label: str
    points: list[tuple[float, float, float]]  # (seconds since start, p99 ms, baseline p99 ms)
    span: tuple[float, float] | None = None  # a figure measured over a stretch (the probe)


@dataclass(frozen=True)
class Timeline:
    started_at: datetime
    ended_at: datetime
    phases: list[Span] = field(default_factory=list)
    batches: list[Span] = field(default_factory=list)
    nodes: list[Span] = field(default_factory=list)
    latency: list[LatencySeries] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def build_timeline(data: dict[str, Any]) -> Timeline | None:
    """The timeline of a run record; None when it has no events to place anything on."""
    events = [e for e in data.get("events", []) if e.get("at")]
    if not events:
        return None
    times = sorted(_at(e["at"]) for e in events)
    start, end = times[0], times[-1]

    def offset(moment: str | datetime) -> float:
        when = _at(moment) if isinstance(moment, str) else moment
        return (when - start).total_seconds()

    phases: list[Span] = []
    for phase, starts, ends in PHASES:
        begun = [_at(e["at"]) for e in events if e["kind"] in starts]
        ended = [_at(e["at"]) for e in events if e["kind"] in ends]
        if not begun:
            continue
        if ended and max(ended) >= min(begun):
            phases.append(Span(phase, offset(min(begun)), offset(max(ended)), "passed"))
        elif end > min(begun):
            # Begun, never ended, yet the run went on: it stopped inside this phase. (Begun by the
            # very last event, as the backup is by a refusing risk assessment, it never ran.)
            phases.append(Span(phase, offset(min(begun)), offset(end), "unfinished"))

    batches: list[Span] = []
    node_batch: dict[str, float] = {}
    for batch in data.get("batches", []):
        if not batch.get("started_at"):
            continue
        opened = offset(batch["started_at"])
        closed = offset(batch["finished_at"]) if batch.get("finished_at") else offset(end)
        label = f"batch {batch.get('index', len(batches))}"
        batches.append(Span(label, opened, max(closed, opened), str(batch.get("state", "running"))))
        for node in batch.get("nodes", []):
            node_batch[node] = opened

    nodes: dict[str, Span] = {}
    for e in events:
        node = e.get("node")
        if not node:
            continue
        if e["kind"] == "node-uncordoned" and e.get("seconds"):
            back = offset(e["at"])
            nodes[node] = Span(node, max(back - float(e["seconds"]), 0.0), back, "back-in-service")
        elif e["kind"] == "quarantined":
            # Left cordoned: out of service from its batch's start to the end of the run (and on).
            since = node_batch.get(node, offset(e["at"]))
            nodes[node] = Span(node, since, offset(end), "quarantined")

    return Timeline(
        started_at=start,
        ended_at=end,
        phases=phases,
        batches=batches,
        nodes=sorted(nodes.values(), key=lambda s: (s.start, s.label)),
        latency=_latency(data, phases, batches, start),
    )


def _latency(
    data: dict[str, Any], phases: list[Span], batches: list[Span], started_at: datetime
) -> list[LatencySeries]:
    found = []
    probe = (data.get("control_plane") or {}).get("probe")
    control_plane = next((p for p in phases if p.label == "control plane"), None)
    series = (data.get("probe") or {}).get("series")
    if probe and series:
        # The probe over the whole run, point by point, against its baseline.
        base, origin = float(probe["baseline_p99_ms"]), started_at.timestamp()
        points = [(max(0.0, p["at"] - origin), float(p["p99_ms"]), base) for p in series]
        found.append(LatencySeries("API probe p99 (through the load balancer)", points))
    elif probe and control_plane and probe.get("requests"):
        middle = (control_plane.start + control_plane.end) / 2
        point = (middle, float(probe["p99_ms"]), float(probe["baseline_p99_ms"]))
        found.append(
            LatencySeries("API probe p99 (control plane)", [point], (control_plane.start, control_plane.end))
        )
    by_signal: dict[str, list[tuple[float, float, float]]] = {}
    spans = {b.label: b for b in batches}
    for batch in data.get("batches", []):
        span = spans.get(f"batch {batch.get('index')}")
        signals = batch.get("verdict", {}).get("latency", {}).get("signals", [])
        if span is None:
            continue
        for signal in signals:
            by_signal.setdefault(signal["signal"], []).append(
                (span.end, float(signal["batch_ms"]), float(signal["baseline_ms"]))
            )
    found += [LatencySeries(f"{name} p99 (per batch)", points) for name, points in sorted(by_signal.items())]
    return found
