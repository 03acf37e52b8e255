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
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.kube.client import apply_manifest
from slipway.migration import frontdoor
from tests.conftest import REPO
from tests.integration.test_migration import (
    DATA,
    MOVED,
    ROLLBACK,
    Pair,
    front_door_with_backends,
    migration_pair,
    sha256s,
    taint_target_nodes,
)

pytestmark = pytest.mark.cluster

DAG_ID = "k8s_cluster_migration"
COPY_TASKS = (
    "copy_configuration",
    "verify_configuration",
    "copy_workloads",
    "validate_workloads",
    "sync_volumes",
    "cut_over_stateful",
    "validate_stateful",
    "rollback_stateful",
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


def _folders(pair: Pair, namespace: str) -> dict[str, tuple[Path, Path | None]]:
    """Each claim's folder on the source and on the target (None before it exists there)."""

    def paths(api: client.ApiClient) -> dict[str, Path]:
        core = client.CoreV1Api(api)
        return {
            c.metadata.name: Path(core.read_persistent_volume(c.spec.volume_name).spec.local.path)
            for c in core.list_namespaced_persistent_volume_claim(namespace).items
            if c.spec.volume_name
        }

    source, target = paths(pair.source.admin_client()), paths(pair.target.admin_client())
    return {name: (path, target.get(name)) for name, path in source.items()}


def test_migration_copies_verifies_validates_and_switches_traffic(pair: Pair, tmp_path: Path) -> None:
    """Stateless (mig-shop) blue-green and a stateful StatefulSet (mig-data, 2 volumes) in one run."""
    # A cut-over window open all day: the wait returns at once (the deferral itself is unit-tested).
    conf = {"namespaces": [MOVED, DATA], "dry_run": False, "cutover_windows": ["daily 00:00+24h UTC"]}
    with front_door_with_backends(tmp_path) as (door, _, _):
        state, states, folder = _run(pair, tmp_path, conf, door)
        assert (door.api.weight("source"), door.api.weight("target")) == (0, 100)
    assert state == "success", states
    assert states["rollback_stateful"] == "skipped", states
    assert states["await_cutover_window"] == "success", states
    assert folder is not None
    report = json.loads((folder / "migration-report.json").read_text())
    assert report["traffic"]["switched"] and report["failed_requests_during_switch"] == 0
    assert [s["percent"] for s in report["traffic"]["steps"]] == [0, 10, 50, 100]
    assert report["traffic"]["steps"][-1]["answered_by"] == {"target": 40}
    assert report["checksum_mismatches"] == 0
    # mig-shop: namespace + 11 config objects (its default ServiceAccount included) + 2 workloads;
    # mig-data: namespace, default ServiceAccount, Service (its StatefulSet moves with its data)
    assert report["objects_copied"] == report["checksums_compared"] == 17
    assert report["workloads_available"] == 2

    # The stateful part: every file of both volumes on the target disk, proven and recorded.
    data = report["stateful"]
    assert data["workloads"] == data["cut_over"] == [f"StatefulSet/{DATA}/ledger"]
    assert data["volumes"] == [f"{DATA}/data-ledger-0", f"{DATA}/data-ledger-1"]
    assert data["check"] == {"volumes": 2, "files_matching": 10, "differences": 0, "differing": {}}
    assert data["files_copied"] == 10 and data["bytes_copied"] > 2 * 2 * 1024 * 1024
    assert [p["kind"] for p in data["passes"]][-1] == f"final (StatefulSet/{DATA}/ledger)"
    assert data["passes"][-1]["files"] == 0  # nothing changed between the last pass and the freeze
    assert data["freeze_seconds"][f"StatefulSet/{DATA}/ledger"] > 0 and not data["rolled_back"]
    folders = _folders(pair, DATA)
    assert len(folders) == 2
    for source_path, target_path in folders.values():
        assert target_path is not None and source_path != target_path
        assert sha256s(target_path) == sha256s(source_path) != {}
    source_sts = client.AppsV1Api(pair.source.admin_client()).read_namespaced_stateful_set("ledger", DATA)
    target_sts = client.AppsV1Api(pair.target.admin_client()).read_namespaced_stateful_set("ledger", DATA)
    assert source_sts.spec.replicas == 0 and target_sts.status.ready_replicas == 2
    assert "## Stateful workloads" in (folder / "migration-report.md").read_text()
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
    stateful_figures = {
        k: data[k] for k in ("passes", "bytes_copied", "files_copied", "freeze_seconds", "check")
    }
    print(f"stateful figures: {json.dumps(stateful_figures)}")


def test_a_retire_run_scales_the_proven_source_to_zero_and_deletes_nothing(
    pair: Pair, tmp_path: Path
) -> None:
    """After the migration above, the explicit retirement run of the same namespaces: nothing is
    copied, every copy is proven, each source workload goes to 0 with its replicas recorded (the
    stateful one already was, at its cut-over); a second run finds it all done."""
    from slipway.migration.stateful import REPLICAS

    source_apps = client.AppsV1Api(pair.source.admin_client())
    conf = {"namespaces": [MOVED, DATA], "dry_run": False, "retire_source": True}
    state, states, folder = _run(pair, tmp_path / "first", conf)
    assert state == "success", states
    assert states["retire_source"] == "success" and all(states[t] == "skipped" for t in COPY_TASKS), states
    assert folder is not None
    retired = {r["workload"]: r for r in json.loads((folder / "retirement.json").read_text())["retired"]}
    assert sorted(retired) == [
        f"Deployment/{MOVED}/web",
        f"StatefulSet/{DATA}/ledger",
        f"StatefulSet/{MOVED}/cache",
    ]
    assert retired[f"Deployment/{MOVED}/web"] == {
        "workload": f"Deployment/{MOVED}/web",
        "replicas": 2,
        "already": False,
    }
    assert retired[f"StatefulSet/{DATA}/ledger"]["already"]  # frozen by its cut-over
    web = source_apps.read_namespaced_deployment("web", MOVED)  # still there: nothing deleted
    assert web.spec.replicas == 0 and web.metadata.annotations[REPLICAS] == "2"
    target_web = client.AppsV1Api(pair.target.admin_client()).read_namespaced_deployment("web", MOVED)
    assert target_web.status.available_replicas == 2

    state, states, folder = _run(pair, tmp_path / "again", conf)
    assert state == "success", states
    assert folder is not None
    again = json.loads((folder / "retirement.json").read_text())["retired"]
    assert all(r["already"] for r in again) and len(again) == len(retired)


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


def test_a_stateful_target_that_never_becomes_available_rolls_back_and_the_run_ends_red(
    pair: Pair, tmp_path: Path
) -> None:
    """The target cannot schedule the pod (every node tainted): cut_over_stateful fails, the rollback
    branch scales the target copy to 0, restores the snapshot and scales the source back."""
    source_folder = next(iter(_folders(pair, ROLLBACK).values()))[0]
    before = sha256s(source_folder)
    taint_target_nodes(pair, taint=True)
    try:
        conf = {"namespaces": [ROLLBACK], "dry_run": False, "available_timeout_seconds": 10}
        state, states, folder = _run(pair, tmp_path, conf)
    finally:
        taint_target_nodes(pair, taint=False)
    assert state == "failed"
    assert states["cut_over_stateful"] == "failed" and states["rollback_stateful"] == "success", states
    assert states["switch_traffic"] == "upstream_failed" and states["write_migration_report"] == "failed"
    assert folder is not None
    data = json.loads((folder / "migration-report.json").read_text())["stateful"]
    assert "journal not available on the target" in data["failure"]
    # The data was proven before the start failed: the final pass and the check are reported.
    assert data["check"] == {"volumes": 1, "files_matching": 5, "differences": 0, "differing": {}}
    assert data["passes"][-1]["kind"] == f"final (StatefulSet/{ROLLBACK}/journal)"
    assert [r["workload"] for r in data["rolled_back"]] == [f"StatefulSet/{ROLLBACK}/journal"]
    apps_source = client.AppsV1Api(pair.source.admin_client())
    apps_target = client.AppsV1Api(pair.target.admin_client())
    assert apps_source.read_namespaced_stateful_set("journal", ROLLBACK).status.ready_replicas == 1
    assert apps_target.read_namespaced_stateful_set("journal", ROLLBACK).spec.replicas == 0
    assert sha256s(source_folder) == before


STRATEGY = "mig-strategy"  # a Deployment, a StatefulSet without claims and a DaemonSet
STRATEGY_SEED = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {STRATEGY}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {STRATEGY}, labels: {{app: web}}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: registry.local/web:1.0, resources: {{requests: {{cpu: 10m}}}}}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: queue, namespace: {STRATEGY}, labels: {{app: queue}}}}
spec:
  serviceName: queue
  replicas: 1
  selector: {{matchLabels: {{app: queue}}}}
  template:
    metadata: {{labels: {{app: queue}}}}
    spec:
      containers: [{{name: queue, image: registry.local/queue:1.0, resources: {{requests: {{cpu: 10m}}}}}}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent, namespace: {STRATEGY}, labels: {{app: agent}}}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec:
      containers: [{{name: agent, image: registry.local/agent:1.0}}]
