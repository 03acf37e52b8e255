"""The cluster lease's pure rules: who holds it, when it expires, what a refusal says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from slipway import lease

NOW = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)


def state(holder: str | None, renewed_ago: float, duration: int = 120) -> lease.LeaseState:
    return lease.LeaseState(
        holder=holder,
        duration=duration,
        renewed=NOW - timedelta(seconds=renewed_ago),
        acquired=NOW - timedelta(hours=1),
        transitions=2,
        resource_version="7",
    )


def test_live_until_renew_time_plus_duration() -> None:
    assert lease.is_live(state("k8s_cluster_upgrade/run", 119), NOW)
    assert not lease.is_live(state("k8s_cluster_upgrade/run", 120), NOW)
    assert not lease.is_live(state(None, 0), NOW)  # released
    assert not lease.is_live(None, NOW)  # never created


def test_holder_identity_is_dag_slash_run() -> None:
    holder = lease.holder_for("k8s_worker_upgrade", "scheduled__2026-12-05T01:00:00+00:00")
    assert holder == "k8s_worker_upgrade/scheduled__2026-12-05T01:00:00+00:00"
    assert lease.run_of(holder) == "scheduled__2026-12-05T01:00:00+00:00"


def test_refusal_is_one_line_naming_holder_and_expiry() -> None:
    message = str(lease.LeaseHeld(state("k8s_cluster_upgrade/manual__a", 20)))
    assert "held by k8s_cluster_upgrade/manual__a" in message
    assert "2026-12-02T16:01:40Z" in message
    assert "\n" not in message
    assert state("x/y", 20).to_dict()["expires"] == "2026-12-02T16:01:40Z"


@pytest.mark.parametrize(
    ("holder", "duration", "field"),
    [("", 120, "holder"), ("no-slash", 120, "holder"), ("d/r", 0, "duration"), ("d/r", 10**9, "duration")],
)
def test_bad_holder_or_duration_refused_before_any_call(holder: str, duration: int, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        lease.acquire(None, holder, duration)  # type: ignore[arg-type]
