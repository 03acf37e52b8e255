"""The fleet DAG against two real local clusters, each through its own two connections.

- a failed canary halts the wave: the canary's ``k8s_cluster_upgrade`` run is really started
  by the fleet run, production's never is;
- the preflight of every cluster runs before anything changes, and a real blocker on one
  (a stopped etcd member) stops the wave before it starts.

What is NOT covered: a child run that executes. dag.test() runs one DAG run in-process with no
scheduler, so the child run the fleet starts stays queued; the test ends it ``failed`` in the
metadata database itself (as a failed upgrade would) and checks what the fleet does next.
The single-cluster DAG also reads the fixed ``kubernetes_default`` connection, so a child run
could not reach its own cluster yet anyway.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from slipway.fleet.preflight import blocking, preflight_cluster
from slipway.localcluster import components
from slipway.localcluster.cluster import LocalCluster
from slipway.models import parse_request
from slipway.platform import Platform, parse_settings
from slipway.runrecord import NAMESPACE
from tests.conftest import REPO, running_cluster

pytestmark = pytest.mark.cluster

REQUEST = {"target_version": "1.37.2", "approval": "auto", "soak_seconds": 1}


@pytest.fixture(scope="module")
def two_clusters() -> Iterator[tuple[LocalCluster, LocalCluster]]:
    with running_cluster("fleet-a", 1000, 2) as a, running_cluster("fleet-b", 1100, 2) as b:
        yield a, b


def platform_extra(cluster: LocalCluster) -> dict[str, Any]:
    return {
        "platform": "local",
        "cluster_name": cluster.cfg.name,
        "state_root": str(cluster.cfg.state_root),
        "admin_kubeconfig": str(cluster.admin_kubeconfig),
    }


def platform_of(cluster: LocalCluster) -> Platform:
    return Platform(parse_settings(platform_extra(cluster)), cluster.orchestrator_client())


def kubelets(cluster: LocalCluster) -> dict[str, str]:
    nodes = client.CoreV1Api(cluster.admin_client()).list_node().items
    return {n.metadata.name: n.status.node_info.kubelet_version for n in nodes}


def fleet_runs(cluster: LocalCluster) -> list[str]:
    maps = client.CoreV1Api(cluster.admin_client()).list_namespaced_config_map(NAMESPACE).items
    return [m.metadata.name for m in maps if m.metadata.name.startswith("slipway-run-fleet")]


def conn_id(cluster: LocalCluster) -> str:
    return cluster.cfg.name.replace("-", "_")


def fleet_env(
    clusters: tuple[LocalCluster, LocalCluster], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A fleet file in a gitops folder, the clusters' connections (set for this test only: a
    later module reading the repository's gitops folder must not see this one); returns the
    reports folder."""
    a, b = clusters
    gitops = tmp_path / "gitops"
    gitops.mkdir()
    fleet = {
        "name": "two",
        "request": REQUEST,
        "clusters": [
            {
                "name": c.cfg.name,
                "connection": f"k8s_{conn_id(c)}",
                "platform_connection": f"slipway_platform_{conn_id(c)}",
                "labels": {"environment": env, "region": "eu", "canary": env == "staging"},
            }
            for c, env in ((a, "staging"), (b, "production"))
        ],
        "strategy": {
            "stages": [
                {"name": "canary", "groups": [{"name": "c", "selector": {"canary": True}}]},
                {"name": "production", "groups": [{"name": "p", "selector": {"environment": "production"}}]},
            ]
        },
    }
    (gitops / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    reports = tmp_path / "reports"
    env = {"SLIPWAY_GITOPS_DIR": str(gitops), "SLIPWAY_REPORTS_DIR": str(reports)}
    for c in clusters:
        kube = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(c.orchestrator_kubeconfig)}}
        env[f"AIRFLOW_CONN_K8S_{conn_id(c).upper()}"] = json.dumps(kube)
        env[f"AIRFLOW_CONN_SLIPWAY_PLATFORM_{conn_id(c).upper()}"] = json.dumps(
            {"conn_type": "generic", "extra": platform_extra(c)}
        )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    unpause_the_child_dag()
    return reports


def unpause_the_child_dag() -> None:
    """A deployment running fleets unpauses k8s_cluster_upgrade (the fleet refuses to start
    while it is paused); dag.test() writes every DAG of the folder paused, and keeps an
    existing DAG's pause flag, so the row is made (or set) unpaused first."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        found = session.get(DagModel, "k8s_cluster_upgrade")
        if found is None:
            session.add(DagModel(dag_id="k8s_cluster_upgrade", bundle_name="dags-folder", is_paused=False))
        else:
            found.is_paused = False


def fleet_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags" / "k8s_fleet_upgrade.py")).dags["k8s_fleet_upgrade"]


def child_runs() -> list[str]:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "k8s_cluster_upgrade").all()
        return [r.run_id for r in runs if r.run_id.startswith("fleet__")]


def fail_child_runs_of(cluster: str, stop: threading.Event, seen: list[str]) -> None:
    """Plays the failed upgrade of ``cluster``: ends its child run ``failed`` once it exists."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    while not stop.wait(1):
        with create_session() as session:
            for run in session.query(DagRun).filter(DagRun.dag_id == "k8s_cluster_upgrade").all():
                if run.run_id.endswith(f"__{cluster}") and run.run_id not in seen:
                    seen.append(run.run_id)
                    run.set_state(DagRunState.FAILED)


