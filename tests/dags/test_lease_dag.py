"""One cluster, one upgrade, through a real DAG run: a run that finds another run's live
cluster lease stops at its lease task naming the holder and changes nothing; once the
lease is released the next run takes it, upgrades, and gives it back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from slipway import lease
from slipway.kube import nodes as kube_nodes
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from slipway.runrecord import RunRecord, record_name
from tests.conftest import REPO, running_cluster
from tests.dags.dagrun import cluster_env, verdict

pytestmark = pytest.mark.cluster

CONF = {
    "target_version": KUBERNETES_NEW,
    "soak_seconds": 3,
    "blocked_drain_policy": "quarantine",
    "force_bare_pods": True,
    "delete_emptydir_data": True,
}
OTHER_RUN = "k8s_cluster_upgrade/manual__someone-elses-upgrade"


@pytest.fixture
def lease_cluster(airflow_db: Path) -> Iterator[LocalCluster]:
    # Kubelets one minor behind a control plane at the target: a run that got past the lease
    # would have nodes to cordon at once. 3 workers keep the cluster quick to start.
    with running_cluster(
        "lease", 900, 3, kubernetes_version=KUBERNETES_NEW, kubelet_version=KUBERNETES_OLD
    ) as cluster:
        yield cluster


def _run(
    dag_id: str, cluster: LocalCluster, reports: Path, conf: dict[str, Any]
) -> tuple[Any, dict[str, str]]:
    """dag.test() one run; returns it and the state of each task (first map index)."""
    os.environ.update(cluster_env(cluster, Path(os.environ["AIRFLOW_HOME"]), reports))
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[dag_id]
    dag_run = dag.test(run_conf=conf)
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances() if ti.map_index <= 0}
    return dag_run, states


def _slipway_marks(api: client.ApiClient) -> dict[str, Any]:
    """What Slipway writes on nodes: the cordon, its labels and annotations, the kubelet."""
    return {
        n.metadata.name: (
            bool(n.spec.unschedulable),
            {k: v for k, v in (n.metadata.annotations or {}).items() if k.startswith("slipway.dev/")},
            {k: v for k, v in (n.metadata.labels or {}).items() if k.startswith("slipway.dev/")},
            kube_nodes.kubelet_version(n),
        )
        for n in kube_nodes.list_workers(api)
    }


def _configmaps(api: client.ApiClient) -> set[str]:
    return {
        cm.metadata.name for cm in client.CoreV1Api(api).list_namespaced_config_map("slipway-system").items
    }


def test_live_lease_of_another_run_stops_the_run_untouched_until_released(
    lease_cluster: LocalCluster, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    api = lease_cluster.orchestrator_client()
    admin = lease_cluster.admin_client()
    held = lease.acquire(api, OTHER_RUN, 900)  # another run is upgrading this cluster
    marks, configmaps = _slipway_marks(admin), _configmaps(admin)

    refused, states = _run("k8s_worker_upgrade", lease_cluster, tmp_path, CONF)
    assert refused.state == "failed"
    assert states["take_cluster_lease"] == "failed"
    # Its setup failed, so the teardown never runs (the scheduler marks it upstream_failed).
    assert states["release_cluster_lease"] in ("upstream_failed", "None")
    worked = [t for t, s in states.items() if t.startswith("workers.") and s == "success"]
    assert worked == []
    output = capfd.readouterr()
    line = f"cluster lease {lease.NAMESPACE}/{lease.NAME} is held by {OTHER_RUN}"
    assert line in output.out + output.err
    # Nothing changed: the nodes, the other run's lease (not even renewed), and no object but
    # the refused run's own record (written by the request validation, before the lease).
    assert _slipway_marks(admin) == marks
    after = lease.read(api)
    assert after is not None
    assert (after.holder, after.resource_version) == (OTHER_RUN, held.resource_version)
    record = record_name(refused.run_id)  # the record and its timeline's chunks (record-events-…)
    new = _configmaps(admin) - configmaps
    assert record in new and all(name == record or name.startswith(f"{record}-events-") for name in new), new

    # A reconcile that finds drift (kubelets below git's version) triggers nothing meanwhile.
    _, states = _run("k8s_gitops_sync", lease_cluster, tmp_path, {"environment": "production"})
    assert (states["upgrade_in_progress"], states["trigger_upgrade"]) == ("success", "skipped")

    assert lease.release(api, OTHER_RUN)  # that run ended
    # The next run takes the lease, opens its work and gives the lease back. Its window closes
    # before a batch could finish, so it pauses at once (green): the full upgrade under the
    # lease is what the other DAG tests run.
    closes = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    resumed, states = _run("k8s_worker_upgrade", lease_cluster, tmp_path, CONF | {"window_end": closes})
    assert resumed.state == "success", states
    record = RunRecord(api, resumed.run_id).load()
    assert verdict(record) == "paused"
    kinds = [e["kind"] for e in record["events"]]
    assert kinds.index("lease-taken") < kinds.index("paused")
    assert kinds[-1] == "lease-released"  # the teardown gave it back, after the report
    assert lease.holder_for("k8s_worker_upgrade", resumed.run_id) in record["events"][-1]["message"]
    assert states["release_cluster_lease"] == "success"
    assert lease.holder(api) is None
    state = lease.read(api)
    assert state is not None and state.transitions == 1  # taken over from the other run once
    assert state.renewed and state.acquired and state.renewed > state.acquired  # the steps renewed it
    assert _slipway_marks(admin) == marks
