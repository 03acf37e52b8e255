"""Retries with backoff, on plain callables: which errors are retried, how long it waits."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import urllib3.exceptions

from slipway.kube.retry import (
    NO_RETRY,
    Backoff,
    call_with_retries,
    is_transient,
    never_sent,
    retry_after,
)


class HttpError(Exception):
    """What the kubernetes client raises: an exception with ``status`` and ``headers``."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers or {}


def failing(*errors: BaseException, result: str = "ok") -> tuple[Callable[[], str], list[int]]:
    """A callable raising ``errors`` one per call, then returning ``result``; and its call count."""
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return fn, calls


DEFAULT = Backoff()


def run(fn: Callable[[], Any], backoff: Backoff = DEFAULT, **kw: Any) -> tuple[Any, list[float]]:
    waits: list[float] = []
    return call_with_retries(fn, backoff=backoff, sleep=waits.append, **kw), waits


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    fn, calls = failing(HttpError(status), HttpError(status))
    result, waits = run(fn)
    assert result == "ok" and len(calls) == 3
    assert waits == [0.5, 1.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_a_refusal_is_never_retried(status: int) -> None:
    fn, calls = failing(HttpError(status))
    with pytest.raises(HttpError) as refused:
        run(fn)
    assert refused.value.status == status and len(calls) == 1


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        ConnectionResetError(104, "reset"),
        TimeoutError("timed out"),
        urllib3.exceptions.ProtocolError("Connection aborted."),
        urllib3.exceptions.ReadTimeoutError(None, "/api", "read timed out"),  # type: ignore[arg-type]
    ],
)
def test_connection_errors_are_retried(error: BaseException) -> None:
    fn, calls = failing(error)
    assert run(fn)[0] == "ok" and len(calls) == 2


def test_other_errors_are_not_transient() -> None:
    assert not is_transient(ValueError("bad"))
    assert not is_transient(KeyError("x"))
    fn, calls = failing(ValueError("bad"))
    with pytest.raises(ValueError):
        run(fn)
    assert len(calls) == 1


def test_backoff_grows_exponentially_up_to_the_cap_then_gives_up_with_the_last_error() -> None:
    errors = [HttpError(503) for _ in range(6)]
    fn, calls = failing(*errors)
    with pytest.raises(HttpError) as last:
        run(fn, Backoff(attempts=6, base=1, factor=2, cap=5))
    assert last.value is errors[-1]
    assert len(calls) == 6


def test_the_waits_between_attempts() -> None:
    fn, _ = failing(*[HttpError(503) for _ in range(5)])
    _, waits = run(fn, Backoff(attempts=6, base=1, factor=2, cap=5))
    assert waits == [1, 2, 4, 5, 5]


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    fn, _ = failing(HttpError(429, {"Retry-After": "3"}), HttpError(429, {"Retry-After": "120"}))
    _, waits = run(fn, Backoff(cap=10))
    assert waits == [3.0, 10.0]


def test_retry_after_as_an_http_date() -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    seconds = retry_after(HttpError(503, {"Retry-After": format_datetime(later, usegmt=True)}))
    assert seconds is not None and 3000 < seconds <= 3600
    assert retry_after(HttpError(503, {"Retry-After": "soon"})) is None
    assert retry_after(HttpError(503)) is None


def test_one_attempt_means_no_retry() -> None:
    fn, calls = failing(HttpError(503))
    with pytest.raises(HttpError):
        run(fn, NO_RETRY)
    assert len(calls) == 1


def test_each_retry_is_reported() -> None:
    seen: list[tuple[int, int | None, float]] = []
    fn, _ = failing(HttpError(502), HttpError(504))
    run(fn, on_retry=lambda n, err, wait: seen.append((n, getattr(err, "status", None), wait)))
    assert seen == [(1, 502, 0.5), (2, 504, 1.0)]


def test_a_write_is_retried_only_when_the_request_never_left() -> None:
    refused = urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
    assert never_sent(refused)
    assert never_sent(urllib3.exceptions.MaxRetryError(None, "/x", refused))  # type: ignore[arg-type]
    assert never_sent(ConnectionRefusedError())
    lost = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())
    assert is_transient(lost) and not never_sent(lost)
    assert not never_sent(HttpError(503))
    fn, calls = failing(lost)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        run(fn, retry_on=never_sent)
    assert len(calls) == 1


def test_a_refused_connection_to_a_real_closed_port_is_retried() -> None:
    """A real refused connection (a port bound and closed, nothing listening)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fn_calls: list[int] = []

    def connect() -> None:
        fn_calls.append(1)
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    with pytest.raises(ConnectionRefusedError):
        run(connect, Backoff(attempts=3, base=0.01))
    assert len(fn_calls) == 3


def test_bad_backoff_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="attempts: 0 must be 1 or more"):
        Backoff(attempts=0)
    with pytest.raises(ValueError, match="factor 1 or more"):
        Backoff(factor=0.5)
