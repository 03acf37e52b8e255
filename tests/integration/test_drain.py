"""Eviction-based drains against the real local cluster: real PDBs, real 429s, no mocks.

Slipway drains with the orchestrator identity (it may evict, never delete). The admin
identity only builds test objects and restores the cluster; every test leaves the
sample workloads available and every node schedulable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kubernetes import client

from slipway.kube import nodes, readiness
from slipway.kube.drain import DrainBlocked, DrainOptions, DrainPlan, DrainRefused, drain_node, plan_drain
from slipway.kube.pdb import blocking_pdbs
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.workloads import unavailable_samples

pytestmark = pytest.mark.cluster

RUN = "manual__test-drain"
TEST_NAMESPACE = "drain-test"
SETTLE_SECONDS = 120
DRAIN_TIMEOUT_SECONDS = 120.0
BLOCKED_DRAIN_TIMEOUT_SECONDS = 3.0  # payments-api never becomes evictable: give up soon
RETRIED_REPLICAS = 4


# ---- helpers ------------------------------------------------------------------------------------


def _pods_on(api: client.ApiClient, node: str) -> list[client.V1Pod]:
    return list(
        client.CoreV1Api(api).list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    )


def _settled(api: client.ApiClient) -> bool:
    """Samples whole again, nothing pending, and only the PDBs that never allow a disruption block."""
    return (
        not unavailable_samples(api)
        and not readiness.pending_pods(api)
        and all(entry["permanent"] for entry in blocking_pdbs(api))
    )


def _settle(api: client.ApiClient) -> None:
    wait_until("sample workloads settled", lambda: _settled(api), SETTLE_SECONDS)


def _pick_worker(api: client.ApiClient, wanted: Callable[[DrainPlan], bool], what: str) -> str:
    for node in nodes.list_workers(api):
        if wanted(plan_drain(api, node.metadata.name)):
            return str(node.metadata.name)
    raise AssertionError(f"no worker holds {what}; the sample workloads are spread unexpectedly")


def _only_evictable(plan: DrainPlan) -> bool:
    return bool(plan.evict) and not plan.refuse and not plan.blocked


@pytest.fixture
def orchestrator(local_cluster: LocalCluster) -> client.ApiClient:
    return local_cluster.orchestrator_client()


@pytest.fixture(scope="module")
def scratch_namespace(local_cluster: LocalCluster) -> Iterator[str]:
    """A namespace for the objects tests build, created once: deleting a namespace is slow."""
    core = client.CoreV1Api(local_cluster.admin_client())
    core.create_namespace({"metadata": {"name": TEST_NAMESPACE}})
    # Pods are refused until the controller-manager has made the namespace's default account.
    wait_until(
        "default service account",
        lambda: bool(
            core.list_namespaced_service_account(TEST_NAMESPACE, field_selector="metadata.name=default").items
        ),
        SETTLE_SECONDS,
    )
    yield TEST_NAMESPACE
    core.delete_namespace(TEST_NAMESPACE)


@pytest.fixture
def admin(local_cluster: LocalCluster, scratch_namespace: str) -> Iterator[client.ApiClient]:
    """The admin client; afterwards every worker is schedulable again, the test namespace is
    empty and the samples are settled."""
    api = local_cluster.admin_client()
    _settle(api)
    yield api
    for node in nodes.list_workers(api):
        if nodes.is_cordoned(node):
            nodes.uncordon(api, node.metadata.name, RUN, force=True)
    client.AppsV1Api(api).delete_collection_namespaced_deployment(scratch_namespace)
    client.PolicyV1Api(api).delete_collection_namespaced_pod_disruption_budget(scratch_namespace)
    core = client.CoreV1Api(api)
    core.delete_collection_namespaced_pod(scratch_namespace, grace_period_seconds=0)
    wait_until(
        f"namespace {scratch_namespace} empty",
        lambda: not core.list_namespaced_pod(scratch_namespace).items,
        SETTLE_SECONDS,
    )
    _settle(api)


def _deployment(
    name: str, replicas: int, *, node_affinity: str | None = None, empty_dir: bool = False
) -> dict[str, object]:
    spec: dict[str, object] = {
        "containers": [
            {
                "name": "app",
                "image": f"registry.local/{name}:1",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                **({"volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]} if empty_dir else {}),
            }
        ],
    }
    if empty_dir:
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    if node_affinity:
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node_affinity]}
                            ]
                        }
                    ]
                }
            }
        }
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def _running(api: client.ApiClient, namespace: str, app: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


# ---- tests --------------------------------------------------------------------------------------


def test_blocking_pdbs_are_the_ones_that_never_allow_a_disruption(
    orchestrator: client.ApiClient, admin: client.ApiClient
) -> None:
    entries = {e["pdb"]: e for e in blocking_pdbs(orchestrator)}
    assert set(entries) == {"shop/payments-api", "shop/ledger"}
    assert entries["shop/payments-api"]["reason"] == "maxUnavailable is 0"
    assert entries["shop/ledger"]["reason"] == "minAvailable 1 with 1 pod"
    assert len(entries["shop/payments-api"]["pods"]) == 2
    assert all(e["permanent"] and e["disruptions_allowed"] == 0 for e in entries.values())


def test_drain_evicts_replicated_pods_skips_daemonsets_and_is_a_no_op_twice(
    orchestrator: client.ApiClient, admin: client.ApiClient
) -> None:
    node = _pick_worker(orchestrator, _only_evictable, "only freely evictable pods")
    planned = {s.pod for s in plan_drain(orchestrator, node).evict}
    moved_apps = {
        p.metadata.labels["app"]
        for p in _pods_on(orchestrator, node)
        if f"{p.metadata.namespace}/{p.metadata.name}" in planned
    }
    daemon_pods = {
        f"{p.metadata.namespace}/{p.metadata.name}"
        for p in _pods_on(orchestrator, node)
        if p.metadata.namespace == "monitoring"
    }

    result = drain_node(orchestrator, node, DrainOptions(timeout_seconds=DRAIN_TIMEOUT_SECONDS), run_id=RUN)
    assert result.drained and result.cordoned
    assert set(result.evicted) == planned
    assert {s.pod for s in result.skipped if s.reason == "daemonset"} == daemon_pods
    left = {f"{p.metadata.namespace}/{p.metadata.name}" for p in _pods_on(orchestrator, node)}
    assert left == daemon_pods

    again = drain_node(orchestrator, node, DrainOptions(timeout_seconds=DRAIN_TIMEOUT_SECONDS), run_id=RUN)
    assert again.drained and not again.changed and again.evicted == []

    _settle(admin)
    for app in moved_apps:
        assert node not in {p.spec.node_name for p in _running(admin, "shop", app)}, (
            f"{app} is back on {node}"
        )
    assert nodes.uncordon(orchestrator, node, RUN) is True


def test_drain_blocked_by_a_pdb_names_the_pod_and_the_pdb(
    orchestrator: client.ApiClient, admin: client.ApiClient
) -> None:
    def holds_payments(plan: DrainPlan) -> bool:
        return {b.pdb for b in plan.blocked} == {"shop/payments-api"} and all(
            s.reason == "local-storage" for s in plan.refuse
        )

    node = _pick_worker(orchestrator, holds_payments, "a payments-api pod without a bare pod beside it")
    payments = next(b.pod for b in plan_drain(orchestrator, node).blocked if b.pdb == "shop/payments-api")
    opts = DrainOptions(timeout_seconds=BLOCKED_DRAIN_TIMEOUT_SECONDS, delete_emptydir_data=True)

    with pytest.raises(DrainBlocked) as err:
        drain_node(orchestrator, node, opts, run_id=RUN)
    message = str(err.value)
    assert message.startswith(f"drain of node {node} blocked after ")
    pdb = "PDB shop/payments-api (0 disruptions allowed: maxUnavailable is 0)"
    assert f"1 pod blocked by {pdb}: {payments}" in message
    assert [(b.pod, b.pdb) for b in err.value.blockers] == [(payments, "shop/payments-api")]
    assert err.value.result.too_many_requests > 0
    assert payments in {f"{p.metadata.namespace}/{p.metadata.name}" for p in _pods_on(orchestrator, node)}
    # The node is half-drained: a second attempt picks up where the first stopped and blocks the same way.
    with pytest.raises(DrainBlocked) as again:
        drain_node(orchestrator, node, opts, run_id=RUN)
    assert [b.pod for b in again.value.blockers] == [payments]
    assert again.value.result.evicted == []


def test_bare_and_emptydir_pods_are_refused_before_anything_changes(
    orchestrator: client.ApiClient, admin: client.ApiClient
) -> None:
    node = _pick_worker(orchestrator, _only_evictable, "only freely evictable pods")
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    core.create_namespaced_pod(
        TEST_NAMESPACE,
        {
            "metadata": {"name": "bare-shell", "labels": {"app": "bare-shell"}},
            "spec": {"nodeName": node, "containers": [{"name": "sh", "image": "registry.local/toolbox:1"}]},
        },
    )
    apps.create_namespaced_deployment(
        TEST_NAMESPACE, _deployment("scratch", 1, node_affinity=node, empty_dir=True)
    )
    wait_until(
        "test pods running",
        lambda: (
            bool(_running(admin, TEST_NAMESPACE, "bare-shell"))
            and bool(_running(admin, TEST_NAMESPACE, "scratch"))
        ),
        SETTLE_SECONDS,
    )
    before = {p.metadata.uid for p in _pods_on(orchestrator, node)}

    with pytest.raises(DrainRefused) as err:
        drain_node(orchestrator, node, run_id=RUN)
    message = str(err.value)
    assert message.startswith(f"drain of node {node} refused: ")
    unmanaged = "without a controller, nothing would recreate them (set force to evict)"
    assert f"1 pod {unmanaged}: {TEST_NAMESPACE}/bare-shell" in message
    scratch = _running(admin, TEST_NAMESPACE, "scratch")[0].metadata.name
    local = "with emptyDir data that eviction would lose (set delete_emptydir_data to evict)"
    assert f"1 pod {local}: {TEST_NAMESPACE}/{scratch}" in message
    assert any(
        s.message.startswith(f"{TEST_NAMESPACE}/{scratch} keeps data in emptyDir volume scratch")
        for s in err.value.plan.refuse
    )
    assert {p.metadata.uid for p in _pods_on(orchestrator, node)} == before
    assert not nodes.is_cordoned(client.CoreV1Api(orchestrator).read_node(node))

    opts = DrainOptions(timeout_seconds=DRAIN_TIMEOUT_SECONDS, force=True, delete_emptydir_data=True)
    result = drain_node(orchestrator, node, opts, run_id=RUN)
    assert result.drained
    assert {f"{TEST_NAMESPACE}/bare-shell", f"{TEST_NAMESPACE}/{scratch}"} <= set(result.evicted)
    assert _running(admin, TEST_NAMESPACE, "bare-shell") == []
    # The replacement may only run on the drained node, so it waits, and the scheduler says why.
    wait_until(
        "scratch replacement pending",
        lambda: any(
            p.startswith(f"{TEST_NAMESPACE}/scratch-") and "Unschedulable" in p
            for p in readiness.pending_pods(orchestrator)
        ),
        SETTLE_SECONDS,
    )


def test_evictions_refused_by_a_pdb_are_retried_until_all_are_evicted(
    orchestrator: client.ApiClient, admin: client.ApiClient
) -> None:
    node = _pick_worker(orchestrator, _only_evictable, "only freely evictable pods")
    core = client.CoreV1Api(admin)
    # Land every replica on ``node``: cordon the other workers while the pods are scheduled.
    others = [n.metadata.name for n in nodes.list_workers(admin) if n.metadata.name != node]
    for other in others:
        core.patch_node(other, {"spec": {"unschedulable": True}})
    try:
        client.AppsV1Api(admin).create_namespaced_deployment(
            TEST_NAMESPACE, _deployment("queue", RETRIED_REPLICAS)
        )
        client.PolicyV1Api(admin).create_namespaced_pod_disruption_budget(
            TEST_NAMESPACE,
            {
                "metadata": {"name": "queue"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "queue"}}},
            },
        )
        wait_until(
            "queue pods running",
            lambda: len(_running(admin, TEST_NAMESPACE, "queue")) == RETRIED_REPLICAS,
            SETTLE_SECONDS,
        )
    finally:
        for other in others:
            core.patch_node(other, {"spec": {"unschedulable": False}})
    queue = {f"{TEST_NAMESPACE}/{p.metadata.name}" for p in _running(admin, TEST_NAMESPACE, "queue")}
    assert {p.spec.node_name for p in _running(admin, TEST_NAMESPACE, "queue")} == {node}
    wait_until(
        "queue PDB allows a disruption",
        lambda: not any(e["pdb"] == f"{TEST_NAMESPACE}/queue" for e in blocking_pdbs(admin)),
        SETTLE_SECONDS,
    )

    result = drain_node(orchestrator, node, DrainOptions(timeout_seconds=DRAIN_TIMEOUT_SECONDS), run_id=RUN)
    assert result.drained
    assert queue <= set(result.evicted)
    # The budget allows one pod at a time and all were tried at once: the others were refused, then retried.
    assert result.too_many_requests > 0
    wait_until(
        "queue back at full strength elsewhere",
        lambda: len(_running(admin, TEST_NAMESPACE, "queue")) == RETRIED_REPLICAS,
        SETTLE_SECONDS,
    )
    assert node not in {p.spec.node_name for p in _running(admin, TEST_NAMESPACE, "queue")}
