"""The run record's timeline at the scale of a 1,000-node run: what appending its ~6,500 events
sends to the apiserver, Slipway's chunked timeline against the whole-record rewrite it replaced.

- **rewrite** (the baseline, the old scheme): every event reads the record and writes it back
  whole, the timeline capped at its newest 2,000 events (a ConfigMap holds 1 MiB);
- **slipway**: :meth:`slipway.runrecord.RunRecord.event`, one guarded replace of the current
  chunk per event; once with one writer, once with the node events of each batch appended by
  ``--writers`` threads at once (mapped node tasks, each with its own client and record).

The events are those of a simulated run: 100 batches of 10 nodes, 6 events per node, 5 per
batch. Counted where the Kubernetes client hands each request to urllib3: requests, request
bytes sent, response bytes received; then the events ``load()`` gives back. Every 500 events
etcd is compacted to its current revision (the apiserver does so every 5 minutes in a real
cluster; without it the rewrite's history would pass etcd's 2 GiB quota). The baseline skips
the old scheme's redaction of the whole record on each write, which only flatters it. A
benchmark, not a test.

    python bench/bench_timeline.py [--nodes 1000] [--writers 8] [--base-port 30700]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.etcd.client import EtcdEndpoints, endpoint_status, etcdctl
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.config import ClusterConfig
from slipway.runrecord import CHUNK_EVENTS, NAMESPACE, RunRecord, record_name

BATCH_SIZE = 10
NODE_STEPS = (
    ("node-cordoned", "node {node} cordoned by run {run}"),
    ("drain-started", "node {node}: evicting 7 pods (PDBs honoured)"),
    ("node-drained", "node {node} drained: 7 pods evicted, 2 DaemonSet pods left in place"),
    ("node-upgraded", "node {node}: upgraded 1.33.5"),
    ("node-ready", "node {node} Ready at 1.33.5 after 41 s"),
    ("node-uncordoned", "node {node} back in service after 97 s"),
)
OLD_MAX_EVENTS = 2000  # the old scheme's cap
COMPACT_EVERY = 500
Event = tuple[str, str, dict[str, Any]]


def simulated_run(nodes: int, run: str) -> Iterator[list[Event]]:
    """The events of one run, grouped as they happen: per batch, its opening, its nodes'
    steps (one group: appended concurrently), its closing."""
    yield [("run-started", f"run {run} started: {nodes} workers to 1.33.5", {})]
    for index in range(nodes // BATCH_SIZE):
        batch = [f"kwok-worker-{index * BATCH_SIZE + i:04d}" for i in range(BATCH_SIZE)]
        yield [("batch-opened", f"batch {index}: {', '.join(batch)}", {"batch": index})]
        # The nodes of a batch go through their steps side by side.
        yield [
            (kind, text.format(node=node, run=run), {"node": node, "batch": index, "seconds": 97.0})
            for kind, text in NODE_STEPS
            for node in batch
        ]
        yield [
            ("probe", f"batch {index}: API probe p99 12.4 ms vs baseline 11.9 ms", {"batch": index}),
            ("latency-window", f"batch {index}: apiserver p99 within 1.2x of baseline", {"batch": index}),
            ("batch-validated", f"batch {index}: {BATCH_SIZE} nodes Ready, 0 pods pending", {"batch": index}),
            ("batch-succeeded", f"batch {index}: verdict passed in 212 s", {"batch": index}),
        ]


class Traffic:
    """Requests, request-body bytes and response bytes one ApiClient exchanges."""

    def __init__(self, api: client.ApiClient) -> None:
        self.requests = self.sent = self.received = 0
        self._lock = threading.Lock()
        pool = api.rest_client.pool_manager
        original = pool.request

        def counting(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            body = kwargs.get("body")
            response = original(method, url, *args, **kwargs)
            with self._lock:
                self.requests += 1
                self.sent += len(body.encode() if isinstance(body, str) else body or b"")
                self.received += len(response.data or b"")
            return response

        pool.request = counting


@dataclass
class Result:
    name: str
    events: int = 0
    requests: int = 0
    sent: int = 0
    received: int = 0
    seconds: float = 0.0
    kept: int = 0

    def line(self) -> str:
        return (
            f"{self.name:26s} {self.events:6d} events  {self.requests:6d} requests  "
            f"{self.sent / 1e6:9.1f} MB sent  {self.received / 1e6:9.1f} MB received  "
            f"{self.sent / max(self.events, 1) / 1e3:7.1f} KB sent/event  {self.seconds:7.1f} s  "
            f"load() gives {self.kept} events"
        )


def old_event(
    core: client.CoreV1Api, name: str, run_id: str, kind: str, message: str, **details: Any
) -> None:
    """The whole-record rewrite per event (slipway.runrecord before chunking, redaction aside)."""
    entry = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": kind,
        "message": message,
        **details,
    }
    for _ in range(8):
        try:
            cm = core.read_namespaced_config_map(name, NAMESPACE)
        except ApiException as err:
            if err.status != 404:
                raise
            cm = None
        data = {k: json.loads(v) for k, v in ((cm.data or {}) if cm else {}).items()}
        data.setdefault("run_id", run_id)
        data["events"] = [*data.get("events", []), entry][-OLD_MAX_EVENTS:]
        body: dict[str, Any] = {
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/managed-by": "slipway"},
            },
            "data": {k: json.dumps(v, sort_keys=True) for k, v in data.items()},
        }
        try:
            if cm is None:
                core.create_namespaced_config_map(NAMESPACE, body)
            else:
                body["metadata"]["resourceVersion"] = cm.metadata.resource_version
                core.replace_namespaced_config_map(name, NAMESPACE, body)
            return
        except ApiException as err:
            if err.status not in (409, 404):
                raise
    raise RuntimeError(f"{name} kept changing")


def compact(etcd: EtcdEndpoints) -> int:
    """Compact etcd's history to now, as the apiserver does periodically; the db size after."""
    statuses = endpoint_status(etcd).results.values()
    etcdctl(etcd, ["compact", str(min(s.revision for s in statuses))], what="compact", expect_json=False)
    return max(s.db_size for s in statuses)


