"""The end-of-run message and its delivery to a webhook (a local receiver plays the chat)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from slipway.notifications import NotificationError, notification_payload, send_webhook, webhook_url
from tests.localhttp import QuietHandler, serving

RECEIVED: list[tuple[str, dict[str, Any], str | None]] = []


class _Receiver(QuietHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        RECEIVED.append((self.path, body, self.headers.get("Authorization")))
        self.send_response(500 if self.path == "/broken" else 200)
        self.end_headers()


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
    with pytest.raises(NotificationError, match=r"webhook http://127.0.0.1:9/x unreachable"):
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
