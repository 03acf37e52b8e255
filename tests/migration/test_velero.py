"""Velero between two real local clusters (issue 12): a Backup of a sample namespace on the
source, a Restore on the target from the same bucket, every object proven unchanged by the
migration's own checksums; and the failures a user meets, each named with Velero's reason.

Heavy (Velero, its AWS plugin and gofakes3 are built from Go modules on first use): run by
`make test-migration`, not by `make test`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.kube.client import apply_manifest
from slipway.localcluster import binaries
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_NEW
from slipway.migration import velero
from slipway.migration.clusters import Side, copyable, read_objects
from slipway.migration.objects import CONFIG_KINDS, WORKLOAD_KINDS, Obj, compare, key, pair_checksums
from tests.conftest import TEST_BASE_PORT, running_cluster

pytestmark = pytest.mark.cluster

MOVED = "shop"  # a sample namespace: Deployments, a StatefulSet, Services, PDBs, a bare Pod
KINDS = (*CONFIG_KINDS, *WORKLOAD_KINDS)
# What the samples lack, added on the source so Secrets, ConfigMaps and RBAC move too.
EXTRA = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config, namespace: shop}
data: {MODE: production, "settings.json": '{"retries": 3}'}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret, namespace: shop, labels: {tier: payments}}
stringData: {token: s3cr3t, "ca.pem": "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n"}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ledger, namespace: shop}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: config-reader, namespace: shop}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: config-reader, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: config-reader}
subjects: [{kind: ServiceAccount, name: ledger, namespace: shop}]
"""
FIGURES: dict[str, float] = {}


@dataclass
class Pair:
    source: LocalCluster
    target: LocalCluster
    bucket: velero.LocalBucket
    source_server: velero.VeleroServer
    target_server: velero.VeleroServer

    @property
    def source_api(self) -> client.ApiClient:
        return self.source.admin_client()

    @property
    def target_api(self) -> client.ApiClient:
        return self.target.admin_client()


def _build_tools() -> None:
    started = time.monotonic()
    for tool in binaries.TOOLS.values():
        binaries.ensure(tool)
    FIGURES["tools ready (build or cache), s"] = time.monotonic() - started


def _prepare(cluster: LocalCluster, work: Path, store: velero.ObjectStore, *, read_only: bool) -> Path:
    admin = cluster.admin_client()
    velero.install(admin, binaries.binary(binaries.VELERO, "velero"))
    velero.apply_location(admin, store, read_only=read_only)
    return velero.write_kubeconfig(admin, work / f"{cluster.cfg.name}.kubeconfig", name=cluster.cfg.name)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    _build_tools()
    work = tmp_path_factory.mktemp("velero")
    bucket = velero.LocalBucket(work / "bucket", TEST_BASE_PORT + 995)
    with (
        running_cluster("velero-src", 700, 2) as source,
        running_cluster("velero-dst", 800, 2, kubernetes_version=KUBERNETES_NEW) as target,
        bucket,
    ):
        apply_manifest(source.admin_client(), [d for d in yaml.safe_load_all(EXTRA) if d])
        servers = []
        try:
            for name, cluster, read_only in (("source", source, False), ("target", target, True)):
                kubeconfig = _prepare(cluster, work, bucket.store, read_only=read_only)
                server = velero.VeleroServer(name, kubeconfig, bucket.store, work)
                servers.append(server)
                server.start()
            for server, cluster in zip(servers, (source, target), strict=True):
                velero.wait_location_available(cluster.admin_client(), timeout=90, check=server.check)
            yield Pair(source, target, bucket, servers[0], servers[1])
        finally:
            for server in servers:
                server.stop()
    print("\nvelero figures: " + ", ".join(f"{k} {v:.1f}" for k, v in FIGURES.items()))


def _remove_namespace(api: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api)
    try:
        core.delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as err:
            return bool(err.status == 404)
        return False

    wait_until(f"namespace {name} deleted", gone, 180, interval=1.0)


def _user_objects(api: client.ApiClient, namespace: str) -> list[Obj]:
    side = Side(api, "side")
    ns = client.CoreV1Api(api).read_namespace(namespace)
    ns_obj = {"apiVersion": "v1", "kind": "Namespace", **api.sanitize_for_serialization(ns)}
    return [ns_obj, *copyable(read_objects(side, [namespace], KINDS), KINDS)]