def run(
    name: str,
    cluster: LocalCluster,
    etcd: EtcdEndpoints,
    groups: list[list[Event]],
    append: Callable[[client.ApiClient, Event], None],
    writers: int,
    load: Callable[[client.ApiClient], list[dict[str, Any]]],
) -> Result:
    result = Result(name)
    apis = [cluster.orchestrator_client() for _ in range(writers)]
    counters = [Traffic(api) for api in apis]
    since_compaction = 0

    def append_all(api: client.ApiClient, events: list[Event]) -> int:
        for event in events:
            append(api, event)
        return len(events)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=writers) as pool:
        for group in groups:
            if writers == 1 or not all("node" in e[2] for e in group):
                for event in group:
                    append(apis[0], event)
            else:
                # Each writer is the task of some of the nodes: their events, in order.
                nodes = sorted({e[2]["node"] for e in group})
                shares = [
                    [e for e in group if nodes.index(e[2]["node"]) % writers == w] for w in range(writers)
                ]
                list(pool.map(append_all, apis, shares))
            result.events += len(group)
            since_compaction += len(group)
            if since_compaction >= COMPACT_EVERY:
                compact(etcd)
                since_compaction = 0
    result.seconds = time.monotonic() - started
    result.requests = sum(c.requests for c in counters)
    result.sent = sum(c.sent for c in counters)
    result.received = sum(c.received for c in counters)
    result.kept = len(load(cluster.orchestrator_client()))
    compact(etcd)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--writers", type=int, default=8, help="concurrent appenders for node events")
    parser.add_argument("--chunk-events", type=int, default=CHUNK_EVENTS)
    parser.add_argument("--base-port", type=int, default=30700)
    args = parser.parse_args(argv)
    cfg = ClusterConfig(
        name="bench-timeline",
        base_port=args.base_port,
        etcd_members=1,
        apiservers=1,
        control_plane_nodes=0,
        nodes=1,
        pools=("general",),
        state_root=Path(tempfile.mkdtemp(prefix="slipway-bench-")),
    )
    cluster = LocalCluster(cfg)
    stamp = int(time.time())
    try:
        cluster.up()
        etcd = EtcdEndpoints.for_local_cluster(cluster.cfg, cluster.versions().get("etcd-0"))
        results: list[Result] = []

        def product(name: str, run_id: str, writers: int) -> Result:
            records: dict[int, RunRecord] = {}  # one record per client: a task's own

            def append(api: client.ApiClient, event: Event) -> None:
                record = records.setdefault(id(api), RunRecord(api, run_id, chunk_events=args.chunk_events))
                record.event(event[0], event[1], **event[2])

            groups = list(simulated_run(args.nodes, run_id))
            return run(
                name,
                cluster,
                etcd,
                groups,
                append,
                writers,
                lambda api: RunRecord(api, run_id).load()["events"],
            )

        results.append(product("slipway, 1 writer", f"bench-timeline-{stamp}-a", 1))
        print(results[-1].line(), flush=True)
        results.append(product(f"slipway, {args.writers} writers", f"bench-timeline-{stamp}-b", args.writers))
        print(results[-1].line(), flush=True)

        old_run = f"bench-timeline-{stamp}-old"
        old_name = record_name(old_run)

        def rewrite(api: client.ApiClient, event: Event) -> None:
            old_event(client.CoreV1Api(api), old_name, old_run, event[0], event[1], **event[2])

        def old_load(api: client.ApiClient) -> list[dict[str, Any]]:
            cm = client.CoreV1Api(api).read_namespaced_config_map(old_name, NAMESPACE)
            return list(json.loads(cm.data["events"]))

        groups = list(simulated_run(args.nodes, old_run))
        results.append(run("rewrite (old), 1 writer", cluster, etcd, groups, rewrite, 1, old_load))
        print(results[-1].line(), flush=True)

        new, old = results[0], results[-1]
        print(
            f"ratio rewrite/slipway (1 writer): {old.sent / new.sent:.1f}x bytes sent, "
            f"{old.received / new.received:.1f}x bytes received, "
            f"{old.requests / new.requests:.2f}x requests, "
            f"{old.seconds / new.seconds:.1f}x wall time; events kept: {new.kept} vs {old.kept} "
            f"(chunks of {args.chunk_events} events)"
        )
    finally:
        cluster.down(purge=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
