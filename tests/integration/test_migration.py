"""Cluster-to-cluster migration between two real local clusters (issue 12, first slice): the
source at the kit's older release, the target at the newer one, each a small non-HA cluster on its
own port block. Every migration call runs as the migrator ServiceAccount
(``manifests/migrator-rbac.yaml``) through a token kubeconfig, as the ``slipway_migration``
connection would; the admin identity only seeds objects and checks results.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError, ProtocolError

from slipway.kube.client import apply_manifest
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.config import ClusterConfig
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from slipway.localcluster.nodes import planned_nodes
from slipway.migration import clusters, frontdoor, identity, stateful
from slipway.migration.connection import ClusterRef, parse_connection
from slipway.migration.errors import ChecksumMismatch, MigrationError, NotAvailable
from slipway.migration.objects import CONFIG_KINDS, WORKLOAD_KINDS
from slipway.migration.request import MigrationRequest
from tests.conftest import TEST_BASE_PORT, state_root_for_tests
from tests.localhttp import QuietHandler

pytestmark = pytest.mark.cluster

FORBIDDEN = 403
MOVED = "mig-shop"
BLOCKED = "mig-blocked"
SEED = """\
apiVersion: v1
kind: Namespace
metadata: {name: mig-shop, labels: {team: shop}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config, namespace: mig-shop}
data: {MODE: production}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret, namespace: mig-shop}
stringData: {token: s3cr3t}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: app, namespace: mig-shop}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: app-reader, namespace: mig-shop}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: app-reader, namespace: mig-shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: app-reader}
subjects: [{kind: ServiceAccount, name: app, namespace: mig-shop}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: mig-shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: mig-shop, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: app
      containers:
      - name: web
        image: registry.local/web:1.0
        envFrom: [{configMapRef: {name: app-config}}]
        volumeMounts: [{name: creds, mountPath: /creds}]
        resources: {requests: {cpu: 100m, memory: 64Mi}}
      volumes: [{name: creds, secret: {secretName: app-secret}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: mig-shop}
spec: {maxUnavailable: 1, selector: {matchLabels: {app: web}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: mig-shop}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 2
  maxReplicas: 4
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-ingress, namespace: mig-shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: mig-shop}
spec:
  clusterIP: None
  selector: {app: cache}
  ports: [{port: 6379}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: cache, namespace: mig-shop, labels: {app: cache}}
spec:
  serviceName: cache
  replicas: 2
  selector: {matchLabels: {app: cache}}
  template:
    metadata: {labels: {app: cache}}
    spec:
      containers:
      - name: cache
        image: registry.local/cache:7
        env: [{name: PASSWORD, valueFrom: {secretKeyRef: {name: app-secret, key: token}}}]
        resources: {requests: {cpu: 100m, memory: 64Mi}}
---
apiVersion: v1
kind: Namespace
metadata: {name: mig-blocked, labels: {team: legacy}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: mig-blocked}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: node-agent, namespace: mig-blocked, labels: {app: node-agent}}
spec:
  replicas: 1
  selector: {matchLabels: {app: node-agent}}
  template:
    metadata: {labels: {app: node-agent}}
    spec:
      containers:
      - name: agent
        image: registry.local/agent:1.0
        ports: [{containerPort: 9100, hostPort: 9100}]
        envFrom: [{configMapRef: {name: agent-config}}]
        volumeMounts: [{name: host, mountPath: /host}, {name: data, mountPath: /data}]
      volumes:
      - {name: host, hostPath: {path: /var/lib/agent}}
      - {name: data, persistentVolumeClaim: {claimName: data}}
"""


# --- stateful workloads: local PVs whose folders stand in for the nodes' disks ------------------------
DATA = "mig-data"  # a StatefulSet of 2 with a volume each, cut over with its data
ROLLBACK = "mig-rollback"  # a StatefulSet of 1 whose cut-over is forced to roll back
CLASS = "local-disk"
STATEFUL_SEED = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {DATA}}}
---
apiVersion: v1
kind: Service
metadata: {{name: ledger, namespace: {DATA}}}
spec:
  clusterIP: None
  selector: {{app: ledger}}
  ports: [{{port: 5432}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: ledger, namespace: {DATA}, labels: {{app: ledger}}}}
spec:
  serviceName: ledger
  replicas: 2
  selector: {{matchLabels: {{app: ledger}}}}
  template:
    metadata: {{labels: {{app: ledger}}}}
    spec:
      containers:
      - name: db
        image: registry.local/postgres:16
        volumeMounts: [{{name: data, mountPath: /var/lib/postgresql/data}}]
        resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: {CLASS}
      resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {ROLLBACK}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: journal, namespace: {ROLLBACK}, labels: {{app: journal}}}}
spec:
  serviceName: journal
  replicas: 1
  selector: {{matchLabels: {{app: journal}}}}
  template:
    metadata: {{labels: {{app: journal}}}}
    spec:
      containers:
      - name: journal
        image: registry.local/journal:2
        volumeMounts: [{{name: data, mountPath: /data}}]
        resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: {CLASS}
      resources: {{requests: {{storage: 1Gi}}}}
"""
# The target's storage, as its admin provides it: the StorageClass local PVs use (no dynamic
# provisioning; binding waits for the pod) and a PV per disk folder, pinned to its node.
STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": CLASS},
    "provisioner": "kubernetes.io/no-provisioner",
    "volumeBindingMode": "WaitForFirstConsumer",
}
VOLUMES_PER_SIDE = 3  # 2 for ledger, 1 for journal


