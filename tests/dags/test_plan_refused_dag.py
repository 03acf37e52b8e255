"""What runs is what the plan says: a plan one run of k8s_cluster_upgrade cannot execute as
printed (here kubelets too old for the target: a catch-up hop first) is refused at the risk
gate through the DAG, naming the run to trigger first, and nothing of the cluster changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.kube import nodes as kube_nodes
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from tests.conftest import running_cluster
from tests.dags.dagrun import run_dag, verdict

pytestmark = pytest.mark.cluster

# kwok kubelets report any version: three minors behind the control plane is within the
# skew policy today, but four behind the target, so the kubelets must catch up first.
OLD_KUBELET = "1.33.13"


@pytest.fixture
def lagging_cluster(airflow_db: Path) -> Iterator[LocalCluster]:
    with running_cluster("lagging", 1300, 2, kubelet_version=OLD_KUBELET) as cluster:
        yield cluster


def test_a_plan_with_a_kubelet_catch_up_is_refused_naming_the_first_run(
    lagging_cluster: LocalCluster, tmp_path: Path
) -> None:
    conf = {"target_version": KUBERNETES_NEW, "approval": "never", "soak_seconds": 1}
    state, record = run_dag("k8s_cluster_upgrade", conf, lagging_cluster, tmp_path)
    assert state == "failed"
    assert verdict(record) == "refused"
    kinds = [h["kind"] for h in record["plan"]["hops"]]
    assert kinds.index("kubelet") < kinds.index("control-plane")  # the plan printed the catch-up
    why = record["plan"]["not_one_run"]
    assert "trigger k8s_worker_upgrade with target_version=" in why
    assert record["risk"]["decision"] == "refuse" and record["risk"]["reasons"][0] == why
    assert any(e["kind"] == "plan-refused" for e in record["events"])
    # Nothing moved: the control plane and every kubelet where they were, nothing cordoned.
    admin = lagging_cluster.admin_client()
    for node in kube_nodes.list_workers(admin):
        assert kube_nodes.kubelet_version(node) == OLD_KUBELET
        assert not kube_nodes.is_cordoned(node)
    assert "control_plane" not in record or not record["control_plane"].get("steps")
    assert KUBERNETES_OLD in str(record["plan"]["current"])
