"""Seeds shared by the tests against the local cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.kube.drain import FINISHED_PHASES
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.models import parse_cpu

POOL_LABEL = "slipway.dev/node-pool"
HOG = "capacity-hog"


def free_cpu(core: client.CoreV1Api, node: client.V1Node) -> int:
    """Millicores the scheduler still has on ``node``: allocatable minus running pods' requests."""
    pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node.metadata.name}").items
    used = sum(
        parse_cpu((c.resources.requests or {}).get("cpu", "0"))
        for pod in pods
        if pod.status.phase not in FINISHED_PHASES
        for c in pod.spec.containers
        if c.resources
    )
    return parse_cpu(node.status.allocatable["cpu"]) - used


@pytest.fixture
def capacity_hog(local_cluster: LocalCluster) -> Iterator[int]:
    """One pod per general node, each as large as the emptiest general node allows: a drained
    general node's hog fits nowhere else in its pool."""
    admin = local_cluster.admin_client()
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    general = core.list_node(label_selector=f"{POOL_LABEL}=general").items
    free = [free_cpu(core, n) for n in general]
    size = min(free) // 10 * 10
    assert max(free) < 2 * size, f"general nodes too uneven to seed a shortfall: {free}"
    labels = {"app": HOG}
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name=HOG, namespace="shop", labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=len(general),
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    node_selector={POOL_LABEL: "general"},
                    containers=[
                        client.V1Container(
                            name="hog",
                            image="registry.local/hog:1.0",
                            resources=client.V1ResourceRequirements(
                                requests={"cpu": f"{size}m", "memory": "64Mi"}
                            ),
                        )
                    ],
                ),
            ),
        ),
    )
    apps.create_namespaced_deployment("shop", body)

    def hogs() -> list[client.V1Pod]:
        return list(core.list_namespaced_pod("shop", label_selector=f"app={HOG}").items)

    try:
        wait_until(
            f"{len(general)} {HOG} pods running",
            lambda: sum(p.status.phase == "Running" for p in hogs()) == len(general),
            120,
            interval=1.0,
        )
        yield size
    finally:
        try:
            apps.delete_namespaced_deployment(HOG, "shop")
        except ApiException as err:
            if err.status != 404:
                raise
        wait_until(f"{HOG} pods gone", lambda: not hogs(), 120, interval=1.0)
