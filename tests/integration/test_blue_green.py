"""Blue-green worker upgrade against the real cluster: the blue node is kept until retired,
and switching back moves the workload home through evictions, never below its PDB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.kube import nodes as kube_nodes
from slipway.kube.drain import DrainOptions, drain_node
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from slipway.localcluster.nodes import simulated_node
from slipway.upgraders.nodes import RETIRE
from slipway.upgraders.surge import LocalBlueGreenUpgrader
from tests.dags.dagrun import PdbWatcher

pytestmark = pytest.mark.cluster

BLUE = "bg-blue-0"
GREEN = LocalBlueGreenUpgrader.replacement_name(BLUE, KUBERNETES_NEW)
APP = "bg-app"
SELECTOR = {"slipway.dev/bg-test": "true"}
RUN = "test-blue-green"


def _ready(core: client.CoreV1Api, name: str) -> bool:
    try:
        return kube_nodes.node_ready(core.read_node(name))
    except ApiException as err:
        if err.status == 404:
            return False
        raise


def _app_nodes(core: client.CoreV1Api) -> list[str]:
    pods = core.list_namespaced_pod("shop", label_selector=f"app={APP}").items
    running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    return sorted(p.spec.node_name or "" for p in running)


@pytest.fixture
def blue_node(local_cluster: LocalCluster) -> Iterator[client.CoreV1Api]:
    """A node of its own (only the test app may run there) with 2 replicas behind a PDB."""
    admin = local_cluster.admin_client()
    core, apps, policy = client.CoreV1Api(admin), client.AppsV1Api(admin), client.PolicyV1Api(admin)
    labels = {"kubernetes.io/hostname": BLUE, "slipway.dev/node-pool": "bg", "type": "kwok"} | SELECTOR
    resources = {"cpu": "4000m", "memory": str(8 * 2**30), "pods": "20"}
    core.create_node(simulated_node(BLUE, labels, [], resources, KUBERNETES_OLD))
    pod_labels = {"app": APP}
    apps.create_namespaced_deployment(
        "shop",
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name=APP),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=pod_labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=pod_labels),
                    spec=client.V1PodSpec(
                        node_selector=SELECTOR,
                        containers=[client.V1Container(name="app", image="registry.local/app:1.0")],
                    ),
                ),
            ),
        ),
    )
    policy.create_namespaced_pod_disruption_budget(
        "shop",
        client.V1PodDisruptionBudget(
            metadata=client.V1ObjectMeta(name=APP),
            spec=client.V1PodDisruptionBudgetSpec(
                min_available=1, selector=client.V1LabelSelector(match_labels=pod_labels)
            ),
        ),
    )
    try:
        wait_until(f"{APP} running on {BLUE}", lambda: _app_nodes(core) == [BLUE, BLUE], 120, interval=0.5)
        yield core
    finally:
        apps.delete_namespaced_deployment(APP, "shop")
        policy.delete_namespaced_pod_disruption_budget(APP, "shop")
        for name in (BLUE, GREEN):
            try:
                core.delete_node(name)
            except ApiException as err:
                if err.status != 404:
                    raise
        wait_until(f"{APP} pods gone", lambda: not _app_nodes(core), 120, interval=0.5)


def _move_to_green(
    local_cluster: LocalCluster, upgrader: LocalBlueGreenUpgrader, core: client.CoreV1Api
) -> None:
    """One batch of a blue-green upgrade: green twin joins, blue is drained and marked."""
    assert upgrader.prepare_batch([BLUE], KUBERNETES_NEW) == [GREEN]
    wait_until(f"{GREEN} Ready", lambda: _ready(core, GREEN), 120, interval=0.5)
    drain_node(local_cluster.orchestrator_client(), BLUE, DrainOptions(grace_period_seconds=0), run_id=RUN)
    upgrader.upgrade_node(BLUE, KUBERNETES_NEW)
    wait_until(f"{APP} running on {GREEN}", lambda: _app_nodes(core) == [GREEN, GREEN], 120, interval=0.5)


def test_blue_is_kept_then_switched_back_within_the_pdb_then_retired(
    local_cluster: LocalCluster, blue_node: client.CoreV1Api
) -> None:
    core = blue_node
    upgrader = LocalBlueGreenUpgrader(local_cluster.admin_client())
    _move_to_green(local_cluster, upgrader, core)

    # Validated batch: the blue node stays, cordoned and empty, as the way back.
    assert upgrader.finalize_batch([BLUE]) == []
    blue = core.read_node(BLUE)
    assert kube_nodes.is_cordoned(blue) and blue.metadata.annotations[RETIRE] == "true"
    assert upgrader.kept_blue() == [BLUE]

    with PdbWatcher(local_cluster.admin_client()) as watcher:
        assert upgrader.switch_back() == [BLUE]
        wait_until(f"{APP} back on {BLUE}", lambda: _app_nodes(core) == [BLUE, BLUE], 120, interval=0.5)
    assert watcher.events > 0
    assert [v for v in watcher.violations if v.startswith(f"shop/{APP}:")] == []
    blue = core.read_node(BLUE)
    assert not kube_nodes.is_cordoned(blue) and RETIRE not in (blue.metadata.annotations or {})
    assert not _ready(core, GREEN)  # removed
    assert upgrader.switch_back() == []  # a cleared task finds nothing left to do

    # A second attempt that passes: the blue node is retired, the workload stays on green.
    _move_to_green(local_cluster, upgrader, core)
    assert upgrader.retire_blue(KUBERNETES_NEW) == [BLUE]
    assert upgrader.retire_blue(KUBERNETES_NEW) == []
    assert upgrader.kept_blue() == [] and not _ready(core, BLUE)
    assert _app_nodes(core) == [GREEN, GREEN]
