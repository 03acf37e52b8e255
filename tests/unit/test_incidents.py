"""§5.2 incidents derived from run records, with plain data."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.incidents import classify, render_markdown
from slipway.notifications import incident_payload, notification_payload
from slipway.reports.run import render_markdown as render_report


def event(at: str, kind: str, message: str = "", **extra: Any) -> dict[str, Any]:
    return {"at": f"2026-11-28T03:{at}+00:00", "kind": kind, "message": message, **extra}


def test_a_clean_run_or_a_pause_is_no_incident() -> None:
    assert classify({"events": [event("00:00", "run-started"), event("10:00", "validated")]}) is None
    assert classify({"events": [event("00:00", "paused", "window closing")]}) is None
    assert classify({"control_plane": {"probe": {"requests": 900, "failures": 0}}, "events": []}) is None


def test_a_rolled_back_batch_is_sev2_with_its_timeline_and_what_is_left() -> None:
    data = {
        "dag_id": "k8s_worker_upgrade",
        "events": [
            event("00:00", "run-started"),
            event("05:00", "quarantined", "node general-1 quarantined (left cordoned): shop/ledger"),
            event("09:00", "batch-failed", "batch 2: node compute-0 is NotReady"),
            event("09:01", "incident-declared", "SEV2: batch 2 failed validation", severity="SEV2"),
            event("11:00", "batch-rolled-back", "batch 2: compute-0 rolled back"),
        ],
        "worker_phase": {"quarantined": ["general-1"], "remaining": 4},
    }
    incident = classify(data)
    assert incident is not None
    assert incident.severity == "SEV2"
    assert incident.title == "k8s_worker_upgrade: batch 2: node compute-0 is NotReady"
    assert incident.detected_at == data["events"][1]["at"]  # the quarantine came first
    assert incident.declared_at == data["events"][3]["at"]
    assert [s["kind"] for s in incident.signals] == ["quarantined", "batch-failed", "batch-rolled-back"]
    assert incident.rolled_back == ["batch 2: compute-0 rolled back"]
    assert incident.left_for_a_human == [
        "node general-1 quarantined (cordoned, old version)",
        "4 worker node(s) not yet at the target",
    ]
    section = "\n".join(render_markdown(incident))
    assert "Severity: **SEV2**" in section and "Left for a human: node general-1" in section


def test_control_plane_rollback_and_restore_are_sev1() -> None:
    data = {
        "events": [
            event("01:00", "control-plane-verification-failed", "etcd data consistency not proven"),
            event("02:00", "etcd-restored", "etcd restored from the proven snapshot"),
            event("03:00", "control-plane-rolled-back", "kube-apiserver-0: rolled back"),
        ],
    }
    incident = classify(data)
    assert incident is not None and incident.severity == "SEV1"
    assert incident.title.endswith("etcd data consistency not proven")
    assert incident.rolled_back == ["etcd restored from the proven snapshot", "kube-apiserver-0: rolled back"]
    assert any("writes made after the snapshot are lost" in f for f in incident.follow_ups)


@pytest.mark.parametrize(
    ("failures", "expected"),
    [
        (0, None),
        (1, ("SEV2", "1 of 1869 API probe requests failed while the control plane moved")),
    ],
)
def test_failed_api_requests_during_the_control_plane_are_an_incident(
    failures: int, expected: tuple[str, str] | None
) -> None:
    data = {
        "events": [event("00:00", "run-started"), event("04:00", "probe", "API probe")],
        "control_plane": {"probe": {"requests": 1869, "failures": failures}},
    }
    incident = classify(data)
    found = (incident.severity, incident.signals[0]["message"]) if incident else None
    assert found == expected


def test_notifications_and_report_carry_the_severity() -> None:
    data = {
        "run_id": "r1",
        "dag_id": "k8s_cluster_upgrade",
        "request": {"target_version": "1.37.2"},
        "batches": [{"index": 0, "pool": "general", "nodes": ["general-0"], "state": "rolled-back"}],
        "events": [event("09:00", "batch-rolled-back", "batch 0: general-0 rolled back")],
    }
    payload = notification_payload(data, "rolled-back", "/r/report.md")
    assert payload["severity"] == "SEV2" and payload["text"].startswith(":warning: [SEV2] Slipway")
    page = incident_payload(data, "SEV2", "batch 0 failed validation")
    assert page["text"].endswith("batch 0 failed validation — rollback started")
    assert "## Incident (post-incident report)" in render_report(data, "rolled-back")
    clean = data | {"batches": [], "events": []}
    assert notification_payload(clean, "upgraded", "")["severity"] is None
    assert "## Incident" not in render_report(clean, "upgraded")
