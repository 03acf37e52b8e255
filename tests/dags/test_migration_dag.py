"""``k8s_cluster_migration`` end to end with dag.test() against two real local clusters (source at
the kit's older release, target at the newer one), through the ``slipway_migration`` connection
holding the migrator identity's kubeconfigs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from slipway.migration import frontdoor
from tests.conftest import REPO
from tests.integration.test_migration import MOVED, Pair, front_door_with_backends, migration_pair

pytestmark = pytest.mark.cluster

DAG_ID = "k8s_cluster_migration"
COPY_TASKS = (
    "copy_configuration",
    "verify_configuration",
    "copy_workloads",
    "validate_workloads",
    "switch_traffic",
    "write_migration_report",
)


@pytest.fixture(scope="module")
def pair(airflow_db: Path) -> Iterator[Pair]:
    with migration_pair("migdag", 100) as started:
        yield started


def _run(
    pair: Pair, reports: Path, conf: dict[str, Any], door: frontdoor.FrontDoor | None = None
) -> tuple[str, dict[str, str], Path | None]:
    """dag.test() one run; returns its state, each task's state and the run's report folder."""
    extra: dict[str, Any] = pair.connection_extra()
    if door:
        extra |= {"front_door_socket": str(door.sock), "front_door_url": door.url}
    os.environ["AIRFLOW_CONN_SLIPWAY_MIGRATION"] = json.dumps({"conn_type": "generic", "extra": extra})
    os.environ["SLIPWAY_REPORTS_DIR"] = str(reports)
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / f"{DAG_ID}.py")).dags[DAG_ID]
    dag_run = dag.test(run_conf=conf)
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    folders = sorted((reports / DAG_ID).iterdir()) if (reports / DAG_ID).exists() else []
    return str(dag_run.state), states, folders[0] if folders else None


def _target_namespaces(pair: Pair) -> set[str]:
    return {n.metadata.name for n in client.CoreV1Api(pair.target.admin_client()).list_namespace().items}


def test_bad_form_is_refused_before_any_cluster_is_read(pair: Pair, tmp_path: Path) -> None:
    state, states, folder = _run(pair, tmp_path, {"namespaces": ["kube-system"], "dry_runn": False})
    assert state == "failed"
    assert states["validate_migration"] == "failed" and states["assess"] == "upstream_failed"
    assert folder is None  # no assessment was written


def test_dry_run_assesses_and_changes_nothing(pair: Pair, tmp_path: Path) -> None:
    before = _target_namespaces(pair)
    state, states, folder = _run(pair, tmp_path, {"namespaces": [MOVED], "dry_run": True})
    assert state == "success", states
    assert folder is not None
    assert states["assess"] == "success" and all(states[t] == "skipped" for t in COPY_TASKS), states
    assessment = json.loads((folder / "assessment.json").read_text())
    assert assessment["movable"] and f"Deployment/{MOVED}/web" in assessment["objects"]
    assert "needs ConfigMap: app-config" in (folder / "assessment.md").read_text()
    assert _target_namespaces(pair) == before


def test_migration_copies_verifies_validates_and_switches_traffic(pair: Pair, tmp_path: Path) -> None:
    with front_door_with_backends(tmp_path) as (door, _, _):
        state, states, folder = _run(pair, tmp_path, {"namespaces": [MOVED], "dry_run": False}, door)
        assert (door.api.weight("source"), door.api.weight("target")) == (0, 100)
    assert state == "success", states
    assert folder is not None
    report = json.loads((folder / "migration-report.json").read_text())
    assert report["traffic"]["switched"] and report["failed_requests_during_switch"] == 0
    assert [s["percent"] for s in report["traffic"]["steps"]] == [0, 10, 50, 100]
    assert report["traffic"]["steps"][-1]["answered_by"] == {"target": 40}
    assert report["checksum_mismatches"] == 0
    assert (
        report["objects_copied"] == report["checksums_compared"] == 14
    )  # namespace + 11 config + 2 workloads
    assert report["workloads_available"] == 2
    source_secret = client.CoreV1Api(pair.source.admin_client()).read_namespaced_secret("app-secret", MOVED)
    target_secret = client.CoreV1Api(pair.target.admin_client()).read_namespaced_secret("app-secret", MOVED)
    assert target_secret.data == source_secret.data
    web = client.AppsV1Api(pair.target.admin_client()).read_namespaced_deployment("web", MOVED)
    assert web.status.available_replicas == 2
    figures = (
        "objects_copied",
        "copy_seconds",
        "objects_per_second",
        "seconds_to_available",
        "failed_requests_during_switch",
    )
    print(f"\nmigration figures: {json.dumps({k: report[k] for k in figures})}")


def test_a_failing_target_rolls_traffic_back_and_the_run_ends_red(pair: Pair, tmp_path: Path) -> None:
    with front_door_with_backends(tmp_path) as (door, target, _):
        target.broken = True  # the target's ingress answers 500 to everything
        state, states, folder = _run(pair, tmp_path, {"namespaces": [MOVED], "dry_run": False}, door)
        assert (door.api.weight("source"), door.api.weight("target")) == (100, 0)
        assert frontdoor.probe(door.url, 10).answered_by == {"source": 10}
    assert state == "failed"
    assert states["switch_traffic"] == "success" and states["write_migration_report"] == "failed", states
    assert folder is not None
    report = json.loads((folder / "migration-report.json").read_text())
    assert report["traffic"]["rolled_back"] and "rolled back at 10 %" in report["traffic"]["reason"]
    assert report["checksum_mismatches"] == 0  # the copy itself stood; only the switch was undone
