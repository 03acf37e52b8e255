"""The fleet report: each cluster's path, risk and verdict side by side, and the fleet's figures.

Built from plain data (the plan, each cluster's preflight summary, each cluster's run facts and
the final decision) so it is tested without Airflow or a cluster. Written as JSON and
Markdown, redacted like every run report.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slipway.fleet.waves import Action, FleetPlan
from slipway.redact import redact, redact_value


def path_text(plan_summary: Mapping[str, Any]) -> str:
    """``1.36.3 → 1.37.2 (3 hops)`` from a preflight plan summary; the refusal when there is none."""
    refused = plan_summary.get("refused")
    if refused:
        return f"refused: {refused.get('reason', '')}"
    hops = plan_summary.get("hops", [])
    target = hops[-1]["to"] if hops else plan_summary.get("current", "?")
    return f"{plan_summary.get('current', '?')} → {target} ({len(hops)} hop{'s' if len(hops) != 1 else ''})"


def cluster_run_facts(
    run_id: str, outcome: str, verdict: str | None, data: Mapping[str, Any]
) -> dict[str, Any]:
    """One started cluster's entry for :func:`build_fleet_report`, from its run record
    (``data``, empty when it could not be read): the incident is the one the run's own
    report declares (:func:`slipway.incidents.classify`), named by its severity."""
    from slipway import incidents
    from slipway.reports.maturity import run_facts

    record = dict(data)
    run = run_facts(record) if record else None
    incident = incidents.classify(record) if record else None
    return {
        "outcome": outcome,
        "verdict": verdict or outcome,
        "run_id": run_id,
        "report": (record.get("report") or {}).get("markdown"),
        "incident": f"{incident.severity}: {incident.title}" if incident else None,
        "seconds": run.seconds if run else None,
        "api_requests": run.api_requests if run else None,
        "api_failures": run.api_failures if run else None,
    }


def build_fleet_report(
    plan: FleetPlan,
    preflight: Mapping[str, Mapping[str, Any]],
    runs: Mapping[str, Mapping[str, Any]],
    action: Action,
    *,
    wall_seconds: float | None = None,
) -> dict[str, Any]:
    """One row per cluster in strategy order, plus the fleet's verdict and figures.

    :param preflight: per cluster ``{"path", "risk", "decision", "blockers"}``.
    :param runs: per cluster that started ``{"outcome", "verdict", "run_id", "report",
        "incident", "seconds", "api_requests", "api_failures"}`` (any may be missing).
    :param wall_seconds: the fleet run's own duration so far (set against the sum of its
        clusters' runs: what the strategy's order, soaks and gates cost or saved).
    """
    rows = []
    for name in plan.clusters:
        check = preflight.get(name, {})
        run = runs.get(name, {})
        rows.append(
            {
                "cluster": name,
                "stage": plan.stage_of(name),
                "group": plan.group_of(name),
                "path": check.get("path", ""),
                "risk": check.get("risk", ""),
                "decision": check.get("decision", ""),
                "blockers": list(check.get("blockers", [])),
                "outcome": run.get("outcome", "not-started"),
                "verdict": run.get("verdict") or run.get("outcome", "not-started"),
                "run_id": run.get("run_id"),
                "report": run.get("report"),
                "incident": run.get("incident"),
                "seconds": run.get("seconds"),
                "api_requests": run.get("api_requests"),
                "api_failures": run.get("api_failures"),
            }
        )
    attempted = [r for r in rows if r["outcome"] not in ("not-started", "rejected", "running")]
    succeeded = [r for r in attempted if r["outcome"] == "succeeded"]
    durations = [float(r["seconds"]) for r in attempted if r["seconds"] is not None]
    verdict = action.verdict or ("in-progress" if action.kind != "done" else "upgraded")
    return {
        "fleet": plan.name,
        "verdict": verdict,
        "decision": action.to_dict(),
        "excluded": list(plan.excluded),
        "clusters": rows,
        "figures": {
            "clusters": len(rows),
            "attempted": len(attempted),
            "succeeded": len(succeeded),
            "success_rate": round(len(succeeded) / len(attempted), 3) if attempted else None,
            "median_seconds": statistics.median(durations) if durations else None,
            "sum_seconds": sum(durations) if durations else None,
            "wall_seconds": round(wall_seconds, 1) if wall_seconds is not None else None,
            "api_failures": sum(int(r["api_failures"] or 0) for r in rows),
            "api_requests": sum(int(r["api_requests"] or 0) for r in rows),
        },
    }


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "–"
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_fleet_markdown(report: Mapping[str, Any]) -> str:
    decision = report["decision"]
    lines = [f"# Fleet upgrade: {report['fleet']}", "", f"- Verdict: **{report['verdict']}**"]
    lines.append(f"- Decision: {decision['reason']}")
    if decision["kind"] == "halt":
        lines.append(f"- Halted by: **{decision['failed']}**")
        lines.append(f"- Untouched: {', '.join(decision['untouched']) or 'none'}")
        if decision["clusters"]:
            lines.append(f"- Still running when halted: {', '.join(decision['clusters'])}")
        culprit = next((r for r in report["clusters"] if r["cluster"] == decision["failed"]), None)
        if culprit:
            lines.append(f"- Its report: {_cell(culprit['report'])}; incident: {_cell(culprit['incident'])}")
    if report["excluded"]:
        lines.append(f"- Excluded by the strategy: {', '.join(report['excluded'])}")
    lines += [
        "",
        "| cluster | stage/group | path | risk | verdict | duration | API failures | report |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["clusters"]:
        risk = r["risk"] + (f" ({r['decision']})" if r["decision"] else "")
        blockers = f"; blockers: {', '.join(r['blockers'])}" if r["blockers"] else ""
        seconds = f"{float(r['seconds']):.0f}s" if r["seconds"] is not None else None
        probe = f"{r['api_failures']}/{r['api_requests']}" if r["api_requests"] else None
        cells = [r["cluster"], f"{r['stage']}/{r['group']}", r["path"], risk + blockers, r["verdict"]]
        lines.append("| " + " | ".join(_cell(c) for c in [*cells, seconds, probe, r["report"]]) + " |")
    f = report["figures"]
    rate = f"{f['success_rate']:.0%}" if f["success_rate"] is not None else "no attempt yet"
    lines += [
        "",
        "## Figures",
        "",
        f"- Clusters: {f['clusters']}, attempted {f['attempted']}, succeeded {f['succeeded']} "
        f"(success rate {rate})",
        f"- Median upgrade duration: {_seconds(f['median_seconds'])}; sum of the single-cluster runs: "
        f"{_seconds(f['sum_seconds'])}",
        f"- Fleet wall time: {_seconds(f.get('wall_seconds'))} (against {_seconds(f['sum_seconds'])} for its "
        "clusters' runs added up)",
        f"- API downtime: {f['api_failures']} failed of {f['api_requests']} probe requests across the fleet",
        "",
    ]
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.0f}s"


def write_fleet_report(report: Mapping[str, Any], folder: Path) -> dict[str, Path]:
    """``fleet-report.json`` and ``fleet-report.md`` in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    clean = redact_value(dict(report))
    json_path, md_path = folder / "fleet-report.json", folder / "fleet-report.md"
    json_path.write_text(json.dumps(clean, indent=2, sort_keys=True, default=str))
    md_path.write_text(redact(render_fleet_markdown(clean)))
    return {"json": json_path, "markdown": md_path}
