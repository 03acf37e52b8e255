"""Simulated nodes: Node objects that kwok keeps alive as if kubelets ran them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client

from slipway.localcluster.config import CONTROL_PLANE_SHAPE, POOL_SHAPES, ClusterConfig

POOL_LABEL = "slipway.dev/node-pool"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
ZONES = ("zone-a", "zone-b", "zone-c")


def _node(
    name: str, pool: str, shape: tuple[int, int, int], version: str, index: int, control_plane: bool
) -> dict[str, Any]:
    cpu, memory, pods = shape
    resources = {"cpu": f"{cpu}m", "memory": str(memory), "pods": str(pods), "ephemeral-storage": "100Gi"}
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "topology.kubernetes.io/zone": ZONES[index % len(ZONES)],
        "node.kubernetes.io/instance-type": f"sim-{pool}",
        POOL_LABEL: pool,
        "type": "kwok",
    }
    taints = []
    if control_plane:
        labels[CONTROL_PLANE_LABEL] = ""
        taints.append({"key": CONTROL_PLANE_LABEL, "effect": "NoSchedule"})
    return simulated_node(name, labels, taints, resources, version)


def simulated_node(
    name: str,
    labels: dict[str, str],
    taints: list[dict[str, Any]],
    resources: dict[str, str],
    version: str,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Node manifest kwok will keep alive, reporting ``version`` as its kubelet."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}
            | (annotations or {}),
        },
        "spec": {"taints": taints},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": f"v{version.removeprefix('v')}",
                "containerRuntimeVersion": "containerd://2.1.4",
                "kernelVersion": "6.1.0-slipway",
                "osImage": "Slipway simulated node (kwok)",
                "bootID": "",
                "machineID": "",
                "systemUUID": "",
            },
        },
    }


def planned_nodes(cfg: ClusterConfig) -> list[dict[str, Any]]:
    """Control-plane nodes first, then workers spread over the pools round-robin."""
    version = cfg.kubelet_version or cfg.kubernetes_version
    nodes = [
        _node(f"control-plane-{i}", "control-plane", CONTROL_PLANE_SHAPE, version, i, True)
        for i in range(cfg.control_plane_nodes)
    ]
    width = max(2, len(str(cfg.nodes)))
    for i in range(cfg.nodes):
        pool = cfg.pools[i % len(cfg.pools)]
        nodes.append(_node(f"{pool}-{i:0{width}d}", pool, POOL_SHAPES[pool], version, i, False))
    return nodes


def create_nodes(api: client.ApiClient, nodes: list[dict[str, Any]]) -> int:
    """Create the nodes that do not exist yet; returns how many were created."""
    core = client.CoreV1Api(api)
    existing = {n.metadata.name for n in core.list_node().items}

    def create(body: dict[str, Any]) -> None:
        core.create_node(body)

    todo = [n for n in nodes if n["metadata"]["name"] not in existing]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(create, todo))
    return len(todo)


def count_ready(api: client.ApiClient, names: set[str]) -> int:
    core = client.CoreV1Api(api)
    ready = 0
    for node in core.list_node().items:
        if node.metadata.name not in names:
            continue
        for cond in node.status.conditions or []:
            if cond.type == "Ready" and cond.status == "True":
                ready += 1
    return ready
