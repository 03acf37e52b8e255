"""Performance baseline from the components' own ``/metrics``: p99 before vs after an upgrade.

Two signals the seed names for §2.1/§4.2: kube-apiserver request latency
(``apiserver_request_duration_seconds``, one p99 per verb class) and scheduling latency
(``scheduler_scheduling_attempt_duration_seconds``, or the SLI histogram on releases that
only have that). Quantiles are computed from the cumulative buckets exactly as
Prometheus' ``histogram_quantile`` does. Everything here is a pure function of metric
texts; reading them is the control-plane reader's job (:mod:`slipway.inventory`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from slipway.inventory import metric_samples

QUANTILE = 0.99
DEFAULT_TOLERANCE = 2.0
# Fewer observations than this give a p99 that is one slow request: not a signal.
MIN_SAMPLES = 20
# Below this a p99 is noise (one histogram bucket is 5 ms wide); ratios are taken from here.
LATENCY_FLOOR_SECONDS = 0.025

APISERVER_HISTOGRAM = "apiserver_request_duration_seconds"
SCHEDULER_HISTOGRAMS = (
    "scheduler_scheduling_attempt_duration_seconds",
    "scheduler_pod_scheduling_sli_duration_seconds",
)
# Verb classes as the API-call latency SLO groups them; WATCH and CONNECT are long-running
# and have no meaningful duration.
VERB_CLASSES = {
    "GET": "read-object",
    "LIST": "read-list",
    "POST": "mutating",
    "PUT": "mutating",
    "PATCH": "mutating",
    "APPLY": "mutating",
    "DELETE": "mutating",
    "DELETECOLLECTION": "mutating",
}


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram ``{upper bound: count}``; None when empty.

    Linear interpolation inside the bucket, as Prometheus does; a rank that falls in the
    ``+Inf`` bucket returns the highest finite bound.
    """
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf:
        return None
    total = buckets[math.inf]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == math.inf:
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _merged_buckets(text: str, name: str, keep: dict[str, str] | None = None) -> dict[float, float]:
    """Sum the ``name`` histogram's buckets over every series whose labels match ``keep``."""
    merged: dict[float, float] = defaultdict(float)
    for labels, value in metric_samples(text, f"{name}_bucket"):
        if "le" not in labels or (keep and any(labels.get(k) != v for k, v in keep.items())):
            continue
        merged[float(labels["le"])] += value
    return merged


class LatencySignal(BaseModel):
    """One latency percentile and how many observations it rests on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p99_seconds: float = Field(ge=0)
    samples: int = Field(ge=0)


class Baseline(BaseModel):
    """p99 latencies of the apiservers (per verb class) and of the scheduler at one moment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    apiserver: dict[str, LatencySignal] = Field(default_factory=dict)
    scheduler: LatencySignal | None = None


class Degradation(BaseModel):
    """A signal whose p99 rose past the tolerance, with both values and the ratio."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal: str
    before_seconds: float
    after_seconds: float
    ratio: float
    message: str


def _signal(buckets: dict[float, float]) -> LatencySignal | None:
    p99 = histogram_quantile(QUANTILE, buckets)
    if p99 is None:
        return None
    return LatencySignal(p99_seconds=round(p99, 6), samples=int(buckets[math.inf]))


def _apiserver_buckets(text: str) -> dict[str, dict[float, float]]:
    """One apiserver's request-duration buckets per verb class.

    Non-resource requests (``/readyz``, ``/metrics``: resource label empty) are left out:
    the load balancer's health checks would otherwise drown the API traffic.
    """
    by_class: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for labels, value in metric_samples(text, f"{APISERVER_HISTOGRAM}_bucket"):
        verb_class = VERB_CLASSES.get(labels.get("verb", ""))
        if verb_class is None or not labels.get("resource") or "le" not in labels:
            continue
        by_class[verb_class][float(labels["le"])] += value
    return by_class


def _scheduler_buckets(text: str) -> dict[float, float]:
    """Scheduling attempts that placed a pod, or the SLI histogram on releases with only that."""
    attempts = _merged_buckets(text, SCHEDULER_HISTOGRAMS[0], keep={"result": "scheduled"})
    return attempts if attempts.get(math.inf) else _merged_buckets(text, SCHEDULER_HISTOGRAMS[1])


def apiserver_latency(texts: Iterable[str]) -> dict[str, LatencySignal]:
    """p99 per verb class over every given apiserver's ``/metrics`` (instances are summed)."""
    by_class: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for text in texts:
        for cls, buckets in _apiserver_buckets(text).items():
            for bound, count in buckets.items():
                by_class[cls][bound] += count
    signals = {cls: _signal(buckets) for cls, buckets in sorted(by_class.items())}
    return {cls: sig for cls, sig in signals.items() if sig is not None}


