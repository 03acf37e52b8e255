"""What the API probe names apart, and how the report says it: plain data."""

from __future__ import annotations

from datetime import UTC, datetime

from slipway.reports.run import probe_sentence
from slipway.validation.probe import ProbeEvent, Verb, dropped_by_etcd

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