def local_pv(name: str, folder: Path, node: str) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": CLASS,
            "local": {"path": str(folder)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                            ]
                        }
                    ]
                }
            },
        },
    }


def provide_storage(cluster: LocalCluster, prefix: str) -> list[dict[str, Any]]:
    """The StorageClass and one local PV per folder under the cluster's state dir (its 'disks')."""
    workers = [n["metadata"]["name"] for n in planned_nodes(cluster.cfg)]
    pvs = [
        local_pv(
            f"{prefix}-{i}", cluster.cfg.state_dir / "disks" / f"{prefix}-{i}", workers[i % len(workers)]
        )
        for i in range(VOLUMES_PER_SIDE)
    ]
    return apply_manifest(cluster.admin_client(), [STORAGE_CLASS, *pvs])  # type: ignore[return-value]


def source_folder(pair: Pair, namespace: str, claim: str) -> Path:
    """The folder behind a bound claim on the source (what the 'application' writes)."""
    core = client.CoreV1Api(pair.source.admin_client())
    pv = core.read_persistent_volume(
        core.read_namespaced_persistent_volume_claim(claim, namespace).spec.volume_name
    )
    return Path(pv.spec.local.path)


def write_data(folder: Path, seed: str) -> None:
    """A database-shaped volume: nested files of several sizes, one empty folder."""
    (folder / "base" / "16384").mkdir(parents=True, exist_ok=True)
    (folder / "pg_tblspc").mkdir(exist_ok=True)
    (folder / "PG_VERSION").write_text("16\n")
    (folder / "base" / "16384" / "1259").write_bytes(os.urandom(2 * 1024 * 1024))
    (folder / "base" / "16384" / "2619").write_bytes(os.urandom(300 * 1024))
    (folder / "pg_wal.000001").write_bytes(os.urandom(512 * 1024))
    (folder / "owner.txt").write_text(f"{seed}\n")


