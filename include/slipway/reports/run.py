"""The evidence pack of one run, rendered from its run record.

Reports are attached to change requests and mailed around: both files are redacted
(:mod:`slipway.redact`) as they are written, whatever the record holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slipway import artefacts, incidents
from slipway.redact import redact, redact_value

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

GREEN_VERDICTS = ("upgraded", "paused", "dry-run", "preflight-passed", "preflight-needs-approval")


def reports_root() -> Path:
    """This worker's local artefact folder (``$SLIPWAY_REPORTS_DIR``, absolute): working files
    only; what other tasks read goes to the artefact store (:func:`report_dir`)."""
    return artefacts.local_root()


def run_verdict(data: dict[str, Any]) -> str:
    """One word for how a run ended, derived from its record (never from task states)."""
    batches = data.get("batches", [])
    events = {e["kind"] for e in data.get("events", [])}
    undone = ("control-plane-rolled-back", "switched-back")
    if events & set(undone) or any(b.get("state") == "rolled-back" for b in batches):
        return "rolled-back"
    risk = data.get("risk", {})
    if risk.get("decision") == "refuse":
        return "refused"
    if "approval-rejected" in events:
        return "rejected"
    if "approval-requested" in events and not events & {
        "approval-granted",
        "approval-timed-out",
        "approval-failed",
    }:
        return "awaiting-approval"  # the report the approval page links to, written while it waits
    request = data.get("request", {})
    if data.get("dag_id") == "k8s_upgrade_preflight":
        return "preflight-passed" if risk.get("decision") == "proceed" else "preflight-needs-approval"
    if request.get("dry_run"):
        return "dry-run"
    phase = data.get("worker_phase")
    if not phase:
        return "failed"
    if phase["reason"] == "done":
        return "upgraded"
    return "paused" if phase["reason"] == "paused" else "incomplete"


def safe_run_name(run_id: str) -> str:
    """A folder name for any run id (Airflow run ids hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id)


def report_dir(dag_id: str, run_id: str) -> ObjectStoragePath:
    """Where one run's reports go in the artefact store: ``<store>/<dag>/<run>`` (by default
    the local folder ``$SLIPWAY_REPORTS_DIR``)."""
    return artefacts.root() / dag_id / safe_run_name(run_id)


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows
    ]
    return lines


RISK_COLUMNS = ("category", "risk", "probability", "impact", "score", "level", "mitigations")


def risk_rows(risk: dict[str, Any]) -> list[list[str]]:
    """One row per risk of the matrix, in :data:`RISK_COLUMNS` order (both reports' table)."""
    return [
        [
            i["category"],
            i["name"],
            str(i["probability"]),
            str(i["impact"]),
            str(i["score"]),
            i["level"],
            "; ".join(i.get("mitigations", [])),
        ]
        for i in risk.get("items", [])
    ]


def _table_or_nothing(rows: list[list[str]], header: list[str]) -> list[str]:
    """No rows, no table: a bare header reads like something is missing."""
    return _table(rows, header) if rows else []


