"""The worker phase end to end with dag.test() against a real local cluster."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client

from slipway.kube import nodes as kube_nodes
from slipway.kube.readiness import workloads_available
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from slipway.upgraders.nodes import NOT_READY, SIMULATE_LABEL
from tests.conftest import running_cluster
from tests.dags.dagrun import PdbWatcher, remove_never_evictable_samples, run_dag, verdict

pytestmark = pytest.mark.cluster

# A 1.35 kubelet (one minor behind the older control plane of the local kit).
LAGGING_KUBELET = "1.35.4"

# Control plane already at the newer minor, kubelets one behind: the worker-only DAG's job.
BASE_CONF = {
    "target_version": KUBERNETES_NEW,
    "soak_seconds": 3,
    "force_bare_pods": True,
    "delete_emptydir_data": True,
}


@pytest.fixture
def worker_cluster(airflow_db: Path) -> Iterator[LocalCluster]:
    with running_cluster(
        "workers", 400, 6, kubernetes_version=KUBERNETES_NEW, kubelet_version=KUBERNETES_OLD
    ) as cluster:
        yield cluster


def _workers(cluster: LocalCluster) -> list[client.V1Node]:
    return kube_nodes.list_workers(cluster.admin_client())


def test_full_worker_upgrade_never_drops_a_workload_below_its_pdb(
    worker_cluster: LocalCluster, tmp_path: Path
) -> None:
    with PdbWatcher(worker_cluster.admin_client()) as watcher:
        state, record = run_dag(
            "k8s_worker_upgrade", BASE_CONF | {"blocked_drain_policy": "quarantine"}, worker_cluster, tmp_path
        )
    assert state == "success", record.get("events")
    assert verdict(record) == "upgraded"
    assert watcher.events > 0
    assert watcher.violations == []
    quarantined = set(record["worker_phase"]["quarantined"])
    for node in _workers(worker_cluster):
        name = node.metadata.name
        if name in quarantined:
            assert kube_nodes.is_cordoned(node)  # left cordoned on purpose, with the reason recorded
            continue
        assert kube_nodes.kubelet_version(node) == KUBERNETES_NEW, name
        assert not kube_nodes.is_cordoned(node), name
    # The quarantined nodes are exactly those holding a pod whose PDB never allows an eviction.
    assert quarantined
    # Every controller-managed workload is whole again (the bare pod was evicted on purpose).
    assert workloads_available(worker_cluster.admin_client()) == []
    assert (tmp_path / "k8s_worker_upgrade").exists()


def test_node_that_never_becomes_ready_rolls_the_batch_back(
    worker_cluster: LocalCluster, tmp_path: Path
) -> None:
    first = sorted(
        _workers(worker_cluster), key=lambda n: (n.metadata.labels["slipway.dev/node-pool"], n.metadata.name)
    )[0].metadata.name
    remove_never_evictable_samples(worker_cluster)  # this test is about readiness, not PDBs
    client.CoreV1Api(worker_cluster.admin_client()).patch_node(
        first, {"metadata": {"labels": {SIMULATE_LABEL: NOT_READY}}}
    )
    state, record = run_dag(
        "k8s_worker_upgrade",
        BASE_CONF | {"blocked_drain_policy": "quarantine", "node_ready_timeout_seconds": 20},
        worker_cluster,
        tmp_path,
    )
    assert state == "failed"
    assert verdict(record) == "rolled-back"
    assert record["batches"][0]["nodes"] == [first]
    assert record["batches"][0]["state"] == "rolled-back"
    assert len(record["batches"]) == 1  # the remaining batches never started
    # §5.2: the incident was declared (and paged) when the rollback began, before it ended.
    kinds = [e["kind"] for e in record["events"]]
    declared = kinds.index("incident-declared")
    assert kinds.index("batch-failed") < declared < kinds.index("batch-rolled-back")
    assert record["events"][declared]["severity"] == "SEV2"
    assert "## Incident (post-incident report)" in Path(record["report"]["markdown"]).read_text()
    core = client.CoreV1Api(worker_cluster.admin_client())
    for node in _workers(worker_cluster):
        assert not node.spec.unschedulable, f"{node.metadata.name} left cordoned"
        assert kube_nodes.kubelet_version(node) == KUBERNETES_OLD, node.metadata.name
    # The old kubelet reports Ready again on its own schedule (kwok plays it): wait for that.
    wait_until(f"{first} Ready after the rollback", lambda: kube_nodes.node_ready(core.read_node(first)), 120)
    # `kubectl describe node` says so: a Warning from Slipway naming the batch and why.
    # (Read as core/v1 Events, as kubectl does: the client's events.k8s.io model refuses the
    # kubelet's own events, which have no eventTime.)
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={first}")
    rolled = [e for e in events.items if e.reason == "SlipwayRolledBack"]
    assert rolled and rolled[0].type == "Warning" and "batch 0 rolled back" in rolled[0].message, rolled


@pytest.mark.parametrize("policy", ["rollback", "wait"])
def test_blocking_pdb_policy_stops_the_run_and_rolls_back(
    worker_cluster: LocalCluster, tmp_path: Path, policy: str
) -> None:
    """Only the PDB-blocked nodes' batch fails; with ``wait`` the drain times out first."""
    conf = BASE_CONF | {
        "blocked_drain_policy": policy,
        "drain_grace_period_seconds": 0,
        "drain_timeout_seconds": 5,
    }
    state, record = run_dag("k8s_worker_upgrade", conf, worker_cluster, tmp_path)
    assert state == "failed"
    assert verdict(record) == "rolled-back"
    failed = [b for b in record["batches"] if b["state"] == "rolled-back"]
    assert len(failed) == 1
    for node in _workers(worker_cluster):
        assert not node.spec.unschedulable, f"{node.metadata.name} left cordoned after the rollback"
    assert workloads_available(worker_cluster.admin_client()) == []


