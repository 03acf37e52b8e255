"""The end-of-run message and its delivery to a webhook (a local receiver plays the chat)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from slipway import redact
from slipway.notifications import (
    NotificationError,
    SmtpSettings,
    approval_payload,
    email_message,
    notification_payload,
    run_failed_payload,
    send_webhook,
    slack_webhook_url,
    webhook_url,
)
from tests.localhttp import QuietHandler, serving

RECEIVED: list[tuple[str, dict[str, Any], str | None]] = []


class _Receiver(QuietHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        RECEIVED.append((self.path, body, self.headers.get("Authorization")))
        self.send_response(500 if self.path.split("?")[0] == "/broken" else 200)
        self.end_headers()


@pytest.fixture(autouse=True)
def _no_secrets_left() -> Iterator[None]:
    yield
    redact.forget_secrets()


@pytest.fixture
def receiver() -> Iterator[str]:
    RECEIVED.clear()
    with serving(_Receiver) as url:
        yield url


RUN = {
    "run_id": "manual__1",
    "dag_id": "k8s_cluster_upgrade",
    "request": {"target_version": "1.37.2"},
    "batches": [{"index": 0, "state": "passed"}, {"index": 1, "state": "rolled-back"}],
    "control_plane": {"probe": {"failures": 0}},
}


def test_the_payload_says_the_verdict_target_and_what_was_rolled_back() -> None:
    payload = notification_payload(RUN, "rolled-back", "/reports/r.md")
    assert payload["verdict"] == "rolled-back"
    assert payload["rolled_back_batches"] == [1]
    assert payload["api_probe_failures"] == 0
    assert (
        "*rolled-back*" in payload["text"]
        and "1.37.2" in payload["text"]
        and "/reports/r.md" in payload["text"]
    )
    assert json.loads(json.dumps(payload)) == payload  # JSON as is


def test_the_webhook_gets_the_payload_and_the_token(receiver: str) -> None:
    payload = notification_payload(RUN, "upgraded", "r.md")
    assert send_webhook(f"{receiver}/hooks/abc", payload, "s3cret") == 200
    received = list(RECEIVED)
    assert received == [("/hooks/abc", payload, "Bearer s3cret")]


def test_a_refusing_or_missing_webhook_is_named(receiver: str) -> None:
    with pytest.raises(NotificationError, match=r"answered HTTP 500"):
        send_webhook(f"{receiver}/broken", {"text": "x"})
    with pytest.raises(NotificationError, match=r"webhook http://127.0.0.1:9/… unreachable"):
        send_webhook("http://127.0.0.1:9/x", {"text": "x"})
    with pytest.raises(NotificationError, match="must be an http"):
        send_webhook("file:///etc/passwd", {"text": "x"})


def test_the_url_comes_from_the_connection_either_way() -> None:
    assert webhook_url("https://hooks.example.com/services/T1") == "https://hooks.example.com/services/T1"
    assert (
        webhook_url("hooks.example.com/services/T1", "http", 8080)
        == "http://hooks.example.com:8080/services/T1"
    )
    assert webhook_url("hooks.example.com") == "https://hooks.example.com/"
    with pytest.raises(NotificationError, match="no host"):
        webhook_url(None)


def test_a_failed_webhook_is_named_by_host_never_by_its_secrets(receiver: str) -> None:
    """The error goes to the run record, the report and the task log: no key, token or password."""
    port = receiver.rsplit(":", 1)[1]
    url = f"http://ops:hunter2pass@127.0.0.1:{port}/broken?token=tok3n-value&sig=s1gnature"
    with pytest.raises(NotificationError) as refused:
        send_webhook(url, {"text": "x"}, "bearer-s3cret")
    message = str(refused.value)
    assert message == f"webhook http://***@127.0.0.1:{port}/… answered HTTP 500"
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    # The token reached the receiver (it was sent) but is now a known secret.
    assert RECEIVED[-1][0] == "/broken?token=tok3n-value&sig=s1gnature"
    assert RECEIVED[-1][2] == "Bearer bearer-s3cret"
    assert redact.redact("hunter2pass tok3n-value bearer-s3cret") == "*** *** ***"


def test_user_and_password_in_the_url_go_as_basic_credentials(receiver: str) -> None:
    url = receiver.replace("http://", "http://ops%40example:p%3Ass@") + "/hooks/abc"
    assert send_webhook(url, {"text": "x"}) == 200
    assert RECEIVED[-1][0] == "/hooks/abc"
    assert RECEIVED[-1][2] == "Basic " + base64.b64encode(b"ops@example:p:ss").decode()


def test_a_slack_webhook_key_never_shows_in_an_error() -> None:
    key = "T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX"
    # Port 9 (discard) on loopback: nothing listens, the POST fails at once.
    url = webhook_url(f"127.0.0.1/services/{key}", "http", 9)
    with pytest.raises(NotificationError) as refused:
        send_webhook(url, {"text": "x"})
    assert "XXXXXXXXXXXXXXXXXXXXXXXX" not in str(refused.value)
    assert str(refused.value).startswith("webhook http://127.0.0.1:9/… unreachable")
    assert (
        redact.redact(f"posted to {url}") == "posted to http://127.0.0.1:9/services/T0000AAAA/B0000BBBB/***"
    )


# ---- Slack and e-mail settings from their connections -------------------------------------------


def test_the_slack_webhook_comes_from_the_connection_every_way() -> None:
    key = "T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX"
    assert slack_webhook_url(None, key) == f"https://hooks.slack.com/services/{key}"
    assert slack_webhook_url("hooks.example/services/", key) == f"https://hooks.example/services/{key}"
    assert slack_webhook_url(None, f"https://hooks.slack.com/services/{key}") == (
        f"https://hooks.slack.com/services/{key}"
    )
    assert slack_webhook_url(f"https://hooks.slack.com/services/{key}", None) == (
        f"https://hooks.slack.com/services/{key}"
    )
    assert "XXXXXXXXXXXXXXXXXXXXXXXX" not in redact.redact(f"posted to {slack_webhook_url(None, key)}")
    with pytest.raises(NotificationError, match="slipway_slack has no webhook"):
        slack_webhook_url("hooks.slack.com", None)


SMTP_EXTRA = {"to": "a@example.com, b@example.com", "from_email": "slipway@example.com"}


def test_smtp_settings_follow_the_smtp_providers_extras() -> None:
    settings = SmtpSettings.from_connection("mail.example", None, "user", "pa55-word", SMTP_EXTRA)
    assert (settings.port, settings.ssl, settings.starttls) == (465, True, True)
    assert settings.to == ("a@example.com", "b@example.com")
    assert "pa55-word" not in repr(settings)
    assert redact.redact("pa55-word") == "***"
    plain = SmtpSettings.from_connection(
        "mail.example", 2525, None, None, SMTP_EXTRA | {"disable_ssl": "true", "to": ["c@example.com"]}
    )
    assert (plain.port, plain.ssl, plain.starttls, plain.to, plain.login) == (
        2525,
        False,
        True,
        ("c@example.com",),
        None,
    )


@pytest.mark.parametrize(
    ("host", "extra", "why"),
    [
        ("", SMTP_EXTRA, "slipway_smtp has no host"),
        ("mail.example", {"from_email": "s@example.com"}, "extra 'to' names no recipient"),
        ("mail.example", {"to": "a@example.com"}, "extra 'from_email' is not an address"),
    ],
)
def test_smtp_settings_missing_a_field_are_refused_by_name(
    host: str, extra: dict[str, Any], why: str
) -> None:
    with pytest.raises(NotificationError, match=why):
        SmtpSettings.from_connection(host, None, None, None, extra)


def test_the_email_reads_without_chat_markup() -> None:
    settings = SmtpSettings.from_connection("mail.example", None, None, None, SMTP_EXTRA)
    message = email_message(settings, notification_payload(RUN, "rolled-back", "/reports/r.md"))
    assert message["Subject"].startswith("Slipway k8s_cluster_upgrade run manual__1: rolled-back")
    assert message["To"] == "a@example.com, b@example.com"
    body = message.get_content()
    assert ":warning:" not in body and "*" not in body.splitlines()[0]
    assert '"rolled_back_batches": [\n    1\n  ]' in body


def test_the_failure_and_approval_messages() -> None:
    failed = run_failed_payload("k8s_cluster_upgrade", "manual__1", "timed_out")
    assert failed["verdict"] == "failed" and "*failed* (timed_out)" in failed["text"]
    waiting = approval_payload("k8s_cluster_upgrade", "manual__1", "Approve 1.37", "12:00:00")
    assert "approval needed within 12:00:00 — Approve 1.37" in waiting["text"]
    assert json.loads(json.dumps([failed, waiting])) == [failed, waiting]
