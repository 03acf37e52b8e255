"""Latency baseline: Prometheus text in, p99 per signal out, before/after compared. No cluster."""

from __future__ import annotations

import math

import pytest

from slipway.validation.baseline import (
    Baseline,
    LatencySignal,
    capture_baseline,
    compare,
    histogram_quantile,
    scheduler_latency,
)


def _histogram(name: str, labels: str, buckets: dict[str, int]) -> str:
    lines = [f"# HELP {name} test histogram", f"# TYPE {name} histogram"]
    sep = "," if labels else ""
    for le, count in buckets.items():
        lines.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {count}')
    lines.append(f"{name}_sum{{{labels}}} 1.0")
    lines.append(f"{name}_count{{{labels}}} {buckets['+Inf']}")
    return "\n".join(lines) + "\n"


def _request(verb: str, resource: str, buckets: dict[str, int], scope: str = "namespace") -> str:
    labels = (
        f'component="apiserver",dry_run="",group="",resource="{resource}",scope="{scope}",'
        f'subresource="",verb="{verb}",version="v1"'
    )
    return _histogram("apiserver_request_duration_seconds", labels, buckets)


FAST = {"0.005": 90, "0.025": 99, "0.05": 100, "0.1": 100, "+Inf": 100}
SLOW = {"0.005": 0, "0.025": 10, "0.05": 50, "0.1": 90, "0.2": 99, "0.4": 100, "+Inf": 100}


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 50.0, 0.2: 90.0, 0.4: 100.0, math.inf: 100.0}
    # rank 99 falls in (0.2, 0.4]: 0.2 + 0.2 * (99 - 90) / (100 - 90)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.38)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)


def test_histogram_quantile_in_the_inf_bucket_returns_the_highest_bound() -> None:
    assert histogram_quantile(0.99, {0.1: 10.0, math.inf: 100.0}) == 0.1


def test_histogram_quantile_without_data_is_none() -> None:
    assert histogram_quantile(0.99, {}) is None
    assert histogram_quantile(0.99, {0.1: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.99, {0.1: 3.0}) is None  # no +Inf bucket: not a histogram


def test_apiserver_p99_per_verb_class_summed_over_instances() -> None:
    one = _request("GET", "pods", FAST) + _request("POST", "configmaps", SLOW)
    two = _request("GET", "pods", FAST) + _request("LIST", "pods", SLOW, scope="cluster")
    baseline = capture_baseline([one, two], None)
    assert set(baseline.apiserver) == {"read-object", "mutating", "read-list"}
    assert baseline.apiserver["read-object"].samples == 200
    assert baseline.apiserver["read-object"].p99_seconds == pytest.approx(0.025)
    assert baseline.apiserver["mutating"].p99_seconds == pytest.approx(0.2)
    assert baseline.scheduler is None


def test_non_resource_requests_and_watches_are_left_out() -> None:
    health = _histogram(
        "apiserver_request_duration_seconds",
        'resource="",subresource="/readyz",verb="GET"',
        {"0.005": 0, "1": 0, "+Inf": 1000},
    )
    watch = _request("WATCH", "pods", {"60": 0, "+Inf": 50})
    assert capture_baseline([health + watch + _request("GET", "pods", FAST)], None).apiserver == {
        "read-object": LatencySignal(p99_seconds=0.025, samples=100)
    }


def test_scheduler_prefers_scheduled_attempts_then_the_sli_histogram() -> None:
    attempts = _histogram(
        "scheduler_scheduling_attempt_duration_seconds",
        'profile="default-scheduler",result="scheduled"',
        FAST,
    ) + _histogram(
        "scheduler_scheduling_attempt_duration_seconds",
        'profile="default-scheduler",result="unschedulable"',
        SLOW,
    )
    signal = scheduler_latency(attempts)
    assert signal == LatencySignal(p99_seconds=0.025, samples=100)
    sli = _histogram("scheduler_pod_scheduling_sli_duration_seconds", 'attempts="1"', SLOW)
    assert scheduler_latency(sli) == LatencySignal(p99_seconds=0.2, samples=100)
    assert scheduler_latency("# nothing scheduled yet\n") is None


def _baseline(mutating: float, scheduler: float, samples: int = 100) -> Baseline:
    return Baseline(
        apiserver={"mutating": LatencySignal(p99_seconds=mutating, samples=samples)},
        scheduler=LatencySignal(p99_seconds=scheduler, samples=samples),
    )


def test_compare_names_each_signal_past_the_tolerance() -> None:
    found = compare(_baseline(0.1, 0.05), _baseline(0.35, 0.06))
    assert [(d.signal, d.ratio) for d in found] == [("apiserver mutating", 3.5)]
    assert found[0].message == "apiserver mutating p99 rose from 100 ms to 350 ms (3.5x, tolerance 2.0x)"


def test_compare_within_tolerance_or_faster_finds_nothing() -> None:
    assert compare(_baseline(0.1, 0.05), _baseline(0.19, 0.02)) == []


def test_compare_ignores_noise_below_the_floor_and_thin_samples() -> None:
    # 2 ms -> 10 ms is 5x but both are under the 25 ms floor.
    assert compare(_baseline(0.002, 0.05), _baseline(0.010, 0.05)) == []
    assert compare(_baseline(0.1, 0.05, samples=5), _baseline(1.0, 1.0, samples=5)) == []


def test_compare_skips_signals_missing_on_one_side() -> None:
    before = Baseline(apiserver={"read-list": LatencySignal(p99_seconds=0.1, samples=100)})
    after = Baseline(apiserver={"mutating": LatencySignal(p99_seconds=9.0, samples=100)})
    assert compare(before, after) == []


def test_compare_refuses_a_tolerance_that_is_not_a_rise() -> None:
    with pytest.raises(ValueError, match=r"tolerance: 1.0 must be above 1.0"):
        compare(Baseline(), Baseline(), tolerance=1.0)


def test_baseline_and_degradations_are_json_shaped() -> None:
    found = compare(_baseline(0.1, 0.05), _baseline(1.0, 0.05))
    assert Baseline.model_validate_json(_baseline(0.1, 0.05).model_dump_json()) == _baseline(0.1, 0.05)
    assert found[0].model_dump(mode="json")["signal"] == "apiserver mutating"
