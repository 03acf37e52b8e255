"""Preflight checks against the real local cluster, with problems seeded and removed again.

Checks read through the least-privileged orchestrator identity; only the seeding uses admin.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from slipway.batching import plan_batches
from slipway.checks import (
    check_capacity,
    check_control_plane_health,
    check_etcd_backup,
    check_etcd_consistency,
    check_etcd_health,
    check_feature_gates,
    check_maintenance_window,
    check_node_readiness,
    check_pod_disruption_budgets,
    check_removed_apis,
    check_upgrade_path,
    check_version_skew,
    check_workloads,
)
from slipway.checks.apis import LAST_APPLIED, ListedKind, applied_objects
from slipway.etcd import EtcdEndpoints
from slipway.inventory import HEALTHY, LocalControlPlaneReader, collect_inventory
from slipway.kube.client import api_client
from slipway.localcluster import components
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import ETCD_OLD, KUBERNETES_OLD
from slipway.models import CheckResult, ClusterInventory, UpgradeRequest, parse_request
from slipway.versions import Version
from tests.integration.conftest import HOG

pytestmark = pytest.mark.cluster

LEGACY_FLOWSCHEMA = "slipway-test-legacy"


@pytest.fixture
def api(local_cluster: LocalCluster) -> client.ApiClient:
    return local_cluster.orchestrator_client()


@pytest.fixture
def reader(local_cluster: LocalCluster) -> LocalControlPlaneReader:
    return LocalControlPlaneReader(local_cluster)


@pytest.fixture
def inventory(api: client.ApiClient, reader: LocalControlPlaneReader) -> ClusterInventory:
    return collect_inventory(api, reader.versions())


@pytest.fixture
def request_137() -> UpgradeRequest:
    return parse_request({"target_version": "1.37.2"})


def as_json(result: CheckResult) -> dict[str, Any]:
    """The result as it travels through XCom: it must survive a JSON round trip."""
    data: dict[str, Any] = json.loads(json.dumps(result.model_dump(mode="json")))
    return data


# ---- inventory and reader ---------------------------------------------------------------------


def test_reader_asks_every_instance(local_cluster: LocalCluster, reader: LocalControlPlaneReader) -> None:
    assert reader.versions() == {
        "kube-apiserver": {"kube-apiserver-0": KUBERNETES_OLD, "kube-apiserver-1": KUBERNETES_OLD},
        "kube-controller-manager": {"kube-controller-manager": KUBERNETES_OLD},
        "kube-scheduler": {"kube-scheduler": KUBERNETES_OLD},
        "etcd": {f"etcd-{i}": ETCD_OLD for i in range(3)},
    }
    assert all(v == HEALTHY for instances in reader.health().values() for v in instances.values())
    flags = reader.flags()
    assert any(f.startswith("--etcd-servers=") for f in flags["kube-apiserver"]["kube-apiserver-0"])


def test_inventory_from_nodes(local_cluster: LocalCluster, inventory: ClusterInventory) -> None:
    cfg = local_cluster.cfg
    assert len(inventory.nodes) == cfg.nodes + cfg.control_plane_nodes
    assert {n.pool for n in inventory.workers} == set(cfg.pools)
    assert sum(n.control_plane for n in inventory.nodes) == cfg.control_plane_nodes
    assert all(n.ready and n.kubelet_version == KUBERNETES_OLD for n in inventory.nodes)
    assert inventory.apiserver_version.minor == 36
    assert inventory.etcd_versions == {f"etcd-{i}": ETCD_OLD for i in range(3)}


def test_cluster_health_checks_pass(
    inventory: ClusterInventory, reader: LocalControlPlaneReader, request_137: UpgradeRequest
) -> None:
    assert check_node_readiness(inventory).severity == "ok"
    assert check_control_plane_health(reader).severity == "ok"
    assert check_version_skew(inventory).severity == "ok"
    path = check_upgrade_path(inventory, request_137.target)
    assert path.severity == "info" and f"control-plane {KUBERNETES_OLD}->1.37.2" in path.summary
    gates = as_json(check_feature_gates(reader, inventory.apiserver_version, request_137.target))
    assert gates["severity"] != "blocker" and gates["evidence"]["instances_checked"] == 4


# ---- removed APIs -------------------------------------------------------------------------------


@pytest.fixture
def legacy_flowschema(local_cluster: LocalCluster) -> Iterator[str]:
    """A real FlowSchema whose last-applied manifest still says flowcontrol v1beta3 (gone since 1.32)."""
    spec = {
        "priorityLevelConfiguration": {"name": "global-default"},
        "matchingPrecedence": 9000,
        "rules": [
            {
                "subjects": [{"kind": "Group", "group": {"name": "slipway-test-legacy"}}],
                "resourceRules": [
                    {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "namespaces": ["*"]}
                ],
            }
        ],
    }
    manifest = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1beta3",
        "kind": "FlowSchema",
        "metadata": {"name": LEGACY_FLOWSCHEMA},
        "spec": spec,
    }
    body = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": LEGACY_FLOWSCHEMA, "annotations": {LAST_APPLIED: json.dumps(manifest)}},
        "spec": spec,
    }
    flowcontrol = client.FlowcontrolApiserverV1Api(local_cluster.admin_client())
    flowcontrol.create_flow_schema(body)
    try:
        yield LEGACY_FLOWSCHEMA
    finally:
        flowcontrol.delete_flow_schema(LEGACY_FLOWSCHEMA)


def test_manifest_on_removed_api_blocks_naming_the_object(
    api: client.ApiClient, inventory: ClusterInventory, request_137: UpgradeRequest, legacy_flowschema: str
) -> None:
    manifests, requests, served = check_removed_apis(api, inventory.apiserver_version, request_137.target)
    assert (manifests.name, manifests.severity, manifests.passed) == (
        "removed-apis/manifests",
        "blocker",
        False,
    )
    assert f"FlowSchema {legacy_flowschema} (flowcontrol.apiserver.k8s.io/v1beta3, removed in 1.32)" in (
        manifests.summary
    )
    evidence = as_json(manifests)["evidence"]
    assert evidence["removed"][0]["object"] == f"FlowSchema {legacy_flowschema}"
    # Every kind the scan could not read is named (what the orchestrator's role does not grant).
    assert all(s.endswith(": forbidden for this identity") for s in evidence["skipped"])
    assert evidence["kinds_listed"] >= 40 and "PodSecurityPolicy (policy)" in evidence["not_served"]
    # Nothing in this cluster calls or serves an API that 1.37 removes.
    assert requests.severity in ("ok", "info") and served.severity == "ok"


def test_sample_cluster_has_no_removed_api_manifests(
    api: client.ApiClient, inventory: ClusterInventory, request_137: UpgradeRequest
) -> None:
    manifests = check_removed_apis(api, inventory.apiserver_version, request_137.target)[0]
    evidence = as_json(manifests)["evidence"]
    assert manifests.passed and (evidence["removed"], evidence["deprecated"]) == ([], []), manifests.summary


def test_unserved_kind_is_skipped_quietly_forbidden_one_reported(api: client.ApiClient) -> None:
    # The orchestrator may list StorageClasses; there is no storage.k8s.io/v1alpha9: nothing to say.
    assert applied_objects(api, [ListedKind("storage.k8s.io", "v1alpha9", "storageclasses")]) == ([], [])
    # Secrets are outside the orchestrator's rights on purpose; the check says what it could not see.
    objects, skipped = applied_objects(api, [ListedKind("", "v1", "secrets")])
    assert (objects, skipped) == ([], ["/api/v1/secrets: forbidden for this identity"])


# ---- served is not used: an apiserver serving a version the target removes ---------------------

V136, V137 = Version.parse(KUBERNETES_OLD), Version.parse("1.37.2")
NET_V1BETA1 = "networking.k8s.io/v1beta1"  # ServiceCIDR and IPAddress: gone in 1.37
EXTRA_APISERVER = 9  # a third kube-apiserver of the session cluster, outside the load balancer


@pytest.fixture(scope="module")
def serving_removed_api(local_cluster: LocalCluster) -> Iterator[client.ApiClient]:
    """The orchestrator's client on a real extra kube-apiserver of the session cluster that also
    serves networking.k8s.io/v1beta1 (``--runtime-config``), which 1.37 stops serving. Nothing
    stores or calls anything at that version: the cluster is otherwise stock.

    (A 1.31 cluster, which serves flowcontrol v1beta3 by default, would show the same; its
    binaries cannot be built here: the Go module proxy refuses k8s.io/kube-scheduler v0.31.14.)
    """
    name, cfg = f"kube-apiserver-{EXTRA_APISERVER}", local_cluster.cfg
    argv = components.apiserver_argv(cfg, EXTRA_APISERVER, KUBERNETES_OLD)
    local_cluster.sup.start(name, [*argv, f"--runtime-config={NET_V1BETA1}=true"])
    try:
        wait_until(name, lambda: local_cluster.apiserver_ready(EXTRA_APISERVER), 120)
        api = api_client(local_cluster.orchestrator_kubeconfig)
        api.configuration.host = f"https://127.0.0.1:{cfg.apiserver_port(EXTRA_APISERVER)}"
        yield api
    finally:
        local_cluster.sup.stop(name)


def test_served_removed_version_alone_never_blocks(serving_removed_api: client.ApiClient) -> None:
    results = {r.name: r for r in check_removed_apis(serving_removed_api, V136, V137)}
    served = results["removed-apis/served"]
    # The apiserver really serves the removed version (the old check made this a blocker) ...
    assert (served.severity, served.passed) == ("info", True)
    assert f"ServiceCIDR {NET_V1BETA1} (removed in 1.37)" in served.summary
    # ... and since nothing uses it, nothing blocks the upgrade.
    assert [r.summary for r in results.values() if r.severity == "blocker"] == []
    manifests = as_json(results["removed-apis/manifests"])["evidence"]
    assert manifests["removed"] == [] and manifests["kinds_listed"] >= 40


def test_a_client_calling_the_removed_version_blocks_naming_it(
    local_cluster: LocalCluster, serving_removed_api: client.ApiClient
) -> None:
    # An admin client lists ServiceCIDRs through the removed version, as an old tool would.
    admin = api_client(local_cluster.admin_kubeconfig)
    admin.configuration.host = serving_removed_api.configuration.host
    listing = admin.call_api(
        f"/apis/{NET_V1BETA1}/servicecidrs", "GET", auth_settings=["BearerToken"], _preload_content=False
    )
    assert listing.status == 200
    events = _audited_deprecated_call(local_cluster, "servicecidrs")
    results = {r.name: r for r in check_removed_apis(serving_removed_api, V136, V137, audit_events=events)}
    # This apiserver counted the request; the audit log names the caller.
    requests = results["removed-apis/requests"]
    assert requests.severity == "blocker"
    assert f"servicecidrs.{NET_V1BETA1} (removed in 1.37)" in requests.summary
    audit = results["removed-apis/audit"]
    assert audit.severity == "blocker"
    assert f"-> servicecidrs.{NET_V1BETA1} (removed in 1.37)" in audit.summary
    assert results["removed-apis/served"].severity == "info"


def _audited_deprecated_call(
    cluster: LocalCluster, resource: str, timeout: float = 30
) -> list[dict[str, Any]]:
    """The apiservers' audit events, once one shows a deprecated call to ``resource`` (the log
    backend writes the ResponseComplete stage just after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        events = []
        for path in sorted((cluster.cfg.state_dir / "audit").glob("kube-apiserver-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by rotation
        if any(
            (e.get("annotations") or {}).get("k8s.io/deprecated") == "true"
            and (e.get("objectRef") or {}).get("resource") == resource
            for e in events
        ):
            return events
        assert time.monotonic() < deadline, f"no audited deprecated call to {resource} within {timeout}s"
        time.sleep(0.5)


# ---- PDBs and workloads -------------------------------------------------------------------------


def test_blocking_pdbs_named_with_their_pods(api: client.ApiClient, request_137: UpgradeRequest) -> None:
    result = as_json(check_pod_disruption_budgets(api, request_137))
    assert (result["name"], result["severity"], result["passed"]) == (
        "pod-disruption-budgets",
        "warning",
        False,
    )
    assert "shop/payments-api (maxUnavailable is 0" in result["summary"]
    assert "shop/ledger (minAvailable 1 with 1 pod" in result["summary"]
    blocking = {entry["pdb"]: entry for entry in result["evidence"]["blocking"]}
    assert set(blocking) == {"shop/ledger", "shop/payments-api"}
    assert len(blocking["shop/payments-api"]["pods"]) == 2
    assert all(pod.startswith("shop/payments-api-") for pod in blocking["shop/payments-api"]["pods"])


def test_workload_risks_named(api: client.ApiClient, request_137: UpgradeRequest) -> None:
    critical, single, stateful, emptydir = check_workloads(api, request_137)
    assert critical.severity == "info" and "Deployment shop/checkout-gateway" in critical.summary
    assert single.severity == "warning"
    assert "Deployment shop/ledger" in single.summary and "Pod shop/debug-shell" in single.summary
    assert stateful.severity == "info" and "StatefulSet shop/orders-db" in stateful.summary
    assert emptydir.severity == "warning" and "Deployment shop/image-cache (scratch)" in emptydir.summary
    # Labels named in the request make a workload critical; web has 6 replicas and a PDB.
    labelled = check_workloads(
        api, parse_request({"target_version": "1.37.2", "critical_labels": ["app=web"]})
    )[0]
    assert "Deployment shop/web" in json.dumps(labelled.evidence)


# ---- capacity -----------------------------------------------------------------------------------


def test_capacity_fits_on_the_sample_cluster(
    api: client.ApiClient, inventory: ClusterInventory, request_137: UpgradeRequest
) -> None:
    result = check_capacity(api, inventory, request_137)
    assert result.severity == "ok", result.summary


def test_batch_that_cannot_fit_is_a_blocker(
    api: client.ApiClient, reader: LocalControlPlaneReader, request_137: UpgradeRequest, capacity_hog: int
) -> None:
    inventory = collect_inventory(api, reader.versions())
    result = as_json(check_capacity(api, inventory, request_137))
    assert (result["name"], result["severity"], result["passed"]) == ("capacity", "blocker", False)
    short = result["evidence"]["short"]
    general = [b for b in plan_batches(inventory.nodes, request_137).batches if b.pool == "general"]
    assert [s["batch"] for s in short] == [b.index for b in general]
    assert all(s["pool"] == "general" and s["shortfall"]["cpu_millis"] >= capacity_hog for s in short)
    assert f"batch {general[0].index} (pool general: {general[0].nodes[0]}) is short" in result["summary"]
    assert f"shop/{HOG}-" in result["summary"] and f"needs {capacity_hog}m CPU" in result["summary"]


# ---- etcd and the window ------------------------------------------------------------------------


def test_etcd_checks_and_proven_backup(local_cluster: LocalCluster, tmp_path: Path) -> None:
    etcd = EtcdEndpoints.for_local_cluster(local_cluster.cfg)
    assert check_etcd_health(etcd).severity == "ok"
    assert check_etcd_consistency(etcd).severity == "ok"
    backup = as_json(check_etcd_backup(etcd, tmp_path / "pre-upgrade.db"))
    assert (backup["name"], backup["severity"]) == ("etcd-backup", "ok")
    proof = backup["evidence"]
    assert proof["restore_ok"] and (proof["restored_revision"], proof["restored_keys"]) == (
        proof["revision"],
        proof["keys"],
    )


def test_maintenance_window_against_the_plan(inventory: ClusterInventory) -> None:
    now = datetime.now(UTC)
    wide = parse_request(
        {"target_version": "1.37.2", "window_start": now, "window_end": now + timedelta(hours=8)}
    )
    plan = plan_batches(inventory.nodes, wide)
    assert check_maintenance_window(wide, plan, now).severity == "ok"
    narrow = wide.model_copy(update={"window_end": now + timedelta(hours=1)})
    result = check_maintenance_window(narrow, plan, now)
    assert result.severity == "warning" and f"({len(plan.batches)} batches)" in result.summary
