"""The end-of-run notification: one JSON message to a webhook the operators chose.

The webhook lives in the Airflow connection ``slipway_notify`` (its host is the URL, or
schema + host + port; its password, when set, is sent as a bearer token; a ``user:password@``
in the URL as Basic credentials), so no address
or secret is in code. The body carries a ``text`` line that chat webhooks (Slack, Mattermost, Teams' incoming
webhooks) display as is, plus the fields a pager or ticketing hook wants.

A webhook URL is a secret (Slack's and Teams' carry their key in the path), and so is the
token: both are registered with :mod:`slipway.redact` before anything is sent, and an
error names the webhook only by scheme and host (``https://***@hooks.example/…``).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from slipway import redact
from slipway.incidents import classify

NOTIFY_CONN_ID = "slipway_notify"
TIMEOUT_SECONDS = 10.0
EMOJI = {"upgraded": ":white_check_mark:", "paused": ":double_vertical_bar:", "dry-run": ":memo:"}


class NotificationError(RuntimeError):
    """The webhook refused or could not be reached; the message names it and why."""


def notification_payload(data: dict[str, Any], verdict: str, report: str) -> dict[str, Any]:
    """What the operators need first: the verdict, the target, what was rolled back, where to read."""
    request = data.get("request", {})
    batches = data.get("batches", [])
    rolled_back = [b["index"] for b in batches if b.get("state") == "rolled-back"]
    probe = data.get("control_plane", {}).get("probe", {})
    incident = classify(data)
    severity = f"[{incident.severity}] " if incident else ""
    text = (
        f"{EMOJI.get(verdict, ':warning:')} {severity}Slipway {data.get('dag_id', '')} run "
        f"{data.get('run_id', '')}: *{verdict}* (target {request.get('target_version', '?')}). "
        f"Report: {report or 'not written'}"
    )
    return {
        "text": text,
        "verdict": verdict,
        "severity": incident.severity if incident else None,
        "incident": incident.title if incident else None,
        "run_id": data.get("run_id"),
        "dag_id": data.get("dag_id"),
        "target_version": request.get("target_version"),
        "batches": len(batches),
        "rolled_back_batches": rolled_back,
        "api_probe_failures": probe.get("failures"),
        "report": report,
    }


def incident_payload(data: dict[str, Any], severity: str, title: str) -> dict[str, Any]:
    """Sent when an incident is declared, while the rollback runs: page first, report later."""
    return {
        "text": f":rotating_light: [{severity}] Slipway {data.get('dag_id', '')} run "
        f"{data.get('run_id', '')}: {title} — rollback started",
        "verdict": "incident",
        "severity": severity,
        "incident": title,
        "run_id": data.get("run_id"),
        "dag_id": data.get("dag_id"),
        "target_version": data.get("request", {}).get("target_version"),
    }


def webhook_url(host: str | None, schema: str | None = None, port: int | None = None) -> str:
    """The URL from the connection: a full URL in its host, or ``schema://host:port/...``
    the way Airflow's HTTP connections split it."""
    host = (host or "").strip()
    if host.startswith(("http://", "https://")):
        redact.register_url(host)
        return host
    if not host:
        raise NotificationError(f"connection {NOTIFY_CONN_ID} has no host (the webhook URL)")
    name, _, path = host.partition("/")
    url = f"{schema or 'https'}://{name}{f':{port}' if port else ''}/{path}"
    redact.register_url(url)
    return url


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """urllib cannot send ``user:password@`` itself: the URL without it, and the Basic credential."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    basic = base64.b64encode(pair.encode()).decode()
    redact.register_secret(basic)
    return urllib.parse.urlunsplit(parts._replace(netloc=hostport)), basic


def send_webhook(url: str, payload: dict[str, Any], token: str | None = None) -> int:
    """POST ``payload`` as JSON; returns the HTTP status or raises :class:`NotificationError`.
    ``token`` goes as a bearer token; a ``user:password@`` in the URL as Basic credentials."""
    redact.register_url(url)
    redact.register_secret(token)
    where = redact.describe_url(url)
    if not url.startswith(("http://", "https://")):
        raise NotificationError(f"connection {NOTIFY_CONN_ID}: host must be an http(s) URL, got {where!r}")
    url, basic = _split_userinfo(url)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif basic:
        headers["Authorization"] = f"Basic {basic}"
    body = json.dumps(payload).encode()
    # http(s) only: checked above
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        # Chained with ``from None``: the original exception's text may quote the URL.
        raise NotificationError(f"webhook {where} answered HTTP {err.code}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = redact.redact(str(getattr(err, "reason", err)))
        raise NotificationError(f"webhook {where} unreachable: {reason}") from None
