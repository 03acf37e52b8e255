"""Zero-downtime probe: a steady stream of API reads and writes through the load balancer.

While the control plane is upgraded, a background thread sends GET, LIST (with a limit),
CREATE and DELETE of ConfigMaps in a namespace of its own at a fixed rate, with an
ApiClient of its own, and records every request's latency and every failure. The report
compares the latency during the upgrade with a baseline phase measured just before it.

What counts as a failure is what a correct client could not complete. Two transport
events are retried, once, and always reported (``retries``):

- a kept-alive connection closed before any response came back. HTTP/1.1 cannot close
  an idle connection without racing a request the client is sending on it (RFC 9112
  §9.3.1); an apiserver ending its graceful shutdown does exactly that to connections a
  layer-4 load balancer pinned to it before the drain. RFC 9110 §9.2.2 lets a client
  replay a request it knows to be idempotent, and every request here is: reads, a delete
  by name, a create with a name unique to this probe (a replay that finds the object
  means the first attempt landed);
- ``503``/``429`` with ``Retry-After``: the apiserver's own graceful-shutdown answer
  ("apiserver is shutting down") for a request it did not process, asking the client to
  retry, which client-go does for every verb. The probe waits as told (capped).

client-go meets neither on HTTP/2 (GOAWAY). Timeouts, refused connections and every
other HTTP error are failures, never retried.

Two paths are worth measuring, as OpenShift's upgrade tests do: requests on kept-alive
connections (``connections="reused"``, what a running controller does) and requests that
each open a new connection (``connections="new"``, what a fresh client or a CLI does; the
load balancer must not route them to an apiserver that stopped accepting). Disruption is
measured in seconds per path: from a failed request to the next request that succeeds.

One kind of failure is named apart (``dropped_by_etcd``) and still counted: what etcd
answers while its leadership moves — ``raft proposal dropped`` (raft refuses new proposals
on the leader during a transfer and on a follower that has not yet heard from the new
leader) and ``etcdserver: leader changed`` (a linearizable read or a proposal cut short by
the change). The request was not applied, and neither the apiserver nor client-go retries
the 500, so a client sees it. Every member upgrade that restarts the leader moves it once;
Slipway shortens the window (the transferee is the most caught-up member) but cannot close it.

Usage::

    probe = ApiProbe.from_kubeconfig(kubeconfig)
    probe.start()                              # baseline phase
    ...                                        # wait until probe.count("baseline") is enough
    probe.end_baseline()                       # from here on: the upgrade phase
    ...                                        # upgrade
    report = probe.stop()
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field
from urllib3.exceptions import HTTPError, ProtocolError

Phase = Literal["baseline", "upgrade"]
# One request: when it was sent (epoch seconds) and its latency in seconds, None if it failed.
Sample = tuple[float, float | None]
Verb = Literal["get", "list", "create", "delete"]

PROBE_LABEL = "slipway.dev/probe"
PROBE_NAMESPACE = "slipway-probe"
READ_CONFIGMAP = "slipway-probe-read"
NOT_FOUND = 404
CONFLICT = 409
RETRY_AFTER_STATUSES = (429, 503)
MAX_RETRY_AFTER_SECONDS = 5.0
# etcd's answers while its leader moves (see the module docstring), as the apiserver passes them on.
ETCD_LEADER_CHANGE = ("raft proposal dropped", "etcdserver: leader changed")
ERROR_TEXT_LIMIT = 300


@dataclass(frozen=True)
class ProbeSettings:
    """How hard and how long the probe works; defaults suit a control-plane upgrade."""

    namespace: str = PROBE_NAMESPACE
    rate_per_second: float = 20.0
    max_duration_seconds: float = 3600.0
    request_timeout_seconds: float = 10.0
    list_limit: int = 50
    max_samples: int = 20
    connections: Literal["reused", "new"] = "reused"

    def __post_init__(self) -> None:
        if not 0 < self.rate_per_second <= 1000:
            raise ValueError(f"rate_per_second: {self.rate_per_second} must be in (0, 1000]")
        if self.max_duration_seconds <= 0:
            raise ValueError(f"max_duration_seconds: {self.max_duration_seconds} must be positive")


class ProbeEvent(BaseModel):
    """One failed or retried request: when, in which phase, which verb and what the client saw."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: datetime
    phase: Phase
    verb: Verb
    error: str


