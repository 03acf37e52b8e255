"""Drain a node holding 110 pods behind a 10 % PDB: Slipway's ``drain_node`` against ``kubectl drain``.

Starts its own 4-node local cluster, runs both drains alternately on identical set-ups
(110 pods of one Deployment on one node, PDB maxUnavailable 10 %), prints the median of
each, the ratio kubectl/slipway, evictions and 429 counts, and where the time went.
The cluster is purged at the end. A benchmark, not a test.

    python bench/bench_drain.py [--rounds 3] [--base-port 30500]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path

from kubernetes import client, watch

from slipway.kube import nodes
from slipway.kube.drain import DrainOptions, drain_node
from slipway.localcluster import binaries
from slipway.localcluster.cluster import ClusterError, LocalCluster
from slipway.localcluster.config import ClusterConfig
from slipway.localcluster.health import https_get, wait_until
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD, kubernetes_release

NAMESPACE = "bench"
APP = "bench-web"
PODS = 110  # a node's default pod capacity
PDB_MAX_UNAVAILABLE = "10%"
WORKERS = 4
RUN_ID = "bench-drain"
SETUP_TIMEOUT = 300.0
OPTS = DrainOptions()  # the seed's settings, which the kubectl flags below mirror
KUBECTL_FLAGS = [
    "--ignore-daemonsets",
    "--delete-emptydir-data=false",
    f"--grace-period={OPTS.grace_period_seconds}",
    f"--timeout={int(OPTS.timeout_seconds)}s",
]
KUBECTL_SLACK_SECONDS = 60
METRICS_TIMEOUT = 10.0
LOG_TAIL_LINES = 5
WATCH_SECONDS = 1  # also how long stopping the PDB watch may take


class BudgetTimeline:
    """Watches the bench PDB during a drain and sums the time it allowed no disruption."""

    def __init__(self, api: client.ApiClient) -> None:
        self._policy = client.PolicyV1Api(api)
        self._closed_since: float | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.closed_seconds = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> float:
        self._stopped.set()
        self._thread.join()
        self._observe(allowed=1)  # close an interval still open at the end
        return self.closed_seconds

    def _run(self) -> None:
        while not self._stopped.is_set():
            list_budgets = self._policy.list_namespaced_pod_disruption_budget
            for event in watch.Watch().stream(list_budgets, NAMESPACE, timeout_seconds=WATCH_SECONDS):
                self._observe(event["object"].status.disruptions_allowed or 0)
                if self._stopped.is_set():
                    break

    def _observe(self, allowed: int) -> None:
        now = time.monotonic()
        if allowed == 0 and self._closed_since is None:
            self._closed_since = now
        elif allowed > 0 and self._closed_since is not None:
            self.closed_seconds += now - self._closed_since
            self._closed_since = None


@dataclass(frozen=True)
class ServerCounts:
    """What the apiservers saw: evictions created and refused (429), all eviction calls and
    their summed duration, and pod reads (GET/LIST)."""

    evictions_created: float = 0.0
    evictions_refused: float = 0.0
    eviction_calls: float = 0.0
    eviction_seconds: float = 0.0
    pod_reads: float = 0.0

    def __sub__(self, other: ServerCounts) -> ServerCounts:
        return ServerCounts(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass(frozen=True)
class Trial:
    """One drain: which tool, how long, what the apiservers saw, how long the PDB sat at zero."""

    tool: str
    seconds: float
    server: ServerCounts
    budget_closed_seconds: float
    throttled_requests: int
    longest_throttle_seconds: float


METRIC_LINE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')
THROTTLED = re.compile(r'delay="([0-9.]+)(ms|s)" reason="client-side throttling[^"]*".*URL="([^"]+)"')
EVICTION = {"resource": "pods", "subresource": "eviction"}


def server_counts(cluster: LocalCluster) -> ServerCounts:
    """Read the counters from every apiserver (the load balancer would show only one)."""
    pki = cluster.cfg.pki_dir
    found = {"created": 0.0, "refused": 0.0, "calls": 0.0, "seconds": 0.0, "reads": 0.0}
    for i in range(cluster.cfg.apiservers):
        _, text = https_get(
            "127.0.0.1",
            cluster.cfg.apiserver_port(i),
            "/metrics",
            ca=pki / "ca.crt",
            cert=(pki / "admin.crt", pki / "admin.key"),
            timeout=METRICS_TIMEOUT,
        )
        for line in text.splitlines():
            match = METRIC_LINE.match(line)
            if not match:
                continue
            name, value = match["name"], float(match["value"])
            labels = dict(LABEL.findall(match["labels"]))
            eviction = EVICTION.items() <= labels.items()
            if name == "apiserver_request_total" and eviction:
                found["created"] += value if labels.get("code") == "201" else 0.0
                found["refused"] += value if labels.get("code") == "429" else 0.0
            elif name == "apiserver_request_duration_seconds_sum" and eviction:
                found["seconds"] += value
            elif name == "apiserver_request_duration_seconds_count" and eviction:
                found["calls"] += value
            elif (
                name == "apiserver_request_total"
                and labels.get("resource") == "pods"
                and not labels.get("subresource")
                and labels.get("verb") in ("GET", "LIST")
            ):
                found["reads"] += value
    return ServerCounts(found["created"], found["refused"], found["calls"], found["seconds"], found["reads"])


def kubectl_path() -> Path:
    for version in (KUBERNETES_NEW, KUBERNETES_OLD):
        try:
            return binaries.binary(kubernetes_release(version), "kubectl")
        except binaries.BinaryError:
            continue
    raise SystemExit("error: no kubectl built: run `make binaries`")


def create_workload(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    wait_until(
        "default service account",
        lambda: bool(
            core.list_namespaced_service_account(NAMESPACE, field_selector="metadata.name=default").items
        ),
        SETUP_TIMEOUT,
    )
    container = {
        "name": "web",
        "image": "registry.local/web:1.0",
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
    }
    client.AppsV1Api(api).create_namespaced_deployment(
        NAMESPACE,
        {
            "metadata": {"name": APP},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": APP}},
                "template": {"metadata": {"labels": {"app": APP}}, "spec": {"containers": [container]}},
            },
        },
    )
    client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(
        NAMESPACE,
        {
            "metadata": {"name": APP},
            "spec": {"maxUnavailable": PDB_MAX_UNAVAILABLE, "selector": {"matchLabels": {"app": APP}}},
        },
    )


def running_on(core: client.CoreV1Api, node: str | None = None) -> int:
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"app={APP}").items
    return sum(
        1
        for p in pods
        if p.status.phase == "Running"
        and not p.metadata.deletion_timestamp
        and (node is None or p.spec.node_name == node)
    )


def load_node(api: client.ApiClient, target: str, workers: list[str]) -> None:
    """Put all PODS replicas on ``target``: scale to zero, cordon the rest, scale up, uncordon."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    scale = lambda n: apps.patch_namespaced_deployment_scale(APP, NAMESPACE, {"spec": {"replicas": n}})  # noqa: E731
    scale(0)
    wait_until("bench pods gone", lambda: not core.list_namespaced_pod(NAMESPACE).items, SETUP_TIMEOUT)
    for name in workers:
        core.patch_node(name, {"spec": {"unschedulable": name != target}})
    scale(PODS)
    wait_until(f"{PODS} pods on {target}", lambda: running_on(core, target) == PODS, SETUP_TIMEOUT)
    for name in workers:
        core.patch_node(name, {"spec": {"unschedulable": False}})
    policy = client.PolicyV1Api(api)
    wait_until(
        "PDB counted every pod",
        lambda: (
            (policy.read_namespaced_pod_disruption_budget(APP, NAMESPACE).status.current_healthy or 0) == PODS
        ),
        SETUP_TIMEOUT,
    )


