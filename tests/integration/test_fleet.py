"""The fleet's preflight against two real local clusters, and the fleet DAG stopping the wave
before it starts when one of them has a blocker (a stopped etcd member, a real fault).

Not covered here: a wave that starts child ``k8s_cluster_upgrade`` runs. dag.test() runs one
DAG run in-process with no scheduler, so a child run it starts would never execute.
"""

from __future__ import annotations

import json
import os
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
    with running_cluster("fleet-a", 0, 2) as a, running_cluster("fleet-b", 300, 2) as b:
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


def test_preflight_every_cluster_then_a_blocker_stops_the_wave_before_it_starts(
    two_clusters: tuple[LocalCluster, LocalCluster], tmp_path: Path, airflow_db: Path
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
    gitops = tmp_path / "gitops"
    gitops.mkdir()
    fleet = {
        "name": "two",
        "request": REQUEST,
        "clusters": [
            {
                "name": c.cfg.name,
                "connection": f"k8s_{c.cfg.name.replace('-', '_')}",
                "platform_connection": f"slipway_platform_{c.cfg.name.replace('-', '_')}",
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
    for c in (a, b):
        conn = c.cfg.name.replace("-", "_").upper()
        kube = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(c.orchestrator_kubeconfig)}}
        env[f"AIRFLOW_CONN_K8S_{conn}"] = json.dumps(kube)
        env[f"AIRFLOW_CONN_SLIPWAY_PLATFORM_{conn}"] = json.dumps(
            {"conn_type": "generic", "extra": platform_extra(c)}
        )
    os.environ.update(env)
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / "k8s_fleet_upgrade.py")).dags["k8s_fleet_upgrade"]
    run = dag.test()
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}

    assert run.state == "failed"
    assert states[("preflight_cluster", 0)] == "success"  # every cluster checked first
    assert states[("preflight_cluster", 1)] == "success"
    assert states[("assess_fleet_risk", -1)] == "failed"
    assert all(state != "success" for (task, _), state in states.items() if task == "upgrade_cluster")
    assert states[("fleet_report", -1)] == "success"
    # Nothing was started or touched anywhere: no child run, no run record, same kubelets.
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        children = session.query(DagRun).filter(DagRun.dag_id == "k8s_cluster_upgrade").all()
        assert [r.run_id for r in children if r.run_id.startswith(f"fleet__{run.run_id}")] == []
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
