"""A run works on the cluster its form names (``kubernetes_conn_id``, ``platform_conn_id``),
never on the default connections' cluster; a connection that is not defined is refused."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway import lease
from slipway.kube import nodes as kube_nodes
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from slipway.runrecord import RunRecord
from tests.conftest import running_cluster
from tests.dags.dagrun import named_connections, remove_never_evictable_samples, run_dag, verdict

pytestmark = pytest.mark.cluster

CONF = {
    "target_version": KUBERNETES_NEW,
    "soak_seconds": 1,
    "force_bare_pods": True,
    "delete_emptydir_data": True,
}
VERSIONS = {"kubernetes_version": KUBERNETES_NEW, "kubelet_version": KUBERNETES_OLD}


@pytest.fixture(scope="module")
def pair(airflow_db: Path) -> Iterator[tuple[LocalCluster, LocalCluster]]:
    """Two clusters, kubelets one minor behind on both."""
    with (
        running_cluster("conn-a", 1500, 2, **VERSIONS) as a,
        running_cluster("conn-b", 1600, 2, **VERSIONS) as b,
    ):
        remove_never_evictable_samples(a)
        remove_never_evictable_samples(b)
        yield a, b


def _kubelets(cluster: LocalCluster) -> dict[str, str]:
    return {
        n.metadata.name: kube_nodes.kubelet_version(n)
        for n in kube_nodes.list_workers(cluster.admin_client())
    }


def _cordoned(cluster: LocalCluster) -> list[str]:
    return [
        n.metadata.name for n in kube_nodes.list_workers(cluster.admin_client()) if kube_nodes.is_cordoned(n)
    ]


def test_a_run_upgrades_the_cluster_its_form_names_and_leaves_the_default_alone(
    pair: tuple[LocalCluster, LocalCluster], tmp_path: Path
) -> None:
    a, b = pair
    os.environ.update(named_connections(b, Path(os.environ["AIRFLOW_HOME"]), tmp_path, "b"))
    before_a = _kubelets(a)
    conf = CONF | {"kubernetes_conn_id": "k8s_b", "platform_conn_id": "slipway_platform_b"}
    # The default connections point at A; the run names B's.
    state, record = run_dag("k8s_worker_upgrade", conf, a, tmp_path, record_from=b)
    assert state == "success", record.get("events")
    assert verdict(record) == "upgraded"
    assert record["request"]["kubernetes_conn_id"] == "k8s_b"
    assert set(_kubelets(b).values()) == {KUBERNETES_NEW}
    assert _cordoned(b) == []
    # A: not a kubelet moved, no cordon, no record of the run, no lease taken.
    assert _kubelets(a) == before_a and set(before_a.values()) == {KUBERNETES_OLD}
    assert _cordoned(a) == []
    assert RunRecord(a.orchestrator_client(), record["run_id"]).load() == {}
    assert lease.read(a.orchestrator_client()) is None
    taken = lease.read(b.orchestrator_client())
    assert taken is not None and taken.transitions >= 0  # B's lease was the one taken (and released)


def test_a_connection_that_is_not_defined_is_refused_before_anything_changes(
    pair: tuple[LocalCluster, LocalCluster], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    a, b = pair
    before = _kubelets(a), _kubelets(b)
    # Never the provider's fallback (in-cluster, ~/.kube/config): a typo must not reach a cluster.
    state, record = run_dag("k8s_worker_upgrade", CONF | {"kubernetes_conn_id": "k8s_typo"}, a, tmp_path)
    assert state == "failed"
    assert record == {}  # refused in validate_request, before the run record was written
    assert "kubernetes_conn_id: connection 'k8s_typo' is not defined" in capfd.readouterr().out
    assert (_kubelets(a), _kubelets(b)) == before
    assert _cordoned(a) == _cordoned(b) == []