def test_run_killed_mid_batch_is_resumed_by_the_next_run(
    worker_cluster: LocalCluster, tmp_path: Path
) -> None:
    """A run that died after cordoning and draining its first node (no uncordon, no upgrade)
    is finished by the next run: it adopts the dead run's cordon and leaves nothing cordoned."""
    from slipway import workers
    from slipway.kube.drain import drain_node
    from slipway.models import parse_request
    from slipway.runrecord import RunRecord

    remove_never_evictable_samples(worker_cluster)  # the dead run's drain must not block
    api = worker_cluster.orchestrator_client()
    dead = RunRecord(api, "manual__killed-mid-batch")
    request = parse_request(BASE_CONF | {"blocked_drain_policy": "quarantine"})
    batch = workers.select_batch(api, dead, request, 0)
    node = batch.nodes[0]
    kube_nodes.cordon(api, node, dead.run_id)
    drain_node(api, node, workers.drain_options(request), run_id=dead.run_id)  # ...and the worker died here
    assert kube_nodes.cordon_owner(client.CoreV1Api(api).read_node(node)) == dead.run_id

    state, record = run_dag(
        "k8s_worker_upgrade", BASE_CONF | {"blocked_drain_policy": "quarantine"}, worker_cluster, tmp_path
    )
    assert state == "success", record.get("events")
    assert any(e["kind"] == "cordon-adopted" for e in record["events"])
    resumed = client.CoreV1Api(api).read_node(node)
    assert kube_nodes.kubelet_version(resumed) == KUBERNETES_NEW
    assert not kube_nodes.is_cordoned(resumed)
    quarantined = set(record["worker_phase"]["quarantined"])
    for other in _workers(worker_cluster):
        if other.metadata.name not in quarantined:
            assert not kube_nodes.is_cordoned(other), other.metadata.name


def test_a_scheduled_run_changes_only_an_enabled_cluster_and_takes_the_control_planes_version(
    airflow_db: Path, tmp_path: Path
) -> None:
    """Nobody chooses a target for an unattended window: a scheduled run of the worker DAG
    moves the kubelets to the control plane's version (here 1.36, one behind the newest release
    Slipway knows and the form's default), never past it (Version Skew Policy: a kubelet must
    not be newer than kube-apiserver) — and only on a cluster whose platform connection
    enables scheduled runs of this DAG."""
    from slipway.airflow.params import known_versions

    default_target = known_versions()[0]
    assert default_target != KUBERNETES_OLD  # the run below would prove nothing otherwise
    now = datetime.now(UTC)
    window = (now - timedelta(minutes=1), now + timedelta(hours=2))
    # The scheduler's run for a window open now; the conf carries only pacing (a scheduled
    # run's form is the defaults, target included).
    pacing = {"soak_seconds": 1, "force_bare_pods": True, "delete_emptydir_data": True}
    with running_cluster(
        "scheduled", 2000, 2, kubernetes_version=KUBERNETES_OLD, kubelet_version=LAGGING_KUBELET
    ) as cluster:
        remove_never_evictable_samples(cluster)
        # Unpaused, but the cluster is not enabled for it: refused before anything changes.
        state, record = run_dag(
            "k8s_worker_upgrade", pacing, cluster, tmp_path / "off", scheduled_window=window
        )
        assert state == "failed" and record == {}
        assert {kube_nodes.kubelet_version(n) for n in _workers(cluster)} == {LAGGING_KUBELET}
        state, record = run_dag(
            "k8s_worker_upgrade",
            pacing,
            cluster,
            tmp_path / "on",
            scheduled_window=window,
            platform_extra={"scheduled_dags": ["k8s_worker_upgrade"]},
        )
        assert state == "success", record.get("events")
        assert record["run_type"] == "scheduled"
        assert record["request"]["target_version"] == KUBERNETES_OLD
        window_end = window[1].strftime("%Y-%m-%dT%H:%M")
        assert record["request"]["window_end"].startswith(window_end)
        assert verdict(record) == "upgraded"
        for node in _workers(cluster):
            assert kube_nodes.kubelet_version(node) == KUBERNETES_OLD
            assert not kube_nodes.is_cordoned(node)
