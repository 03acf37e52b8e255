"""The fleet report from plain data: rows side by side, the halt, the figures."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from slipway.fleet.report import (
    build_fleet_report,
    cluster_run_facts,
    path_text,
    render_fleet_markdown,
    write_fleet_report,
)
from slipway.fleet.waves import ClusterRecord, FleetPlan, GroupPlan, StagePlan, next_action

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
PLAN = FleetPlan(
    "fleet",
    (
        StagePlan("canary", (GroupPlan("c", ("canary",)),), 1, 60),
        StagePlan("prod", (GroupPlan("eu", ("eu1", "eu2")),), 1, 0),
    ),
    excluded=("legacy",),
)
SUMMARY = {"current": "1.36.3", "hops": [{"to": "1.37.0"}, {"to": "1.37.2"}]}
PREFLIGHT = {
    name: {"path": path_text(SUMMARY), "risk": "medium", "decision": "proceed", "blockers": []}
    for name in ("canary", "eu1", "eu2")
}


def test_path_text() -> None:
    assert path_text(SUMMARY) == "1.36.3 → 1.37.2 (2 hops)"
    assert path_text({"current": "1.37.2", "hops": []}) == "1.37.2 → 1.37.2 (0 hops)"
    assert path_text({"refused": {"reason": "downgrade"}}) == "refused: downgrade"


def test_halted_fleet_names_the_cluster_its_report_and_the_untouched() -> None:
    action = next_action(PLAN, {"canary": ClusterRecord("rolled-back", T0)}, {}, T0)
    runs = {
        "canary": {
            "outcome": "rolled-back",
            "verdict": "rolled-back",
            "run_id": "fleet__r1__canary",
            "report": "/reports/k8s_cluster_upgrade/fleet__r1__canary/upgrade-report.md",
            "incident": "SEV1",
            "seconds": 300.0,
            "api_requests": 1000,
            "api_failures": 0,
        }
    }
    report = build_fleet_report(PLAN, PREFLIGHT, runs, action)
    assert report["verdict"] == "rolled-back"
    assert [r["verdict"] for r in report["clusters"]] == ["rolled-back", "not-started", "not-started"]
    assert report["figures"]["attempted"] == 1
    assert report["figures"]["success_rate"] == 0.0
    md = render_fleet_markdown(report)
    assert "- Halted by: **canary**" in md
    assert "- Untouched: eu1, eu2" in md
    assert "upgrade-report.md; incident: SEV1" in md
    assert (
        "| canary | canary/c | 1.36.3 → 1.37.2 (2 hops) | medium (proceed) | rolled-back | 300s | 0/1000 |"
        in md
    )
    assert "Excluded by the strategy: legacy" in md


def test_done_fleet_figures() -> None:
    records = {n: ClusterRecord("succeeded", T0) for n in PLAN.clusters}
    action = next_action(PLAN, records, {}, T0)
    runs = {
        n: {
            "outcome": "succeeded",
            "verdict": "upgraded",
            "seconds": s,
            "api_requests": 500,
            "api_failures": f,
        }
        for n, s, f in (("canary", 100.0, 0), ("eu1", 200.0, 1), ("eu2", 400.0, 0))
    }
    report = build_fleet_report(PLAN, PREFLIGHT, runs, action, wall_seconds=812.34)
    figures = report["figures"]
    assert (report["verdict"], figures["success_rate"], figures["median_seconds"]) == ("upgraded", 1.0, 200.0)
    assert (figures["sum_seconds"], figures["api_failures"], figures["api_requests"]) == (700.0, 1, 1500)
    assert figures["wall_seconds"] == 812.3
    md = render_fleet_markdown(report)
    assert "success rate 100%" in md
    assert "- Fleet wall time: 812s (against 700s for its clusters' runs added up)" in md


def test_blockers_show_next_to_the_risk() -> None:
    preflight = dict(PREFLIGHT) | {
        "eu2": {"path": "x", "risk": "critical", "decision": "refuse", "blockers": ["etcd-health"]}
    }
    action = next_action(PLAN, {}, {}, T0)
    md = render_fleet_markdown(build_fleet_report(PLAN, preflight, {}, action))
    assert "critical (refuse); blockers: etcd-health" in md
    assert "- Verdict: **in-progress**" in md


def test_written_files_are_redacted(tmp_path: Path) -> None:
    action = next_action(PLAN, {}, {}, T0)
    runs = {"canary": {"outcome": "running", "report": "https://user:s3cret@example.com/r"}}
    paths = write_fleet_report(build_fleet_report(PLAN, PREFLIGHT, runs, action), tmp_path)
    assert "s3cret" not in paths["markdown"].read_text()
    assert "s3cret" not in paths["json"].read_text()
    assert json.loads(paths["json"].read_text())["clusters"][0]["outcome"] == "running"


def test_a_rolled_back_child_run_names_its_incident_in_the_fleet_report() -> None:
    """The child's record has no "incident" key: the incident is the one its own report
    declares from the timeline (a control-plane rollback: SEV1)."""
    record = {
        "dag_id": "k8s_cluster_upgrade",
        "report": {"markdown": "/reports/canary/report.md"},
        "events": [
            {"at": "2026-12-05T12:00:00+00:00", "kind": "control-plane-step-failed", "message": "apiserver"},
            {
                "at": "2026-12-05T12:01:00+00:00",
                "kind": "control-plane-rolled-back",
                "message": "back to 1.36.3",
            },
        ],
    }
    facts = cluster_run_facts("fleet__r1__canary", "rolled-back", "rolled-back", record)
    assert facts["incident"] is not None and facts["incident"].startswith("SEV1: ")
    assert facts["report"] == "/reports/canary/report.md"
    action = next_action(PLAN, {"canary": ClusterRecord("rolled-back", T0)}, {}, T0)
    text = render_fleet_markdown(build_fleet_report(PLAN, PREFLIGHT, {"canary": facts}, action))
    assert "incident: SEV1: k8s_cluster_upgrade: apiserver" in text
    clean = cluster_run_facts("fleet__r1__eu1", "succeeded", "upgraded", {"dag_id": "k8s_cluster_upgrade"})
    assert clean["incident"] is None
