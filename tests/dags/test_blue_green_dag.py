"""Blue-green through ``k8s_cluster_upgrade`` with dag.test(): a run that fails switches the
workloads back to the blue nodes; the next run finishes and retires them."""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

import pytest
from kubernetes import client

from slipway.kube import nodes as kube_nodes
from slipway.kube.readiness import workloads_available
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import ETCD_NEW, KUBERNETES_NEW, KUBERNETES_OLD
from slipway.upgraders.nodes import REPLACES, RETIRE
from tests.conftest import running_cluster
from tests.dags.dagrun import remove_never_evictable_samples, run_dag, verdict
from tests.localhttp import QuietHandler, serving

pytestmark = pytest.mark.cluster

CONF = {
    "target_version": KUBERNETES_NEW,
    "strategy": "blue-green",
    "approval": "never",
    "batch_size": 1,
    "force_bare_pods": True,
    "delete_emptydir_data": True,
    "soak_seconds": 3,
}


@pytest.fixture
def cluster(airflow_db: Path) -> Iterator[LocalCluster]:
    """Control plane already at the target (this test is about the workers), kubelets one
    minor behind; without the never-evictable samples, so no node is quarantined."""
    versions = {"kubernetes_version": KUBERNETES_NEW, "etcd_version": ETCD_NEW}
    with running_cluster("bluegreen", 600, 4, kubelet_version=KUBERNETES_OLD, **versions) as local:
        remove_never_evictable_samples(local)
        yield local


def _greens(cluster: LocalCluster) -> list[str]:
    nodes = client.CoreV1Api(cluster.admin_client()).list_node().items
    return [n.metadata.name for n in nodes if (n.metadata.annotations or {}).get(REPLACES)]


def test_failed_blue_green_switches_back_and_the_next_run_retires_blue(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    admin = cluster.admin_client()
    blue = sorted(n.metadata.name for n in kube_nodes.list_workers(admin))

    class TwoGreensBreakTheApp(QuietHandler):
        """The application's health endpoint: healthy with one green node, broken with two,
        so batch 0 passes and batch 1 fails."""

        def do_GET(self) -> None:
            broken = len(_greens(cluster)) >= 2
            self.send_response(HTTPStatus.INTERNAL_SERVER_ERROR if broken else HTTPStatus.OK)
            self.end_headers()

    with serving(TwoGreensBreakTheApp) as url:
        conf = CONF | {"health_checks": [{"kind": "http", "url": f"{url}/healthz"}]}
        state, record = run_dag("k8s_cluster_upgrade", conf, cluster, tmp_path / "first")

    assert state == "failed"
    assert verdict(record) == "rolled-back"
    assert [b["state"] for b in record["batches"]] == ["passed", "rolled-back"]
    kinds = [e["kind"] for e in record["events"]]
    # Batch 1 rolled back, then every earlier batch's workloads went home to blue.
    assert kinds.index("batch-rolled-back") < kinds.index("switched-back")
    switched = next(e for e in record["events"] if e["kind"] == "switched-back")
    assert switched["message"].endswith("every workload available"), switched
    assert "blue-retired" not in kinds
    assert _greens(cluster) == []
    for node in kube_nodes.list_workers(admin):
        assert kube_nodes.kubelet_version(node) == KUBERNETES_OLD, node.metadata.name
        assert not kube_nodes.is_cordoned(node), f"{node.metadata.name} left cordoned"
        assert RETIRE not in (node.metadata.annotations or {})
    assert sorted(n.metadata.name for n in kube_nodes.list_workers(admin)) == blue
    assert workloads_available(admin) == []
    assert "switched-back" in Path(record["report"]["markdown"]).read_text()

    state, record = run_dag("k8s_cluster_upgrade", CONF, cluster, tmp_path / "second")

    assert state == "success", record.get("events")
    assert verdict(record) == "upgraded"
    kinds = [e["kind"] for e in record["events"]]
    assert kinds.index("validated") < kinds.index("blue-retired")
    workers = kube_nodes.list_workers(admin)
    assert sorted(n.metadata.name for n in workers) == sorted(_greens(cluster))
    assert len(workers) == len(blue)
    for node in workers:
        assert kube_nodes.kubelet_version(node) == KUBERNETES_NEW, node.metadata.name
        assert not kube_nodes.is_cordoned(node), f"{node.metadata.name} left cordoned"
    assert workloads_available(admin) == []
