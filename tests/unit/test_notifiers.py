"""The notifiers Airflow calls (DAG failure callback, approval pages, the notify task), each
delivering to a real local receiver: an HTTP server for the webhook and Slack, an SMTP server
(aiosmtpd) for e-mail. Credentials come from connections (``AIRFLOW_CONN_*``) and never show
in an error, a log line or an outcome."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from airflow.sdk import DAG

from slipway import redact
from slipway.airflow.notifiers import (
    SlackNotifier,
    SmtpNotifier,
    WebhookNotifier,
    approval_message,
    approval_notifiers,
    deliver,
    run_failed_message,
    run_failure_notifiers,
)
from slipway.notifications import NotificationError
from tests.localhttp import QuietHandler, serving

TOKEN = "bearer-t0ken-value"
SLACK_KEY = "T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX"
SMTP_USER, SMTP_PASSWORD = "slipway", "sm7p-pa55word"
RECEIVED: list[tuple[str, dict[str, Any], str | None]] = []
# What the dag-processor passes a DAG failure callback.
FAILURE_CONTEXT = {
    "run_id": "manual__2026-12-02",
    "reason": "task_failure",
    "dag": DAG("k8s_cluster_upgrade"),
}


class _Receiver(QuietHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        RECEIVED.append((self.path, body, self.headers.get("Authorization")))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")


class _Mailbox:
    """aiosmtpd handler: keeps every message and the logins it accepted."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (
                envelope.mail_from,
                envelope.rcpt_tos,
                message_from_bytes(envelope.content, policy=policy.default),
            )
        )
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        if ok:
            self.logins.append((data.login.decode(), mechanism))
        return AuthResult(success=ok, handled=False)  # False: the server answers 535 itself


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    RECEIVED.clear()
    yield
    redact.forget_secrets()


@pytest.fixture
def receiver() -> Iterator[str]:
    with serving(_Receiver) as url:
        yield url