def sha256s(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and the sha256 of its bytes (the proof the test holds)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def seed_stateful(source: LocalCluster, target: LocalCluster) -> None:
    provide_storage(source, "src-disk")
    provide_storage(target, "tgt-disk")
    apply_manifest(source.admin_client(), [d for d in yaml.safe_load_all(STATEFUL_SEED) if d])
    core = client.CoreV1Api(source.admin_client())
    claims = [(DATA, "data-ledger-0"), (DATA, "data-ledger-1"), (ROLLBACK, "data-journal-0")]

    def bound() -> bool:
        phases = [
            c.status.phase
            for ns in (DATA, ROLLBACK)
            for c in core.list_namespaced_persistent_volume_claim(ns).items
        ]
        return phases.count("Bound") == len(claims)

    wait_until("source claims bound to their local PVs", bound, 120, interval=0.5)
    target_core = client.CoreV1Api(target.admin_client())

    def available() -> bool:  # the target's PV controller marks new PVs Available
        phases = [pv.status.phase for pv in target_core.list_persistent_volume().items]
        return phases.count("Available") == VOLUMES_PER_SIDE

    wait_until("target PVs available", available, 60, interval=0.5)
    for namespace, claim in claims:
        pv = core.read_persistent_volume(
            core.read_namespaced_persistent_volume_claim(claim, namespace).spec.volume_name
        )
        write_data(Path(pv.spec.local.path), f"{namespace}/{claim}")


@dataclass
class Pair:
    source: LocalCluster
    target: LocalCluster
    source_ref: ClusterRef  # the migrator's kubeconfig on each cluster
    target_ref: ClusterRef

    def sides(self) -> tuple[clusters.Side, clusters.Side]:
        return (
            clusters.Side(self.source_ref.api_client(), "source"),
            clusters.Side(self.target_ref.api_client(), "target"),
        )

    def connection_extra(self) -> dict[str, str]:
        return {
            "source_kubeconfig": str(self.source_ref.kubeconfig),
            "target_kubeconfig": str(self.target_ref.kubeconfig),
        }


def _small(name: str, port_offset: int, version: str, state_root: Path) -> LocalCluster:
    cfg = ClusterConfig(
        name=name,
        base_port=TEST_BASE_PORT + port_offset,
        etcd_members=1,
        apiservers=1,
        control_plane_nodes=0,
        nodes=2,
        pools=("general",),
        kubernetes_version=version,
        state_root=state_root,
    )
    return LocalCluster(cfg)


@contextmanager
def migration_pair(prefix: str, port_offset: int) -> Iterator[Pair]:
    """Source (older release) and target (newer release), the migrator installed on both, the
    seed objects on the source; both purged afterwards, also when a test fails."""
    root = state_root_for_tests()
    source = _small(f"{prefix}-source", port_offset, KUBERNETES_OLD, root)
    target = _small(f"{prefix}-target", port_offset + 500, KUBERNETES_NEW, root)
    try:
        refs = []
        for cluster in (source, target):
            cluster.down(purge=True)
            cluster.up()
            admin = cluster.admin_client()
            identity.install(admin)
            path = cluster.cfg.state_dir / "migrator.kubeconfig"
            refs.append(ClusterRef(identity.write_kubeconfig(admin, path, name=cluster.cfg.name)))
        apply_manifest(source.admin_client(), [d for d in yaml.safe_load_all(SEED) if d])
        seed_stateful(source, target)
        yield Pair(source, target, refs[0], refs[1])
    finally:
        source.down(purge=True)
        target.down(purge=True)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with migration_pair("mig", 1400) as started:
        yield started


def _refused(call: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(ApiException) as err:
        call(*args, **kwargs)
    assert err.value.status == FORBIDDEN, err.value.body


def _namespaces(api: client.ApiClient) -> set[str]:
    return {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}


def test_migrator_reads_secrets_but_cannot_delete_create_pods_or_touch_nodes(pair: Pair) -> None:
    for ref, cluster in ((pair.source_ref, pair.source), (pair.target_ref, pair.target)):
        core = client.CoreV1Api(ref.api_client())
        if cluster is pair.source:
            secret = core.read_namespaced_secret("app-secret", MOVED)
            assert secret.data["token"]
            _refused(core.delete_namespaced_secret, "app-secret", MOVED)
            _refused(core.delete_namespace, MOVED)
            _refused(core.replace_namespaced_secret, "app-secret", MOVED, secret)  # no update verb
        _refused(core.list_node)
        pod = {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}}
        _refused(core.create_namespaced_pod, "default", pod)
        _refused(core.connect_get_namespaced_pod_exec, "x", "default", command=["true"])
        rbac = client.RbacAuthorizationV1Api(ref.api_client())
        _refused(rbac.create_cluster_role, {"metadata": {"name": "x"}, "rules": []})
        _refused(client.AppsV1Api(ref.api_client()).delete_namespaced_deployment, "web", MOVED)
        # Volumes: PVs and StorageClasses are listed (which folder, which free target PV), never
        # written; claims are created and patched, never deleted; replicas change by a patch of
        # the workload, not through the scale subresource.
        assert core.list_persistent_volume().items
        assert client.StorageV1Api(ref.api_client()).list_storage_class().items
        _refused(core.read_persistent_volume, "src-disk-0" if cluster is pair.source else "tgt-disk-0")
        _refused(core.delete_persistent_volume, "src-disk-0" if cluster is pair.source else "tgt-disk-0")
        pv = {
            "metadata": {"name": "x"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": "/tmp/x"},
            },
        }
        _refused(core.create_persistent_volume, pv)
        _refused(core.delete_namespaced_persistent_volume_claim, "data-ledger-0", DATA)
        _refused(client.StorageV1Api(ref.api_client()).delete_storage_class, CLASS)
        _refused(
            client.AppsV1Api(ref.api_client()).patch_namespaced_stateful_set_scale,
            "ledger",
            DATA,
            {"spec": {"replicas": 0}},
        )
    assert client.CoreV1Api(pair.source.admin_client()).read_namespaced_secret("app-secret", MOVED)


def test_connection_extras_with_the_migrator_kubeconfigs(pair: Pair) -> None:
    parsed = parse_connection(pair.connection_extra())
    assert parsed.source == pair.source_ref and parsed.target == pair.target_ref
    same = {
        "source_kubeconfig": str(pair.source_ref.kubeconfig),
        "target_kubeconfig": str(pair.source_ref.kubeconfig),
    }
    with pytest.raises(MigrationError) as err:
        parse_connection(same)
    assert err.value.fields == ["target_kubeconfig"]


def test_assessment_maps_dependencies_and_blockers_and_changes_nothing(pair: Pair) -> None:
    source, target = pair.sides()
    before = _namespaces(pair.target.admin_client())
    request = MigrationRequest(namespaces=[MOVED], namespace_selector="team=legacy")
    result, namespaces, _ = clusters.assessment(source, target, request)
    assert [n["metadata"]["name"] for n in namespaces] == [BLOCKED, MOVED]
    assert (result.source_version, result.target_version) == (KUBERNETES_OLD, KUBERNETES_NEW)
    web = result.dependencies[f"Deployment/{MOVED}/web"]
    assert web == {
        "ConfigMap": ["app-config"],
        "Secret": ["app-secret"],
        "ServiceAccount": ["app"],
        "Service": ["web"],
        "PodDisruptionBudget": ["web"],
        "NetworkPolicy": ["web-ingress"],
        "HorizontalPodAutoscaler": ["web"],
    }
    assert result.dependencies[f"StatefulSet/{MOVED}/cache"]["Service"] == ["cache"]
    agent = " | ".join(result.blockers[f"Deployment/{BLOCKED}/node-agent"])
    assert "hostPath" in agent and "host port 9100" in agent and "PVC data" in agent
    assert f"PersistentVolumeClaim/{BLOCKED}/data" in result.blockers
    assert result.missing == {f"Deployment/{BLOCKED}/node-agent": [f"ConfigMap/{BLOCKED}/agent-config"]}
    assert not any(name.startswith(f"Deployment/{MOVED}") for name in result.blockers)
    assert f"Secret/{MOVED}/app-secret" in result.objects
    assert f"ConfigMap/{MOVED}/kube-root-ca.crt" in result.skipped
    json.dumps(result.to_dict())  # the report is JSON as it stands
    assert _namespaces(pair.target.admin_client()) == before


def test_bad_selections_and_a_target_that_is_the_source_are_refused(pair: Pair) -> None:
    source, target = pair.sides()
    before = _namespaces(pair.target.admin_client())
    cases = [
        (MigrationRequest(namespaces=["no-such-namespace"]), "namespaces", "does not exist on the source"),
        (MigrationRequest(namespace_selector="team=nobody"), "namespace_selector", "matches no namespace"),
    ]
    for request, field, reason in cases:
        with pytest.raises(MigrationError) as err:
            clusters.assessment(source, target, request)
        assert err.value.fields == [field] and reason in str(err.value)
    # The source reached through a second client is still the source: refused by cluster identity.
    with pytest.raises(MigrationError) as err:
        clusters.assessment(
            source,
            clusters.Side(pair.source_ref.api_client(), "target"),
            MigrationRequest(namespaces=[MOVED]),
        )
    assert err.value.fields == ["target"]
    assert _namespaces(pair.target.admin_client()) == before


def _resource_versions(api: client.ApiClient) -> dict[str, str]:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    listed = [
        *core.list_namespaced_config_map(MOVED).items,
        *core.list_namespaced_secret(MOVED).items,
        *core.list_namespaced_service(MOVED).items,
        *apps.list_namespaced_deployment(MOVED).items,
        *apps.list_namespaced_stateful_set(MOVED).items,
    ]
    return {f"{type(o).__name__}/{o.metadata.name}": o.metadata.resource_version for o in listed}


def test_copy_is_verified_by_checksums_idempotent_and_available(pair: Pair) -> None:
    source, target = pair.sides()
    applied = clusters.copy_configuration(source, target, [MOVED])
    assert applied[0] == f"Namespace/{MOVED}" and f"Secret/{MOVED}/app-secret" in applied
    config = clusters.verify(source, target, [MOVED], CONFIG_KINDS, with_namespaces=True)
    assert config.source == config.target and len(config.source) == len(applied)
    workloads = clusters.copy_workloads(source, target, [MOVED])
    assert workloads == [f"Deployment/{MOVED}/web", f"StatefulSet/{MOVED}/cache"]
    sums = clusters.verify(source, target, [MOVED], WORKLOAD_KINDS)
    assert sums.source == sums.target
    assert clusters.wait_available(target, [MOVED], WORKLOAD_KINDS, 120) == 2

    # Re-running the copy is a no-op: the apiserver stores nothing new.
    before = _resource_versions(pair.target.admin_client())
    clusters.copy_configuration(source, target, [MOVED])
    clusters.copy_workloads(source, target, [MOVED])
    assert _resource_versions(pair.target.admin_client()) == before

    # A Secret changed on the source after the copy: the checksums name it, and only it.
    admin_core = client.CoreV1Api(pair.source.admin_client())
    admin_core.patch_namespaced_secret("app-secret", MOVED, {"stringData": {"token": "rotated"}})
    with pytest.raises(ChecksumMismatch) as err:
        clusters.verify(source, target, [MOVED], CONFIG_KINDS, with_namespaces=True)
    assert [m.split(":")[0] for m in err.value.mismatches] == [f"Secret/{MOVED}/app-secret"]
    # Copying again carries the change over; the sums agree again.
    clusters.copy_configuration(source, target, [MOVED])
    clusters.verify(source, target, [MOVED], CONFIG_KINDS, with_namespaces=True)
    copied = client.CoreV1Api(pair.target.admin_client()).read_namespaced_secret("app-secret", MOVED)
    assert copied.data["token"] == "cm90YXRlZA=="  # base64 of "rotated"


# --- stateful workloads: rclone sync, freeze, final sync, check, cut over (and back) -----------------


def _sts(api: client.ApiClient, name: str, namespace: str) -> Any:
    return client.AppsV1Api(api).read_namespaced_stateful_set(name, namespace)


def _pods(api: client.ApiClient, namespace: str) -> list[str]:
    return sorted(p.metadata.name for p in client.CoreV1Api(api).list_namespaced_pod(namespace).items)


def test_stateful_workload_moves_with_its_data_proven_file_by_file(pair: Pair) -> None:
    source, target = pair.sides()
    ledger = f"StatefulSet/{DATA}/ledger"
    result, _, _ = clusters.assessment(source, target, MigrationRequest(namespaces=[DATA]))
    section = stateful.assess(source, target, result)
    assert result.movable, result.blockers
    assert section["workloads"] == [ledger] and ledger in result.objects
    assert sorted(v["claim"] for v in section["volumes"]) == ["data-ledger-0", "data-ledger-1"]
    assert {v["target_pv"] for v in section["volumes"]} <= {f"tgt-disk-{i}" for i in range(VOLUMES_PER_SIDE)}
    assert (
        not client.CoreV1Api(pair.target.admin_client())
        .list_persistent_volume_claim_for_all_namespaces()
        .items
    )
    assert stateful.stateless(source, [DATA]) == []  # the blue-green copy leaves it alone
    # A claim with no PV behind it has no data path: named, with the workload's other blockers.
    legacy, _, _ = clusters.assessment(source, target, MigrationRequest(namespace_selector="team=legacy"))
    blocked = stateful.assess(source, target, legacy)["cannot_move"][f"Deployment/{BLOCKED}/node-agent"]
    assert any("claim data is not bound to a PersistentVolume" in why for why in blocked)
    assert any("hostPath" in why for why in blocked) and not any("not built yet" in why for why in blocked)
    assert legacy.blockers[f"PersistentVolumeClaim/{BLOCKED}/data"] == [
        f"its workload Deployment/{BLOCKED}/node-agent cannot move its data"
    ]

    clusters.copy_configuration(source, target, [DATA])
    found = stateful.plan(source, target, [DATA], bind=True, timeout=60)
    claims = client.CoreV1Api(pair.target.admin_client()).list_namespaced_persistent_volume_claim(DATA).items
    assert {(c.metadata.name, c.status.phase) for c in claims} == {
        ("data-ledger-0", "Bound"),
        ("data-ledger-1", "Bound"),
    }
    assert {c.spec.volume_name for c in claims} == {v.target_pv for v in found.volumes}

    # Pass 1 while the source runs: every file; pass 2 after the application wrote more: the delta.
    first = stateful.sync_all(found.volumes)
    sizes = {
        v.name: sum(p.stat().st_size for p in Path(v.source_path).rglob("*") if p.is_file())
        for v in found.volumes
    }
    assert {n: (s.files, s.bytes) for n, s in first.items()} == {n: (5, sizes[n]) for n in sizes}
    written = Path(found.volumes[0].source_path)
    (written / "pg_wal.000002").write_bytes(os.urandom(256 * 1024))
    (written / "PG_VERSION").write_text("16.1\n")
    (written / "owner.txt").unlink()
    second = stateful.sync_all(found.volumes)
    moved = second[found.volumes[0].name]
    assert (moved.files, moved.bytes, moved.deletes) == (2, 256 * 1024 + 5, 1)
    assert second[found.volumes[1].name].files == 0 and second[found.volumes[1].name].bytes == 0
    assert _sts(pair.source.admin_client(), "ledger", DATA).status.ready_replicas == 2  # still running

    cut = stateful.cut_over(source, target, ledger, found.of(ledger), 120)
    assert cut.replicas == 2 and cut.freeze_seconds > 0
    assert all(s.files == 0 for s in cut.final_pass.values())  # nothing written since pass 2
    assert {n: (c.ok, c.matching) for n, c in cut.checked.items()} == {
        found.volumes[0].name: (True, 5),
        found.volumes[1].name: (True, 5),
    }
    for v in found.volumes:  # the bytes on the target disk are the source's, file by file
        assert sha256s(Path(v.target_path)) == sha256s(Path(v.source_path)) != {}
        assert (Path(v.target_path) / "pg_tblspc").is_dir()  # empty folders travel too
    frozen = _sts(pair.source.admin_client(), "ledger", DATA)
    assert frozen.spec.replicas == 0 and frozen.metadata.annotations[stateful.REPLICAS] == "2"
    assert _pods(pair.source.admin_client(), DATA) == []
    moved_sts = _sts(pair.target.admin_client(), "ledger", DATA)
    assert moved_sts.spec.replicas == 2 and moved_sts.status.ready_replicas == 2
    assert stateful.REPLICAS not in (moved_sts.metadata.annotations or {})
    stateful.verify_copy(source, target, ledger)

    # Cleared and re-run: the cluster says it is frozen and cut over; nothing moves, same window.
    again = stateful.cut_over(source, target, ledger, found.of(ledger), 120)
    assert again.freeze_seconds == cut.freeze_seconds and again.snapshots == cut.snapshots
    assert all(s.bytes == 0 and s.files == 0 for s in again.final_pass.values())
    print(
        f"\nstateful cut-over: freeze {cut.freeze_seconds} s, pass 1 {sum(s.bytes for s in first.values())} B"
    )


def taint_target_nodes(pair: Pair, taint: bool) -> None:
    core = client.CoreV1Api(pair.target.admin_client())
    for node in core.list_node().items:
        taints = [{"key": "slipway.test/full", "effect": "NoSchedule"}] if taint else []
        core.patch_node(node.metadata.name, {"spec": {"taints": taints}})


def test_a_failed_check_or_an_unavailable_target_rolls_the_stateful_cut_over_back(pair: Pair) -> None:
    source, target = pair.sides()
    journal = f"StatefulSet/{ROLLBACK}/journal"
    clusters.copy_configuration(source, target, [ROLLBACK])
    found = stateful.plan(source, target, [ROLLBACK], bind=True, timeout=60)
    (volume,) = found.volumes
    src, tgt = Path(volume.source_path), Path(volume.target_path)
    stateful.sync_all(found.volumes)
    before = sha256s(src)

    def corrupt() -> None:
        # Bit rot on the copy between the final sync and the check: same size, same mtime.
        damaged = tgt / "base" / "16384" / "1259"
        stat = damaged.stat()
        data = bytearray(damaged.read_bytes())
        data[1000] ^= 0xFF
        damaged.write_bytes(bytes(data))
        os.utime(damaged, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        # And something touches the frozen source: the snapshot is what comes back.
        (src / "stray.tmp").write_text("written after the freeze\n")
        (src / "PG_VERSION").write_text("broken\n")

    with pytest.raises(stateful.DataCheckFailed) as err:
        stateful.cut_over(source, target, journal, found.of(journal), 60, after_final_sync=corrupt)
    message = str(err.value)
    assert f"volume {ROLLBACK}/data-journal-0" in message and "base/16384/1259 (differs)" in message
    assert stateful.read_workload(target, journal) is None  # nothing started on the target
    assert _sts(pair.source.admin_client(), "journal", ROLLBACK).spec.replicas == 0

    undone = stateful.roll_back(source, target, journal, 60)
    assert undone is not None and undone["replicas"] == 1 and not undone["target_scaled_to_zero"]
    assert sha256s(src) == before  # the pre-cutover snapshot, byte for byte
    back = _sts(pair.source.admin_client(), "journal", ROLLBACK)
    assert back.spec.replicas == 1 and back.status.ready_replicas == 1
    assert not set(back.metadata.annotations or {}) & set(stateful.MARKS)
    assert stateful.roll_back(source, target, journal, 60) is None  # nothing frozen: nothing done

    # Second attempt: the data is proven, but the target cannot schedule the pod.
    taint_target_nodes(pair, taint=True)
    try:
        with pytest.raises(NotAvailable, match="journal not available on the target"):
            stateful.cut_over(source, target, journal, found.of(journal), 8)
        started = _sts(pair.target.admin_client(), "journal", ROLLBACK)
        assert started.spec.replicas == 1  # it was started, and never became available
        undone = stateful.roll_back(source, target, journal, 60)
    finally:
        taint_target_nodes(pair, taint=False)
    assert undone is not None and undone["target_scaled_to_zero"]
    assert _sts(pair.target.admin_client(), "journal", ROLLBACK).spec.replicas == 0
    assert _pods(pair.target.admin_client(), ROLLBACK) == []
    assert _sts(pair.source.admin_client(), "journal", ROLLBACK).status.ready_replicas == 1
    assert sha256s(src) == before


# --- the front door: HAProxy's weights moved through its runtime API --------------------------------


class _Backend(QuietHandler):
    """Stands for one cluster's ingress: answers its own name; ``broken`` turns it into 500s."""

    name = ""
    broken = False

    def do_GET(self) -> None:
        status = 500 if type(self).broken else 200
        body = (type(self).name if self.path != "/healthz" else "ok").encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _backend(name: str) -> type[_Backend]:
    return type(f"{name.title()}Backend", (_Backend,), {"name": name, "broken": False})


@contextmanager
def front_door_with_backends(
    tmp_path: Path,
) -> Iterator[tuple[frontdoor.FrontDoor, type[_Backend], Callable[[], None]]]:
    source, target = _backend("source"), _backend("target")
    serve = contextmanager(_serve_stoppable)
    with serve(source) as (source_url, _), serve(target) as (target_url, stop_target):
        door = frontdoor.FrontDoor(
            tmp_path / "front-door",
            TEST_BASE_PORT + 300,
            int(source_url.rsplit(":", 1)[1]),
            int(target_url.rsplit(":", 1)[1]),
        )
        door.start()
        try:
            yield door, target, stop_target
        finally:
            door.stop()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # HAProxy ends each health check with a TCP reset; that is not an error of the backend.
        if not isinstance(sys.exc_info()[1], ConnectionResetError):
            super().handle_error(request, client_address)


def _serve_stoppable(handler: type[_Backend]) -> Iterator[tuple[str, Callable[[], None]]]:
    """Like tests.localhttp.serving, plus a way to stop the server mid-test (a backend that dies)."""
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            server.shutdown()
            server.server_close()

    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", stop
    finally:
        stop()
        thread.join()


class _BackgroundProbe:
    """Requests through the front door for as long as the switch runs: the failed-request figure."""

    def __init__(self, url: str) -> None:
        self.url, self.result = url, frontdoor.ProbeResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            one = frontdoor.probe(self.url, 1)
            self.result.sent += one.sent
            self.result.failed += one.failed
            self.result.answered_by.update(one.answered_by)
            self.result.errors += one.errors

    def __enter__(self) -> _BackgroundProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_traffic_switch_moves_every_request_to_the_target_with_none_failed(tmp_path: Path) -> None:
    with front_door_with_backends(tmp_path) as (door, _, _), _BackgroundProbe(door.url) as background:
        steps = frontdoor.switch(door.api, door.url)
        assert [s.percent for s in steps] == [0, 10, 50, 100]
        assert steps[0].answered_by == {"source": 40} and steps[-1].answered_by == {"target": 40}
        assert steps[1].answered_by.get("target", 0) >= 1 and steps[2].answered_by.get("source", 0) >= 1
        assert sum(s.failed for s in steps) == 0
        assert (door.api.weight("source"), door.api.weight("target")) == (0, 100)
        # Rolling back is setting the weights back; the source takes every request again.
        frontdoor.set_split(door.api, 0)
        assert frontdoor.probe(door.url, 20).answered_by == {"source": 20}
    assert background.result.sent > 0 and background.result.failed == 0, background.result.errors
    print(f"\nfront door: {background.result.sent} background requests during the switch, 0 failed")


@pytest.mark.parametrize("fault", ["answers-500", "stops"])
def test_a_target_failing_mid_switch_rolls_traffic_back_to_the_source(tmp_path: Path, fault: str) -> None:
    with front_door_with_backends(tmp_path) as (door, target, stop_target):

        def break_target(percent: int) -> None:
            if percent == 50:
                if fault == "stops":
                    stop_target()
                else:
                    target.broken = True

        with pytest.raises(frontdoor.SwitchRolledBack) as err:
            frontdoor.switch(door.api, door.url, on_step=break_target)
        assert err.value.step >= 50
        assert [s.percent for s in err.value.steps][:2] == [0, 10]
        assert sum(s.failed for s in err.value.steps[:2]) == 0
        assert (door.api.weight("source"), door.api.weight("target")) == (100, 0)
        after = frontdoor.probe(door.url, 20)
        assert after.answered_by == {"source": 20} and after.failed == 0


LATER = "mig-later"
LATER_SEED = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {LATER}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: db-password, namespace: {LATER}}}
stringData: {{password: hunter2}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: worker, namespace: {LATER}, labels: {{app: worker}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: worker}}}}
  template:
    metadata: {{labels: {{app: worker}}}}
    spec:
      containers:
      - name: worker
        image: registry.local/worker:1.0
        env: [{{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: db-password, key: password}}}}}}]
