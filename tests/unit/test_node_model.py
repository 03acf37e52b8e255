"""One node model: the preflight's inventory, batching and the run agree on a node's pool and role.

Before, ``workers.node_info`` knew only Slipway's pool label and the ``control-plane`` role
label while the inventory also knew the managed platforms' pool labels, ``master`` and the
control-plane taint: on EKS/GKE/AKS the preflight and the run batched by different pools.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from slipway import inventory, workers
from slipway.kube import nodes as kube_nodes
from tests.unit.kube_objects import system_info


def node(name: str, labels: dict[str, str], taints: list[client.V1Taint] | None = None) -> client.V1Node:
    return client.V1Node(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1NodeSpec(taints=taints),
        status=client.V1NodeStatus(
            allocatable={"cpu": "4", "memory": "8Gi", "pods": "110"},
            node_info=system_info("v1.36.3"),
        ),
    )


@pytest.mark.parametrize(
    ("labels", "pool"),
    [
        ({"eks.amazonaws.com/nodegroup": "ng-1"}, "ng-1"),
        ({"cloud.google.com/gke-nodepool": "pool-a"}, "pool-a"),
        ({"kubernetes.azure.com/agentpool": "sys"}, "sys"),
        ({"slipway.dev/node-pool": "general", "eks.amazonaws.com/nodegroup": "ng-1"}, "general"),
        ({}, "default"),
    ],
)
def test_pool_is_the_same_for_the_preflight_and_the_run(labels: dict[str, str], pool: str) -> None:
    n = node("w1", labels)
    assert inventory.node_info(n).pool == pool
    assert workers.node_info(n).pool == pool  # the run uses the very same function
    assert kube_nodes.node_pool(n) == pool


@pytest.mark.parametrize(
    "control_plane",
    [
        node("cp-label", {"node-role.kubernetes.io/control-plane": ""}),
        node("cp-master", {"node-role.kubernetes.io/master": ""}),
        node(
            "cp-taint", {}, [client.V1Taint(key="node-role.kubernetes.io/control-plane", effect="NoSchedule")]
        ),
    ],
    ids=["control-plane label", "legacy master label", "taint only"],
)
def test_a_control_plane_node_is_never_a_worker(control_plane: client.V1Node) -> None:
    assert kube_nodes.is_control_plane(control_plane)
    info = inventory.node_info(control_plane)
    assert info.control_plane and info.pool == "control-plane"


def test_a_worker_with_an_unrelated_taint_is_a_worker() -> None:
    worker = node("w2", {"slipway.dev/node-pool": "gpu"}, [client.V1Taint(key="gpu", effect="NoSchedule")])
    assert not kube_nodes.is_control_plane(worker)
    assert not inventory.node_info(worker).control_plane
