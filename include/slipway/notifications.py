"""What Slipway tells the operators, and how it reaches them: a JSON webhook, a Slack
incoming webhook or e-mail (the Airflow notifiers in :mod:`slipway.airflow.notifiers` read
the connections ``slipway_notify``, ``slipway_slack`` and ``slipway_smtp`` and call these).

The end-of-run notification: one JSON message to a webhook the operators chose.

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
import re
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from slipway import redact

NOTIFY_CONN_ID = "slipway_notify"
SLACK_CONN_ID = "slipway_slack"
SMTP_CONN_ID = "slipway_smtp"
SLACK_WEBHOOK_BASE = "https://hooks.slack.com/services"
TIMEOUT_SECONDS = 10.0
EMOJI = {"upgraded": ":white_check_mark:", "paused": ":double_vertical_bar:", "dry-run": ":memo:"}


class NotificationError(RuntimeError):
    """The webhook refused or could not be reached; the message names it and why."""


def notification_payload(data: dict[str, Any], verdict: str, report: str) -> dict[str, Any]:
    """What the operators need first: the verdict, the target, what was rolled back, where to read."""
    # Here, not at the top: it loads the kubernetes client, and DAG files import this module.
    from slipway.incidents import classify

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


def run_failed_payload(dag_id: str, run_id: str, reason: str | None) -> dict[str, Any]:
    """Sent by the DAG's failure callback: a run killed, timed out or marked failed by hand
    never reaches the in-graph notify task, so Airflow itself tells the operators."""
    why = f" ({reason})" if reason else ""
    return {
        "text": f":x: Slipway {dag_id} run {run_id}: *failed*{why}. The run record and the "
        "grid say how far it got; the cluster is the source of truth for a resumed run.",
        "verdict": "failed",
        "severity": None,
        "incident": None,
        "run_id": run_id,
        "dag_id": dag_id,
        "reason": reason,
    }


def approval_payload(dag_id: str, run_id: str, subject: str, timeout: str | None) -> dict[str, Any]:
    """Sent when the human approval starts waiting: page someone, or it times out unseen."""
    within = f" within {timeout}" if timeout else ""
    return {
        "text": f":raising_hand: Slipway {dag_id} run {run_id}: approval needed{within} — {subject}. "
        "Answer in Airflow: Browse → Required Actions.",
        "verdict": "approval-requested",
        "severity": None,
        "incident": None,
        "run_id": run_id,
        "dag_id": dag_id,
        "subject": subject,
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


# ---- Slack incoming webhooks ------------------------------------------------------------------


def slack_webhook_url(host: str | None, password: str | None) -> str:
    """The incoming-webhook URL from the ``slipway_slack`` connection, as the Slack provider's
    ``slackwebhook`` connection holds it: the key (``T000/B000/XXXX``) or the whole URL in the
    password, the base in the host (default ``hooks.slack.com/services``); or the whole URL in
    the host."""
    secret = (password or "").strip()
    base = (host or "").strip().rstrip("/")
    if secret.startswith(("http://", "https://")):
        url = secret
    elif secret:
        if base and not base.startswith(("http://", "https://")):
            base = f"https://{base}"
        url = f"{base or SLACK_WEBHOOK_BASE}/{secret.lstrip('/')}"
    elif base.startswith(("http://", "https://")):
        url = base
    else:
        raise NotificationError(f"connection {SLACK_CONN_ID} has no webhook (its password or host)")
    redact.register_url(url)
    redact.register_secret(secret)
    return url


def send_slack(url: str, text: str) -> int:
    """Post ``text`` to a Slack incoming webhook (which takes ``text`` and nothing it does not know)."""
    try:
        return send_webhook(url, {"text": text})
    except NotificationError as err:
        raise NotificationError(str(err).replace("webhook ", "slack webhook ", 1)) from None


# ---- e-mail -------------------------------------------------------------------------------------


def _flag(value: Any) -> bool:
    return value is True or str(value).strip().lower() in {"true", "1", "yes"}


@dataclass(frozen=True)
class SmtpSettings:
    """The ``slipway_smtp`` connection: host, port, login, password; extras as the SMTP
    provider reads them (``from_email``, ``disable_ssl``, ``disable_tls``, ``timeout``) plus
    ``to`` (a list or a comma-separated string)."""

    host: str
    port: int
    to: tuple[str, ...]
    sender: str
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = True
    starttls: bool = True
    timeout: float = TIMEOUT_SECONDS

    @classmethod
    def from_connection(
        cls,
        host: str | None,
        port: int | None,
        login: str | None,
        password: str | None,
        extra: dict[str, Any],
    ) -> SmtpSettings:
        redact.register_secret(password)
        if not (host or "").strip():
            raise NotificationError(f"connection {SMTP_CONN_ID} has no host (the mail server)")
        raw_to = extra.get("to") or []
        to = tuple(a.strip() for a in (raw_to.split(",") if isinstance(raw_to, str) else raw_to) if a.strip())
        if not to:
            raise NotificationError(f"connection {SMTP_CONN_ID}: extra 'to' names no recipient")
        sender = str(extra.get("from_email") or login or "")
        if "@" not in sender:
            raise NotificationError(f"connection {SMTP_CONN_ID}: extra 'from_email' is not an address")
        use_ssl = not _flag(extra.get("disable_ssl"))
        return cls(
            host=str(host).strip(),
            port=int(port or (465 if use_ssl else 587)),
            to=to,
            sender=sender,
            login=login or None,
            password=password or None,
            ssl=use_ssl,
            starttls=not _flag(extra.get("disable_tls")),
            timeout=float(extra.get("timeout") or TIMEOUT_SECONDS),
        )


_EMOJI_CODE = re.compile(r":[a-z_]+:\s*")


def email_message(settings: SmtpSettings, payload: dict[str, Any]) -> EmailMessage:
    """Subject: the payload's first line without chat markup; body: the text and the fields."""
    text = str(payload.get("text", ""))
    subject = _EMOJI_CODE.sub("", text.splitlines()[0] if text else "Slipway").replace("*", "")
    message = EmailMessage()
    message["Subject"] = subject[:200]
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.to)
    fields = {k: v for k, v in payload.items() if k != "text"}
    message.set_content(
        f"{_EMOJI_CODE.sub('', text).replace('*', '')}\n\n{json.dumps(fields, indent=2, default=str)}\n"
    )
    return message


