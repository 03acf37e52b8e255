"""The worker phase of a 100-node upgrade at 10 % max unavailable with a zero-time node upgrade:
Slipway against the seed's "level 2, scripted" baseline, on the same cluster, same batches.

- **script**: per batch, per node: ``kubectl drain`` → version bump → ``kubectl wait Ready`` →
  ``kubectl uncordon`` (what a shell loop does);
- **slipway**: the same batches through Slipway's worker engine (select → per node, in
  parallel: cordon, eviction-based drain, upgrade, readiness → validation soak of 0 s).

Both start from the same state (every worker rolled back to the old kubelet). Prints each
time, the ratio script/slipway and where the time goes. A benchmark, not a test.

    python bench/bench_workers.py [--nodes 100] [--base-port 30200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client

from slipway import workers
from slipway.inventory import node_info
from slipway.kube import nodes as kube_nodes
from slipway.kube.drain import drain_node
from slipway.kube.readiness import wait_node_ready
from slipway.localcluster import binaries
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.config import ClusterConfig
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD, kubernetes_release
from slipway.localcluster.workloads import install_samples
from slipway.models import parse_request
from slipway.runrecord import RunRecord
from slipway.upgraders.nodes import LocalInPlaceUpgrader

REPLICAS_PER_NODE = 3
READY_TIMEOUT = 120.0


def add_load(cluster: LocalCluster, nodes: int) -> None:
    """A Deployment with a few pods per node behind a 10 % PDB, so drains have work to do."""
    apps, policy = client.AppsV1Api(cluster.admin_client()), client.PolicyV1Api(cluster.admin_client())
    labels = {"app": "bench-load"}
    apps.create_namespaced_deployment(
        "default",
        {
            "metadata": {"name": "bench-load"},
            "spec": {
                "replicas": nodes * REPLICAS_PER_NODE,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "c",
                                "image": "registry.local/load:1",
                                "resources": {"requests": {"cpu": "10m"}},
                            }
                        ]
                    },
                },
            },
        },
    )
    policy.create_namespaced_pod_disruption_budget(
        "default",
        {
            "metadata": {"name": "bench-load"},
            "spec": {"maxUnavailable": "10%", "selector": {"matchLabels": labels}},
        },
    )

    def ready() -> bool:
        d = apps.read_namespaced_deployment("bench-load", "default")
        return (d.status.available_replicas or 0) == nodes * REPLICAS_PER_NODE

    wait_until("bench load available", ready, 600, interval=1.0)


def reset(cluster: LocalCluster) -> None:
    admin = cluster.admin_client()
    upgrader = LocalInPlaceUpgrader(admin)
    for node in kube_nodes.list_workers(admin):
        upgrader.rollback_node(node.metadata.name, KUBERNETES_OLD)
        kube_nodes.uncordon(admin, node.metadata.name, "bench", force=True)


def batches(cluster: LocalCluster) -> list[list[str]]:
    """The batches Slipway plans at 10 % max unavailable; the script uses the same ones."""
    request = parse_request({"target_version": KUBERNETES_NEW, "max_unavailable_percent": 10})
    candidates = [node_info(n) for n in kube_nodes.list_workers(cluster.admin_client())]
    from slipway.batching import plan_batches

    return [b.nodes for b in plan_batches(candidates, request).batches]


def run_script(cluster: LocalCluster, plan: list[list[str]]) -> dict[str, float]:
    kubectl = str(binaries.binary(kubernetes_release(KUBERNETES_NEW), "kubectl"))
    kc = ["--kubeconfig", str(cluster.admin_kubeconfig)]
    upgrader = LocalInPlaceUpgrader(cluster.admin_client())
    spent: dict[str, float] = defaultdict(float)
    started = time.monotonic()
    for batch in plan:
        for node in batch:
            t = time.monotonic()
            subprocess.run(
                [
                    kubectl,
                    *kc,
                    "drain",
                    node,
                    "--ignore-daemonsets",
                    "--delete-emptydir-data",
                    "--force",
                    "--grace-period=300",
                    "--timeout=600s",
                ],
                check=True,
                capture_output=True,
            )
            spent["drain"] += time.monotonic() - t
            t = time.monotonic()
            upgrader.upgrade_node(node, KUBERNETES_NEW)
            subprocess.run(
                [kubectl, *kc, "wait", "--for=condition=Ready", f"node/{node}", "--timeout=120s"],
                check=True,
                capture_output=True,
            )
            spent["upgrade+ready"] += time.monotonic() - t
            t = time.monotonic()
            subprocess.run([kubectl, *kc, "uncordon", node], check=True, capture_output=True)
            spent["uncordon"] += time.monotonic() - t
    spent["total"] = time.monotonic() - started
    return dict(spent)


def run_slipway(cluster: LocalCluster, nodes: int) -> dict[str, float]:
    api = cluster.orchestrator_client()
    admin = cluster.admin_client()
    upgrader = LocalInPlaceUpgrader(admin)
    request = parse_request(
        {
            "target_version": KUBERNETES_NEW,
            "max_unavailable_percent": 10,
            "soak_seconds": 1,
            "force_bare_pods": True,
            "delete_emptydir_data": True,
        }
    )
    opts = workers.drain_options(request)
    record = RunRecord(api, f"bench-workers-{int(time.time())}")
    spent: dict[str, float] = defaultdict(float)
    started = time.monotonic()

    def one_node(node: str) -> None:
        t = time.monotonic()
        kube_nodes.cordon(api, node, record.run_id)
        drain_node(api, node, opts, run_id=record.run_id)
        spent["drain"] += time.monotonic() - t
        t = time.monotonic()
        upgrader.upgrade_node(node, KUBERNETES_NEW)
        wait_node_ready(api, node, READY_TIMEOUT)
        spent["upgrade+ready"] += time.monotonic() - t
        t = time.monotonic()
        kube_nodes.uncordon(api, node, record.run_id)
        spent["uncordon"] += time.monotonic() - t

    index = 0
    with ThreadPoolExecutor(max_workers=16) as pool:
        while True:
            t = time.monotonic()
            selection = workers.select_batch(api, record, request, index)
            spent["select"] += time.monotonic() - t
            if not selection.nodes:
                break
            list(pool.map(one_node, selection.nodes))
            t = time.monotonic()
            verdict = workers.validate_batch(api, request, selection.nodes)
            workers.record_verdict(record, index, verdict, None)
            spent["validate"] += time.monotonic() - t
            if not verdict.passed:
                raise RuntimeError(f"batch {index} failed: {verdict.problems}")
            index += 1
    spent["total"] = time.monotonic() - started
    spent["batches"] = index
    client.CoreV1Api(api).delete_namespaced_config_map(record.name, "slipway-system")
    return dict(spent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--base-port", type=int, default=30200)
    args = parser.parse_args(argv)
    cfg = ClusterConfig(
        name="bench-workers",
        base_port=args.base_port,
        nodes=args.nodes,
        state_root=Path(tempfile.mkdtemp(prefix="slipway-bench-")),
        kubernetes_version=KUBERNETES_NEW,
        kubelet_version=KUBERNETES_OLD,
    )
    cluster = LocalCluster(cfg)
    try:
        cluster.up()
        install_samples(cluster.admin_client())
        # Single-replica and zero-budget samples would block both tools alike; drop them.
        apps = client.AppsV1Api(cluster.admin_client())
        for name in ("payments-api", "ledger"):
            apps.delete_namespaced_deployment(name, "shop")
        client.PolicyV1Api(cluster.admin_client()).delete_namespaced_pod_disruption_budget("ledger", "shop")
        client.PolicyV1Api(cluster.admin_client()).delete_namespaced_pod_disruption_budget(
            "payments-api", "shop"
        )
        add_load(cluster, args.nodes)
        plan = batches(cluster)
        print(
            f"{args.nodes} workers, {len(plan)} batches of up to {max(len(b) for b in plan)} nodes",
            flush=True,
        )
        script = run_script(cluster, plan)
        print(
            f"script : {script['total']:.1f}s  "
            + ", ".join(f"{k} {v:.1f}s" for k, v in script.items() if k != "total"),
            flush=True,
        )
        reset(cluster)
        slipway = run_slipway(cluster, args.nodes)
        print(
            f"slipway: {slipway['total']:.1f}s  "
            + ", ".join(f"{k} {v:.1f}s" for k, v in slipway.items() if k != "total"),
            flush=True,
        )
        print(
            f"ratio script/slipway: {script['total'] / slipway['total']:.2f}x "
            "(per-step figures are summed over nodes; Slipway's run concurrently within a batch)"
        )
    finally:
        cluster.down(purge=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