def test_a_failed_canary_halts_the_wave_and_production_stays_untouched(
    two_clusters: tuple[LocalCluster, LocalCluster],
    tmp_path: Path,
    airflow_db: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, b = two_clusters
    reports = fleet_env(two_clusters, tmp_path, monkeypatch)
    before = kubelets(b)
    failed: list[str] = []
    dag = fleet_dag()
    # Airflow's models are imported and mapped here, in this thread: a first import from the
    # watcher thread while dag.test() imports would deadlock on the import lock.
    assert [r for r in child_runs() if r.endswith("__fleet-a")] == []
    stop = threading.Event()
    watcher = threading.Thread(target=fail_child_runs_of, args=("fleet-a", stop, failed), daemon=True)
    watcher.start()
    try:
        run = dag.test()
    finally:
        stop.set()
        watcher.join()
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states[("assess_fleet_risk", -1)] == "success"
    assert states[("upgrade_cluster", 0)] == "failed"  # the canary's own run failed
    assert states[("upgrade_cluster", 1)] == "skipped"  # production never started
    assert failed == [f"fleet__{run.run_id}__fleet-a"]
    assert [r for r in child_runs() if run.run_id in r] == failed
    assert fleet_runs(b) == [] and kubelets(b) == before
    (md,) = (reports / "k8s_fleet_upgrade").glob("*/fleet-report.md")
    text = md.read_text()
    assert "- Verdict: **failed**" in text
    assert "- Halted by: **fleet-a**" in text
    assert "- Untouched: fleet-b" in text


def test_preflight_every_cluster_then_a_blocker_stops_the_wave_before_it_starts(
    two_clusters: tuple[LocalCluster, LocalCluster],
    tmp_path: Path,
    airflow_db: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = two_clusters
    request = parse_request(REQUEST)
    healthy = {c.cfg.name: preflight_cluster(platform_of(c), request, tmp_path / c.cfg.name) for c in (a, b)}
    for name, found in healthy.items():
        assert found["decision"] in ("proceed", "approval"), (name, found)
        assert found["blockers"] == [], (name, found)
        assert found["path"].endswith(("→ 1.37.2 (1 hop)", "hops)")), found["path"]
    assert blocking(healthy) == []

    # A real fault on b: one of its three etcd members stops.
    assert b.stop_component(components.etcd_name(2))
    found_b = preflight_cluster(platform_of(b), request, tmp_path / "b-again")
    assert found_b["decision"] == "refuse"
    assert "etcd-health" in found_b["blockers"]
    assert blocking({"fleet-b": found_b}) == [
        f"fleet-b: preflight decision refuse ({', '.join(found_b['blockers'])})"
    ]

    # The DAG, with each cluster through its own two connections and a fleet file in git.
    before = {c.cfg.name: kubelets(c) for c in (a, b)}
    reports = fleet_env(two_clusters, tmp_path, monkeypatch)
    try:
        run = fleet_dag().test()
    finally:
        b.start_component(components.etcd_name(2))  # healthy again for whoever comes next
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}

    assert run.state == "failed"
    assert states[("preflight_cluster", 0)] == "success"  # every cluster checked first
    assert states[("preflight_cluster", 1)] == "success"
    assert states[("assess_fleet_risk", -1)] == "failed"
    assert all(state != "success" for (task, _), state in states.items() if task == "upgrade_cluster")
    assert states[("fleet_report", -1)] == "success"
    # Nothing was started or touched anywhere: no child run, no run record, same kubelets.
    assert [r for r in child_runs() if run.run_id in r] == []
    assert [fleet_runs(c) for c in (a, b)] == [[], []]
    assert {c.cfg.name: kubelets(c) for c in (a, b)} == before

    report_dir = reports / "k8s_fleet_upgrade"
    (md,) = report_dir.glob("*/fleet-report.md")
    text = md.read_text()
    assert "- Verdict: **refused**" in text
    assert "- Halted by: **fleet-b**" in text
    assert "- Untouched: fleet-a, fleet-b" in text
    assert "| fleet-a | canary/c |" in text and "| fleet-b | production/p |" in text
    assert "(refuse); blockers: etcd-health" in text
    report = json.loads((md.parent / "fleet-report.json").read_text())
    assert [r["verdict"] for r in report["clusters"]] == ["not-started", "not-started"]
