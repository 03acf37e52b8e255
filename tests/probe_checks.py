"""The one allowance the zero-failed-requests tests make (see slipway.validation.probe)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from slipway.validation.probe import is_etcd_leader_change

# The probe stamps a failure when the answer arrives; a step's window is its own clock.
SLACK = timedelta(seconds=2)


def assert_no_failures_but_etcd_drops(
    failures: int,
    dropped: int,
    samples: Sequence[dict[str, Any]],
    etcd_steps: Sequence[tuple[datetime, datetime]],
) -> None:
    """No request failed, except those etcd refused (unapplied) while an etcd member step
    moved its leader: never another error, never outside an etcd step."""
    assert failures == dropped, samples
    for sample in samples:
        at = sample["at"] if isinstance(sample["at"], datetime) else datetime.fromisoformat(sample["at"])
        assert is_etcd_leader_change(sample["error"]), sample
        assert any(start - SLACK <= at <= end + SLACK for start, end in etcd_steps), (sample, etcd_steps)


def etcd_step_windows(record: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    """From a run record: when each etcd member's step ran (its event is written at the end)."""
    steps = record["control_plane"]["steps"]
    windows = []
    for event in record["events"]:
        name = event.get("component", "")
        if event["kind"] == "component-upgraded" and name.startswith("etcd-"):
            end = datetime.fromisoformat(event["at"])
            windows.append((end - timedelta(seconds=float(steps[name]["seconds"])), end))
    return windows