"""


CUSTOM = "mig-custom"
WIDGETS = "widgets.shop.example.com"
CUSTOM_SEED = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.shop.example.com}
spec:
  group: shop.example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
              colour: {type: string}
---
apiVersion: v1
kind: Namespace
metadata: {name: mig-custom}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: mig-custom}
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"""
# What a team applies on both clusters so the migrator may move its custom kind.
WIDGET_GRANT = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "widgets-migration", "labels": {clusters.AGGREGATE_LABEL: "true"}},
    "rules": [
        {
            "apiGroups": ["shop.example.com"],
            "resources": ["widgets"],
            "verbs": ["get", "list", "create", "patch"],
        }
    ],
}


def _widget(api: client.ApiClient) -> dict[str, Any]:
    got: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "shop.example.com", "v1", CUSTOM, "widgets", "blue"
    )
    return got


def _established(api: client.ApiClient) -> bool:
    try:
        crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(WIDGETS)
    except ApiException:
        return False
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def test_custom_resources_and_ingresses_move_with_their_definitions(pair: Pair) -> None:
    """A namespace holding a custom kind's instance and an Ingress: the assessment refuses until
    the team grants the migrator that kind (aggregated ClusterRole), then lists definition,
    instance and Ingress in copy order; the copy brings the definition first, proven by checksums,
    idempotent, and a changed copy is named."""
    admin = pair.source.admin_client()
    apply_manifest(admin, [d for d in yaml.safe_load_all(CUSTOM_SEED) if d])
    wait_until("the source serves widgets", lambda: _established(admin), 60, interval=0.2)
    widget = {
        "apiVersion": "shop.example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "blue", "namespace": CUSTOM, "labels": {"team": "shop"}},
        "spec": {"size": 3, "colour": "blue"},
    }
    client.CustomObjectsApi(admin).create_namespaced_custom_object(
        "shop.example.com", "v1", CUSTOM, "widgets", widget
    )
    source, target = pair.sides()
    request = MigrationRequest(namespaces=[CUSTOM])

    with pytest.raises(MigrationError) as refused:
        clusters.assessment(source, target, request)
    assert refused.value.fields == [f"CustomResourceDefinition/{WIDGETS}"]
    assert clusters.AGGREGATE_LABEL in str(refused.value) and "widgets.shop.example.com" in str(refused.value)

    for cluster in (pair.source, pair.target):
        apply_manifest(cluster.admin_client(), [WIDGET_GRANT])

    def granted() -> bool:  # the controller-manager aggregates the labelled role's rules
        try:
            clusters.custom_kinds(source, [CUSTOM])
        except MigrationError:
            return False
        return True

    wait_until("the migrator may list widgets", granted, 60, interval=0.5)
    result, _, _ = clusters.assessment(source, target, request)
    assert result.movable, result.blockers
    crd, instance, ingress = (
        f"CustomResourceDefinition/{WIDGETS}",
        f"Widget/{CUSTOM}/blue",
        f"Ingress/{CUSTOM}/web",
    )
    assert {crd, instance, ingress} <= set(result.objects)
    assert result.objects.index(ingress) < result.objects.index(crd) < result.objects.index(instance)
    assert not _established(pair.target.admin_client())  # nothing changed by the assessment

    applied = clusters.copy_configuration(source, target, [CUSTOM])
    assert applied == [f"Namespace/{CUSTOM}", f"ServiceAccount/{CUSTOM}/default", ingress, crd, instance]
    assert applied == [o for o in result.objects if o.split("/")[0] != "Deployment"]  # as assessed
    assert _widget(pair.target.admin_client())["spec"] == {"size": 3, "colour": "blue"}
    sums = clusters.verify_custom_resources(source, target, [CUSTOM])
    assert sums.source == sums.target and sorted(sums.source) == sorted([crd, instance])
    clusters.verify(source, target, [CUSTOM], CONFIG_KINDS, with_namespaces=True)  # the Ingress

    # Copying again stores nothing new.
    before = _widget(pair.target.admin_client())["metadata"]["resourceVersion"]
    clusters.copy_configuration(source, target, [CUSTOM])
    assert _widget(pair.target.admin_client())["metadata"]["resourceVersion"] == before

    # Someone changes the copy on the target: the checksums name it, and only it.
    client.CustomObjectsApi(pair.target.admin_client()).patch_namespaced_custom_object(
        "shop.example.com", "v1", CUSTOM, "widgets", "blue", {"spec": {"colour": "red"}}
    )
    with pytest.raises(ChecksumMismatch) as err:
        clusters.verify_custom_resources(source, target, [CUSTOM])
    assert [m.split(":")[0] for m in err.value.mismatches] == [instance]