def _duration(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return f"{seconds:.0f}s"


# (phase, events that start it, events that end it): the first start and the last end count.
PHASES = (
    ("preparation", ("run-started",), ("risk-assessed",)),
    ("etcd backup", ("risk-assessed",), ("backup-proven", "backup-failed")),
    (
        "control plane",
        ("backup-proven",),
        ("control-plane-verified", "control-plane-rolled-back", "control-plane-verification-failed"),
    ),
    ("workers", ("batch-opened",), ("batch-passed", "batch-failed", "batch-rolled-back")),
    ("validation", ("worker-phase-ended",), ("validated", "validation-failed")),
)


def probe_sentence(probe: dict[str, Any], *, bold: bool = False) -> str:
    """What the API probe saw while the control plane moved, in one sentence."""
    failed = f"{probe.get('failures', 0)} failed"
    dropped = probe.get("dropped_by_etcd", 0)
    if dropped:
        failed += f" ({dropped} of them refused by etcd, unapplied, while its leader moved)"
    text = (
        f"API probe during the control-plane upgrade: {probe.get('requests', 0)} requests, "
        f"{f'**{failed}**' if bold else failed}, p99 {probe.get('p99_ms', 0):.1f} ms "
        f"(baseline p99 {probe.get('baseline_p99_ms', 0):.1f} ms, ratio {probe.get('p99_ratio', 0):.2f})"
    )
    fresh = probe.get("new_connections")
    if not fresh:
        return text  # a record from before the new-connection path was measured
    return (
        f"{text}; disrupted {probe.get('disruption_seconds', 0):.1f} s. On new connections: "
        f"{fresh.get('requests', 0)} requests, {fresh.get('failures', 0)} failed, "
        f"disrupted {fresh.get('disruption_seconds', 0):.1f} s"
    )


def whole_run_probe_sentence(whole: dict[str, Any]) -> str:
    """The probe over the whole run: each load-balancer path (the bar is 0 disruption), then
    each apiserver asked directly (its own restarts, which the load balancer must hide)."""
    text = "API probe over the whole run: " + "; ".join(
        f"{path} connections {f['requests']} requests, {f['failures']} failed, "
        f"disrupted {f['disruption_seconds']:.1f} s"
        for path, f in whole.get("paths", {}).items()
    )
    direct = whole.get("direct") or {}
    if not direct:
        return text
    return (
        f"{text}. Each apiserver asked directly, out of service (restarts the load balancer hides): "
        + ", ".join(
            f"{name} {f['disruption_seconds']:.1f} s ({f['failures']} of {f['requests']} requests failed)"
            for name, f in sorted(direct.items())
        )
    )


def phase_timings(events: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Seconds per phase, read from the timeline; phases the run never reached are left out."""
    at = [(e["kind"], datetime.fromisoformat(e["at"])) for e in events]
    found = []
    for phase, starts, ends in PHASES:
        begun = [t for kind, t in at if kind in starts]
        ended = [t for kind, t in at if kind in ends]
        if begun and ended and max(ended) >= min(begun):
            found.append((phase, (max(ended) - min(begun)).total_seconds()))
    if at:
        found.append(("total", (at[-1][1] - at[0][1]).total_seconds()))
    return found


def render_markdown(data: dict[str, Any], verdict: str, comparisons: Sequence[Any] = ()) -> str:
    """The Markdown page; ``comparisons`` (:func:`slipway.reports.prediction.compare`) add
    predicted against actual time per phase. Sections with nothing in them are left out."""
    request = data.get("request", {})
    out = [
        f"# Slipway run report: {data.get('run_id', '')}",
        "",
        f"- DAG: `{data.get('dag_id', '')}`",
        f"- Verdict: **{verdict}**",
        f"- Target: `{request.get('target_version', '?')}` strategy `{request.get('strategy', '?')}`, "
        f"batch policy `{request.get('batch_policy', '?')}`, "
        f"max unavailable {request.get('max_unavailable_percent', '?')} %",
        "",
    ]
    timings = phase_timings(data.get("events", []))
    if comparisons:
        from slipway.reports.durations import human_duration

        out += ["## Time per phase, predicted and actual", ""]
        out += _table(
            [
                [
                    c.phase,
                    human_duration(c.predicted.seconds),
                    c.predicted.basis,
                    human_duration(c.actual) if c.actual is not None else "not finished",
                ]
                for c in comparisons
            ],
            ["phase", "predicted", "predicted from", "actual"],
        )
        out.append("")
    elif timings:
        out += ["## Time per phase", ""]
        out += _table([[phase, f"{seconds:.0f}s"] for phase, seconds in timings], ["phase", "time"])
        out.append("")
    plan = data.get("plan")
    if plan and plan.get("hops"):
        out += ["## Upgrade path", ""]
        out += _table(
            [
                [
                    str(h.get("step", i + 1)),
                    h["kind"],
                    h["from"],
                    h["to"],
                    h["risk"],
                    h["testing"],
                ]
                for i, h in enumerate(plan.get("hops", []))
            ],
            ["step", "kind", "from", "to", "risk", "testing"],
        )
        out.append("")
    checks = data.get("checks", [])
    if checks:
        out += ["## Preflight checks", ""]
        out += _table(
            [
                [
                    c["name"],
                    c["severity"],
                    "yes" if c["passed"] else "NO",
                    c["summary"],
                    c.get("mitigation", ""),
                ]
                for c in checks
            ],
            ["check", "severity", "passed", "summary", "mitigation"],
        )
        out.append("")
    risk = data.get("risk")
    if risk:
        out += ["## Risk assessment", "", f"Decision: **{risk.get('decision')}**", ""]
        out += [f"- {r}" for r in risk.get("reasons", [])] + [""]
        out += _table_or_nothing(
            risk_rows(risk),
            list(RISK_COLUMNS),
        )
        out.append("")
    control_plane = data.get("control_plane", {})
    if any(control_plane.get(k) for k in ("steps", "defragmentation", "probe")):
        out += ["## Control plane", ""]
        out += _table_or_nothing(
            [
                [
                    name,
                    step.get("from", ""),
                    step.get("to", ""),
                    f"{step.get('seconds', 0):.1f}s",
                    step.get("action", ""),
                ]
                for name, step in control_plane.get("steps", {}).items()
            ],
            ["component", "from", "to", "time", "action"],
        )
        defrag = control_plane.get("defragmentation")
        if defrag:
            members = ", ".join(
                f"{d['member']} {d['db_size_before'] / 2**20:.1f}→{d['db_size_after'] / 2**20:.1f} MiB"
                for d in defrag
            )
            out += ["", f"etcd defragmented before the upgrade, in this order (leader last): {members}"]
        probe = control_plane.get("probe")
        if probe:
            out += ["", probe_sentence(probe, bold=True)]
        out.append("")
    if data.get("probe"):
        out += ["## API probe over the whole run", "", whole_run_probe_sentence(data["probe"]), ""]
    batches = data.get("batches", [])
    if batches:
        out += ["## Worker batches", ""]
        out += _table(
            [
                [
                    str(b["index"]),
                    b.get("pool", ""),
                    ", ".join(b["nodes"]),
                    b["state"],
                    _duration(b.get("started_at"), b.get("finished_at")),
                    _latency_cell(b.get("verdict", {}).get("latency", {})),
                    "; ".join(b.get("verdict", {}).get("problems", [])),
                ]
                for b in batches
            ],
            ["batch", "pool", "nodes", "state", "time", "p99 vs baseline", "problems"],
        )
        out.append("")
    in_service = [e for e in data.get("events", []) if e["kind"] == "node-uncordoned" and e.get("seconds")]
    if in_service:
        out += ["Time out of service per node (cordon → uncordon):", ""]
        out += _table([[e["node"], f"{e['seconds']:.0f}s"] for e in in_service], ["node", "out of service"])
        out.append("")
    phase = data.get("worker_phase")
    if phase:
        out += [
            f"Worker phase: {phase['reason']}, {phase['passed']}/{phase['batches']} batches passed, "
            f"{phase['remaining']} nodes remaining, quarantined: {', '.join(phase['quarantined']) or 'none'}",
            "",
        ]
        if phase.get("refused"):
            out += [f"**Refused for capacity:** {phase['refused']}", ""]
    incident = incidents.classify(data)
    if incident:
        out += incidents.render_markdown(incident)
    events = data.get("events", [])
    if events:
        out += ["## Timeline", ""]
        out += [f"- `{e['at']}` **{e['kind']}** {e['message']}" for e in events]
        out.append("")
    return "\n".join(out)


def _latency_cell(latency: dict[str, Any]) -> str:
    """The batch's worst p99 against the baseline, e.g. ``1.4x apiserver mutating (31/22 ms)``."""
    if "skipped" in latency:
        return str(latency["skipped"])
    signals = latency.get("signals")
    if not signals:
        return "not measured" if not latency else "too few requests to compare"
    worst = signals[0]  # sorted worst first
    return f"{worst['ratio']:.1f}x {worst['signal']} ({worst['batch_ms']:.0f}/{worst['baseline_ms']:.0f} ms)"


def write_run_report(
    data: dict[str, Any], *, dag_id: str, run_id: str, history: Iterable[dict[str, Any]] = ()
) -> dict[str, ObjectStoragePath]:
    """Write ``upgrade-report.json``, ``.md`` and ``.html`` to the artefact store; returns their
    paths there (:func:`slipway.artefacts.location` names them in a record).

    :param history: the cluster's other run records; the runs among them that upgraded
        before this one predict its time per phase (else the stated model does).
    """
    # Imported here: they import this module, and matplotlib is only needed to write a report.
    from slipway.reports.html import render_html
    from slipway.reports.prediction import compare, earlier_upgrades

    folder = report_dir(dag_id, run_id)
    artefacts.make_dirs(folder)
    data = redact_value(data)
    verdict = run_verdict(data)
    json_path = folder / "upgrade-report.json"
    incident = incidents.classify(data)
    found = {"verdict": verdict, "incident": incident.to_dict() if incident else None}
    json_path.write_text(json.dumps(found | data, indent=2, sort_keys=True, default=str))
    md_path = folder / "upgrade-report.md"
    comparisons = compare(data, earlier_upgrades(data, [redact_value(r) for r in history]))
    md_path.write_text(redact(render_markdown(data, verdict, comparisons)))
    html_path = folder / "upgrade-report.html"
    html_path.write_text(redact(render_html(data, verdict, comparisons)))
    return {"json": json_path, "markdown": md_path, "html": html_path}
