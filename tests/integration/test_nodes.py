"""Cordon, uncordon, quarantine, step records and readiness against the real local cluster.

Slipway's calls use the least-privilege orchestrator identity; the admin identity only
sets up what an operator would have done and puts the cluster back afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.kube import nodes, readiness
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_OLD
from slipway.localcluster.nodes import planned_nodes
from slipway.localcluster.workloads import unavailable_samples

pytestmark = pytest.mark.cluster

RUN = "manual__test-nodes"
OTHER_RUN = "manual__someone-else"
NODE = "general-00"
SLIPWAY_ANNOTATIONS = (
    nodes.CORDONED_BY,
    nodes.CORDONED_AT,
    nodes.STEP,
    nodes.STEP_RUN,
    nodes.STEP_AT,
    nodes.QUARANTINE_REASON,
)
SIMULATE_LABEL = "slipway.dev/simulate"  # kwok leaves a node labelled not-ready alone
PROBE_NODE = "readiness-probe-0"
SETTLE_SECONDS = 120


@pytest.fixture
def orchestrator(local_cluster: LocalCluster) -> client.ApiClient:
    return local_cluster.orchestrator_client()


@pytest.fixture
def restore_node(local_cluster: LocalCluster) -> Iterator[str]:
    """``NODE``, put back afterwards as it was: schedulable, no Slipway labels or annotations."""
    yield NODE
    patch = {
        "spec": {"unschedulable": False},
        "metadata": {"labels": {nodes.QUARANTINED: None}, "annotations": dict.fromkeys(SLIPWAY_ANNOTATIONS)},
    }
    client.CoreV1Api(local_cluster.admin_client()).patch_node(NODE, patch)


def _node(api: client.ApiClient, name: str) -> client.V1Node:
    return client.CoreV1Api(api).read_node(name)


def test_cordon_twice_changes_once_and_uncordon_undoes_it(
    orchestrator: client.ApiClient, restore_node: str
) -> None:
    assert nodes.cordon(orchestrator, restore_node, RUN) is True
    assert nodes.cordon(orchestrator, restore_node, RUN) is False
    node = _node(orchestrator, restore_node)
    assert nodes.is_cordoned(node)
    assert nodes.cordon_owner(node) == RUN
    assert node.metadata.annotations[nodes.CORDONED_AT].endswith("Z")

    assert nodes.uncordon(orchestrator, restore_node, RUN) is True
    assert nodes.uncordon(orchestrator, restore_node, RUN) is False
    node = _node(orchestrator, restore_node)
    assert not nodes.is_cordoned(node)
    assert nodes.CORDONED_BY not in (node.metadata.annotations or {})


def test_an_operators_cordon_is_recorded_and_never_undone(
    local_cluster: LocalCluster, orchestrator: client.ApiClient, restore_node: str
) -> None:
    client.CoreV1Api(local_cluster.admin_client()).patch_node(restore_node, {"spec": {"unschedulable": True}})
    assert nodes.cordon(orchestrator, restore_node, RUN) is False
    assert nodes.cordon_owner(_node(orchestrator, restore_node)) == nodes.EXTERNAL_CORDON
    assert nodes.uncordon(orchestrator, restore_node, RUN) is False
    assert nodes.is_cordoned(_node(orchestrator, restore_node))
    assert nodes.uncordon(orchestrator, restore_node, RUN, force=True) is True
    assert not nodes.is_cordoned(_node(orchestrator, restore_node))


def test_another_runs_cordon_is_left_to_that_run(orchestrator: client.ApiClient, restore_node: str) -> None:
    assert nodes.cordon(orchestrator, restore_node, OTHER_RUN) is True
    assert nodes.cordon(orchestrator, restore_node, RUN) is False
    assert nodes.uncordon(orchestrator, restore_node, RUN) is False
    assert nodes.cordon_owner(_node(orchestrator, restore_node)) == OTHER_RUN
    assert nodes.uncordon(orchestrator, restore_node, OTHER_RUN) is True


def test_the_step_a_run_reached_is_read_back_from_the_node(
    orchestrator: client.ApiClient, restore_node: str
) -> None:
    assert nodes.get_step(orchestrator, restore_node) is None
    nodes.set_step(orchestrator, restore_node, RUN, "drained")
    nodes.set_step(orchestrator, restore_node, RUN, "kubelet-upgraded")
    step = nodes.get_step(orchestrator, restore_node)
    assert step is not None
    assert (step.run_id, step.step) == (RUN, "kubelet-upgraded")
    assert step.at.endswith("Z")


def test_a_quarantined_node_stays_cordoned(orchestrator: client.ApiClient, restore_node: str) -> None:
    reason = "kubelet did not become Ready after the upgrade"
    assert nodes.cordon(orchestrator, restore_node, RUN) is True
    assert nodes.quarantine(orchestrator, restore_node, reason) is True
    assert nodes.quarantine(orchestrator, restore_node, reason) is False
    node = _node(orchestrator, restore_node)
    assert nodes.is_quarantined(node) and nodes.is_cordoned(node)
    assert node.metadata.annotations[nodes.QUARANTINE_REASON] == reason

    assert nodes.uncordon(orchestrator, restore_node, RUN) is False
    assert nodes.is_cordoned(_node(orchestrator, restore_node))
    assert nodes.uncordon(orchestrator, restore_node, RUN, force=True) is True
    node = _node(orchestrator, restore_node)
    assert not nodes.is_quarantined(node) and not nodes.is_cordoned(node)


def test_workers_are_the_non_control_plane_nodes(
    local_cluster: LocalCluster, orchestrator: client.ApiClient
) -> None:
    workers = nodes.list_workers(orchestrator)
    assert len(workers) == local_cluster.cfg.nodes
    assert not any(n.metadata.name.startswith("control-plane") for n in workers)
    assert all(nodes.node_ready(n) for n in workers)
    assert {nodes.kubelet_version(n) for n in workers} == {KUBERNETES_OLD}


def test_readiness_checks_see_a_healthy_cluster(orchestrator: client.ApiClient) -> None:
    names = [n.metadata.name for n in nodes.list_workers(orchestrator)]
    ready = readiness.check_nodes_ready(orchestrator, [*names, "no-such-node"])
    assert ready == dict.fromkeys(names, True) | {"no-such-node": False}
    assert readiness.wait_node_ready(orchestrator, names[0], timeout=SETTLE_SECONDS) is True
    assert readiness.wait_node_ready(orchestrator, "no-such-node", timeout=1) is False
    assert readiness.workloads_available(orchestrator, ["shop", "monitoring"]) == []
    assert readiness.pending_pods(orchestrator) == []


@pytest.fixture
def probe_node(local_cluster: LocalCluster) -> Iterator[str]:
    """A fresh simulated node that kwok ignores (so it is not Ready) until the test lets it."""
    admin = client.CoreV1Api(local_cluster.admin_client())
    body = copy.deepcopy(planned_nodes(local_cluster.cfg)[-1])
    body["metadata"]["name"] = PROBE_NODE
    body["metadata"]["labels"] |= {"kubernetes.io/hostname": PROBE_NODE, SIMULATE_LABEL: "not-ready"}
    # Nothing but DaemonSets may land on it: it is removed again at the end.
    body["spec"] = {"unschedulable": True, "taints": [{"key": "slipway.dev/probe", "effect": "NoSchedule"}]}
    admin.create_node(body)
    try:
        yield PROBE_NODE
    finally:
        admin.delete_node(PROBE_NODE)
        wait_until(f"node {PROBE_NODE} deleted", lambda: not _exists(admin, PROBE_NODE), SETTLE_SECONDS)
        # No kubelet is left to confirm the DaemonSet pod's end: remove it as podgc eventually would.
        for pod in admin.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={PROBE_NODE}").items:
            admin.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
        wait_until(
            "sample workloads available",
            lambda: not unavailable_samples(local_cluster.admin_client()),
            SETTLE_SECONDS,
        )


def _exists(core: client.CoreV1Api, node: str) -> bool:
    try:
        core.read_node(node)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def test_wait_node_ready_follows_a_node_becoming_ready(
    local_cluster: LocalCluster, orchestrator: client.ApiClient, probe_node: str
) -> None:
    assert readiness.check_nodes_ready(orchestrator, [probe_node]) == {probe_node: False}
    assert readiness.wait_node_ready(orchestrator, probe_node, timeout=1) is False
    client.CoreV1Api(local_cluster.admin_client()).patch_node(
        probe_node, {"metadata": {"labels": {SIMULATE_LABEL: None}}}
    )
    assert readiness.wait_node_ready(orchestrator, probe_node, timeout=SETTLE_SECONDS) is True
    assert readiness.check_nodes_ready(orchestrator, [probe_node]) == {probe_node: True}


def _ready_heartbeat(node: client.V1Node) -> datetime | None:
    for cond in node.status.conditions or []:
        if cond.type == "Ready":
            return cond.last_heartbeat_time  # type: ignore[no-any-return]
    return None


def test_a_kubelet_marked_down_is_not_revived_by_a_heartbeat_queued_before(
    local_cluster: LocalCluster, restore_node: str
) -> None:
    """kwok keeps at most one delayed job per node and replaces it only when another stage
    matches: the down stage must match, or a heartbeat queued before the label would report
    the broken kubelet Ready up to 45 s later (the batch would then pass by accident)."""
    admin = client.CoreV1Api(local_cluster.admin_client())
    other = next(
        n.metadata.name for n in nodes.list_workers(local_cluster.admin_client()) if n.metadata.name != NODE
    )
    wait_until(
        f"{NODE} Ready", lambda: readiness.check_nodes_ready(local_cluster.admin_client(), [NODE])[NODE], 60
    )
    labelled_at = datetime.now(UTC)
    admin.patch_node(NODE, {"metadata": {"labels": {SIMULATE_LABEL: "not-ready"}}})
    try:
        wait_until(
            "kwok reports the simulated kubelet down",
            lambda: any(
                e.reason == "KubeletDown"
                for e in admin.list_event_for_all_namespaces(
                    field_selector=f"involvedObject.name={NODE}"
                ).items
            ),
            60,
        )
        down = {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "test"}
        admin.patch_node_status(NODE, {"status": {"conditions": [down]}})
        # Every heartbeat queued before the label is due by labelled_at + 20 s + 25 s jitter;
        # another node's heartbeat passing that point shows kwok's queue has moved beyond it.
        due = labelled_at + timedelta(seconds=45)
        wait_until(
            f"{other}'s heartbeat after {due:%H:%M:%S}",
            lambda: (_ready_heartbeat(admin.read_node(other)) or labelled_at) > due,
            SETTLE_SECONDS,
        )
        assert readiness.check_nodes_ready(local_cluster.admin_client(), [NODE]) == {NODE: False}
    finally:
        admin.patch_node(NODE, {"metadata": {"labels": {SIMULATE_LABEL: None}}})
        wait_until(
            f"{NODE} Ready again",
            lambda: readiness.check_nodes_ready(local_cluster.admin_client(), [NODE])[NODE],
            SETTLE_SECONDS,
        )
