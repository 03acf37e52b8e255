"""The run report rendered from a run record: verdict, time per phase, per node, per batch."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.reports.run import phase_timings, render_markdown, run_verdict


def _event(kind: str, at: str, **details: Any) -> dict[str, Any]:
    return {"at": f"2026-11-28T01:{at}+00:00", "kind": kind, "message": kind, **details}


EVENTS = [
    _event("run-started", "00:00"),
    _event("risk-assessed", "00:20"),
    _event("backup-proven", "00:30"),
    _event("etcd-defragmented", "00:40"),
    _event("component-upgraded", "01:00"),
    _event("control-plane-verified", "02:00"),
    _event("batch-opened", "02:05"),
    _event("node-uncordoned", "02:50", node="general-00", seconds=40.0),
    _event("batch-passed", "03:05"),
    _event("batch-opened", "03:06"),
    _event("batch-passed", "04:06"),
    _event("worker-phase-ended", "04:07"),
    _event("validated", "04:17"),
    _event("notified", "04:18"),
]

RECORD: dict[str, Any] = {
    "run_id": "manual__demo",
    "dag_id": "k8s_cluster_upgrade",
    "request": {"target_version": "1.37.2"},
    "events": EVENTS,
    "batches": [
        {
            "index": 0,
            "pool": "general",
            "nodes": ["general-00"],
            "state": "passed",
            "started_at": "2026-11-28T01:02:05+00:00",
            "finished_at": "2026-11-28T01:03:05+00:00",
            "verdict": {
                "passed": True,
                "problems": [],
                "latency": {
                    "signals": [
                        {"signal": "apiserver mutating", "baseline_ms": 20.0, "batch_ms": 30.0, "ratio": 1.2}
                    ]
                },
            },
        }
    ],
    "worker_phase": {"reason": "done", "batches": 1, "passed": 1, "remaining": 0, "quarantined": []},
    "control_plane": {
        "defragmentation": [
            {"member": "etcd-1", "db_size_before": 4 * 2**20, "db_size_after": 2 * 2**20},
            {"member": "etcd-0", "db_size_before": 4 * 2**20, "db_size_after": 2 * 2**20},
        ]
    },
}


def test_each_phase_is_timed_from_its_first_start_to_its_last_end() -> None:
    assert dict(phase_timings(EVENTS)) == pytest.approx(
        {
            "preparation": 20,
            "etcd backup": 10,
            "control plane": 90,
            "workers": 121,
            "validation": 10,
            "total": 258,
        }
    )


def test_a_run_that_stopped_early_times_only_what_it_reached() -> None:
    assert [p for p, _ in phase_timings(EVENTS[:3])] == ["preparation", "etcd backup", "total"]
    assert phase_timings([]) == []


def test_the_report_shows_the_phases_the_nodes_and_the_batch_latency() -> None:
    report = render_markdown(RECORD, run_verdict(RECORD))
    assert "- Verdict: **upgraded**" in report
    assert "| control plane | 90s |" in report
    assert "| general-00 | 40s |" in report
    assert "1.2x apiserver mutating (30/20 ms)" in report
    assert "etcd-1 4.0→2.0 MiB, etcd-0 4.0→2.0 MiB" in report
