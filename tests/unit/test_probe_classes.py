"""What the API probe names apart, and how the report says it: plain data."""

from __future__ import annotations

from datetime import UTC, datetime

from slipway.reports.run import probe_sentence
from slipway.validation.probe import Disruption, ProbeEvent, Verb, dropped_by_etcd

AT = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)
DROPPED = (
    'HTTP 500 Internal Server Error: {"message":"rpc error: code = Unknown desc = raft proposal dropped"}'
)
LEADER_CHANGED = 'HTTP 500 Internal Server Error: {"message":"etcdserver: leader changed","code":500}'


def _event(verb: Verb, error: str) -> ProbeEvent:
    return ProbeEvent(at=AT, phase="upgrade", verb=verb, error=error)


def test_only_what_etcd_answers_while_its_leader_moves_is_named_apart() -> None:
    events = [
        _event("create", DROPPED),
        _event("delete", DROPPED),
        _event("list", LEADER_CHANGED),  # a linearizable read cut short by the change
        _event("create", "HTTP 500 Internal Server Error: etcdserver: request timed out"),
        _event("list", "ReadTimeoutError: read timed out"),
        _event("get", "HTTP 403 Forbidden: raft proposal"),
    ]
    assert dropped_by_etcd(events) == 3
    assert dropped_by_etcd([]) == 0


def test_the_report_counts_every_failure_and_names_the_dropped_writes() -> None:
    probe = {"requests": 900, "failures": 3, "dropped_by_etcd": 2, "p99_ms": 40.0, "baseline_p99_ms": 20.0}
    text = probe_sentence(probe, bold=True)
    assert "900 requests, **3 failed (2 of them refused by etcd, unapplied, while its leader moved)**" in text
    clean = probe_sentence(probe | {"failures": 0, "dropped_by_etcd": 0})
    assert "0 failed, p99 40.0 ms" in clean and "dropped" not in clean


def test_the_report_gives_disruption_seconds_per_path_when_both_were_measured() -> None:
    probe = {
        "requests": 900,
        "failures": 1,
        "p99_ms": 40.0,
        "baseline_p99_ms": 20.0,
        "disruption_seconds": 0.05,
        "new_connections": {"requests": 200, "failures": 2, "disruption_seconds": 1.25},
    }
    text = probe_sentence(probe)
    assert "1 failed, p99 40.0 ms" in text and "disrupted 0.1 s" in text
    assert "On new connections: 200 requests, 2 failed, disrupted 1.2 s" in text


def test_disruption_runs_from_the_first_failure_to_the_next_success() -> None:
    seen = Disruption()
    seen.succeeded(1.0)  # no failure yet: nothing counted
    seen.failed(2.0)
    seen.failed(2.5)  # the same run of failures
    seen.succeeded(3.0)
    seen.failed(10.0)
    assert seen.seconds(end=10.5) == 1.5  # a run still failing at the end counts up to the end
    seen.succeeded(11.0)
    assert seen.seconds(end=20.0) == 2.0