def drain_with_slipway(cluster: LocalCluster, target: str) -> list[float]:
    """Slipway's drain; its client has no rate limiter, so nothing waits client-side."""
    drain_node(cluster.orchestrator_client(), target, OPTS, run_id=RUN_ID)
    return []


def drain_with_kubectl(cluster: LocalCluster, target: str) -> list[float]:
    """``kubectl drain`` with the seed's flags; returns the delays its own rate limiter imposed
    (logged at -v=3, which changes nothing else)."""
    done = subprocess.run(
        [
            str(kubectl_path()),
            "--kubeconfig",
            str(cluster.admin_kubeconfig),
            "-v=3",
            "drain",
            target,
            *KUBECTL_FLAGS,
        ],
        capture_output=True,
        text=True,
        timeout=OPTS.timeout_seconds + KUBECTL_SLACK_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"error: kubectl drain {target} failed: {done.stderr.strip()[-500:]}")
    # client-go logs some waits twice; one request is one (delay, URL) pair.
    waits = set(THROTTLED.findall(done.stderr))
    return [float(amount) / (1000 if unit == "ms" else 1) for amount, unit, _ in waits]


DRAINS: dict[str, Callable[[LocalCluster, str], list[float]]] = {
    "slipway": drain_with_slipway,
    "kubectl": drain_with_kubectl,
}