class ProbeReport(BaseModel):
    """What the probe saw; ``requests``/``failures``/percentiles are for the upgrade phase."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: int = Field(ge=0)
    failures: int = Field(ge=0)
    failure_samples: list[ProbeEvent] = Field(default_factory=list)
    dropped_by_etcd: int = Field(
        default=0, ge=0, description="failed requests etcd refused, unapplied, while its leader moved"
    )
    retries: int = Field(ge=0, description="requests replayed after a closed connection or a Retry-After")
    retry_samples: list[ProbeEvent] = Field(default_factory=list)
    p50_seconds: float | None = None
    p95_seconds: float | None = None
    p99_seconds: float | None = None
    baseline_requests: int = Field(ge=0)
    baseline_failures: int = Field(ge=0)
    baseline_p99_seconds: float | None = None
    p99_ratio: float | None = Field(default=None, description="upgrade p99 / baseline p99")
    rate_per_second: float
    duration_seconds: float = Field(ge=0)
    stopped_by: Literal["stop", "max-duration"]
    connections: Literal["reused", "new"] = "reused"
    disruption_seconds: float = Field(
        default=0.0, ge=0, description="upgrade-phase seconds from a failed request to the next success"
    )


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def is_etcd_leader_change(error: str) -> bool:
    return any(answer in error for answer in ETCD_LEADER_CHANGE)


def dropped_by_etcd(events: list[ProbeEvent]) -> int:
    """How many of ``events`` etcd refused while its leader moved (see the module docstring)."""
    return sum(1 for e in events if is_etcd_leader_change(e.error))


def describe_error(err: Exception) -> str:
    """A short text of what the client saw: HTTP status and reason, or the connection error."""
    if isinstance(err, ApiException):
        text = f"HTTP {err.status} {err.reason}: {(err.body or '').strip()}"
    else:
        text = f"{type(err).__name__}: {err}"
    return text[:ERROR_TEXT_LIMIT]


class ApiProbe:
    """Background reads and writes at a fixed rate; see the module docstring for the rules."""

    def __init__(
        self,
        configuration: client.Configuration,
        settings: ProbeSettings | None = None,
        *,
        user_agent: str | None = None,
    ) -> None:
        """:param configuration: where and as whom to connect (the load balancer's URL); copied.
        :param user_agent: tells this probe's requests apart in the apiserver's audit log."""
        self.settings = settings or ProbeSettings()
        own = copy.deepcopy(configuration)
        # The probe decides what to retry (see the module docstring), so urllib3 must not.
        own.retries = False
        self._api = client.ApiClient(configuration=own)
        if user_agent:
            self._api.user_agent = user_agent
        self._core = client.CoreV1Api(self._api)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._phase: Phase = "baseline"
        self._latencies: dict[Phase, list[float]] = {"baseline": [], "upgrade": []}
        self._failures: list[ProbeEvent] = []
        self._retries: list[ProbeEvent] = []
        self._created: deque[str] = deque()
        self._pending_create = ""
        self._names = itertools.count()
        # Unique per probe, so a create can only collide with its own earlier attempt.
        self._prefix = f"slipway-probe-{secrets.token_hex(3)}"
        self._started = 0.0
        self._finished = 0.0
        self._disruption = Disruption()
        # Every upgrade-phase request as (epoch seconds, latency or None when it failed): the
        # figures of any window of the run (the control-plane phase, the whole run) come from it.
        self._samples: list[Sample] = []
        self._stopped_by: Literal["stop", "max-duration"] = "stop"

    @classmethod
    def from_kubeconfig(
        cls,
        kubeconfig: Path | str,
        settings: ProbeSettings | None = None,
        *,
        server: str | None = None,
        user_agent: str | None = None,
    ) -> ApiProbe:
        """``server`` replaces the kubeconfig's URL (one apiserver asked directly, not through
        the load balancer); the credentials and the CA stay the kubeconfig's."""
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        if server:
            configuration.host = server
        return cls(configuration, settings, user_agent=user_agent)

    # ---- control -------------------------------------------------------------------
    def start(self) -> None:
        """Make the namespace and the ConfigMap to read, then start sending (baseline phase)."""
        if self._thread is not None:
            raise RuntimeError("probe already started: a probe runs once; make a new one")
        self._prepare()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="slipway-api-probe", daemon=True)
        self._thread.start()

    def end_baseline(self) -> None:
        """From now on requests count towards the upgrade phase."""
        self._phase = "upgrade"

    def count(self, phase: Phase) -> int:
        """Requests sent so far in ``phase`` (successful or not)."""
        return len(self._latencies[phase]) + sum(1 for f in self._failures if f.phase == phase)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def halt(self) -> None:
        """Stop sending (idempotent); what it created stays until :meth:`stop`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.settings.request_timeout_seconds * 3)

    def stop(self) -> ProbeReport:
        """Stop sending, remove what the probe created, and report. Probes sharing a namespace
        are all halted first: one's cleanup would otherwise delete what another still deletes."""
        self.halt()
        self._cleanup()
        self._api.close()
        return self.report()

    def samples(self) -> list[Sample]:
        """The upgrade phase's requests in the order sent (see :func:`window_figures`)."""
        return list(self._samples)

    def failures(self) -> list[ProbeEvent]:
        """Every upgrade-phase failure (the report keeps a sample of them)."""
        return [f for f in self._failures if f.phase == "upgrade"]

    def retried(self) -> list[ProbeEvent]:
        """Every upgrade-phase replay (the report keeps a sample of them)."""
        return [r for r in self._retries if r.phase == "upgrade"]

    def report(self) -> ProbeReport:
        upgrade, baseline = self._latencies["upgrade"], self._latencies["baseline"]
        p99, base_p99 = percentile(upgrade, 0.99), percentile(baseline, 0.99)
        end = self._finished or time.monotonic()
        samples = self.settings.max_samples
        failed = [f for f in self._failures if f.phase == "upgrade"]
        return ProbeReport(
            requests=self.count("upgrade"),
            failures=len(failed),
            dropped_by_etcd=dropped_by_etcd(failed),
            failure_samples=self._failures[:samples],
            retries=len(self._retries),
            retry_samples=self._retries[:samples],
            p50_seconds=_round(percentile(upgrade, 0.50)),
            p95_seconds=_round(percentile(upgrade, 0.95)),
            p99_seconds=_round(p99),
            baseline_requests=self.count("baseline"),
            baseline_failures=sum(1 for f in self._failures if f.phase == "baseline"),
            baseline_p99_seconds=_round(base_p99),
            p99_ratio=round(p99 / base_p99, 2) if p99 is not None and base_p99 else None,
            rate_per_second=self.settings.rate_per_second,
            duration_seconds=round(max(0.0, end - self._started), 1) if self._started else 0.0,
            stopped_by=self._stopped_by,
            connections=self.settings.connections,
            disruption_seconds=round(self._disruption.seconds(end), 2),
        )

    # ---- the loop ------------------------------------------------------------------
    def _run(self) -> None:
        interval = 1.0 / self.settings.rate_per_second
        verbs: tuple[Verb, ...] = ("get", "list", "create", "delete")
        next_at = time.monotonic()
        for verb in itertools.cycle(verbs):
            if time.monotonic() - self._started >= self.settings.max_duration_seconds:
                self._stopped_by = "max-duration"
                break
            self._send(verb)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:
                # Behind schedule (a slow request): carry on at the rate, never in a burst.
                next_at = time.monotonic()
            elif self._stop.wait(delay):
                break
            if self._stop.is_set():
                break
        self._finished = time.monotonic()

    def _send(self, verb: Verb) -> None:
        if verb == "delete" and not self._created:
            verb = "get"  # the matching create failed: keep the rate with a read
        phase = self._phase
        if self.settings.connections == "new":
            # Close every kept-alive connection: this request opens (and TLS-handshakes) its own.
            self._api.rest_client.pool_manager.clear()
        sent = time.monotonic()
        sent_at = time.time()
        began = time.perf_counter()
        try:
            try:
                self._request(verb, replay=False)
            except (ProtocolError, ApiException) as err:
                delay = _retry_delay(err)
                if delay is None:
                    raise
                self._retries.append(_event(phase, verb, err))
                self._stop.wait(delay)
                self._request(verb, replay=True)
        except Exception as err:  # every failure is the measurement, never a crash of the probe
            self._failures.append(_event(phase, verb, err))
            if phase == "upgrade":
                self._disruption.failed(sent)
                self._samples.append((sent_at, None))
            return
        latency = time.perf_counter() - began
        self._latencies[phase].append(latency)
        if phase == "upgrade":
            self._disruption.succeeded(time.monotonic())
            self._samples.append((sent_at, latency))

    def _request(self, verb: Verb, *, replay: bool) -> None:
        ns, timeout = self.settings.namespace, self.settings.request_timeout_seconds
        if verb == "get":
            self._core.read_namespaced_config_map(READ_CONFIGMAP, ns, _request_timeout=timeout)
        elif verb == "list":
            self._core.list_namespaced_config_map(
                ns, limit=self.settings.list_limit, _request_timeout=timeout
            )
        elif verb == "create":
            name = f"{self._prefix}-w{next(self._names)}" if not replay else self._pending_create
            self._pending_create = name
            try:
                self._core.create_namespaced_config_map(
                    ns, _configmap(name, "write"), _request_timeout=timeout
                )
            except ApiException as err:
                if not (replay and err.status == CONFLICT):
                    raise  # a replay finding its own object means the first attempt landed
            self._created.append(name)
        else:
            try:
                self._core.delete_namespaced_config_map(self._created[0], ns, _request_timeout=timeout)
            except ApiException as err:
                if not (replay and err.status == NOT_FOUND):
                    raise
            self._created.popleft()

    # ---- setup and cleanup ---------------------------------------------------------
    def _prepare(self) -> None:
        ns = self.settings.namespace
        body = client.V1Namespace(metadata=client.V1ObjectMeta(name=ns, labels={PROBE_LABEL: "true"}))
        try:
            self._core.read_namespace(ns)  # the orchestrator identity may not create namespaces
        except ApiException as err:
            if err.status != NOT_FOUND:
                raise
            _create_if_missing(lambda: self._core.create_namespace(body))
        _create_if_missing(
            lambda: self._core.create_namespaced_config_map(ns, _configmap(READ_CONFIGMAP, "read"))
        )

    def _cleanup(self) -> None:
        # Best effort and not measured: leftovers only cost a few ConfigMaps in our namespace.
        with contextlib.suppress(ApiException, HTTPError, OSError):
            self._core.delete_collection_namespaced_config_map(
                self.settings.namespace, label_selector=f"{PROBE_LABEL}=write"
            )


