"""Two real upgrade runs started together on one cluster: exactly one proceeds.

Each run is a ``dag.test()`` of ``k8s_worker_upgrade`` in its own process with its own
Airflow metadata database (two Airflow deployments, or a scheduled run and a manual one,
racing for the same cluster). The cluster lease decides: one run takes it and upgrades every
node; the other stops at its lease task naming the holder and changes nothing. A watcher
on the nodes checks that max-unavailable held across both runs at every moment, and the
PDB watcher that no workload went below its budget.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway import lease
from slipway.kube import nodes as kube_nodes
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from slipway.runrecord import RunRecord
from slipway.validation.invariants import CordonWatcher, PdbWatcher
from tests.conftest import REPO, running_cluster
from tests.dags.dagrun import cluster_env, remove_never_evictable_samples

pytestmark = pytest.mark.cluster

WORKERS = 4
CONF = {
    "target_version": KUBERNETES_NEW,
    "soak_seconds": 1,
    "max_unavailable_percent": 25.0,  # one node of four at a time
    "blocked_drain_policy": "rollback",
    "force_bare_pods": True,
    "delete_emptydir_data": True,
}
# One dag.test() in a fresh interpreter; prints the run's state, id and its task states.
RUNNER = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["k8s_worker_upgrade"]
run = dag.test(run_conf=json.loads(sys.argv[2]))
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances() if ti.map_index <= 0}
print("RESULT " + json.dumps({"state": str(run.state), "run_id": run.run_id, "states": states}))
"""


@pytest.fixture
def race_cluster(airflow_db: Path) -> Iterator[LocalCluster]:
    # The control plane at the target, kubelets one minor behind: both runs have work at once.
    with running_cluster(
        "race", 1200, WORKERS, kubernetes_version=KUBERNETES_NEW, kubelet_version=KUBERNETES_OLD
    ) as cluster:
        yield cluster


def _start(cluster: LocalCluster, db: Path, home: Path, reports: Path) -> subprocess.Popen[str]:
    home.mkdir(parents=True)
    shutil.copy(db / "airflow.db", home / "airflow.db")  # a migrated database of its own
    env = dict(os.environ) | cluster_env(cluster, home, reports) | {"AIRFLOW_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(REPO / "dags"), json.dumps(CONF)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _result(output: str) -> dict[str, object]:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, output[-3000:]
    found: dict[str, object] = json.loads(lines[-1].removeprefix("RESULT "))
    return found


def test_two_runs_started_together_exactly_one_upgrades(
    race_cluster: LocalCluster, airflow_db: Path, tmp_path: Path
) -> None:
    admin = race_cluster.admin_client()
    # No zero-budget samples: the winner upgrades every node and leaves none quarantined.
    remove_never_evictable_samples(race_cluster)
    with PdbWatcher(admin) as pdbs, CordonWatcher(admin) as cordons:
        runs = [
            _start(race_cluster, airflow_db, tmp_path / f"home-{i}", tmp_path / "reports") for i in (1, 2)
        ]
        outputs = [run.communicate(timeout=1500)[0] for run in runs]
    results = [_result(output) for output in outputs]

    for i, output in enumerate(outputs):  # kept next to the test's files for a failed run
        (tmp_path / f"run-{i}.log").write_text(output)
    states = sorted(str(r["state"]) for r in results)
    failed_tasks = [
        {t: s for t, s in r["states"].items() if s == "failed"}  # type: ignore[attr-defined]
        for r in results
    ]
    events = [
        [
            e["message"]
            for e in RunRecord(race_cluster.orchestrator_client(), str(r["run_id"])).get("events", [])
        ][-6:]
        for r in results
    ]
    assert states == ["failed", "success"], (failed_tasks, events)
    (won,) = [r for r in results if r["state"] == "success"]
    (lost,) = [r for r in results if r["state"] == "failed"]
    lost_output = outputs[results.index(lost)]
    lost_states = lost["states"]
    assert isinstance(lost_states, dict)
    # The loser stopped at the lease, named the winner, and did no worker step at all.
    assert lost_states["take_cluster_lease"] == "failed"
    assert [t for t, s in lost_states.items() if t.startswith("workers.") and s == "success"] == []
    winner = lease.holder_for("k8s_worker_upgrade", str(won["run_id"]))
    assert f"is held by {winner}" in lost_output

    # Every node upgraded by the winner, nothing left cordoned, the lease given back.
    for node in kube_nodes.list_workers(admin):
        assert kube_nodes.kubelet_version(node) == KUBERNETES_NEW, node.metadata.name
        assert not kube_nodes.is_cordoned(node), node.metadata.name
    assert lease.holder(race_cluster.orchestrator_client()) is None

    # Across both runs: never more than max-unavailable cordoned, only the winner cordoned.
    assert cordons.events > 0
    assert cordons.most == 1, cordons.most
    assert cordons.owners == {str(won["run_id"])}
    assert pdbs.violations == []
