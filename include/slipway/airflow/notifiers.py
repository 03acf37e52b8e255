"""Notifications as Airflow notifiers: one ``BaseNotifier`` per channel, each configured by
its own Airflow connection, used in three places.

- the in-graph ``notify`` task (end of run) and the incident page: :func:`deliver`;
- the DAG's ``on_failure_callback``: :func:`run_failure_notifiers`, so a run killed, timed out
  or marked failed by hand (which never reaches the notify task) still tells someone;
- the human approval: :func:`approval_notifiers`, so a waiting approval pages someone.

Channels: a JSON webhook (``slipway_notify``), a Slack incoming webhook (``slipway_slack``)
and e-mail (``slipway_smtp``). A channel whose connection does not exist is skipped;
credentials come only from the connections and are registered with :mod:`slipway.redact`
before anything is sent, so no error, log line or run-record event shows them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseNotifier

from slipway import notifications as n
from slipway.redact import redact

log = logging.getLogger(__name__)

# Builds the message from an Airflow context (a DAG callback's or a task's).
MessageBuilder = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class Outcome:
    """One channel's delivery: which, whether it worked, what to record (already redacted)."""

    channel: str
    ok: bool
    detail: str


class ChannelNotifier(BaseNotifier):
    """A channel configured by one Airflow connection. ``notify(context)`` (what Airflow
    calls) builds the message with ``message`` and sends it; :meth:`send` sends a ready one.

    ``best_effort``: a failed delivery is logged and kept in :attr:`outcomes` instead of
    raised (the approval must wait for its answer even when the pager is down)."""

    channel = "channel"
    default_conn_id = ""

    def __init__(
        self,
        message: MessageBuilder | None = None,
        *,
        conn_id: str | None = None,
        best_effort: bool = False,
    ) -> None:
        super().__init__()
        self.message = message
        self.conn_id = conn_id or self.default_conn_id
        self.best_effort = best_effort
        self.outcomes: list[Outcome] = []

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        # Nothing to render (the messages are built in code), and dag.test()'s inline
        # callbacks pass a serialised DAG that has no template environment to ask for.
        if self.template_fields:
            super().render_template_fields(context, jinja_env)

    def _connection(self) -> Any | None:
        """The connection, or None when it does not exist (the channel is not configured)."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return BaseHook.get_connection(self.conn_id)
        except AirflowNotFoundException:
            return None

    def _send(self, conn: Any, payload: dict[str, Any]) -> str:
        raise NotImplementedError

    def send(self, payload: dict[str, Any]) -> Outcome | None:
        """Deliver ``payload``; None when the channel has no connection. Raises
        :class:`~slipway.notifications.NotificationError` unless ``best_effort``."""
        conn = self._connection()
        if conn is None:
            return None
        try:
            outcome = Outcome(self.channel, True, self._send(conn, payload))
        except Exception as err:  # any failure of one channel is that channel's outcome
            why = (
                str(err)
                if isinstance(err, n.NotificationError)
                else f"{self.channel}: {type(err).__name__}: {err}"
            )
            outcome = Outcome(self.channel, False, redact(why))
            self.outcomes.append(outcome)
            if not self.best_effort:
                raise n.NotificationError(outcome.detail) from None
            log.error("notification %s failed: %s", self.channel, outcome.detail)
            return outcome
        self.outcomes.append(outcome)
        log.info("notification %s: %s", self.channel, outcome.detail)
        return outcome

    def notify(self, context: Any) -> None:
        if self.message is None:
            raise n.NotificationError(f"{type(self).__name__} has no message to build from the context")
        self.send(self.message(context))


class WebhookNotifier(ChannelNotifier):
    """The JSON payload POSTed to the ``slipway_notify`` webhook (password = bearer token)."""

    channel = "webhook"
    default_conn_id = n.NOTIFY_CONN_ID

    def _send(self, conn: Any, payload: dict[str, Any]) -> str:
        url = n.webhook_url(conn.host, conn.schema, conn.port)
        status = n.send_webhook(url, payload, conn.password or None)
        return f"webhook answered HTTP {status}"


class SlackNotifier(ChannelNotifier):
    """The payload's ``text`` posted to a Slack incoming webhook (``slipway_slack``)."""

    channel = "slack"
    default_conn_id = n.SLACK_CONN_ID

    def _send(self, conn: Any, payload: dict[str, Any]) -> str:
        url = n.slack_webhook_url(conn.host, conn.password)
        status = n.send_slack(url, str(payload.get("text", "")))
        return f"slack webhook answered HTTP {status}"


class SmtpNotifier(ChannelNotifier):
    """The payload as an e-mail through the ``slipway_smtp`` connection's server."""

    channel = "email"
    default_conn_id = n.SMTP_CONN_ID

    def _send(self, conn: Any, payload: dict[str, Any]) -> str:
        settings = n.SmtpSettings.from_connection(
            conn.host, conn.port, conn.login, conn.password, dict(conn.extra_dejson or {})
        )
        return n.send_email(settings, payload)


CHANNELS: tuple[type[ChannelNotifier], ...] = (WebhookNotifier, SlackNotifier, SmtpNotifier)


def deliver(payload: dict[str, Any]) -> list[Outcome]:
    """Send ``payload`` on every configured channel; one outcome per channel tried (none when
    no channel is configured). A failed channel does not stop the others."""
    outcomes = []
    for channel in CHANNELS:
        outcome = channel(best_effort=True).send(payload)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


# ---- messages from an Airflow context -----------------------------------------------------------


def _ids(context: Any) -> tuple[str, str]:
    dag_run = context.get("dag_run")
    dag = context.get("dag")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(dag, "dag_id", None) or ""
    run_id = context.get("run_id") or getattr(dag_run, "run_id", None) or ""
    return str(dag_id), str(run_id)


def run_failed_message(context: Any) -> dict[str, Any]:
    """From a DAG ``on_failure_callback`` context (``dag_run``, ``reason``)."""
    dag_id, run_id = _ids(context)
    reason = context.get("reason")
    return n.run_failed_payload(dag_id, run_id, redact(str(reason)) if reason else None)


def approval_message(context: Any) -> dict[str, Any]:
    """From the approval task's context: its rendered subject and how long it waits."""
    dag_id, run_id = _ids(context)
    task = context.get("task")
    subject = str(getattr(task, "subject", "") or "approve the upgrade")
    timeout = getattr(task, "response_timeout", None)
    return n.approval_payload(dag_id, run_id, subject, str(timeout) if timeout else None)


def run_failure_notifiers() -> list[ChannelNotifier]:
    """For a DAG's ``on_failure_callback``: every channel, skipped when not configured.
    A failed delivery raises, so the callback's log names it (redacted)."""
    return [channel(run_failed_message) for channel in CHANNELS]


def approval_notifiers() -> list[ChannelNotifier]:
    """For the approval operator's ``notifiers``: every configured channel pages; a failed
    page is logged and recorded, and the approval still waits for its answer."""
    return [channel(approval_message, best_effort=True) for channel in CHANNELS]
