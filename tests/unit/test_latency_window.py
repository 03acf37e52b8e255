"""Latency during a batch: counters read at two moments, per instance, against the baseline.

Plain metric texts in, figures and problems out; the reader that fetches them from a
cluster is exercised in the integration tests.
"""

from __future__ import annotations

import pytest

from slipway.models import parse_request
from slipway.validation.baseline import raw_histograms, window_latency
from slipway.workers import latency_check
from tests.unit.test_baseline import FAST, SLOW, _request

TARGET = "1.37.2"


def _scale(buckets: dict[str, int], factor: int) -> dict[str, int]:
    return {le: _at(buckets, le) * factor for le in BOUNDS}


def _at(buckets: dict[str, int], le: str) -> int:
    """A cumulative histogram's count at ``le``, even where it has no bucket of that bound."""
    return max((count for bound, count in buckets.items() if float(bound) <= float(le)), default=0)


# An apiserver's histogram has the same bounds in every read: give every text all of them.
BOUNDS = sorted(set(FAST) | set(SLOW), key=float)


def _full(buckets: dict[str, int]) -> dict[str, int]:
    return {le: _at(buckets, le) for le in BOUNDS}


def _plus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {le: _at(a, le) + _at(b, le) for le in BOUNDS}


def test_the_window_is_what_happened_between_the_two_reads() -> None:
    # 1,000 fast requests before; then 100 slow ones: over the window, p99 is the slow one's.
    then = raw_histograms({"apiserver-0": _request("POST", "configmaps", _scale(FAST, 10))}, {})
    now = raw_histograms({"apiserver-0": _request("POST", "configmaps", _plus(_scale(FAST, 10), SLOW))}, {})
    since_start = window_latency(now)
    during = window_latency(now, then)
    assert during.apiserver["mutating"].samples == 100
    assert during.apiserver["mutating"].p99_seconds == pytest.approx(0.2)
    # The cumulative view dilutes the slow requests under the fast history.
    assert since_start.apiserver["mutating"].samples == 1100
    assert since_start.apiserver["mutating"].p99_seconds < during.apiserver["mutating"].p99_seconds


def test_an_instance_that_restarted_counts_everything_since_its_start() -> None:
    then = raw_histograms({"apiserver-0": _request("GET", "pods", _scale(FAST, 10))}, {})
    now = raw_histograms({"apiserver-0": _request("GET", "pods", SLOW)}, {})  # counters went down
    assert window_latency(now, then).apiserver["read-object"].samples == 100


def test_instances_are_summed_and_a_new_instance_counts_from_zero() -> None:
    then = raw_histograms({"apiserver-0": _request("GET", "pods", FAST)}, {})
    now = raw_histograms(
        {
            "apiserver-0": _request("GET", "pods", _scale(FAST, 2)),
            "apiserver-1": _request("GET", "pods", FAST),
        },
        {},
    )
    assert window_latency(now, then).apiserver["read-object"].samples == 200


class _Reader:
    """A control-plane reader that serves fixed metric texts (this test is about the arithmetic)."""

    def __init__(self, apiservers: dict[str, str]) -> None:
        self.texts = apiservers

    def latency_metrics(self) -> tuple[dict[str, str], dict[str, str]]:
        return self.texts, {}


def _latency_record(baseline_text: str, window_start_text: str) -> dict[str, object]:
    base = window_latency(raw_histograms({"apiserver-0": baseline_text}, {}))
    return {
        "baseline": base.model_dump(mode="json"),
        "window_batch": 0,
        "window_start": raw_histograms({"apiserver-0": window_start_text}, {}),
    }


@pytest.mark.parametrize(("policy", "fails"), [("report", False), ("enforce", True)])
def test_a_slow_batch_is_reported_and_fails_only_when_enforced(policy: str, fails: bool) -> None:
    start = _request("POST", "configmaps", _full(FAST))
    latency = _latency_record(start, start)
    reader = _Reader({"apiserver-0": _request("POST", "configmaps", _plus(FAST, SLOW))})
    request = parse_request({"target_version": TARGET, "latency_policy": policy})
    problems, figures = latency_check(reader, latency, request)  # type: ignore[arg-type]
    worst = figures["signals"][0]
    assert worst["signal"] == "apiserver mutating"
    assert worst["batch_ms"] == pytest.approx(200.0)
    assert worst["ratio"] > request.latency_tolerance
    assert figures["degraded"] and figures["degraded"][0].startswith("apiserver mutating p99 rose")
    assert bool(problems) is fails


def test_a_batch_as_fast_as_the_baseline_passes_when_enforced() -> None:
    start = _request("POST", "configmaps", _full(FAST))
    latency = _latency_record(start, start)
    reader = _Reader({"apiserver-0": _request("POST", "configmaps", _scale(FAST, 2))})
    request = parse_request({"target_version": TARGET, "latency_policy": "enforce"})
    problems, figures = latency_check(reader, latency, request)  # type: ignore[arg-type]
    assert problems == []
    assert figures["signals"][0]["ratio"] == pytest.approx(1.0)


def test_without_a_baseline_the_comparison_says_it_was_skipped() -> None:
    request = parse_request({"target_version": TARGET, "latency_policy": "enforce"})
    problems, figures = latency_check(_Reader({}), {}, request)  # type: ignore[arg-type]
    assert problems == []
    assert "no baseline" in figures["skipped"]


def test_the_latency_fields_of_the_request_are_validated() -> None:
    from slipway.models import RequestError

    with pytest.raises(RequestError, match="latency_tolerance"):
        parse_request({"target_version": TARGET, "latency_tolerance": 1.0})
    with pytest.raises(RequestError, match="latency_policy"):
        parse_request({"target_version": TARGET, "latency_policy": "sometimes"})
