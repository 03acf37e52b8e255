"""Retry a call when the error is transient, with exponential backoff and a cap.

Transient means the apiserver (or the balancer in front of it) could not answer *now*:
429 (API priority and fairness throttling), 500, 502, 503, 504, and connection errors
(refused, reset, timed out: an apiserver restarting behind the load balancer). A 4xx
refusal (400, 403, 404, 409, 422 ...) is an answer, never retried: the same request would
be refused again. Whether a *write* may be retried is the caller's choice (``retry_on``):
a POST whose answer was lost may have been applied.
"""

from __future__ import annotations

import email.utils
import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import urllib3.exceptions

T = TypeVar("T")

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# Connection-level failures: the request got no answer (urllib3's own errors wrap most of them).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    http.client.HTTPException,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.MaxRetryError,
)
# The request surely never reached the server: safe to repeat for any method, writes too.
NOT_SENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionRefusedError,
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.ConnectTimeoutError,
)


@dataclass(frozen=True)
class Backoff:
    """``attempts`` calls in all; the wait before retry *n* (0-based) is
    ``min(cap, base * factor**n)``; a server's ``Retry-After`` is honoured up to ``cap``."""

    attempts: int = 4
    base: float = 0.5
    factor: float = 2.0
    cap: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"backoff attempts: {self.attempts} must be 1 or more")
        if self.base < 0 or self.cap < 0 or self.factor < 1:
            raise ValueError("backoff: base and cap must be 0 or more, factor 1 or more")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        wait = self.base * self.factor**retry if retry_after is None else retry_after
        return max(0.0, min(self.cap, wait))


NO_RETRY = Backoff(attempts=1)


def status_of(err: BaseException) -> int | None:
    """The HTTP status an exception carries (the kubernetes client's ``ApiException.status``)."""
    status = getattr(err, "status", None)
    return status if isinstance(status, int) else None


def is_transient(err: BaseException) -> bool:
    """429/500/502/503/504 or a connection error; never a 4xx refusal."""
    status = status_of(err)
    if status is not None:
        return status in TRANSIENT_STATUSES
    return isinstance(err, CONNECTION_ERRORS)


def never_sent(err: BaseException) -> bool:
    """The connection was never made: the request cannot have been applied."""
    if isinstance(err, urllib3.exceptions.MaxRetryError):
        return isinstance(err.reason, NOT_SENT_ERRORS)
    return isinstance(err, NOT_SENT_ERRORS)


def retry_after(err: BaseException) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date), when the error has one."""
    headers: Any = getattr(err, "headers", None)
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def call_with_retries(
    fn: Callable[[], T],
    *,
    backoff: Backoff = Backoff(),
    retry_on: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """``fn()``, called again after a backoff while it raises an error ``retry_on`` accepts,
    at most ``backoff.attempts`` times in all. The last error is raised as is."""
    for retry in range(backoff.attempts):
        try:
            return fn()
        except Exception as err:
            if retry + 1 >= backoff.attempts or not retry_on(err):
                raise
            wait = backoff.delay(retry, retry_after(err) if status_of(err) is not None else None)
            if on_retry is not None:
                on_retry(retry + 1, err, wait)
            sleep(wait)
    raise AssertionError("unreachable: the loop returns or raises")