class Disruption:
    """Seconds during which a path failed: each run of failures counts from its first failed
    request to the next request that succeeded (or to the end of the measurement)."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._total = 0.0

    def failed(self, at: float) -> None:
        if self._since is None:
            self._since = at

    def succeeded(self, at: float) -> None:
        if self._since is not None:
            self._total += at - self._since
            self._since = None

    def seconds(self, end: float) -> float:
        return self._total + (end - self._since if self._since is not None else 0.0)


class WindowFigures(BaseModel):
    """One path's requests inside a window of the run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: int = Field(ge=0)
    failures: int = Field(ge=0)
    p99_ms: float = Field(ge=0, description="of the requests that succeeded; 0 when none did")
    disruption_seconds: float = Field(ge=0)


def window_figures(
    samples: list[Sample], start: float | None = None, end: float | None = None
) -> WindowFigures:
    """Figures of the ``samples`` sent in [start, end) (epoch seconds; open ends take all).
    Disruption follows :class:`Disruption`'s rule: each run of failures counts from its first
    failed request to the next request that succeeded, or to the window's end."""
    inside = [s for s in samples if (start is None or s[0] >= start) and (end is None or s[0] < end)]
    disruption = Disruption()
    for at, latency in inside:
        if latency is None:
            disruption.failed(at)
        else:
            disruption.succeeded(at)
    last = end if end is not None else (inside[-1][0] if inside else 0.0)
    latencies = [latency for _, latency in inside if latency is not None]
    return WindowFigures(
        requests=len(inside),
        failures=len(inside) - len(latencies),
        p99_ms=round((percentile(latencies, 0.99) or 0.0) * 1000, 1),
        disruption_seconds=round(disruption.seconds(last), 2),
    )


def _retry_delay(err: Exception) -> float | None:
    """Seconds to wait before the one replay the module docstring allows; None: do not retry."""
    if isinstance(err, ProtocolError):
        return 0.0
    if isinstance(err, ApiException) and err.status in RETRY_AFTER_STATUSES:
        retry_after = (err.headers or {}).get("Retry-After")
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after), MAX_RETRY_AFTER_SECONDS)
    return None


def _event(phase: Phase, verb: Verb, err: Exception) -> ProbeEvent:
    return ProbeEvent(at=datetime.now(UTC), phase=phase, verb=verb, error=describe_error(err))


def _configmap(name: str, role: Literal["read", "write"]) -> client.V1ConfigMap:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels={PROBE_LABEL: role}), data={"probe": role}
    )


def _create_if_missing(create: Callable[[], object]) -> None:
    try:
        create()
    except ApiException as err:
        if err.status != CONFLICT:
            raise


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
