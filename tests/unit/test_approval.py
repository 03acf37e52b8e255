"""The approval decision as the run record keeps it (plain data: Airflow's HITL event)."""

from __future__ import annotations

from datetime import UTC, datetime

from slipway.airflow.approval import APPROVED, REJECTED, TIMED_OUT, approval_outcome

AT = datetime(2026, 12, 2, 3, 14, tzinfo=UTC)


def test_approved_names_who_and_when() -> None:
    event = {
        "chosen_options": ["Approve"],
        "responded_at": AT,
        "responded_by_user": {"id": "7", "name": "ada"},
    }
    assert approval_outcome(event) == {"outcome": APPROVED, "by": "ada", "at": AT.isoformat()}


def test_rejected_is_a_decision() -> None:
    event = {"chosen_options": ["Reject"], "responded_at": AT, "responded_by_user": {"id": "7", "name": ""}}
    assert approval_outcome(event) == {"outcome": REJECTED, "by": "7", "at": AT.isoformat()}


def test_nobody_answered() -> None:
    outcome = approval_outcome({"error": "no response in 12h", "error_type": "timeout"})
    assert outcome["outcome"] == TIMED_OUT and outcome["by"] is None