def test_backup_on_source_restore_on_target_every_object_unchanged(pair: Pair) -> None:
    _remove_namespace(pair.target_api, MOVED)  # the samples are on both clusters: start empty
    source_objects = _user_objects(pair.source_api, MOVED)

    backed = velero.backup(pair.source_api, "shop-move", [MOVED], timeout=300, check=pair.source_server.check)
    assert backed.state.phase == "Completed" and backed.state.errors == 0
    assert backed.state.items_done >= len(source_objects)
    FIGURES["backup s"] = backed.seconds
    FIGURES["backup items"] = backed.state.items_done

    restored = velero.restore(
        pair.target_api,
        "shop-move-restore",
        "shop-move",
        namespaces=[MOVED],
        timeout=300,
        sync_timeout=90,
        check=pair.target_server.check,
    )
    assert restored.state.phase == "Completed" and restored.state.errors == 0, restored.errors
    FIGURES["restore s (incl. bucket sync)"] = restored.seconds
    FIGURES["of which bucket sync s"] = restored.sync_seconds
    print(f"\nrestore warnings ({len(restored.warnings)}): " + "; ".join(restored.warnings[:8]))
    FIGURES["restore items"] = restored.state.items_done
    FIGURES["backup items/s"] = backed.state.items_done / backed.seconds
    FIGURES["restore items/s after the sync"] = restored.state.items_done / (
        restored.seconds - restored.sync_seconds
    )
    # Velero's own list of what it did: the workloads and the Secret were created on the target.
    assert "shop/web(created)" in restored.items["apps/v1/Deployment"], restored.items
    assert "shop/orders-db(created)" in restored.items["apps/v1/StatefulSet"]
    assert "shop/app-secret(created)" in restored.items["v1/Secret"]

    target_objects = [velero.strip_restore_labels(o) for o in _user_objects(pair.target_api, MOVED)]
    sums = pair_checksums(source_objects, target_objects)
    assert compare(sums.source, sums.target) == []
    moved = {key(o) for o in source_objects}
    assert {
        "Secret/shop/app-secret",
        "Deployment/shop/web",
        "StatefulSet/shop/orders-db",
        "Namespace/shop",
    } <= moved
    FIGURES["objects compared"] = len(sums.source)
    # Velero marks what it restored: the labels were there before stripping.
    secret = client.CoreV1Api(pair.target_api).read_namespaced_secret("app-secret", MOVED)
    assert secret.metadata.labels["velero.io/restore-name"] == "shop-move-restore"

    # Asked again (a retried task): the same Backup and Restore are found, nothing new is made.
    again = velero.backup(pair.source_api, "shop-move", [MOVED], timeout=60)
    assert again.state == backed.state
    assert (
        velero.restore(pair.target_api, "shop-move-restore", "shop-move", timeout=60).state == restored.state
    )


def test_restore_of_unknown_backup_names_it_and_velero_reason(pair: Pair) -> None:
    with pytest.raises(velero.VeleroError) as err:
        velero.restore(pair.target_api, "ghost-restore", "no-such-backup", sync_timeout=10, timeout=60)
    message = str(err.value)
    print(f"\nunknown backup: {message}")
    assert message.startswith("velero restore velero/ghost-restore FailedValidation")
    assert "no-such-backup" in message and "not found" in message


def test_target_location_is_read_only(pair: Pair) -> None:
    with pytest.raises(velero.VeleroError) as err:
        velero.backup(pair.target_api, "from-target", [MOVED], timeout=60)
    print(f"\nread-only target: {err.value}")
    assert "velero backup velero/from-target FailedValidation" in str(err.value)
    assert "read-only mode" in str(err.value)


def test_backup_with_the_bucket_down_fails_naming_the_location(pair: Pair) -> None:
    pair.bucket.stop()
    try:
        # The server validates the bucket every 5 s: wait until it has noticed, via the API.
        wait_until(
            "source location Unavailable",
            lambda: velero.location_phase(pair.source_api) == "Unavailable",
            60,
            interval=1.0,
        )
        with pytest.raises(velero.VeleroError) as err:
            velero.backup(pair.source_api, "shop-bucket-down", [MOVED], timeout=60)
        print(f"\nbucket down: {err.value}")
        assert "velero backup velero/shop-bucket-down FailedValidation" in str(err.value)
        assert "BackupStorageLocation default is in Unavailable status" in str(err.value)
    finally:
        pair.bucket.start()
    # Once the bucket is back the server finds it again, and a new backup goes through.
    velero.wait_location_available(pair.source_api, timeout=60, check=pair.source_server.check)
    after = velero.backup(pair.source_api, "shop-bucket-back", [MOVED], timeout=120)
    listed = velero.download(pair.source_api, "BackupResourceList", after.state.name)
    assert "shop/app-secret" in listed["v1/Secret"], listed
