"""The local cluster is a real Kubernetes control plane: these talk to it over HTTPS, no mocks."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.localcluster import binaries, health
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import ETCD_OLD, KUBERNETES_OLD

pytestmark = pytest.mark.cluster


def _evict(core: client.CoreV1Api, pod: client.V1Pod) -> None:
    body = client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=pod.metadata.namespace)
    )
    core.create_namespaced_pod_eviction(pod.metadata.name, pod.metadata.namespace, body)


def _running_pods(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


def test_components_report_their_true_release(local_cluster: LocalCluster) -> None:
    version = client.VersionApi(local_cluster.admin_client()).get_code()
    assert version.git_version == f"v{KUBERNETES_OLD}"
    assert version.minor == KUBERNETES_OLD.split(".")[1]
    pki = local_cluster.cfg.pki_dir
    status, body = health.https_get(
        "127.0.0.1",
        local_cluster.cfg.etcd_client_port(0),
        "/version",
        ca=pki / "etcd-ca.crt",
        cert=(pki / "etcd-admin.crt", pki / "etcd-admin.key"),
    )
    assert status == 200
    assert f'"etcdserver":"{ETCD_OLD}"' in body


def test_nodes_are_ready_at_the_older_kubelet(local_cluster: LocalCluster) -> None:
    nodes = client.CoreV1Api(local_cluster.admin_client()).list_node().items
    assert len(nodes) == local_cluster.cfg.nodes + local_cluster.cfg.control_plane_nodes
    for node in nodes:
        ready = {c.type: c.status for c in node.status.conditions}["Ready"]
        assert ready == "True", node.metadata.name
        assert node.status.node_info.kubelet_version == f"v{KUBERNETES_OLD}"
        assert int(node.status.allocatable["pods"]) == 110
    control_plane = [n for n in nodes if "node-role.kubernetes.io/control-plane" in n.metadata.labels]
    assert len(control_plane) == local_cluster.cfg.control_plane_nodes
    for node in control_plane:
        assert any(
            t.key == "node-role.kubernetes.io/control-plane" and t.effect == "NoSchedule"
            for t in node.spec.taints
        )


def test_eviction_blocked_by_pdb_gets_429(local_cluster: LocalCluster) -> None:
    core = client.CoreV1Api(local_cluster.orchestrator_client())
    pod = _running_pods(core, "shop", "payments-api")[0]
    with pytest.raises(ApiException) as err:
        _evict(core, pod)
    assert err.value.status == 429
    assert "disruption budget" in err.value.body.lower()


def test_cordon_and_evict_reschedules_on_another_node(local_cluster: LocalCluster) -> None:
    core = client.CoreV1Api(local_cluster.orchestrator_client())
    pod = _running_pods(core, "shop", "web")[0]
    node = pod.spec.node_name
    core.patch_node(node, {"spec": {"unschedulable": True}})
    try:
        _evict(core, pod)

        def replaced() -> bool:
            pods = _running_pods(core, "shop", "web")
            return len(pods) == 6 and pod.metadata.name not in {p.metadata.name for p in pods}

        health.wait_until("web back at 6 replicas", replaced, 60)
        assert all(
            p.spec.node_name != node
            for p in _running_pods(core, "shop", "web")
            if p.metadata.creation_timestamp > pod.metadata.creation_timestamp
        )
    finally:
        core.patch_node(node, {"spec": {"unschedulable": False}})


def test_rbac_refuses_what_the_orchestrator_role_does_not_grant(local_cluster: LocalCluster) -> None:
    core = client.CoreV1Api(local_cluster.orchestrator_client())
    assert core.list_node().items  # granted
    with pytest.raises(ApiException) as err:
        core.delete_node("general-00")
    assert err.value.status == 403
    with pytest.raises(ApiException) as err:
        core.list_namespaced_secret("kube-system")
    assert err.value.status == 403
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_pod("debug-shell", "shop")
    assert err.value.status == 403


def test_apiserver_restart_behind_the_load_balancer_fails_no_request(local_cluster: LocalCluster) -> None:
    api = local_cluster.admin_client()
    core = client.CoreV1Api(api)
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    failures: list[str] = []

    def loop() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            name = f"probe-{i}"
            try:
                core.list_namespaced_config_map("default", limit=5)
                core.create_namespaced_config_map(
                    "default", {"metadata": {"name": name}, "data": {"i": str(i)}}
                )
                core.delete_namespaced_config_map(name, "default")
                counts["ok"] += 1
            except Exception as exc:  # every failure is the finding, whatever its type
                counts["failed"] += 1
                failures.append(f"{type(exc).__name__}: {exc}"[:200])

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        health.wait_until("probe running", lambda: counts["ok"] > 5, 30)
        before = counts["ok"]
        local_cluster.restart_component("kube-apiserver-0")
        health.wait_until("probe after restart", lambda: counts["ok"] > before + 20, 60)
    finally:
        stop.set()
        worker.join(10)
    assert counts["failed"] == 0, failures[:5]
    assert local_cluster.apiserver_ready(0)


def test_go_toolchain_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(binaries.BinaryError, match="Go toolchain not found on PATH"):
        binaries.check_go()


def test_unknown_version_is_refused() -> None:
    with pytest.raises(binaries.BinaryError, match=r"unknown kubernetes version '1\.99\.0'"):
        binaries.parse_release("kubernetes=1.99.0")


def test_wait_gives_up_with_the_reason() -> None:
    started = time.monotonic()
    with pytest.raises(health.NotHealthy, match="thing: the process exited"):
        health.wait_until("thing", lambda: False, 30, alive=lambda: False)
    assert time.monotonic() - started < 30