def measure(cluster: LocalCluster, tool: str, target: str) -> Trial:
    """Time one drain and take the apiservers' counters around it, then uncordon the node."""
    admin = cluster.admin_client()
    timeline = BudgetTimeline(admin)
    before = server_counts(cluster)
    timeline.start()
    started = time.monotonic()
    throttled = DRAINS[tool](cluster, target)
    seconds = time.monotonic() - started
    trial = Trial(
        tool,
        seconds,
        server_counts(cluster) - before,
        timeline.stop(),
        len(throttled),
        max(throttled, default=0.0),
    )
    nodes.uncordon(admin, target, RUN_ID, force=True)
    return trial


def report(trials: list[Trial]) -> None:
    by_tool = {tool: [t for t in trials if t.tool == tool] for tool in DRAINS}
    median = {tool: statistics.median(t.seconds for t in ts) for tool, ts in by_tool.items()}

    def mid(tool: str, value: Callable[[Trial], float]) -> float:
        return statistics.median(value(t) for t in by_tool[tool])

    print(
        f"\ndrain of one node with {PODS} pods, PDB maxUnavailable {PDB_MAX_UNAVAILABLE}, "
        f"{len(by_tool['slipway'])} rounds each (medians; counts from the apiservers' metrics)"
    )
    for tool, ts in by_tool.items():
        runs = ", ".join(f"{t.seconds:.1f}" for t in ts)
        print(
            f"  {tool:8s} {median[tool]:6.1f}s  (runs {runs}s)  "
            f"evictions {mid(tool, lambda t: t.server.evictions_created):.0f}  "
            f"429s {mid(tool, lambda t: t.server.evictions_refused):.0f}  "
            f"pod reads {mid(tool, lambda t: t.server.pod_reads):.0f}"
        )
    print(f"  ratio kubectl/slipway: {median['kubectl'] / median['slipway']:.2f}x")
    for tool in by_tool:
        calls = mid(tool, lambda t: t.server.eviction_calls)
        inside = mid(tool, lambda t: t.server.eviction_seconds)
        print(
            f"  where the time goes ({tool}): {calls:.0f} eviction calls, {inside:.1f}s inside the "
            f"apiservers (mean {inside / max(calls, 1):.2f}s; evictions under one PDB queue on its "
            f"status update, retried every 0.5s on conflict); PDB at 0 disruptions "
            f"{mid(tool, lambda t: t.budget_closed_seconds):.1f}s; "
            f"{mid(tool, lambda t: t.throttled_requests):.0f} requests held by the client's own rate limiter "
            f"(up to {mid(tool, lambda t: t.longest_throttle_seconds):.1f}s)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=30500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="slipway-bench-drain-") as state_root:
        cluster = LocalCluster(
            ClusterConfig(
                name="bench-drain", base_port=args.base_port, nodes=WORKERS, state_root=Path(state_root)
            )
        )
        try:
            started = time.monotonic()
            try:
                cluster.up()
            except ClusterError as err:
                # The state (and its logs) is purged on the way out: show why it failed first.
                for log_file in sorted(cluster.cfg.log_dir.glob("*.log")):
                    tail = log_file.read_text(errors="replace").strip().splitlines()[-LOG_TAIL_LINES:]
                    print(f"--- {log_file.name}\n" + "\n".join(tail), file=sys.stderr)
                raise SystemExit(f"error: {err}") from err
            admin = cluster.admin_client()
            workers = [n.metadata.name for n in nodes.list_workers(admin)]
            target = workers[0]
            create_workload(admin)
            print(
                f"cluster up with {len(workers)} workers in {time.monotonic() - started:.0f}s; "
                f"draining {target} with kubectl {kubectl_path().parent.name}",
                flush=True,
            )
            trials = []
            for i in range(args.rounds):
                for tool in DRAINS:
                    load_node(admin, target, workers)
                    trial = measure(cluster, tool, target)
                    trials.append(trial)
                    print(
                        f"  round {i + 1} {tool:8s} {trial.seconds:6.1f}s  evictions "
                        f"{trial.server.evictions_created:.0f}  429s {trial.server.evictions_refused:.0f}",
                        flush=True,
                    )
            report(trials)
        finally:
            cluster.down(purge=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
