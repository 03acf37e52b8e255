"""Secrets never written: every message and stored value goes through :func:`redact` first.

Two kinds of secret are hidden. Those a pattern recognises wherever they appear: the
``user:password@`` part of a URL, query-string or ``name=value`` tokens (``token=``,
``key=``, ``sig=``, ``password=``, ``access_token=`` ...), the secret path of Slack, Teams,
Discord and Mattermost webhooks, bearer tokens and PEM private keys. And those the
running code knows are secret (a connection's password, a webhook URL's path, a
kubeconfig's client key): :func:`register_secret` adds them, and every registered value
is replaced wherever it appears. Listeners (Airflow's secrets masker, installed by the
Airflow adapter) hear every registration, so task logs hide them too.

Redaction keeps what an engineer needs to follow a message: the scheme, host and port
stay (``https://***@hooks.example/…`` still names where it went).
"""

from __future__ import annotations

import functools
import re
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

MASK = "***"
# Shorter values would mask ordinary words all over the messages.
MIN_SECRET_LENGTH = 4
# Unnamed URL parts this long are keys or ids, not words: registered as secrets.
LONG_VALUE = 16

# A parameter name that carries a secret: the word alone, after a separator
# (``client_secret``, ``X-Amz-Signature``) or glued to a usual prefix (``apiKey``).
_SECRET_WORD = (
    r"(?:token|secret|password|passwd|pwd|pass|key|apikey|sig|signature|credential|credentials|"
    r"auth|authorization|sas)"
)
_PREFIX = r"(?:api|access|auth|session|secret|private|client|refresh|id|account|app|bot|master|sas)?"
_NAME = rf"(?:[a-z0-9]+[_.-])*{_PREFIX}{_SECRET_WORD}"
# Values stop where a URL, a sentence or a quoted string would.
_VALUE = r"[^&#\s'\"<>,;)\]}]+"
# Dict keys whose string values are secrets whatever they look like.
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "api_key",
        "apikey",
        "authorization",
        "client-key-data",
        "client_secret",
        "private_key",
    }
)

# (what the lower-cased text must contain for the pattern to have a chance: every group
# needs one of its words, the pattern, its replacement). The cheap substring test first
# keeps a run record of thousands of events quick to redact on every write.
_PATTERNS: tuple[tuple[tuple[tuple[str, ...], ...], re.Pattern[str], str], ...] = (
    # PEM private keys, whole.
    (
        (("private key",),),
        re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL),
        MASK,
    ),
    # scheme://user:password@host: the whole userinfo (a user name alone can be a token).
    ((("://",), ("@",)), re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#'\"<>]*@"), rf"\1{MASK}@"),
    # Webhooks whose path is the secret.
    (
        (("hooks.slack",),),
        re.compile(r"(?i)(hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/)[^\s?#'\"<>]+"),
        rf"\1{MASK}",
    ),
    (
        (("webhook.office.com",),),
        re.compile(r"(?i)([a-z0-9.-]*\.webhook\.office\.com/)[^\s?#'\"<>]+"),
        rf"\1{MASK}",
    ),
    (
        (("outlook.office",),),
        re.compile(r"(?i)(outlook\.office(?:365)?\.com/webhook/)[^\s?#'\"<>]+"),
        rf"\1{MASK}",
    ),
    (
        (("/webhooks/",),),
        re.compile(r"(?i)((?:discord|discordapp)\.com/api(?:/v\d+)?/webhooks/)[^\s?#'\"<>]+"),
        rf"\1{MASK}",
    ),
    # Mattermost, Rocket.Chat and most self-hosted chats: /hooks/<long key>.
    ((("/hooks/",),), re.compile(r"(/hooks/)[A-Za-z0-9_-]{16,}(?:/[A-Za-z0-9_-]+)*"), rf"\1{MASK}"),
    # Authorization headers.
    ((("bearer",),), re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{6,}"), rf"\1 {MASK}"),
    (
        (("basic",),),
        re.compile(r"(?i)(authorization\s*[:=]\s*[\"']?\s*basic\s+)[A-Za-z0-9+/=]+"),
        rf"\1{MASK}",
    ),
    # Query strings and name=value pairs in free text.
    (
        (("=",),),
        re.compile(rf"(?i)(?<![a-z0-9_.-])({_NAME})=(?!\*\*\*|(?:bearer|basic)\s){_VALUE}"),
        rf"\1={MASK}",
    ),
    # JSON-ish "name": "value".
    ((('"', "'"), (":",)), re.compile(rf"(?i)([\"']{_NAME}[\"']\s*:\s*[\"'])[^\"']+"), rf"\1{MASK}"),
    # YAML-ish name: value, for names that are never anything but secrets.
    (
        ((":",), ("key-data", "passw", "secret", "token")),
        re.compile(r"(?i)\b(client-key-data|password|passwd|secret|token)(\s*:\s*)(?!\*\*\*)[^\s,;'\"]+"),
        rf"\1\2{MASK}",
    ),
)

_lock = threading.Lock()
_known: set[str] = set()
_listeners: list[Callable[[str], None]] = []


def register_secret(value: str | None) -> None:
    """Hide ``value`` (and its URL-encoded form) wherever it appears from now on."""
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value, safe="")}
    with _lock:
        new = forms - _known
        _known.update(new)
        listeners = list(_listeners)
    if new:
        _redact.cache_clear()  # no cached redaction may outlive a new secret
    if value in new:
        for listener in listeners:
            listener(value)


