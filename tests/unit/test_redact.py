"""Redaction of secrets in messages and stored values, one pattern at a time (plain data)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slipway import redact
from slipway.redact import MASK, describe_url, redact_value, register_secret, register_url, url_secrets
from slipway.reports.run import write_run_report


@pytest.fixture(autouse=True)
def _no_secrets_left() -> Iterator[None]:
    redact.forget_secrets()
    yield
    redact.forget_secrets()


def r(text: str) -> str:
    return redact.redact(text)


def test_user_and_password_in_a_url_keep_the_host() -> None:
    assert r("webhook https://ops:hunter2@hooks.example/notify failed") == (
        "webhook https://***@hooks.example/notify failed"
    )
    # A token alone in the user part, and an '@' in the password.
    assert r("git clone https://ghp_abcdef123456@github.com/org/repo") == (
        "git clone https://***@github.com/org/repo"
    )
    assert r("http://u:p@ss@10.0.0.1:8080/x") == "http://***@10.0.0.1:8080/x"
    # Not credentials: no scheme, or an '@' in the path.
    assert r("git@github.com:org/repo.git") == "git@github.com:org/repo.git"
    assert r("https://host/users/@me") == "https://host/users/@me"


@pytest.mark.parametrize(
    "name",
    ["token", "key", "sig", "password", "secret", "access_token", "api_key", "apiKey", "client_secret"],
)
def test_query_string_tokens(name: str) -> None:
    assert r(f"https://h.example/p?{name}=v4lue&ok=1") == f"https://h.example/p?{name}=***&ok=1"


def test_signed_urls_and_free_text_pairs() -> None:
    assert r("GET https://b.s3/x?X-Amz-Credential=AKIA/1&X-Amz-Signature=ab12&sv=2021") == (
        "GET https://b.s3/x?X-Amz-Credential=***&X-Amz-Signature=***&sv=2021"
    )
    assert r("login failed: password=hunter2, retrying") == "login failed: password=***, retrying"
    # Words that merely end like a secret name are left alone.
    assert r("monkey=banana turkey=1") == "monkey=banana turkey=1"


def test_json_and_yaml_shaped_secrets() -> None:
    assert r('{"password": "hunter2", "user": "ops"}') == '{"password": "***", "user": "ops"}'
    assert r("client-key-data: LS0tLS1CRUdJTiBFQyBQUklWQVRF") == "client-key-data: ***"


def test_slack_teams_discord_and_mattermost_webhooks() -> None:
    slack = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
    assert r(slack) == "https://hooks.slack.com/services/***"
    teams = "https://contoso.webhook.office.com/webhookb2/1a2b@3c4d/IncomingWebhook/5e6f/7a8b"
    assert r(teams) == "https://contoso.webhook.office.com/***"
    discord = "https://discord.com/api/webhooks/123456789012345678/AbCdEf-GhIj_kl"
    assert r(discord) == "https://discord.com/api/webhooks/***"
    assert r("https://chat.example/hooks/q8z7x6c5v4b3n2m1a0s9") == "https://chat.example/hooks/***"


def test_bearer_and_basic_authorization() -> None:
    assert r("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig") == "Authorization: Bearer ***"
    assert r("authorization=Basic dXNlcjpwYXNz") == "authorization=Basic ***"
    assert r("Authorization: Basic dXNlcjpwYXNz") == "Authorization: Basic ***"


def test_pem_private_keys() -> None:
    key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB3\nabc\n-----END EC PRIVATE KEY-----"
    assert r(f"loaded {key} ok") == "loaded *** ok"
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    assert r(cert) == cert  # certificates are public


def test_registered_secrets_are_hidden_anywhere_with_their_url_encoding() -> None:
    register_secret("s3cr3t/with+chars")
    assert r("it was s3cr3t/with+chars or s3cr3t%2Fwith%2Bchars") == "it was *** or ***"
    register_secret("abc")  # too short to mask: it would hide ordinary words
    assert r("abc") == "abc"


def test_a_registered_url_hides_its_secret_parts_never_its_host() -> None:
    register_url("https://ops:pa55word@hooks.example:8443/notify/0123456789abcdef0123?channel=ops&auth=zz99")
    assert r("pa55word 0123456789abcdef0123 zz99 hooks.example ops") == "*** *** *** hooks.example ops"


def test_redaction_is_idempotent() -> None:
    once = r("https://u:p@h.example/x?token=abc Authorization: Bearer 0123456789")
    assert r(once) == once
    assert "h.example" in once


def test_describe_url_names_where_it_went_and_nothing_else() -> None:
    assert describe_url("https://ops:pw@hooks.example/services/abc?token=x") == "https://***@hooks.example/…"
    assert describe_url("http://127.0.0.1:9/") == "http://127.0.0.1:9"
    assert describe_url("http://[::1]:8080/x") == "http://[::1]:8080/…"
    assert describe_url("not a url token=abc") == "not a url token=***"


def test_url_secrets_says_what_a_url_carries() -> None:
    assert url_secrets("https://u:p@h/x?token=1&page=2&X-Amz-Signature=3") == [
        "user:password",
        "query parameter token",
        "query parameter X-Amz-Signature",
    ]
    assert url_secrets("https://hooks.slack.com/services/T0/B0/XXXXXXXXXXXXXXXXXXXXXXXX") == [
        "webhook key in the path"
    ]
    assert url_secrets("https://app.example/healthz?verbose=1") == []


def test_stored_values_are_redacted_deeply_and_secret_keys_hidden() -> None:
    record: dict[str, Any] = {
        "events": [{"kind": "notification-failed", "message": "webhook https://u:pw@h.example/x failed"}],
        "request": {"health_checks": [{"kind": "http", "url": "https://app.example/healthz?token=t0k"}]},
        "webhook": {"token": "opaque-value", "key": "node.kubernetes.io/unschedulable"},
        "count": 3,
        "ok": True,
    }
    clean = redact_value(record)
    assert clean["events"][0]["message"] == "webhook https://***@h.example/x failed"
    assert clean["request"]["health_checks"][0]["url"] == "https://app.example/healthz?token=***"
    assert clean["webhook"] == {"token": MASK, "key": "node.kubernetes.io/unschedulable"}
    assert (clean["count"], clean["ok"]) == (3, True)
    assert record["webhook"]["token"] == "opaque-value"  # the input is not changed


def test_listeners_hear_past_and_future_secrets() -> None:
    heard: list[str] = []
    register_secret("before-listener")
    redact.add_listener(heard.append)
    try:
        register_secret("after-listener")
        register_secret("after-listener")  # once only
        assert heard == ["before-listener", "after-listener"]
    finally:
        redact._listeners.remove(heard.append)


def test_the_report_files_hold_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIPWAY_REPORTS_DIR", str(tmp_path))
    register_secret("registered-webhook-key-0123")
    data = {
        "run_id": "manual__1",
        "dag_id": "k8s_worker_upgrade",
        "request": {"target_version": "1.37.2"},
        "events": [
            {"at": "2026-01-01T00:00:00+00:00", "kind": "run-started", "message": "started"},
            {
                "at": "2026-01-01T00:00:05+00:00",
                "kind": "notification-failed",
                "message": "webhook https://ops:pw1234@h.example/registered-webhook-key-0123?token=t0k3n",
            },
        ],
    }
    paths = write_run_report(data, dag_id="k8s_worker_upgrade", run_id="manual__1")
    for path in paths.values():
        text = path.read_text()
        assert "https://***@h.example/" in text, path
        for secret in ("pw1234", "registered-webhook-key-0123", "t0k3n"):
            assert secret not in text, (path, secret)
    json.loads(paths["json"].read_text())  # still JSON


def test_kubeconfig_data_is_taken_out_before_the_kubernetes_client_sees_it(tmp_path: Path) -> None:
    """The client writes ``*-data`` fields to temp files it keeps: they are moved to memory."""
    from slipway.airflow.runtime import _take_out_data

    key = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIKEY\n-----END EC PRIVATE KEY-----\n"
    b64 = base64.b64encode(key).decode()
    config: dict[str, Any] = {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [
            {"name": "k", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority": "ca.crt"}}
        ],
        "users": [
            {
                "name": "u",
                "user": {
                    "client-certificate-data": base64.b64encode(b"CERT").decode(),
                    "client-key-data": b64,
                },
            }
        ],
    }
    identity = _take_out_data((config, tmp_path), None, "kubernetes_default")
    assert (identity.cert, identity.key, identity.ca) == (b"CERT", key, None)
    user = identity.config["users"][0]["user"]
    assert "client-key-data" not in user and "client-certificate-data" not in user
    cluster = identity.config["clusters"][0]["cluster"]
    assert cluster["certificate-authority"] == str(tmp_path / "ca.crt")  # relative to the kubeconfig
    assert "client-key-data" in config["users"][0]["user"]  # the connection's copy is untouched
    assert r(f"key {b64} and {key.decode()}") == "key *** and ***\n"