def test_a_copy_cut_short_by_a_target_apiserver_restart_completes_on_rerun(pair: Pair) -> None:
    """Runs last in this module: it stops the target's only apiserver. The copy fails while the
    target is down; re-running it afterwards (what an Airflow retry does) completes it, proven by
    the checksums, with nothing duplicated or lost."""
    apply_manifest(pair.source.admin_client(), [d for d in yaml.safe_load_all(LATER_SEED) if d])
    source, target = pair.sides()  # discovery cached while the target was up
    pair.target.stop_component("kube-apiserver-0")
    try:
        # Refused connection (retried, then MaxRetryError) or HAProxy closing it (a PATCH is not
        # retried: ProtocolError), depending on whether its health check has marked the server down.
        with pytest.raises((MaxRetryError, ProtocolError)):
            clusters.copy_configuration(source, target, [LATER])
    finally:
        pair.target.start_component("kube-apiserver-0")
        wait_until("target load balancer routes again", pair.target.lb_ready, 120, interval=0.5)
        # With its only apiserver down past the leader-election renew deadline (10 s; a busy
        # machine restarts it slower), a controller-manager or scheduler gives up its lease and
        # exits; a kubelet restarts such a static pod, so the kit's process does too.
        for name in ("kube-controller-manager", "kube-scheduler"):
            if not pair.target.sup.is_running(name):
                pair.target.start_component(name)
    source, target = pair.sides()
    clusters.copy_configuration(source, target, [LATER])
    clusters.copy_workloads(source, target, [LATER])
    clusters.verify(source, target, [LATER], CONFIG_KINDS, with_namespaces=True)
    clusters.verify(source, target, [LATER], WORKLOAD_KINDS)
    assert clusters.wait_available(target, [LATER], WORKLOAD_KINDS, 120) == 1
    secrets = client.CoreV1Api(pair.target.admin_client()).list_namespaced_secret(LATER).items
    assert [s.metadata.name for s in secrets] == ["db-password"]
