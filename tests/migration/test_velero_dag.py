"""``k8s_cluster_migration`` with ``copy_path: velero``, end to end with dag.test() against two
real local clusters: the configuration and stateless workloads go through a Velero Backup on the
source and a Restore on the target (the DAG runs both ``velero server`` processes on this host),
the stateful StatefulSet still moves with its data through rclone, the same checksums prove the
copy and traffic switches through the front door.

The admin installs Velero on both clusters first (CRDs, namespace, ServiceAccount, backup storage
location) and gives the connection a kubeconfig of Velero's ServiceAccount for each server; the
test starts the bucket (gofakes3), which stands for the user's S3. Heavy (Velero is built from Go
modules on first use): run by ``make test-migration``, not by ``make test``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.migration import frontdoor, velero
from slipway.migration.objects import compare, key, pair_checksums
from tests.conftest import REPO, TEST_BASE_PORT
from tests.integration.test_migration import DATA, MOVED, Pair, front_door_with_backends, migration_pair
from tests.migration.test_velero import _build_tools, _prepare, _user_objects

pytestmark = pytest.mark.cluster

DAG_ID = "k8s_cluster_migration"
# The bucket's keys as the connection's login and password: gofakes3 accepts any pair, so the
# secret is a marker the test looks for where it must never be (reports, XComs).
ACCESS_KEY, SECRET_KEY = "slipway-velero", "never-in-a-report-7f3a"
FORBIDDEN = 403


@dataclass
class VeleroPair:
    pair: Pair
    bucket: velero.LocalBucket
    server_kubeconfigs: tuple[Path, Path]  # Velero's ServiceAccount on (source, target)

    def connection(self, *, with_bucket: bool = True) -> dict[str, Any]:
        extra: dict[str, Any] = self.pair.connection_extra()
        if with_bucket:
            extra |= {
                "velero_bucket_url": self.bucket.store.url,
                "velero_bucket": self.bucket.bucket,
                "source_velero_kubeconfig": str(self.server_kubeconfigs[0]),
                "target_velero_kubeconfig": str(self.server_kubeconfigs[1]),
            }
        return {"conn_type": "generic", "login": ACCESS_KEY, "password": SECRET_KEY, "extra": extra}


@pytest.fixture(scope="module")
def vpair(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VeleroPair]:
    _build_tools()
    work = tmp_path_factory.mktemp("velero-dag")
    bucket = velero.LocalBucket(work / "bucket", TEST_BASE_PORT + 1300)
    with migration_pair("migvel", 1000) as pair, bucket:
        # The admin's part, done once before any migration: Velero installed on both clusters.
        store = velero.ObjectStore(bucket.store.url, bucket.bucket, ACCESS_KEY, SECRET_KEY)
        kubeconfigs = tuple(
            _prepare(cluster, work, store, read_only=read_only)
            for cluster, read_only in ((pair.source, False), (pair.target, True))
        )
        yield VeleroPair(pair, bucket, (kubeconfigs[0], kubeconfigs[1]))


def _run(
    vpair: VeleroPair,
    reports: Path,
    conf: dict[str, Any],
    door: frontdoor.FrontDoor | None = None,
    **kw: bool,
) -> tuple[str, dict[str, str], Path | None]:
    conn = vpair.connection(**kw)
    if door:
        conn["extra"] |= {"front_door_socket": str(door.sock), "front_door_url": door.url}
    os.environ["AIRFLOW_CONN_SLIPWAY_MIGRATION"] = json.dumps(conn)
    os.environ["SLIPWAY_REPORTS_DIR"] = str(reports)
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / f"{DAG_ID}.py")).dags[DAG_ID]
    dag_run = dag.test(run_conf=conf)
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    folders = sorted((reports / DAG_ID).iterdir()) if (reports / DAG_ID).exists() else []
    return str(dag_run.state), states, folders[0] if folders else None


def test_velero_without_a_bucket_in_the_connection_is_refused(vpair: VeleroPair, tmp_path: Path) -> None:
    conf = {"namespaces": [MOVED], "dry_run": False, "copy_path": "velero"}
    state, states, folder = _run(vpair, tmp_path, conf, with_bucket=False)
    assert state == "failed"
    assert states["validate_migration"] == "failed" and states["assess"] == "upstream_failed", states
    assert folder is None  # refused before any cluster was read


def test_migration_through_velero_verified_and_traffic_switched(vpair: VeleroPair, tmp_path: Path) -> None:
    pair = vpair.pair
    conf = {"namespaces": [MOVED, DATA], "dry_run": False, "copy_path": "velero"}
    with front_door_with_backends(tmp_path) as (door, _, _):
        state, states, folder = _run(vpair, tmp_path, conf, door)
        assert (door.api.weight("source"), door.api.weight("target")) == (0, 100)
    assert state == "success", states
    assert states["start_velero"] == states["stop_velero"] == "success", states
    assert states["rollback_stateful"] == "skipped", states
    assert folder is not None
    report = json.loads((folder / "migration-report.json").read_text())

    # Velero did the copy: its Backup and Restore completed, and what they moved is proven equal
    # by the run's checksums (the same ones as the built-in path).
    assert report["copy_path"] == "velero"
    backup, restore = report["velero"]["backup"], report["velero"]["restore"]
    assert backup["phase"] == restore["phase"] == "Completed", report["velero"]
    assert backup["errors"] == restore["errors"] == 0
    assert backup["items"] > 0 and restore["items"] > 0
    assert report["velero"]["parked_stateful"] == 2  # mig-data's namespace and its StatefulSet
    # Available on the target: mig-shop's two Deployments, and ledger parked at 0 (until its cut-over).
    assert report["checksum_mismatches"] == 0 and report["workloads_available"] == 3
    assert report["traffic"]["switched"] and report["failed_requests_during_switch"] == 0
    assert [s["percent"] for s in report["traffic"]["steps"]] == [0, 10, 50, 100]

    # Independently of the run: every object of the stateless namespace checksum-equal.
    source_api, target_api = pair.source.admin_client(), pair.target.admin_client()
    source_objects = _user_objects(source_api, MOVED)
    target_objects = [velero.strip_restore_labels(o) for o in _user_objects(target_api, MOVED)]
    sums = pair_checksums(source_objects, target_objects)
    assert compare(sums.source, sums.target) == []
    assert {f"Secret/{MOVED}/app-secret", f"Deployment/{MOVED}/web"} <= {key(o) for o in source_objects}
    # ... and it came through Velero, not the built-in apply: Velero marked what it restored.
    secret = client.CoreV1Api(target_api).read_namespaced_secret("app-secret", MOVED)
    assert secret.metadata.labels["velero.io/restore-name"] == restore["name"]
    web = client.AppsV1Api(target_api).read_namespaced_deployment("web", MOVED)
    assert web.metadata.labels["velero.io/restore-name"] == restore["name"]
    assert web.status.available_replicas == 2

    # The stateful workload did not come up on empty volumes: parked at 0, then cut over by rclone.
    data = report["stateful"]
    assert data["cut_over"] == [f"StatefulSet/{DATA}/ledger"] and not data["rolled_back"]
    assert data["check"]["differences"] == 0 and data["check"]["files_matching"] == 10
    ledger = client.AppsV1Api(target_api).read_namespaced_stateful_set("ledger", DATA)
    assert "velero.io/restore-name" not in (ledger.metadata.labels or {})
    assert ledger.status.ready_replicas == 2
    assert client.AppsV1Api(source_api).read_namespaced_stateful_set("ledger", DATA).spec.replicas == 0

    # The servers the run started are stopped; the bucket's secret key is nowhere in its folder.
    for name, kubeconfig in zip(("source", "target"), vpair.server_kubeconfigs, strict=True):
        server = velero.VeleroServer(name, kubeconfig, vpair.bucket.store, folder / "velero")
        assert (folder / "velero" / "logs" / f"velero-{name}.log").exists()
        assert not server.supervisor.is_running(server.process)
    leaked = [p for p in folder.rglob("*") if p.is_file() and SECRET_KEY.encode() in p.read_bytes()]
    assert leaked == []
    print(
        "\nvelero path figures: "
        + json.dumps(
            {
                "backup": backup,
                "restore": restore,
                "objects_compared": report["checksums_compared"],
                "objects_per_second": report["objects_per_second"],
                "copy_seconds": report["copy_seconds"],
                "seconds_to_available": report["seconds_to_available"],
                "failed_requests_during_switch": report["failed_requests_during_switch"],
                "freeze_seconds": data["freeze_seconds"],
            }
        )
    )


def test_the_migrator_creates_and_reads_velero_objects_and_nothing_more(vpair: VeleroPair) -> None:
    custom = client.CustomObjectsApi(vpair.pair.source_ref.api_client())
    listed = custom.list_namespaced_custom_object(velero.GROUP, velero.VERSION, velero.NAMESPACE, "backups")
    assert listed["items"], "the run's Backup is readable by the migrator"
    name = listed["items"][0]["metadata"]["name"]
    refused = [
        lambda: custom.delete_namespaced_custom_object(
            velero.GROUP, velero.VERSION, velero.NAMESPACE, "backups", name
        ),
        lambda: custom.patch_namespaced_custom_object(
            velero.GROUP, velero.VERSION, velero.NAMESPACE, "backupstoragelocations", "default", {"spec": {}}
        ),
        lambda: custom.create_namespaced_custom_object(
            velero.GROUP,
            velero.VERSION,
            "default",
            "backups",
            {"apiVersion": "velero.io/v1", "kind": "Backup", "metadata": {"name": "x"}, "spec": {}},
        ),
        lambda: custom.list_namespaced_custom_object(
            velero.GROUP, velero.VERSION, velero.NAMESPACE, "backupstoragelocations"
        ),
    ]
    for call in refused:
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == FORBIDDEN