def register_url(url: str | None) -> None:
    """Register the secret parts of a URL: its userinfo, its query values and its path
    (a webhook's path is its key), never its scheme or host."""
    if not url:
        return
    parts = urllib.parse.urlsplit(url.strip())
    if parts.password:
        register_secret(urllib.parse.unquote(parts.password))
        register_secret(parts.password)
    if parts.username and parts.password is None:
        register_secret(urllib.parse.unquote(parts.username))  # token-as-user, e.g. https://TOKEN@host
    secret_name = re.compile(rf"(?i)^{_NAME}$")
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=False):
        if secret_name.match(name) or len(value) >= LONG_VALUE:
            register_secret(value)
    # A webhook's key is a long path segment; short ones are words ("api", "services").
    for segment in parts.path.split("/"):
        if len(segment) >= LONG_VALUE:
            register_secret(segment)


def add_listener(listener: Callable[[str], None]) -> None:
    """Also tell ``listener`` (e.g. Airflow's ``mask_secret``) of every secret, past and future."""
    with _lock:
        if listener in _listeners:
            return
        _listeners.append(listener)
        known = sorted(_known)
    for value in known:
        listener(value)


def forget_secrets() -> None:
    """Drop every registered secret (tests; a new process starts empty anyway)."""
    with _lock:
        _known.clear()
    _redact.cache_clear()


def redact(text: str) -> str:
    """``text`` with every known and recognisable secret replaced by ``***``."""
    if not text:
        return text
    return _redact(text)


# Run records are rewritten whole on every event: the same strings come back each time.
@functools.lru_cache(maxsize=16384)
def _redact(text: str) -> str:
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    low = text.lower()
    for needles, pattern, replacement in _PATTERNS:
        if all(any(word in low for word in group) for group in needles):
            text = pattern.sub(replacement, text)
            low = text.lower()
    return text


def redact_value(value: Any) -> Any:
    """A JSON-shaped value with every string redacted, and the values of secret keys hidden."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            k: (
                MASK
                if isinstance(k, str) and k.lower() in SECRET_KEYS and isinstance(v, str) and v
                else redact_value(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def describe_url(url: str) -> str:
    """Where a URL points, without anything secret: ``https://***@hooks.example/…``.
    The path is left out whole: for webhooks it is the key."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return redact(url)
    if not parts.scheme or not host:
        return redact(url)
    userinfo = f"{MASK}@" if "@" in parts.netloc else ""
    host = f"[{host}]" if ":" in host else host
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{userinfo}{host}{f':{port}' if port else ''}{rest}"


def url_secrets(url: str) -> list[str]:
    """What in ``url`` is a secret, by name (``user:password``, ``query parameter token``),
    for a validation that refuses URLs carrying credentials."""
    found = []
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError:
        return []
    if "@" in parts.netloc:
        found.append("user:password")
    pair = re.compile(rf"(?i)^{_NAME}$")
    for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if pair.match(name):
            found.append(f"query parameter {name}")
    if redact(f"{parts.netloc}{parts.path}") != f"{parts.netloc}{parts.path}" and "@" not in parts.netloc:
        found.append("webhook key in the path")
    return found