def send_email(settings: SmtpSettings, payload: dict[str, Any]) -> str:
    """Send the payload as an e-mail; returns what the server accepted, or raises
    :class:`NotificationError` naming the server, never the password."""
    where = f"smtp {settings.host}:{settings.port}"
    message = email_message(settings, payload)
    context = ssl.create_default_context()
    try:
        server: smtplib.SMTP
        if settings.ssl:
            server = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
        else:
            server = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        with server:
            if not settings.ssl and settings.starttls:
                server.starttls(context=context)
            if settings.login:
                server.login(settings.login, settings.password or "")
            refused = server.send_message(message)
    except (smtplib.SMTPException, OSError) as err:
        # ``from None``: the original may quote the server's reply to our credentials.
        raise NotificationError(f"{where} failed: {redact.redact(_smtp_reason(err))}") from None
    delivered = [a for a in settings.to if a not in refused]
    return f"{where} accepted the mail for {len(delivered)} of {len(settings.to)} recipients"


def _smtp_reason(err: BaseException) -> str:
    if isinstance(err, smtplib.SMTPResponseException):
        reply = (
            err.smtp_error.decode(errors="replace") if isinstance(err.smtp_error, bytes) else err.smtp_error
        )
        return f"{err.smtp_code} {reply}"
    return f"{type(err).__name__}: {err}"