def scheduler_latency(text: str) -> LatencySignal | None:
    """p99 of scheduling attempts that placed a pod (or of the SLI histogram); None if no data."""
    return _signal(_scheduler_buckets(text))


def capture_baseline(apiserver_texts: Iterable[str], scheduler_text: str | None) -> Baseline:
    """A :class:`Baseline` from metric texts already read (one per apiserver instance)."""
    return Baseline(
        apiserver=apiserver_latency(apiserver_texts),
        scheduler=scheduler_latency(scheduler_text) if scheduler_text else None,
    )


def ratios(
    before: Baseline,
    after: Baseline,
    *,
    min_samples: int = MIN_SAMPLES,
    floor_seconds: float = LATENCY_FLOOR_SECONDS,
) -> list[tuple[str, LatencySignal, LatencySignal, float]]:
    """``(signal, before, after, p99 ratio)`` for every signal present on both sides.

    A signal with fewer than ``min_samples`` observations on either side is not judged, and
    latencies below ``floor_seconds`` count as ``floor_seconds`` (a 2 ms → 5 ms move is noise).
    """
    pairs: list[tuple[str, LatencySignal | None, LatencySignal | None]] = [
        (f"apiserver {cls}", before.apiserver.get(cls), after.apiserver.get(cls))
        for cls in sorted(set(before.apiserver) | set(after.apiserver))
    ]
    pairs.append(("scheduler", before.scheduler, after.scheduler))
    return [
        (name, old, new, max(new.p99_seconds, floor_seconds) / max(old.p99_seconds, floor_seconds))
        for name, old, new in pairs
        if old is not None and new is not None and min(old.samples, new.samples) >= min_samples
    ]


def compare(
    before: Baseline,
    after: Baseline,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    min_samples: int = MIN_SAMPLES,
    floor_seconds: float = LATENCY_FLOOR_SECONDS,
) -> list[Degradation]:
    """Signals whose p99 after is more than ``tolerance`` times the p99 before (see :func:`ratios`)."""
    if tolerance <= 1.0:
        raise ValueError(f"tolerance: {tolerance} must be above 1.0 (a ratio of p99 after to before)")
    return [
        Degradation(
            signal=name,
            before_seconds=old.p99_seconds,
            after_seconds=new.p99_seconds,
            ratio=round(ratio, 2),
            message=(
                f"{name} p99 rose from {old.p99_seconds * 1000:.0f} ms to "
                f"{new.p99_seconds * 1000:.0f} ms ({ratio:.1f}x, tolerance {tolerance:.1f}x)"
            ),
        )
        for name, old, new, ratio in ratios(
            before, after, min_samples=min_samples, floor_seconds=floor_seconds
        )
        if ratio > tolerance
    ]


# ---- latency over a window: counters read at two moments, per instance ------------------------

# signal ("apiserver read-list", "scheduler") → instance → {bucket bound as text: count}.
# JSON-ready, so a batch's opening snapshot can wait in the run record for its validation.
RawHistograms = dict[str, dict[str, dict[str, float]]]


def _bound_key(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)


def raw_histograms(apiservers: dict[str, str], schedulers: dict[str, str]) -> RawHistograms:
    """The cumulative buckets of every signal, per instance, from ``/metrics`` texts by instance."""
    raw: RawHistograms = defaultdict(dict)
    for instance, text in apiservers.items():
        for cls, buckets in _apiserver_buckets(text).items():
            raw[f"apiserver {cls}"][instance] = {_bound_key(b): c for b, c in buckets.items()}
    for instance, text in schedulers.items():
        buckets = _scheduler_buckets(text)
        if buckets:
            raw["scheduler"][instance] = {_bound_key(b): c for b, c in buckets.items()}
    return dict(raw)


def _minus(now: dict[str, float], then: dict[str, float] | None) -> dict[str, float]:
    # A counter that went down means the instance restarted: everything it counted is new.
    if then is None or any(now.get(k, 0.0) < v for k, v in then.items()):
        return now
    return {k: v - then.get(k, 0.0) for k, v in now.items()}


def window_latency(now: RawHistograms, then: RawHistograms | None = None) -> Baseline:
    """p99 of what happened between two snapshots (or since start when ``then`` is None)."""
    merged: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for signal, instances in now.items():
        for instance, buckets in instances.items():
            earlier = (then or {}).get(signal, {}).get(instance)
            for key, count in _minus(buckets, earlier).items():
                merged[signal][float(key)] += count
    apiserver = {
        name.removeprefix("apiserver "): sig
        for name, buckets in sorted(merged.items())
        if name.startswith("apiserver ") and (sig := _signal(buckets)) is not None
    }
    return Baseline(
        apiserver=apiserver, scheduler=_signal(merged["scheduler"]) if "scheduler" in merged else None
    )
