"""The zero-downtime API probe in a process of its own, so it spans the whole run.

``start`` launches it detached (a baseline phase first, then the upgrade phase) and
returns once the baseline is measured; ``stop`` ends it and returns its report. Both are
idempotent on the run's artefact folder, so a cleared task does not start a second probe.
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
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from slipway import lease
from slipway.localcluster.health import wait_until
from slipway.validation.probe import ApiProbe, ProbeSettings, Sample, is_etcd_leader_change, window_figures

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


def _paths(folder: Path) -> tuple[Path, Path, Path]:
    return folder / "probe.pid", folder / "probe.ready", folder / "probe-report.json"


def _samples_file(folder: Path) -> Path:
    return folder / "probe-samples.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def start(
    kubeconfig: Path,
    folder: Path,
    max_seconds: float = 7200.0,
    direct: Mapping[str, str] | None = None,
    holder: str | None = None,
) -> int:
    """Start the probe (unless this folder's probe already runs); returns its pid.
    ``direct``: apiserver instance → its own URL, each probed besides the load balancer;
    ``holder``: the run's cluster lease holder, whose run's end stops the probe."""
    folder.mkdir(parents=True, exist_ok=True)
    pid_file, ready, _ = _paths(folder)
    if pid_file.exists() and _alive(int(pid_file.read_text())):
        return int(pid_file.read_text())
    ready.unlink(missing_ok=True)
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
    pid_file.write_text(str(proc.pid))
    wait_until("API probe baseline", ready.exists, START_TIMEOUT_SECONDS, alive=lambda: proc.poll() is None)
    return proc.pid


def stop(folder: Path) -> dict[str, Any]:
    """Stop the probe and return its report (the saved one if it already stopped)."""
    pid_file, _, report = _paths(folder)
    if pid_file.exists():
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        wait_until("API probe report", report.exists, STOP_TIMEOUT_SECONDS)
        pid_file.unlink(missing_ok=True)
    if not report.exists():
        raise RuntimeError(f"no API probe ran in {folder}")
    data: dict[str, Any] = json.loads(report.read_text())
    return data


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
    parser.add_argument("--max-seconds", type=float, default=7200.0)
    parser.add_argument("--direct", action="append", default=[], metavar="INSTANCE=URL")
    parser.add_argument("--holder", default="", help="the run's cluster lease holder")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    _, ready, report = _paths(folder)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
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
    lease_api = None
    if args.holder:  # read the kubeconfig now: the task removes its copy once the probe is ready
        from kubernetes.config import new_client_from_config

        lease_api = new_client_from_config(args.kubeconfig)
    for each in probes.values():
        each.start()
    wait_until("probe baseline", lambda: probe.count("baseline") >= BASELINE_REQUESTS, START_TIMEOUT_SECONDS)
    for each in probes.values():
        each.end_baseline()
    stopped_because: list[str] = []
    if lease_api is not None:  # the first look before "ready": the run holds its lease by now
        watch = (lease_api, args.holder, stopping, stopped_because, holds_lease(lease_api, args.holder))
        threading.Thread(target=_watch_lease, args=watch, name="probe-lease-watch", daemon=True).start()
    ready.write_text("ready")
    stopping.wait(args.max_seconds)
    # All halted before any cleans up: they share the namespace (see ApiProbe.stop).
    for each in probes.values():
        each.halt()
    reports = {path: each.stop().model_dump(mode="json") for path, each in probes.items()}
    save_samples(folder, probes)
    result = reports["reused"] | {
        "new_connections": reports["new"],
        "direct": {
            path.removeprefix("direct/"): r for path, r in reports.items() if path.startswith("direct/")
        },
    }
    if stopped_because:
        result["stopped_by_itself"] = stopped_because[0]
    _write(report, result)
    return 0


def _write(path: Path, data: Any) -> None:
    """Whole or not at all: ``stop`` waits for the report file to appear."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.rename(path)


if __name__ == "__main__":
    sys.exit(main())