@pytest.fixture
def mailbox() -> Iterator[tuple[_Mailbox, int]]:
    box = _Mailbox()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(
        box, hostname="127.0.0.1", port=port, authenticator=box.authenticate, auth_require_tls=False
    )
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def _closed_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def _webhook(monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    _conn(monkeypatch, "slipway_notify", conn_type="http", host=f"{base}/hooks/ops", password=TOKEN)


def _slack(monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    _conn(monkeypatch, "slipway_slack", conn_type="slackwebhook", host=f"{base}/services", password=SLACK_KEY)


def _smtp(monkeypatch: pytest.MonkeyPatch, port: int, password: str = SMTP_PASSWORD) -> None:
    extra = {"to": "oncall@example.com, lead@example.com", "from_email": "slipway@example.com"}
    extra |= {"disable_ssl": True, "disable_tls": True}
    _conn(
        monkeypatch,
        "slipway_smtp",
        conn_type="smtp",
        host="127.0.0.1",
        port=port,
        login=SMTP_USER,
        password=password,
        extra=extra,
    )


def test_a_failed_run_is_posted_to_the_webhook_by_the_failure_callback(
    monkeypatch: pytest.MonkeyPatch, receiver: str
) -> None:
    _webhook(monkeypatch, receiver)
    for notifier in run_failure_notifiers():  # what the DAG's on_failure_callback calls
        notifier(dict(FAILURE_CONTEXT))
    assert len(RECEIVED) == 1  # Slack and e-mail have no connection: skipped
    path, body, auth = RECEIVED[0]
    assert (path, auth) == ("/hooks/ops", f"Bearer {TOKEN}")
    assert body["verdict"] == "failed" and body["run_id"] == "manual__2026-12-02"
    assert body["dag_id"] == "k8s_cluster_upgrade"
    assert body["reason"] == "task_failure" and "*failed* (task_failure)" in body["text"]


def test_slack_gets_the_text_at_its_secret_path(monkeypatch: pytest.MonkeyPatch, receiver: str) -> None:
    _slack(monkeypatch, receiver)
    SlackNotifier(run_failed_message)(dict(FAILURE_CONTEXT))
    assert [
        (f"/services/{SLACK_KEY}", {"text": run_failed_message(FAILURE_CONTEXT)["text"]}, None)
    ] == RECEIVED


def test_email_goes_through_the_smtp_connection(
    monkeypatch: pytest.MonkeyPatch, mailbox: tuple[_Mailbox, int]
) -> None:
    box, port = mailbox
    _smtp(monkeypatch, port)
    SmtpNotifier(run_failed_message)(dict(FAILURE_CONTEXT))
    assert box.logins == [(SMTP_USER, "PLAIN")]  # smtplib tries PLAIN first
    (mail_from, rcpt, message), *_ = box.messages
    assert mail_from == "slipway@example.com"
    assert rcpt == ["oncall@example.com", "lead@example.com"]
    assert message["Subject"].startswith(
        "Slipway k8s_cluster_upgrade run manual__2026-12-02: failed (task_failure)"
    )
    body = message.get_content()
    assert '"run_id": "manual__2026-12-02"' in body and ":x:" not in body


def test_a_wrong_smtp_password_is_a_named_failure_without_the_password(
    monkeypatch: pytest.MonkeyPatch, mailbox: tuple[_Mailbox, int]
) -> None:
    box, port = mailbox
    _smtp(monkeypatch, port, password="wr0ng-pa55word")
    with pytest.raises(NotificationError) as refused:
        SmtpNotifier(run_failed_message).send({"text": "x"})
    assert str(refused.value).startswith(f"smtp 127.0.0.1:{port} failed: 535")
    assert "wr0ng-pa55word" not in str(refused.value) and not box.messages


def test_every_configured_channel_gets_the_end_of_run_message(
    monkeypatch: pytest.MonkeyPatch, receiver: str, mailbox: tuple[_Mailbox, int]
) -> None:
    """What the in-graph notify task sends (``deliver``): all three, one outcome each."""
    box, port = mailbox
    _webhook(monkeypatch, receiver)
    _slack(monkeypatch, receiver)
    _smtp(monkeypatch, port)
    payload = {"text": ":white_check_mark: Slipway k8s_cluster_upgrade run r1: *upgraded*", "verdict": "up"}
    outcomes = deliver(payload)
    assert [(o.channel, o.ok) for o in outcomes] == [("webhook", True), ("slack", True), ("email", True)]
    assert outcomes[0].detail == "webhook answered HTTP 200"
    assert outcomes[2].detail == f"smtp 127.0.0.1:{port} accepted the mail for 2 of 2 recipients"
    assert [p for p, _, _ in RECEIVED] == ["/hooks/ops", f"/services/{SLACK_KEY}"]
    assert box.messages[0][2]["Subject"] == "Slipway k8s_cluster_upgrade run r1: upgraded"


def test_no_connection_means_no_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    for conn_id in ("SLIPWAY_NOTIFY", "SLIPWAY_SLACK", "SLIPWAY_SMTP"):
        monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id}", raising=False)
    assert deliver({"text": "x"}) == []
    for notifier in run_failure_notifiers():
        notifier(dict(FAILURE_CONTEXT))  # nothing configured: nothing raised
        assert notifier.outcomes == []


def test_a_down_webhook_is_a_recorded_failure_without_its_secrets(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    port = _closed_port()
    url = f"http://ops:hunter2pass@127.0.0.1:{port}/hooks/{SLACK_KEY}?token=tok3n-value"
    _conn(monkeypatch, "slipway_notify", conn_type="http", host=url, password=TOKEN)
    _conn(
        monkeypatch,
        "slipway_slack",
        conn_type="slackwebhook",
        host=f"http://127.0.0.1:{port}",
        password=SLACK_KEY,
    )
    secrets = ["hunter2pass", "tok3n-value", TOKEN, "XXXXXXXXXXXXXXXXXXXXXXXX"]
    with caplog.at_level(logging.INFO):
        outcomes = deliver({"text": "x"})
        with pytest.raises(NotificationError) as raised:
            run_failure_notifiers()[0](dict(FAILURE_CONTEXT))
    assert [(o.channel, o.ok) for o in outcomes] == [("webhook", False), ("slack", False)]
    assert outcomes[0].detail.startswith(f"webhook http://***@127.0.0.1:{port}/… unreachable")
    assert outcomes[1].detail.startswith(f"slack webhook http://127.0.0.1:{port}/… unreachable")
    texts = [o.detail for o in outcomes] + [str(raised.value), caplog.text]
    assert "unreachable" in caplog.text  # the failure is in the log ...
    for secret in secrets:  # ... and no secret anywhere
        assert not any(secret in t for t in texts), secret


def test_a_waiting_approval_pages_and_a_failed_page_does_not_stop_it(
    monkeypatch: pytest.MonkeyPatch, receiver: str
) -> None:
    task = SimpleNamespace(
        subject="Approve the Kubernetes upgrade to 1.37.2", response_timeout=timedelta(hours=12)
    )
    context = {"run_id": "manual__7", "dag_run": SimpleNamespace(dag_id="k8s_cluster_upgrade"), "task": task}
    _webhook(monkeypatch, receiver)
    _slack(monkeypatch, f"http://127.0.0.1:{_closed_port()}")  # the Slack side is down
    notifiers = approval_notifiers()
    for notifier in notifiers:  # what the HITL operator does before it waits
        notifier(dict(context))
    body = RECEIVED[0][1]
    assert body["verdict"] == "approval-requested" and body["dag_id"] == "k8s_cluster_upgrade"
    assert "approval needed within 12:00:00 — Approve the Kubernetes upgrade to 1.37.2" in body["text"]
    assert [(o.channel, o.ok) for x in notifiers for o in x.outcomes] == [("webhook", True), ("slack", False)]
    assert approval_message(context)["subject"] == task.subject


def test_a_notifier_without_a_message_says_so() -> None:
    with pytest.raises(NotificationError, match="WebhookNotifier has no message"):
        WebhookNotifier().notify({})


def test_any_failure_of_a_channel_is_its_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed connection (here an unparseable URL) fails its channel, never the caller
    of a best-effort notifier (the approval still waits), and names the channel."""
    _conn(monkeypatch, "slipway_notify", conn_type="http", host="http://[::1/hooks")
    notifier = approval_notifiers()[0]
    notifier({"run_id": "r", "task": None, "dag": DAG("d")})
    assert [(o.channel, o.ok) for o in notifier.outcomes] == [("webhook", False)]
    assert notifier.outcomes[0].detail.startswith("webhook: ValueError:")
    with pytest.raises(NotificationError, match="webhook: ValueError"):
        run_failure_notifiers()[0]({"run_id": "r", "dag": DAG("d")})


FAILING_DAG = """
from datetime import datetime

from airflow.sdk import DAG, task

from slipway.airflow.notifiers import run_failure_notifiers

with DAG("notify_on_failure", schedule=None, start_date=datetime(2026, 1, 1),
         on_failure_callback=run_failure_notifiers()):

    @task
    def fails() -> None:
        raise RuntimeError("the step failed")

    fails()
"""
RUN_IT = """
from airflow.dag_processing.dagbag import DagBag
import sys
run = DagBag(dag_folder=sys.argv[1]).dags["notify_on_failure"].test()
print("RUN-STATE", run.state)
"""


def test_airflow_calls_the_failure_notifiers_when_a_run_fails(receiver: str, tmp_path: Path) -> None:
    """Through Airflow itself: dag.test() of a DAG whose task fails; Airflow marks the run
    failed and runs its ``on_failure_callback`` list, which posts to the webhook. In its own
    process and Airflow home (its own metadata DB and DAG folder)."""
    dags, home = tmp_path / "dags", tmp_path / "home"
    dags.mkdir()
    (dags / "notify_on_failure.py").write_text(FAILING_DAG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_SLIPWAY_NOTIFY": json.dumps({"conn_type": "http", "host": f"{receiver}/hooks/ops"}),
    }
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=env)
    done = subprocess.run(
        [sys.executable, "-c", RUN_IT, str(dags)], capture_output=True, text=True, env=env, check=False
    )
    assert "RUN-STATE failed" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(RECEIVED) == 1, done.stdout[-2000:]
    path, body, _ = RECEIVED[0]
    assert path == "/hooks/ops"
    assert body["dag_id"] == "notify_on_failure" and body["verdict"] == "failed"
    assert body["reason"] == "task_failure" and body["run_id"].startswith("manual__")
