"""Human approval of a risky upgrade, with the decision recorded in the run record.

Airflow's ``ApprovalOperator`` asks; this records who answered and when (or that nobody
did), so a rejected upgrade ends with the verdict ``rejected`` — a decision, not a failed
attempt — and the maturity score does not count it as a failure.

When it starts waiting it pages every configured channel (webhook, Slack, e-mail: see
:mod:`slipway.airflow.notifiers`); a failed page is recorded on the run's timeline and the
approval still waits for its answer in Airflow's Required Actions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.exceptions import HITLRejectException, HITLTimeoutError
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException

from slipway.airflow import runbooks
from slipway.airflow.notifiers import ChannelNotifier, approval_notifiers
from slipway.airflow.stage_prepare import GROUP as PREPARE_GROUP
from slipway.airflow.urls import report_path

# The assessment's task id, from its group's own name: a literal here once went stale and the
# approval page showed "Why:" with no reasons.
RISK_TASK = f"{PREPARE_GROUP}.assess_risk"
APPROVED, REJECTED, TIMED_OUT = "approval-granted", "approval-rejected", "approval-timed-out"

# The body is rendered when the task runs: the risk reasons come from the assessment's XCom.
BODY = (
    "The risk assessment asks for a human decision before the upgrade to {{ params.target_version }}.\n\n"
    "Why:\n"
    "{% for reason in (ti.xcom_pull(task_ids='" + RISK_TASK + "') or {}).get('reasons', []) %}"
    "- {{ reason }}\n"
    "{% endfor %}\n"
    "Approve to continue with the proven etcd backup and the control plane; reject to stop "
    "here with nothing changed. The plan, every preflight check and the risk matrix: "
    "[this run's report](" + report_path("{{ dag.dag_id }}", "{{ run_id | urlencode }}") + ")."
)
# Written when the approval starts waiting, so the report link above has something to show.
REQUESTED = "approval-requested"


def approval_outcome(event: dict[str, Any]) -> dict[str, Any]:
    """The decision as the run record keeps it: outcome, who, when."""
    if "error" in event:
        kind = TIMED_OUT if event.get("error_type") == "timeout" else "approval-failed"
        return {"outcome": kind, "by": None, "at": None, "detail": str(event.get("error"))}
    chosen = list(event.get("chosen_options") or [])
    outcome = APPROVED if chosen == [ApprovalOperator.APPROVE] else REJECTED
    at = event.get("responded_at")
    user = event.get("responded_by_user") or {}
    by = user.get("name") or user.get("id") if isinstance(user, dict) else str(user)
    return {
        "outcome": outcome,
        "by": by,
        "at": at.isoformat() if isinstance(at, datetime) else (str(at) if at else None),
    }


class RecordedApprovalOperator(ApprovalOperator):
    """``ApprovalOperator`` that writes the decision to the run record before acting on it."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("body", BODY)
        kwargs.setdefault("response_timeout", timedelta(hours=12))
        kwargs.setdefault("doc_md", runbooks.RISK_GATE)
        kwargs.setdefault("notifiers", approval_notifiers())
        super().__init__(fail_on_reject=True, **kwargs)

    def execute(self, context: Any) -> Any:
        interim_report(context["dag"].dag_id, context["run_id"])
        # The base class pages (its notifiers), then parks the task until someone answers:
        # record the pages on the way out.
        try:
            return super().execute(context)
        finally:
            record_pages(self.notifiers)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from slipway.airflow.runtime import record

        outcome = approval_outcome(event)
        rec = record()
        rec.update(approval=outcome)
        who = f" by {outcome['by']}" if outcome.get("by") else ""
        rec.event(outcome["outcome"], f"{outcome['outcome'].replace('-', ' ')}{who}")
        return final_decision(lambda: super(RecordedApprovalOperator, self).execute_complete(context, event))


def interim_report(dag_id: str, run_id: str) -> None:
    """Record that a human decision is awaited and write the report so far (plan, checks, risk),
    which the approval page links to. Best effort: the question must be asked even when the
    record or the artefact store cannot be written (the task log says why)."""
    from slipway.airflow.runtime import record
    from slipway.reports.run import write_run_report

    try:
        rec = record()
        if REQUESTED not in {e["kind"] for e in rec.get("events", [])}:
            rec.event(REQUESTED, "waiting for a human decision in Airflow's Required Actions")
        write_run_report(rec.load(), dag_id=dag_id, run_id=run_id)
    except Exception as err:
        import logging

        logging.getLogger(__name__).warning("interim report not written: %s: %s", type(err).__name__, err)


def final_decision(complete: Callable[[], Any]) -> Any:
    """Run an approval's ``execute_complete``; a rejection or a timeout fails it for good.

    ``ApprovalOperator`` raises plain ``AirflowException``s for both, so a task with retries
    would ask the human again after the retry delay: a decision is not a glitch to retry."""
    try:
        return complete()
    except (HITLRejectException, HITLTimeoutError) as err:
        raise AirflowFailException(f"approval not given: {err}") from err


def page_events(notifiers: Any) -> list[tuple[str, str]]:
    """(event kind, message) for each page the notifiers sent or failed to send."""
    return [
        ("notified" if o.ok else "notification-failed", f"approval requested: {o.detail}")
        for x in notifiers
        if isinstance(x, ChannelNotifier)
        for o in x.outcomes
    ]


def record_pages(notifiers: Any) -> None:
    """Best effort: the approval must wait for its answer even when the record is unreachable
    (the task log has the outcome)."""
    events = page_events(notifiers)
    if not events:
        return
    from slipway.airflow.runtime import record

    try:
        rec = record()
        for kind, message in events:
            rec.event(kind, message)
    except Exception as err:  # the cluster may be what is wrong; the page outcome is logged
        import logging

        logging.getLogger(__name__).warning("approval pages not recorded: %s", type(err).__name__)
