"""Least privilege, asked of the real apiserver: what the orchestrator identity must never do is
refused with 403, and the kubeadm pods' power lives in their own opt-in namespace only.

The admin identity plays the operator: it seeds objects and checks they survived.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.kube.client import apply_manifest, load_manifest
from slipway.localcluster.cluster import LocalCluster
from slipway.runrecord import NAMESPACE, RunRecord
from slipway.upgraders.kubeadm import kubeadm_upgrade_pod

pytestmark = pytest.mark.cluster

FORBIDDEN = 403
KUBEADM_MANIFEST = Path(str(resources.files("slipway") / "manifests" / "kubeadm-upgrader-rbac.yaml"))
KUBEADM_NAMESPACE = "slipway-kubeadm"
KUBEADM_SA = f"system:serviceaccount:{KUBEADM_NAMESPACE}:slipway-kubeadm-upgrader"
IMAGE = "registry.example/nsenter@sha256:" + "0" * 64
SECRET = "rbac-test-secret"


def _refused(call: Any, *args: Any, **kwargs: Any) -> str:
    """The apiserver's message for a call that must be refused with 403."""
    with pytest.raises(ApiException) as err:
        call(*args, **kwargs)
    assert err.value.status == FORBIDDEN, err.value.body
    return str(json.loads(err.value.body)["message"])


def _privileged_pod(namespace: str, node: str) -> dict[str, Any]:
    pod = kubeadm_upgrade_pod(node, "1.37.2", "node", IMAGE, namespace)
    pod["metadata"]["name"] = "rbac-test-privileged"
    return pod


@pytest.fixture
def orchestrator(local_cluster: LocalCluster) -> client.CoreV1Api:
    return client.CoreV1Api(local_cluster.orchestrator_client())


@pytest.fixture
def admin(local_cluster: LocalCluster) -> client.CoreV1Api:
    return client.CoreV1Api(local_cluster.admin_client())


@pytest.fixture
def worker(admin: client.CoreV1Api) -> str:
    nodes = admin.list_node(label_selector="!node-role.kubernetes.io/control-plane").items
    return str(nodes[0].metadata.name)


def test_orchestrator_cannot_create_pods_anywhere(
    orchestrator: client.CoreV1Api, admin: client.CoreV1Api, worker: str
) -> None:
    for namespace in ("default", NAMESPACE, KUBEADM_NAMESPACE):
        message = _refused(orchestrator.create_namespaced_pod, namespace, _privileged_pod(namespace, worker))
        assert 'cannot create resource "pods"' in message
    assert not admin.list_pod_for_all_namespaces(field_selector="metadata.name=rbac-test-privileged").items


def test_orchestrator_cannot_delete_pods_or_nodes(
    orchestrator: client.CoreV1Api, admin: client.CoreV1Api, worker: str
) -> None:
    pod = admin.list_namespaced_pod("shop").items[0]
    _refused(orchestrator.delete_namespaced_pod, pod.metadata.name, "shop", grace_period_seconds=0)
    _refused(orchestrator.delete_collection_namespaced_pod, "shop")
    assert admin.read_namespaced_pod(pod.metadata.name, "shop").metadata.uid == pod.metadata.uid
    _refused(orchestrator.delete_node, worker)
    assert admin.read_node(worker).metadata.name == worker


@pytest.fixture
def secret(admin: client.CoreV1Api) -> Iterator[str]:
    body = {"metadata": {"name": SECRET}, "stringData": {"token": "not-for-the-orchestrator"}}
    admin.create_namespaced_secret("shop", body)
    try:
        yield SECRET
    finally:
        admin.delete_namespaced_secret(SECRET, "shop")


def test_orchestrator_cannot_read_secrets(orchestrator: client.CoreV1Api, secret: str) -> None:
    _refused(orchestrator.read_namespaced_secret, secret, "shop")
    _refused(orchestrator.list_namespaced_secret, "shop")
    _refused(orchestrator.list_secret_for_all_namespaces)


def test_orchestrator_writes_run_records_but_cannot_delete_them(
    local_cluster: LocalCluster, orchestrator: client.CoreV1Api, admin: client.CoreV1Api
) -> None:
    record = RunRecord(local_cluster.orchestrator_client(), "manual__rbac-test")
    try:
        record.update(state="running")
        record.event("probe", "written by the orchestrator")  # read + update: granted
        _refused(orchestrator.delete_namespaced_config_map, record.name, NAMESPACE)
        _refused(orchestrator.delete_collection_namespaced_config_map, NAMESPACE)
        _refused(orchestrator.patch_namespaced_config_map, record.name, NAMESPACE, {"data": {"x": "1"}})
        assert record.load()["state"] == "running"
        assert [e["kind"] for e in record.load()["events"]] == ["probe"]
    finally:
        admin.delete_namespaced_config_map(record.name, NAMESPACE)


def test_slipway_system_refuses_a_privileged_pod_even_to_the_admin(
    orchestrator: client.CoreV1Api, admin: client.CoreV1Api, worker: str
) -> None:
    pod = _privileged_pod(NAMESPACE, worker)
    _refused(orchestrator.create_namespaced_pod, NAMESPACE, pod)
    # RBAC aside, Pod Security (restricted, enforced) turns the pod away from anyone.
    message = _refused(admin.create_namespaced_pod, NAMESPACE, pod, dry_run="All")
    assert 'violates PodSecurity "restricted:latest"' in message


@pytest.fixture
def kubeadm_upgrader(local_cluster: LocalCluster) -> Iterator[client.CoreV1Api]:
    """The opt-in kubeadm manifest applied, and a client acting as its ServiceAccount."""
    admin = local_cluster.admin_client()
    apply_manifest(admin, load_manifest(KUBEADM_MANIFEST))
    acting = client.ApiClient(copy.deepcopy(admin.configuration))
    acting.set_default_header("Impersonate-User", KUBEADM_SA)
    try:
        yield client.CoreV1Api(acting)
    finally:
        # The Role, its binding and the ServiceAccount go with the namespace.
        client.CoreV1Api(admin).delete_namespace(KUBEADM_NAMESPACE)


def test_kubeadm_pods_run_only_in_their_opt_in_namespace(
    kubeadm_upgrader: client.CoreV1Api, worker: str
) -> None:
    admitted = kubeadm_upgrader.create_namespaced_pod(
        KUBEADM_NAMESPACE, _privileged_pod(KUBEADM_NAMESPACE, worker), dry_run="All"
    )
    assert admitted.spec.host_pid and admitted.spec.containers[0].security_context.privileged
    for namespace in (NAMESPACE, "default"):
        _refused(kubeadm_upgrader.create_namespaced_pod, namespace, _privileged_pod(namespace, worker))
    _refused(kubeadm_upgrader.list_node)
    _refused(kubeadm_upgrader.list_namespaced_secret, KUBEADM_NAMESPACE)
