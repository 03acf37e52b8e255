"""The run report as one self-contained HTML page: the timeline and latency pictures inline
as SVG, then the same facts as the Markdown report, with durations as people say them.

Every string from the record is escaped; sections with nothing in them are left out.
"""

from __future__ import annotations

from html import escape
from typing import Any

from slipway import incidents
from slipway.reports.charts import latency_svg, timeline_svg
from slipway.reports.durations import human_duration
from slipway.reports.prediction import PhaseComparison
from slipway.reports.run import (
    RISK_COLUMNS,
    _latency_cell,
    phase_timings,
    probe_sentence,
    risk_rows,
    whole_run_probe_sentence,
)
from slipway.reports.timeline import build_timeline

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:70rem;color:#222;padding:0 1rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f5}.verdict{font-weight:bold}.bad{color:#b00020}
figure{margin:0;overflow-x:auto}svg{max-width:100%;height:auto}
ul.events{font-size:.85rem}code{font-size:.85em}
"""


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, *parts: str, anchor: str = "") -> str:
    body = "".join(p for p in parts if p)
    if not body:
        return ""  # an empty section is left out, heading and all
    ident = f' id="{escape(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{escape(title)}</h2>{body}</section>"


def _para(text: str) -> str:
    return f"<p>{escape(text)}</p>" if text else ""


def _list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>" if items else ""


def _phases(data: dict[str, Any], comparisons: list[PhaseComparison]) -> str:
    if comparisons:
        rows = [
            [
                c.phase,
                human_duration(c.predicted.seconds),
                c.predicted.basis,
                human_duration(c.actual) if c.actual is not None else "not finished",
                f"{c.ratio:.2f}" if c.ratio is not None else "",
            ]
            for c in comparisons
        ]
        return _table(["phase", "predicted", "predicted from", "actual", "actual / predicted"], rows)
    timings = phase_timings(data.get("events", []))
    return _table(["phase", "time"], [[p, human_duration(s)] for p, s in timings]) if timings else ""


def _plan(data: dict[str, Any]) -> str:
    hops = (data.get("plan") or {}).get("hops", [])
    rows = [
        [str(h.get("step", i + 1)), h["kind"], h["from"], h["to"], h["risk"], h["testing"]]
        for i, h in enumerate(hops)
    ]
    return _table(["step", "kind", "from", "to", "risk", "testing"], rows) if rows else ""


def _checks(data: dict[str, Any]) -> str:
    rows = [
        [c["name"], c["severity"], "yes" if c["passed"] else "NO", c["summary"], c.get("mitigation", "")]
        for c in data.get("checks", [])
    ]
    return _table(["check", "severity", "passed", "summary", "mitigation"], rows) if rows else ""


def _risk(data: dict[str, Any]) -> str:
    risk = data.get("risk")
    if not risk:
        return ""
    rows = risk_rows(risk)
    table = _table(list(RISK_COLUMNS), rows)
    return (
        _para(f"Decision: {risk.get('decision')}")
        + _list([str(r) for r in risk.get("reasons", [])])
        + (table if rows else "")
    )


def _control_plane(data: dict[str, Any]) -> str:
    control_plane = data.get("control_plane") or {}
    rows = [
        [
            name,
            step.get("from", ""),
            step.get("to", ""),
            human_duration(step.get("seconds", 0)),
            step.get("action", ""),
        ]
        for name, step in control_plane.get("steps", {}).items()
    ]
    out = _table(["component", "from", "to", "time", "action"], rows) if rows else ""
    defrag = control_plane.get("defragmentation")
    if defrag:
        members = ", ".join(
            f"{d['member']} {d['db_size_before'] / 2**20:.1f}→{d['db_size_after'] / 2**20:.1f} MiB"
            for d in defrag
        )
        out += _para(f"etcd defragmented before the upgrade, in this order (leader last): {members}")
    probe = control_plane.get("probe")
    if probe:
        out += _para(probe_sentence(probe))
    return out


def _whole_run_probe(data: dict[str, Any]) -> str:
    return _para(whole_run_probe_sentence(data["probe"])) if data.get("probe") else ""


def _batch_time(batch: dict[str, Any]) -> str:
    from datetime import datetime

    if not batch.get("started_at") or not batch.get("finished_at"):
        return ""
    seconds = (
        datetime.fromisoformat(batch["finished_at"]) - datetime.fromisoformat(batch["started_at"])
    ).total_seconds()
    return human_duration(max(seconds, 0.0))


def _batches(data: dict[str, Any]) -> str:
    rows = [
        [
            str(b["index"]),
            b.get("pool", ""),
            ", ".join(b["nodes"]),
            b["state"],
            _batch_time(b),
            _latency_cell(b.get("verdict", {}).get("latency", {})),
            "; ".join(b.get("verdict", {}).get("problems", [])),
        ]
        for b in data.get("batches", [])
    ]
    out = (
        _table(["batch", "pool", "nodes", "state", "time", "p99 vs baseline", "problems"], rows)
        if rows
        else ""
    )
    phase = data.get("worker_phase")
    if phase:
        out += _para(
            f"Worker phase: {phase['reason']}, {phase['passed']}/{phase['batches']} batches passed, "
            f"{phase['remaining']} nodes remaining, quarantined: {', '.join(phase['quarantined']) or 'none'}"
        )
        if phase.get("refused"):
            out += _para(f"Refused for capacity: {phase['refused']}")
    return out


def _incident(data: dict[str, Any]) -> str:
    incident = incidents.classify(data)
    if incident is None:
        return ""
    signals = [f"{s['at']} {s['severity']} {s['kind']}: {s['message']}" for s in incident.signals]
    return (
        _para(f"Severity: {incident.severity} — {incident.title}")
        + _para(
            f"First signal: {incident.detected_at}; "
            f"declared: {incident.declared_at or 'at the end of the run'}"
        )
        + _list(signals)
        + _para("Rolled back: " + ("; ".join(incident.rolled_back) or "nothing"))
        + _para("Left for a human: " + ("; ".join(incident.left_for_a_human) or "nothing"))
        + _list(incident.follow_ups)
    )


def render_html(data: dict[str, Any], verdict: str, comparisons: list[PhaseComparison] | None = None) -> str:
    """The whole page; ``comparisons`` (predicted vs actual per phase) replace the plain phase times."""
    request = data.get("request", {})
    timeline = build_timeline(data)
    pictures = ""
    nodes_table = ""
    latency = ""
    total = ""
    if timeline is not None:
        total = f", {human_duration(timeline.seconds)} from first to last event"
        if timeline.phases or timeline.batches or timeline.nodes:
            pictures = f"<figure>{timeline_svg(timeline)}</figure>"
        if timeline.latency:
            latency = f"<figure>{latency_svg(timeline)}</figure>"
        rows = [
            [
                s.label,
                human_duration(s.seconds),
                "back in service" if s.state == "back-in-service" else "still cordoned",
            ]
            for s in timeline.nodes
        ]
        nodes_table = _table(["node", "out of service", "now"], rows) if rows else ""
    events = data.get("events", [])
    event_list = (
        '<ul class="events">'
        + "".join(
            f"<li><code>{escape(e['at'])}</code> <b>{escape(e['kind'])}</b> {escape(str(e['message']))}</li>"
            for e in events
        )
        + "</ul>"
        if events
        else ""
    )
    title = f"Slipway run report: {data.get('run_id', '')}"
    summary = (
        f"<p>DAG <code>{escape(str(data.get('dag_id', '')))}</code> · verdict "
        f'<span class="verdict">{escape(verdict)}</span>{escape(total)} · target '
        f"<code>{escape(str(request.get('target_version', '?')))}</code>, strategy "
        f"{escape(str(request.get('strategy', '?')))}, "
        f"batch policy {escape(str(request.get('batch_policy', '?')))}, "
        f"max unavailable {escape(str(request.get('max_unavailable_percent', '?')))} %</p>"
    )
    body = "".join(
        [
            _section("Timeline", pictures, anchor="timeline"),
            _section("API latency against the baseline", latency, anchor="latency"),
            _section("Time per phase", _phases(data, comparisons or []), anchor="phases"),
            _section("Upgrade path", _plan(data)),
            _section("Preflight checks", _checks(data)),
            _section("Risk assessment", _risk(data)),
            _section("Control plane", _control_plane(data)),
            _section("API probe over the whole run", _whole_run_probe(data), anchor="probe"),
            _section("Worker batches", _batches(data)),
            _section("Time out of service per node", nodes_table, anchor="nodes"),
            _section("Incident", _incident(data)),
            _section("Events", event_list, anchor="events"),
        ]
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{summary}{body}</body></html>\n"
    )
