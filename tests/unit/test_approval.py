"""The approval decision as the run record keeps it (plain data: Airflow's HITL event), and
the pages it sends when it starts waiting."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.serialization.serialized_objects import DagSerialization

from slipway.airflow.approval import (
    APPROVED,
    REJECTED,
    TIMED_OUT,
    RecordedApprovalOperator,
    approval_outcome,
    page_events,
)
from slipway.airflow.notifiers import (
    ChannelNotifier,
    Outcome,
    SlackNotifier,
    SmtpNotifier,
    WebhookNotifier,
    run_failure_notifiers,
)

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


def test_the_approval_pages_every_channel_and_serialises() -> None:
    """The operator's default notifiers, and a DAG carrying them and the failure callback,
    survive serialisation (what the scheduler stores)."""
    with DAG(
        "approval_pages",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        on_failure_callback=run_failure_notifiers(),
    ) as dag:
        op = RecordedApprovalOperator(task_id="approve", subject="Approve")
    assert [type(x) for x in op.notifiers] == [WebhookNotifier, SlackNotifier, SmtpNotifier]
    assert all(x.best_effort for x in op.notifiers if isinstance(x, ChannelNotifier))
    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert restored.has_on_failure_callback
    assert restored.get_task("approve").task_type == "RecordedApprovalOperator"


def test_each_page_becomes_a_timeline_event() -> None:
    webhook, slack = WebhookNotifier(best_effort=True), SlackNotifier(best_effort=True)
    webhook.outcomes.append(Outcome("webhook", True, "webhook answered HTTP 200"))
    slack.outcomes.append(Outcome("slack", False, "slack webhook http://127.0.0.1:9/… unreachable"))
    assert page_events([webhook, slack, SmtpNotifier()]) == [
        ("notified", "approval requested: webhook answered HTTP 200"),
        ("notification-failed", "approval requested: slack webhook http://127.0.0.1:9/… unreachable"),
    ]


def test_a_rejection_or_a_timeout_is_final_never_retried() -> None:
    from airflow.providers.standard.exceptions import HITLRejectException, HITLTimeoutError
    from airflow.sdk.exceptions import AirflowFailException

    from slipway.airflow.approval import final_decision

    def raising(err: Exception) -> Any:
        def complete() -> Any:
            raise err

        return complete

    for err in (HITLRejectException('Receive "Reject"'), HITLTimeoutError("no response")):
        with pytest.raises(AirflowFailException):  # fails the task without its retries
            final_decision(raising(err))
    assert final_decision(lambda: "approved") == "approved"


def test_the_approval_body_links_to_the_runs_report_and_lists_the_reasons() -> None:
    import jinja2

    from slipway.airflow.approval import BODY

    class Ti:
        def xcom_pull(self, task_ids: str) -> dict[str, list[str]]:
            assert task_ids == "prepare.assess_risk"
            return {"reasons": ["downtime risk is critical"]}

    body = (
        jinja2.Environment()
        .from_string(BODY)
        .render(
            params={"target_version": "1.37.2"},
            ti=Ti(),
            dag=type("Dag", (), {"dag_id": "k8s_cluster_upgrade"}),
            run_id="manual__2026-12-03T10:00:00+00:00",
        )
    )
    assert "- downtime risk is critical" in body
    # Each id encoded as the plugin's report view expects it (tests/unit/test_report_plugin.py).
    assert "(/slipway/reports/k8s_cluster_upgrade/manual__2026-12-03T10%3A00%3A00%2B00%3A00)" in body


def test_a_run_waiting_for_its_approval_says_so_until_someone_answers() -> None:
    from slipway.reports.run import run_verdict

    waiting = {"request": {}, "events": [{"kind": "approval-requested"}]}
    assert run_verdict(waiting) == "awaiting-approval"
    answered = {"request": {}, "events": [{"kind": "approval-requested"}, {"kind": "approval-granted"}]}
    assert run_verdict(answered) == "failed"  # granted, and the run went no further
    rejected = {"request": {}, "events": [{"kind": "approval-requested"}, {"kind": "approval-rejected"}]}
    assert run_verdict(rejected) == "rejected"