"""


def _absent(read: Any, *args: str) -> bool:
    try:
        read(*args)
    except ApiException as err:
        return bool(err.status == 404)
    return False


def test_a_strategy_the_code_cannot_do_is_refused_before_anything_changes(pair: Pair, tmp_path: Path) -> None:
    """blue-green for a StatefulSet with claims (mig-data's ledger): assess refuses, naming the field."""
    before = _target_namespaces(pair)
    conf = {"namespaces": [DATA], "dry_run": False, "strategy": {"StatefulSet": "blue-green"}}
    state, states, folder = _run(pair, tmp_path, conf)
    assert state == "failed"
    assert states["validate_migration"] == "success" and states["assess"] == "failed", states
    assert all(states[t] in ("upstream_failed", "skipped") for t in COPY_TASKS), states
    assert folder is None or not (folder / "assessment.json").exists()
    assert _target_namespaces(pair) == before


def test_a_skipped_kind_stays_on_the_source_and_copy_only_switches_no_traffic(
    pair: Pair, tmp_path: Path
) -> None:
    """Deployment and DaemonSet skip, StatefulSet copy-only: only the StatefulSet reaches the target,
    started there; the front door keeps every request on the source; the report names what stayed."""
    apply_manifest(pair.source.admin_client(), [d for d in yaml.safe_load_all(STRATEGY_SEED) if d])
    conf = {
        "namespaces": [STRATEGY],
        "dry_run": False,
        "strategy": {"Deployment": "skip", "DaemonSet": "skip", "StatefulSet": "copy-only"},
    }
    with front_door_with_backends(tmp_path) as (door, _, _):
        state, states, folder = _run(pair, tmp_path, conf, door)
        assert (door.api.weight("source"), door.api.weight("target")) == (100, 0)
    assert state == "success", states
    assert folder is not None
    web, queue, agent = (
        f"Deployment/{STRATEGY}/web",
        f"StatefulSet/{STRATEGY}/queue",
        f"DaemonSet/{STRATEGY}/agent",
    )
    assessment = json.loads((folder / "assessment.json").read_text())
    assert assessment["strategies"] == {web: "skip", queue: "copy-only", agent: "skip"}
    assert assessment["movable"] and assessment["cannot_move"] == {}  # the DaemonSet no longer blocks
    assert f"| `{web}` | skip (not moved) |" in (folder / "assessment.md").read_text()

    report = json.loads((folder / "migration-report.json").read_text())
    assert report["strategy"] == {
        "per_workload": {web: "skip", queue: "copy-only", agent: "skip"},
        "not_moved": [agent, web],
    }
    assert not report["traffic"]["switched"] and "traffic stays on the source" in report["traffic"]["reason"]
    assert report["workloads_available"] == 1 and report["checksum_mismatches"] == 0
    assert "not moved (strategy skip, left on the source)" in (folder / "migration-report.md").read_text()

    source_apps = client.AppsV1Api(pair.source.admin_client())
    target_apps = client.AppsV1Api(pair.target.admin_client())
    assert _absent(target_apps.read_namespaced_deployment, "web", STRATEGY)
    assert _absent(target_apps.read_namespaced_daemon_set, "agent", STRATEGY)
    assert target_apps.read_namespaced_stateful_set("queue", STRATEGY).status.ready_replicas == 1
    assert source_apps.read_namespaced_deployment("web", STRATEGY).spec.replicas == 2  # left as it was
    assert source_apps.read_namespaced_stateful_set("queue", STRATEGY).spec.replicas == 1
