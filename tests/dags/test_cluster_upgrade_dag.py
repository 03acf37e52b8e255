"""The whole cluster upgrade end to end with dag.test(): control plane first, then workers,
and the control-plane rollback branch forced by the fault-injection switch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from slipway.airflow.stage_control_plane import CHAOS_CONFIGMAP, CHAOS_KEY
from slipway.kube import nodes as kube_nodes
from slipway.kube.readiness import workloads_available
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import ETCD_NEW, ETCD_OLD, KUBERNETES_NEW, KUBERNETES_OLD
from tests.conftest import running_cluster
from tests.dags.dagrun import run_dag, verdict

pytestmark = pytest.mark.cluster

CONF = {
    "target_version": KUBERNETES_NEW,
    "approval": "never",
    "blocked_drain_policy": "quarantine",
    "force_bare_pods": True,
    "delete_emptydir_data": True,
    "soak_seconds": 3,
}


@pytest.fixture
def cluster(airflow_db: Path) -> Iterator[LocalCluster]:
    # 7 workers: the never-evictable samples may quarantine up to 3 nodes (placement is the
    # scheduler's), and the last nodes drained must still have somewhere for their pods to go.
    with running_cluster("full", 500, 7) as local:
        yield local


def test_full_cluster_upgrade_control_plane_first_with_zero_failed_requests(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    state, record = run_dag("k8s_cluster_upgrade", CONF, cluster, tmp_path)
    assert state == "success", record.get("events")
    assert verdict(record) == "upgraded"
    versions = cluster.versions()
    for name in ("kube-apiserver-0", "kube-apiserver-1", "kube-controller-manager", "kube-scheduler"):
        assert versions[name] == KUBERNETES_NEW, name
    for i in range(cluster.cfg.etcd_members):
        assert versions[f"etcd-{i}"] == ETCD_NEW
    probe = record["control_plane"]["probe"]
    assert probe["requests"] > 0
    assert probe["failures"] == 0, probe["failure_samples"]
    quarantined = set(record["worker_phase"]["quarantined"])
    for node in kube_nodes.list_workers(cluster.admin_client()):
        if node.metadata.name not in quarantined:
            assert kube_nodes.kubelet_version(node) == KUBERNETES_NEW
            assert not kube_nodes.is_cordoned(node)
    assert workloads_available(cluster.admin_client()) == []
    kinds = [e["kind"] for e in record["events"]]
    # Control plane first: every component before the first worker batch opened.
    assert kinds.index("control-plane-verified") < kinds.index("batch-opened")
    assert record["backup"]["restore_ok"]
    # etcd defragmented after the proven backup, before any component restarted, every member once.
    assert kinds.index("backup-proven") < kinds.index("etcd-defragmented") < kinds.index("component-upgraded")
    defrag = record["control_plane"]["defragmentation"]
    assert sorted(d["member"] for d in defrag) == [f"etcd-{i}" for i in range(cluster.cfg.etcd_members)]
    # The performance baseline was taken before the upgrade and every batch was compared with
    # it (a short batch may see too few requests of a kind to judge, but not every batch).
    assert record["latency"]["baseline"]["apiserver"]
    passed = [b for b in record["batches"] if b["state"] == "passed"]
    assert all("signals" in b["verdict"]["latency"] for b in passed)
    assert any(b["verdict"]["latency"]["signals"] for b in passed)
    report = Path(record["report"]["markdown"]).read_text()
    assert "**upgraded**" in report
    assert "0 failed" in report
    assert "etcd defragmented before the upgrade" in report


def test_failed_control_plane_verification_rolls_back_and_ends_red(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    core = client.CoreV1Api(cluster.admin_client())
    core.create_namespaced_config_map(
        "slipway-system", {"metadata": {"name": CHAOS_CONFIGMAP}, "data": {CHAOS_KEY: "true"}}
    )
    state, record = run_dag("k8s_cluster_upgrade", CONF, cluster, tmp_path)
    assert state == "failed"
    assert verdict(record) == "rolled-back"
    assert any("fault injected" in p for p in record["control_plane"]["verification"])
    versions = cluster.versions()
    for name in ("kube-apiserver-0", "kube-apiserver-1", "kube-controller-manager", "kube-scheduler"):
        assert versions[name] == KUBERNETES_OLD, name
    for i in range(cluster.cfg.etcd_members):
        assert versions[f"etcd-{i}"] == ETCD_OLD
    assert client.VersionApi(cluster.admin_client()).get_code().git_version == f"v{KUBERNETES_OLD}"
    assert "batches" not in record  # the worker phase never started
    for node in kube_nodes.list_workers(cluster.admin_client()):
        assert kube_nodes.kubelet_version(node) == KUBERNETES_OLD
        assert not kube_nodes.is_cordoned(node)
