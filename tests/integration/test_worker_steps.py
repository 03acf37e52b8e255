"""Every mutating worker step run twice gives the same result (the cluster is the truth)."""

from __future__ import annotations

import pytest
from kubernetes import client

from slipway import workers
from slipway.kube import nodes as kube_nodes
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from slipway.models import parse_request
from slipway.runrecord import RunRecord
from slipway.upgraders.nodes import LocalInPlaceUpgrader
from slipway.upgraders.surge import LocalSurgeUpgrader
from tests.integration.conftest import HOG

pytestmark = pytest.mark.cluster


def test_select_upgrade_and_rollback_twice_are_idempotent(local_cluster: LocalCluster) -> None:
    api = local_cluster.orchestrator_client()
    record = RunRecord(api, "test-idempotence")
    request = parse_request({"target_version": KUBERNETES_NEW, "soak_seconds": 1})
    first = workers.select_batch(api, record, request, 0)
    again = workers.select_batch(api, record, request, 0)
    assert first.nodes and again.nodes == first.nodes  # a cleared task gets the batch it opened
    with pytest.raises(RuntimeError, match="batch 1 cannot open: batch 0 is running"):
        workers.select_batch(api, record, request, 1)
    upgrader = LocalInPlaceUpgrader(local_cluster.admin_client())
    node = first.nodes[0]
    try:
        assert upgrader.upgrade_node(node, KUBERNETES_NEW).action == "upgraded"
        assert upgrader.upgrade_node(node, KUBERNETES_NEW).action == "already-at-version"
        assert workers.node_problems(api, [node], KUBERNETES_NEW) == []
    finally:
        done = workers.rollback_batch(api, record, 0, upgrader)
        assert [d["action"] for d in done] == ["rolled-back"]
        again_done = workers.rollback_batch(api, record, 0, upgrader)
        assert [d["action"] for d in again_done] == ["already-at-version"]
        # The orchestrator may not delete run records: the operator (admin) cleans up.
        client.CoreV1Api(local_cluster.admin_client()).delete_namespaced_config_map(
            record.name, "slipway-system"
        )
    current = client.CoreV1Api(api).read_node(node)
    assert kube_nodes.kubelet_version(current) == KUBERNETES_OLD
    assert not kube_nodes.is_cordoned(current)
    # A rolled-back batch stops the phase: no later batch opens.
    stopped = RunRecord(api, "test-stopped")
    stopped.update(batches=[{"index": 0, "nodes": [node], "state": "rolled-back", "from_versions": {}}])
    try:
        assert workers.select_batch(api, stopped, request, 1).reason == "stopped"
    finally:
        client.CoreV1Api(local_cluster.admin_client()).delete_namespaced_config_map(
            stopped.name, "slipway-system"
        )


def test_surge_prepare_twice_adds_one_replacement_and_rollback_removes_it(
    local_cluster: LocalCluster,
) -> None:
    admin = local_cluster.admin_client()
    upgrader = LocalSurgeUpgrader(admin)
    node = kube_nodes.list_workers(admin)[0].metadata.name
    replacement = LocalSurgeUpgrader.replacement_name(node, KUBERNETES_NEW)
    try:
        assert upgrader.prepare_batch([node], KUBERNETES_NEW) == [replacement]
        assert upgrader.prepare_batch([node], KUBERNETES_NEW) == []
        assert upgrader.nodes_to_wait_for([node]) == [replacement]
        joined = client.CoreV1Api(admin).read_node(replacement)
        assert kube_nodes.kubelet_version(joined) == KUBERNETES_NEW
        assert (
            joined.metadata.labels["slipway.dev/node-pool"]
            == kube_nodes.list_workers(admin)[0].metadata.labels["slipway.dev/node-pool"]
        )
    finally:
        upgrader.rollback_node(node, KUBERNETES_OLD)
        upgrader.rollback_node(node, KUBERNETES_OLD)
    names = {n.metadata.name for n in client.CoreV1Api(admin).list_node().items}
    assert replacement not in names
    assert node in names


def test_batch_whose_pods_cannot_go_anywhere_is_refused_before_any_cordon(
    local_cluster: LocalCluster, capacity_hog: int
) -> None:
    """The live guard: a general node's hog fits on no other general node, so the batch is
    refused at selection, names the pod, cordons nothing, and opens once room is back."""
    api = local_cluster.orchestrator_client()
    core = client.CoreV1Api(api)
    record = RunRecord(api, "test-no-capacity")
    request = parse_request({"target_version": KUBERNETES_NEW, "node_pools": ["general"], "batch_size": 1})
    cordoned_before = {n.metadata.name for n in kube_nodes.list_workers(api) if kube_nodes.is_cordoned(n)}
    try:
        first = workers.select_batch(api, record, request, 0)
        again = workers.select_batch(api, record, request, 0)
        assert (first.reason, first.nodes) == (again.reason, again.nodes) == (workers.NO_CAPACITY, [])
        refused = record.get("capacity_refused")
        assert refused["batch"] == 0 and "refused before any cordon" in refused["message"]
        assert f"shop/{HOG}-" in refused["message"] and f"needs {capacity_hog}m CPU" in refused["message"]
        assert record.get("batches", []) == []
        cordoned_after = {n.metadata.name for n in kube_nodes.list_workers(api) if kube_nodes.is_cordoned(n)}
        assert cordoned_after == cordoned_before
        summary = workers.phase_summary(api, record, request)
        assert summary["reason"] == workers.NO_CAPACITY and summary["refused"] == refused["message"]
        # Room comes back (the hog scaled to zero): the same slot now opens its batch.
        client.AppsV1Api(local_cluster.admin_client()).patch_namespaced_deployment_scale(
            HOG, "shop", {"spec": {"replicas": 0}}
        )
        wait_until(
            "hog pods gone",
            lambda: not core.list_namespaced_pod("shop", label_selector=f"app={HOG}").items,
            120,
            interval=1.0,
        )
        opened = workers.select_batch(api, record, request, 0)
        assert len(opened.nodes) == 1 and opened.pool == "general"
        assert record.get("capacity_refused") is None
    finally:
        # The orchestrator may not delete run records: the operator (admin) cleans up.
        client.CoreV1Api(local_cluster.admin_client()).delete_namespaced_config_map(
            record.name, "slipway-system"
        )
