"""The zero-downtime API probe in a process of its own, so it spans the whole run.

``start`` launches it detached (a baseline phase first, then the upgrade phase) and
returns once the baseline is measured; ``stop`` ends it and returns its figures. The two
meet in the cluster, not on a disk: the probe keeps its state in a ConfigMap of its own in
``slipway-probe`` (``slipway-probe-state-<digest of the run>``: phase, host, pid, heartbeat,
the stop request and, once stopped, its figures). So ``stop`` may run on any worker, a
cleared ``start`` finds the probe already running wherever it runs (no second one), and a
probe whose host died is told apart by its stale heartbeat, named in the error. The process
itself computes the figures the run needs (the control-plane window from the run record's
timeline, the whole run per path): its samples never leave its host (kept there as
``probe-samples.json`` next to its log, for forensics).

Given its run's lease holder, it also stops by itself once that run is over (the cluster
lease released or taken by another run, or not renewed for half an hour): a run that died
before its teardown leaves no probe behind for long.

It measures several paths at once, as OpenShift's upgrade tests do: through the load
balancer on kept-alive connections (``reused``, what a controller does) and on a new
connection per request (``new``, what a CLI does) — the bar for both is 0 disruption on an
HA control plane — and each apiserver asked directly (``direct``), which shows each
instance's own time out of service while it is restarted (never 0 on an upgrade; it is
what the load balancer must hide). Every request is kept as a sample, so the figures of any
window of the run (the control-plane phase, the whole run) are computed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway import lease
from slipway.localcluster.health import NotHealthy, wait_until
from slipway.validation.probe import (
    PROBE_LABEL,
    PROBE_NAMESPACE,
    ApiProbe,
    ProbeSettings,
    Sample,
    is_etcd_leader_change,
    window_figures,
)

BASELINE_REQUESTS = 100
# Requests per second on the new-connection path: each one is a TCP and TLS handshake.
NEW_CONNECTION_RATE = 5.0
# Per apiserver asked directly: enough to time an instance's restart to the half second.
DIRECT_RATE = 2.0
# How the direct paths' requests are told apart in an audit log: an apiserver that has just
# started answers them before its RBAC caches are synced (a 403, kubernetes#92506), which
# the load balancer hides from every other client by waiting for /readyz.
DIRECT_USER_AGENT = "slipway-probe/direct"
# The report's latency series: at most this many points over the run, each at least this long.
SERIES_POINTS = 120
SERIES_MIN_SECONDS = 10.0
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 90.0
# A run waiting deferred (an approval, a node's readiness) renews nothing: its lease may lapse
# while it lives. Only this long past expiry is the run taken for dead.
ORPHAN_GRACE_SECONDS = 1800.0
LEASE_CHECK_SECONDS = 10.0


STATE_LABEL = "state"  # the value of the probe's label on its state ConfigMaps (never cleaned up as writes)
STATE_CHECK_SECONDS = 2.0  # how soon a stop request is seen
HEARTBEAT_SECONDS = 10.0
# A probe whose heartbeat is older than this is gone (its host or process died); it also
# covers clock skew between the probe's host and the reader's.
STALE_SECONDS = 60.0
API_POLL_SECONDS = 1.0
# Stopped probes' states (their figures, read again by a cleared stop task) kept this long.
KEEP_STOPPED = timedelta(days=7)
# The timeline events that end the control-plane phase, whichever way it ended.
CONTROL_PLANE_ENDS = (
    "control-plane-verified",
    "control-plane-rolled-back",
    "control-plane-verification-failed",
)


def _samples_file(folder: Path) -> Path:
    return folder / "probe-samples.json"


def control_plane_end(events: list[dict[str, Any]]) -> float | None:
    """When the control-plane phase ended (epoch seconds), None if it has not: the probe's
    control-plane figures cover up to here. Events are stamped to the second, so the second
    it happened in is included."""
    ends = [datetime.fromisoformat(e["at"]).timestamp() for e in events if e["kind"] in CONTROL_PLANE_ENDS]
    return min(ends) + 1.0 if ends else None


def state_name(probe_id: str) -> str:
    """The state ConfigMap of the probe of ``probe_id`` (a run's ``<dag_id>/<run_id>``)."""
    return f"slipway-probe-state-{hashlib.sha256(probe_id.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class ProbeState:
    """What the probe of one run says about itself in the cluster."""

    phase: str  # starting | ready | stopped
    host: str
    pid: int
    heartbeat: datetime | None
    stop_requested: bool
    result: dict[str, Any] | None

    @classmethod
    def from_configmap(cls, cm: client.V1ConfigMap) -> ProbeState:
        data = cm.data or {}
        beat = data.get("heartbeat")
        return cls(
            phase=data.get("phase", ""),
            host=data.get("host", "?"),
            pid=int(data.get("pid") or 0),
            heartbeat=datetime.fromisoformat(beat) if beat else None,
            stop_requested=bool(data.get("stop")),
            result=json.loads(data["result"]) if data.get("result") else None,
        )

    def fresh(self, now: datetime | None = None) -> bool:
        """Whether its process was alive a moment ago (a heartbeat within STALE_SECONDS)."""
        if self.heartbeat is None:
            return False
        return ((now or datetime.now(UTC)) - self.heartbeat).total_seconds() < STALE_SECONDS

    def where(self) -> str:
        beat = self.heartbeat.isoformat(timespec="seconds") if self.heartbeat else "never"
        return f"pid {self.pid} on {self.host} (last heartbeat {beat})"


def read_state(api: client.ApiClient, probe_id: str, namespace: str = PROBE_NAMESPACE) -> ProbeState | None:
    try:
        cm = client.CoreV1Api(api).read_namespaced_config_map(state_name(probe_id), namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return ProbeState.from_configmap(cm)


def write_state(
    api: client.ApiClient, probe_id: str, namespace: str = PROBE_NAMESPACE, **fields: str
) -> None:
    """Merge ``fields`` into the probe's state ConfigMap, creating it if it is missing."""
    core, name = client.CoreV1Api(api), state_name(probe_id)
    try:
        core.patch_namespaced_config_map(name, namespace, {"data": fields})
        return
    except ApiException as err:
        if err.status != 404:
            raise
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(
            name=name, labels={PROBE_LABEL: STATE_LABEL}, annotations={"slipway.dev/run": probe_id}
        ),
        data=fields,
    )
    try:
        core.create_namespaced_config_map(namespace, body)
    except ApiException as err:
        if err.status != 409:  # created meanwhile: patch it
            raise
        core.patch_namespaced_config_map(name, namespace, {"data": fields})


def delete_state(api: client.ApiClient, probe_id: str, namespace: str = PROBE_NAMESPACE) -> None:
    with contextlib.suppress(ApiException):
        client.CoreV1Api(api).delete_namespaced_config_map(state_name(probe_id), namespace)


def prune_states(
    api: client.ApiClient, now: datetime | None = None, namespace: str = PROBE_NAMESPACE
) -> list[str]:
    """Delete the states of probes that stopped, or went silent, more than KEEP_STOPPED ago."""
    cutoff = (now or datetime.now(UTC)) - KEEP_STOPPED
    core, pruned = client.CoreV1Api(api), []
    try:
        found = core.list_namespaced_config_map(
            namespace, label_selector=f"{PROBE_LABEL}={STATE_LABEL}"
        ).items
    except ApiException as err:
        if err.status == 404:
            return []
        raise
    for cm in found:
        state = ProbeState.from_configmap(cm)
        if state.heartbeat is not None and state.heartbeat < cutoff:
            with contextlib.suppress(ApiException):
                core.delete_namespaced_config_map(cm.metadata.name, namespace)
                pruned.append(cm.metadata.name)
    return pruned


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def start(
    api: client.ApiClient,
    kubeconfig: Path,
    folder: Path,
    probe_id: str,
    *,
    max_seconds: float = 7200.0,
    direct: Mapping[str, str] | None = None,
    holder: str | None = None,
) -> ProbeState:
    """Start the probe of ``probe_id`` (unless it already runs, on this host or another) and
    return its state once its baseline is measured. ``direct``: apiserver instance → its own
    URL, each probed besides the load balancer; ``holder``: the run's cluster lease holder,
    whose run's end stops the probe; ``folder``: where the process keeps its log and samples."""
    state = read_state(api, probe_id)
    if (
        state is not None
        and state.phase in ("starting", "ready")
        and state.fresh()
        and not state.stop_requested
    ):
        if state.phase == "starting":
            wait_until(
                "API probe baseline",
                lambda: _phase(api, probe_id) != "starting",
                START_TIMEOUT_SECONDS,
                interval=API_POLL_SECONDS,
            )
        found = read_state(api, probe_id)
        if found is not None and found.phase == "ready":
            return found
    delete_state(api, probe_id)  # a stopped or dead probe's state: this one starts afresh
    prune_states(api)
    folder.mkdir(parents=True, exist_ok=True)
    # The child keeps its own copy of the log's descriptor; this task closes its one.
    with (folder / "probe.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "slipway.probe_process",
                "--kubeconfig",
                str(kubeconfig),
                "--folder",
                str(folder),
                "--probe-id",
                probe_id,
                "--max-seconds",
                str(max_seconds),
                *(("--holder", holder) if holder else ()),
                *(
                    arg
                    for name, url in sorted((direct or {}).items())
                    for arg in ("--direct", f"{name}={url}")
                ),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    wait_until(
        "API probe baseline",
        lambda: _phase(api, probe_id) == "ready",
        START_TIMEOUT_SECONDS,
        alive=lambda: proc.poll() is None,
        interval=API_POLL_SECONDS,
    )
    found = read_state(api, probe_id)
    assert found is not None  # just seen ready
    return found


def _phase(api: client.ApiClient, probe_id: str) -> str:
    try:
        state = read_state(api, probe_id)
    except (ApiException, OSError):  # ask again: an apiserver may be restarting
        return "unknown"
    return state.phase if state is not None else "missing"


def stop(api: client.ApiClient, probe_id: str, timeout: float = STOP_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Ask the probe of ``probe_id`` to stop, wherever it runs, and return its figures
    (``report``, ``whole`` and ``control_plane``); a stopped probe's figures are read again.

    :raises RuntimeError: no probe ran, or it did not answer (its host or process died)."""
    state = read_state(api, probe_id)
    if state is None:
        raise RuntimeError(
            f"no API probe ran for {probe_id} (no ConfigMap {state_name(probe_id)} in {PROBE_NAMESPACE})"
        )
    if state.phase != "stopped":
        write_state(api, probe_id, stop=_stamp())
        with contextlib.suppress(NotHealthy):
            wait_until(
                "API probe figures",
                lambda: _phase(api, probe_id) == "stopped",
                timeout,
                interval=API_POLL_SECONDS,
            )
        state = read_state(api, probe_id)
    if state is None or state.phase != "stopped" or state.result is None:
        where = state.where() if state is not None else "its state vanished"
        raise RuntimeError(
            f"the API probe of {probe_id} did not stop within {timeout:g}s ({where}): its host or "
            "process died, and its figures with it"
        )
    return state.result


@dataclass(frozen=True)
class PathSamples:
    """One path's upgrade-phase requests and every failure among them, as the process saved them."""

    requests: list[Sample]
    failures: list[dict[str, Any]]
    retries: list[dict[str, Any]]

    def failed_within(self, start: float | None, end: float | None) -> list[dict[str, Any]]:
        return [f for f in self.failures if _within(f["at"], start, end)]

    def retried_within(self, start: float | None, end: float | None) -> int:
        return sum(1 for r in self.retries if _within(r["at"], start, end))


def save_samples(folder: Path, probes: Mapping[str, ApiProbe]) -> None:
    """What each path saw, for :func:`load_samples`."""
    _write(
        _samples_file(folder),
        {
            path: {
                "requests": each.samples(),
                "failures": [f.model_dump(mode="json") for f in each.failures()],
                "retries": [r.model_dump(mode="json") for r in each.retried()],
            }
            for path, each in probes.items()
        },
    )


def load_samples(folder: Path) -> dict[str, PathSamples]:
    """Path (``reused``, ``new``, ``direct/<apiserver>``) → what it saw."""
    found = _samples_file(folder)
    if not found.exists():
        return {}
    return {
        path: PathSamples(
            [(at, latency) for at, latency in saved["requests"]], saved["failures"], saved["retries"]
        )
        for path, saved in json.loads(found.read_text()).items()
    }


def summary(
    report: dict[str, Any], samples: Mapping[str, PathSamples], window: tuple[float | None, float | None]
) -> dict[str, Any]:
    """The figures through the load balancer over ``window`` (epoch seconds, open ends take
    all): what the report shows for the control-plane phase."""
    start, end = window
    empty = PathSamples([], [], [])
    reused, fresh = samples.get("reused", empty), samples.get("new", empty)
    on_reused, on_new = (
        window_figures(reused.requests, start, end),
        window_figures(fresh.requests, start, end),
    )
    failed, failed_new = reused.failed_within(start, end), fresh.failed_within(start, end)
    p99, base = on_reused.p99_ms, (report.get("baseline_p99_seconds") or 0.0) * 1000
    return {
        "requests": on_reused.requests,
        "failures": on_reused.failures,
        "dropped_by_etcd": _dropped(failed),
        "retries": reused.retried_within(start, end),
        "p99_ms": p99,
        "baseline_p99_ms": base,
        "p99_ratio": (p99 / base) if base else 0.0,
        "disruption_seconds": on_reused.disruption_seconds,
        "failure_samples": _brief(failed),
        "new_connections": {
            "requests": on_new.requests,
            "failures": on_new.failures,
            "dropped_by_etcd": _dropped(failed_new),
            "disruption_seconds": on_new.disruption_seconds,
            "failure_samples": _brief(failed_new),
        },
    }


def whole_run(samples: Mapping[str, PathSamples]) -> dict[str, Any]:
    """Every path's figures over the whole run, and the reused path's p99 over time."""
    paths = {
        path: window_figures(saved.requests).model_dump() | {"dropped_by_etcd": _dropped(saved.failures)}
        for path, saved in sorted(samples.items())
    }
    reused = samples.get("reused")
    return {
        # Kept-alive connections first: what running controllers see.
        "paths": {p: paths[p] for p in ("reused", "new") if p in paths},
        "direct": {p.removeprefix("direct/"): f for p, f in paths.items() if p.startswith("direct/")},
        "series": latency_series(reused.requests if reused else []),
    }


def latency_series(rows: list[Sample]) -> list[dict[str, float]]:
    """p99 and failed requests per time bucket: at most SERIES_POINTS points over the run."""
    if not rows:
        return []
    first, last = rows[0][0], rows[-1][0]
    width = max(SERIES_MIN_SECONDS, (last - first) / SERIES_POINTS)
    buckets: dict[int, list[Sample]] = {}
    for row in rows:
        buckets.setdefault(int((row[0] - first) // width), []).append(row)
    series = []
    for index, bucket in sorted(buckets.items()):
        figures = window_figures(bucket)
        series.append(
            {"at": round(first + index * width, 1), "p99_ms": figures.p99_ms, "failures": figures.failures}
        )
    return series


def _within(at: str, start: float | None, end: float | None) -> bool:
    when = datetime.fromisoformat(at).timestamp()
    return (start is None or when >= start) and (end is None or when < end)


def _dropped(failures: list[dict[str, Any]]) -> int:
    return sum(1 for f in failures if is_etcd_leader_change(f["error"]))


def _brief(failures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: s[k] for k in ("at", "verb", "error")} for s in failures][:5]


def orphaned(
    state: lease.LeaseState | None, holder: str, now: datetime, grace: float = ORPHAN_GRACE_SECONDS
) -> str | None:
    """Why the probe of ``holder``'s run should stop by itself (None: keep measuring). Asked
    only once the probe has seen its run hold the lease."""
    if state is None or not state.holder:
        return "the cluster lease was released: its run is over"
    if state.holder != holder:
        return f"the cluster lease is held by {state.holder}: its run is over"
    expires = state.expires_at
    if expires is not None and now > expires + timedelta(seconds=grace):
        return f"its run has not renewed the cluster lease since {state.renewed}"
    return None


def holds_lease(api: Any, holder: str) -> bool:
    """Whether ``holder`` holds the cluster lease now (False when it cannot be read)."""
    try:
        state = lease.read(api)
    except Exception:  # an unreadable lease proves nothing either way
        return False
    return state is not None and state.holder == holder


def _watch_lease(api: Any, holder: str, stopping: threading.Event, why: list[str], seen: bool) -> None:
    """Set ``stopping`` once ``holder``'s run is over (asked only once the run was seen holding
    the lease); a failed read (an apiserver restarting) is looked at again later, never taken
    for an answer."""
    while not stopping.wait(LEASE_CHECK_SECONDS):
        try:
            state = lease.read(api)
        except Exception as err:  # any failure: ask again next time
            print(f"lease read failed, looking again in {LEASE_CHECK_SECONDS:g}s: {type(err).__name__}")
            continue
        seen = seen or (state is not None and state.holder == holder)
        reason = orphaned(state, holder, datetime.now(UTC)) if seen else None
        if reason:
            print(f"stopping: {reason}")
            why.append(reason)
            stopping.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Slipway API probe process")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--probe-id", required=True, help="the run's <dag_id>/<run_id>")
    parser.add_argument("--max-seconds", type=float, default=7200.0)
    parser.add_argument("--direct", action="append", default=[], metavar="INSTANCE=URL")
    parser.add_argument("--holder", default="", help="the run's cluster lease holder")
    args = parser.parse_args(argv)
    from kubernetes.config import new_client_from_config

    folder = Path(args.folder)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    # Read the kubeconfig now: the task removes its copy once the probe is ready.
    api = new_client_from_config(args.kubeconfig)
    # slipway-probe (the default): the orchestrator's Role there may create and delete
    # ConfigMaps; in slipway-system it may not delete any (the run records live there).
    settings = ProbeSettings(max_duration_seconds=args.max_seconds)
    probe = ApiProbe.from_kubeconfig(args.kubeconfig, settings)
    fresh = ApiProbe.from_kubeconfig(
        args.kubeconfig,
        ProbeSettings(
            max_duration_seconds=args.max_seconds, rate_per_second=NEW_CONNECTION_RATE, connections="new"
        ),
    )
    direct = {
        name: ApiProbe.from_kubeconfig(
            args.kubeconfig,
            ProbeSettings(max_duration_seconds=args.max_seconds, rate_per_second=DIRECT_RATE),
            server=url,
            user_agent=f"{DIRECT_USER_AGENT} {name}",
        )
        for name, url in (item.split("=", 1) for item in args.direct)
    }
    probes = {"reused": probe, "new": fresh} | {f"direct/{name}": each for name, each in direct.items()}
    for each in probes.values():
        each.start()  # the first makes the namespace the state lives in
    write_state(
        api,
        args.probe_id,
        phase="starting",
        host=socket.gethostname(),
        pid=str(os.getpid()),
        heartbeat=_stamp(),
    )
    wait_until("probe baseline", lambda: probe.count("baseline") >= BASELINE_REQUESTS, START_TIMEOUT_SECONDS)
    for each in probes.values():
        each.end_baseline()
    stopped_because: list[str] = []
    if args.holder:  # the first look before "ready": the run holds its lease by now
        watch = (api, args.holder, stopping, stopped_because, holds_lease(api, args.holder))
        threading.Thread(target=_watch_lease, args=watch, name="probe-lease-watch", daemon=True).start()
    write_state(api, args.probe_id, phase="ready", heartbeat=_stamp())
    _serve(api, args.probe_id, stopping, args.max_seconds)
    # All halted before any cleans up: they share the namespace (see ApiProbe.stop).
    for each in probes.values():
        each.halt()
    reports = {path: each.stop().model_dump(mode="json") for path, each in probes.items()}
    save_samples(folder, probes)
    report = reports["reused"] | {
        "new_connections": reports["new"],
        "direct": {
            path.removeprefix("direct/"): r for path, r in reports.items() if path.startswith("direct/")
        },
    }
    if stopped_because:
        report["stopped_by_itself"] = stopped_because[0]
    result = figures(api, args.probe_id, report, load_samples(folder))
    # The figures must reach the cluster: the stop task waits for them on whatever host it runs.
    _keep_trying(
        "writing the probe's figures",
        lambda: write_state(
            api, args.probe_id, phase="stopped", heartbeat=_stamp(), result=json.dumps(result)
        ),
    )
    return 0


def figures(
    api: client.ApiClient, probe_id: str, report: dict[str, Any], samples: Mapping[str, PathSamples]
) -> dict[str, Any]:
    """What the run records: the probe's own ``report``, the ``whole`` run per path and, for a
    run with a control-plane phase (its end read from the run's timeline), that phase's figures."""
    from slipway.runrecord import RunRecord

    run_id = probe_id.split("/", 1)[-1]
    events: list[dict[str, Any]] = []
    with contextlib.suppress(ApiException, OSError):  # no record: no control-plane window to cut
        events = RunRecord(api, run_id).load().get("events", [])
    ended = control_plane_end(events)
    return {
        "report": report,
        "whole": whole_run(samples),
        "control_plane": summary(report, samples, (None, ended)) if ended is not None else None,
    }


def _serve(api: client.ApiClient, probe_id: str, stopping: threading.Event, max_seconds: float) -> None:
    """Keep measuring until stopped (a stop request in the state, SIGTERM, the run's end or
    ``max_seconds``), beating the heartbeat. A failed read or write (an apiserver restarting)
    is tried again at the next beat, never taken for an answer."""
    deadline = time.monotonic() + max_seconds
    beat = time.monotonic()
    while not stopping.wait(STATE_CHECK_SECONDS) and time.monotonic() < deadline:
        try:
            state = read_state(api, probe_id)
            if state is not None and state.stop_requested:
                print("stop requested")
                return
            if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                write_state(api, probe_id, heartbeat=_stamp())
                beat = time.monotonic()
        except (ApiException, OSError, ValueError) as err:
            print(f"probe state not reached, trying again: {type(err).__name__}")


def _keep_trying(what: str, action: Callable[[], None], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            action()
            return
        except (ApiException, OSError) as err:
            if time.monotonic() >= deadline:
                raise
            print(f"{what} failed, trying again: {type(err).__name__}")
            time.sleep(1.0)


def _write(path: Path, data: Any) -> None:
    """Whole or not at all."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.rename(path)


if __name__ == "__main__":
    sys.exit(main())
