"""§1.1 maturity measured from run records, with plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from slipway.reports.maturity import RunFacts, assess, render_markdown, run_facts

START = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)


def run_record(
    n: int,
    *,
    dag: str = "k8s_cluster_upgrade",
    outcome: str = "upgraded",
    seconds: float = 600.0,
    failures: int = 0,
    run_type: str = "manual",
    policy: str = "fixed",
    risk: bool = True,
    backup: bool = True,
) -> dict[str, Any]:
    """A run record as the DAGs write it: request, risk, batches, probe figures and timeline."""
    began = START + timedelta(days=n)

    def at(offset: float) -> str:
        return (began + timedelta(seconds=offset)).isoformat()

    events = [{"at": at(0), "kind": "run-started", "message": ""}]
    if backup:
        events.append({"at": at(30), "kind": "backup-proven", "message": ""})
    events.append({"at": at(seconds - 60), "kind": "node-uncordoned", "message": "", "seconds": 45.0})
    events.append({"at": at(seconds), "kind": "validated", "message": ""})
    state = {"upgraded": "passed", "rolled-back": "rolled-back", "paused": "passed"}[outcome]
    data: dict[str, Any] = {
        "run_id": f"run-{n}",
        "dag_id": dag,
        "run_type": run_type,
        "request": {"target_version": "1.37.2", "batch_policy": policy, "dry_run": False},
        "batches": [{"index": 0, "state": state, "verdict": {"passed": state == "passed"}}],
        "events": events,
        "worker_phase": {"reason": "paused" if outcome == "paused" else "done"},
    }
    if risk:
        data["risk"] = {"decision": "proceed"}
    if dag == "k8s_cluster_upgrade":
        data["control_plane"] = {"probe": {"requests": 1000, "failures": failures}}
    return data


def facts(*records: dict[str, Any]) -> list[RunFacts]:
    found = [run_facts(r) for r in records]
    assert all(f is not None for f in found)
    return [f for f in found if f is not None]


def test_facts_of_one_run() -> None:
    f = run_facts(run_record(0, seconds=900, failures=2, run_type="scheduled", policy="adaptive"))
    assert f is not None
    assert (f.verdict, f.seconds, f.api_requests, f.api_failures) == ("upgraded", 900.0, 1000, 2)
    assert f.unattended and f.adaptive and f.risk_assessed and f.backup_proven and f.gated
    assert f.worst_node_out_of_service == 45.0


def test_preflight_runs_and_foreign_records_are_not_upgrades() -> None:
    assert run_facts({"dag_id": "k8s_upgrade_preflight", "request": {}}) is None
    assert run_facts({"run_id": "probe"}) is None


def test_no_history_is_manual() -> None:
    found = assess([])
    assert (found.level, found.name, found.success_rate) == (1, "manual", None)
    assert "To reach level 2: upgrades run as code." in render_markdown(found, generated_at=START)


def test_one_run_is_scripted_not_yet_automated() -> None:
    found = assess(facts(run_record(0)))
    assert found.level == 2
    track = next(c for c in found.criteria if c.name == "a track record")
    assert not track.met and track.evidence == "1 finished run(s), 3 needed"


def test_a_clean_track_record_is_automated() -> None:
    found = assess(facts(*(run_record(n) for n in range(3))))
    assert (found.level, found.success_rate, found.median_seconds) == (3, 1.0, 600.0)
    assert (found.api_failures, found.api_requests) == (0, 3000)
    missing = [c.name for c in found.criteria if not c.met]
    assert missing == ["adaptive batching", "unattended runs"]


def test_failures_and_downtime_hold_a_cluster_at_scripted() -> None:
    runs = [run_record(0), run_record(1, outcome="rolled-back"), run_record(2, failures=1), run_record(3)]
    found = assess(facts(*runs))
    assert found.level == 2 and found.success_rate == 0.75
    unmet = {c.name: c.evidence for c in found.criteria if not c.met}
    assert unmet["success rate"] == "75% of finished runs upgraded, 90% needed"
    assert unmet["zero API downtime"] == "1 failed of 4000 probe requests over 4 control-plane run(s)"


def test_paused_runs_count_neither_way_and_dry_runs_are_not_attempts() -> None:
    dry = run_record(5) | {"request": {"target_version": "1.37.2", "batch_policy": "fixed", "dry_run": True}}
    found = assess(facts(*(run_record(n) for n in range(3)), run_record(3, outcome="paused"), dry))
    assert (found.runs, found.attempted, found.success_rate) == (5, 4, 1.0)


def test_a_rejected_approval_is_a_decision_not_a_failed_attempt() -> None:
    rejected = run_record(3) | {
        "risk": {"decision": "approval"},
        "events": [{"at": START.isoformat(), "kind": "approval-rejected", "message": ""}],
        "batches": [],
    }
    found = assess(facts(*(run_record(n) for n in range(3)), rejected))
    assert facts(rejected)[0].verdict == "rejected"
    assert (found.runs, found.attempted, found.success_rate) == (4, 3, 1.0)


def test_adaptive_unattended_risk_gated_runs_are_intelligent() -> None:
    runs = [run_record(n, run_type="scheduled", policy="adaptive") for n in range(4)]
    runs.append(run_record(4, dag="k8s_worker_upgrade", risk=False, backup=False, run_type="scheduled"))
    found = assess(facts(*runs))
    assert (found.level, found.name) == (4, "intelligent"), [c for c in found.criteria if not c.met]
    markdown = render_markdown(found, generated_at=START)
    assert "Level: **4 — intelligent**" in markdown and "To reach level" not in markdown


def test_a_full_run_without_a_proven_backup_is_not_automated() -> None:
    found = assess(facts(run_record(0), run_record(1), run_record(2, backup=False)))
    backup = next(c for c in found.criteria if c.name.startswith("proven backup"))
    assert found.level == 2 and not backup.met
    assert backup.evidence == "2 full upgrade run(s) proved their etcd backup"
