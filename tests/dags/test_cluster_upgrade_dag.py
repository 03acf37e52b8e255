"""The whole cluster upgrade end to end with dag.test(): control plane first, then workers,
and the control-plane rollback branch forced by the local platform's fault injection: an etcd
member whose data diverges after the etcd step (restored from the proven snapshot), and an
upgrade step that fails."""

from __future__ import annotations

import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from kubernetes import client

from slipway.airflow.stage_control_plane import CHAOS_CONFIGMAP
from slipway.etcd import EtcdEndpoints, check_consistency
from slipway.etcd.client import etcdctl
from slipway.etcd.snapshot import sha256_of
from slipway.kube import nodes as kube_nodes
from slipway.kube.readiness import workloads_available
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import ETCD_NEW, ETCD_OLD, KUBERNETES_NEW, KUBERNETES_OLD
from slipway.probe_process import DIRECT_USER_AGENT
from slipway.runrecord import NAMESPACE, record_name
from slipway.upgraders.controlplane import FAULT_DIVERGE_ETCD, FAULT_FAIL_STEP
from slipway.upgraders.local_controlplane import FAULT_MARKER_KEY
from tests.browser import ApiServer, Page, airflow_api_server, chromium, log_in
from tests.conftest import running_cluster
from tests.dags.dagrun import run_dag, verdict
from tests.probe_checks import assert_no_failures_but_etcd_drops, etcd_step_windows

pytestmark = pytest.mark.cluster

CONF = {
    "target_version": KUBERNETES_NEW,
    "approval": "never",
    "blocked_drain_policy": "quarantine",
    "force_bare_pods": True,
    "delete_emptydir_data": True,
    "soak_seconds": 3,
}


@pytest.fixture(scope="module")  # kept for the audit-log test at the end of this module
def cluster(airflow_db: Path) -> Iterator[LocalCluster]:
    # 7 workers: the never-evictable samples may quarantine up to 3 nodes (placement is the
    # scheduler's), and the last nodes drained must still have somewhere for their pods to go.
    with running_cluster("full", 500, 7) as local:
        yield local


def test_full_cluster_upgrade_control_plane_first_with_zero_failed_requests(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    state, record = run_dag("k8s_cluster_upgrade", CONF, cluster, tmp_path)
    assert state == "success", record.get("events")
    assert verdict(record) == "upgraded"
    versions = cluster.versions()
    for name in ("kube-apiserver-0", "kube-apiserver-1", "kube-controller-manager", "kube-scheduler"):
        assert versions[name] == KUBERNETES_NEW, name
    for i in range(cluster.cfg.etcd_members):
        assert versions[f"etcd-{i}"] == ETCD_NEW
    probe = record["control_plane"]["probe"]
    assert probe["requests"] > 0
    # Zero failed requests but for writes etcd dropped while its leader moved (a 500 no server
    # can avoid; the report names them).
    etcd_steps = etcd_step_windows(record)
    assert len(etcd_steps) == cluster.cfg.etcd_members
    assert_no_failures_but_etcd_drops(
        probe["failures"], probe["dropped_by_etcd"], probe["failure_samples"], etcd_steps
    )
    fresh = probe["new_connections"]  # each request on a connection of its own, through HAProxy
    assert fresh["requests"] > 0
    assert_no_failures_but_etcd_drops(
        fresh["failures"], fresh["dropped_by_etcd"], fresh["failure_samples"], etcd_steps
    )
    print(f"probe disruption: reused {probe['disruption_seconds']} s, new {fresh['disruption_seconds']} s")
    # The probe kept going to the end of the run: through the load balancer nothing failed on
    # either path but etcd's drops (all inside the control-plane window checked above), while
    # each apiserver asked directly was seen out of service during its own restart.
    whole = record["probe"]
    for path in ("reused", "new"):
        figures = whole["paths"][path]
        assert figures["failures"] == figures["dropped_by_etcd"], (path, figures)
    assert whole["paths"]["reused"]["requests"] > probe["requests"]  # the workers were measured too
    assert set(whole["direct"]) == {"kube-apiserver-0", "kube-apiserver-1"}
    for name, figures in whole["direct"].items():
        assert figures["failures"] > 0 and figures["disruption_seconds"] > 0, (name, figures)
    assert len(whole["series"]) > 1
    print(f"probe over the whole run: {whole['paths']}; directly: {whole['direct']}")
    quarantined = set(record["worker_phase"]["quarantined"])
    for node in kube_nodes.list_workers(cluster.admin_client()):
        if node.metadata.name not in quarantined:
            assert kube_nodes.kubelet_version(node) == KUBERNETES_NEW
            assert not kube_nodes.is_cordoned(node)
    assert workloads_available(cluster.admin_client()) == []
    # What the run did to a node, where the engineer looks: `kubectl describe node`.
    passed = [n for b in record["batches"] if b["state"] == "passed" for n in b["nodes"]]
    upgraded = next(n for n in passed if n not in quarantined)
    described = _kubectl(cluster, "describe", "node", upgraded).split("Events:")[-1]
    for reason in ("SlipwayCordoned", "SlipwayDrainStarted", "SlipwayDrained", "SlipwayUpgraded"):
        assert reason in described, described
    assert "SlipwayUncordoned" in described, described
    assert "slipway.dev/upgrader" in described
    # The run's milestones, on its own object: `kubectl describe` of the run record.
    on_record = _kubectl(cluster, "describe", "configmap", record_name(record["run_id"]), "-n", NAMESPACE)
    on_record = on_record.split("Events:")[-1]
    for reason in ("SlipwayRunStarted", "SlipwayControlPlaneVerified", "SlipwayBatchOpened"):
        assert reason in on_record, on_record
    for node in quarantined:  # left cordoned, and the node says why
        assert "SlipwayQuarantined" in _kubectl(cluster, "describe", "node", node).split("Events:")[-1]
    kinds = [e["kind"] for e in record["events"]]
    # Control plane first: every component before the first worker batch opened.
    assert kinds.index("control-plane-verified") < kinds.index("batch-opened")
    assert record["backup"]["restore_ok"]
    # etcd defragmented after the proven backup, before any component restarted, every member once.
    assert kinds.index("backup-proven") < kinds.index("etcd-defragmented") < kinds.index("component-upgraded")
    defrag = record["control_plane"]["defragmentation"]
    assert sorted(d["member"] for d in defrag) == [f"etcd-{i}" for i in range(cluster.cfg.etcd_members)]
    # The performance baseline was taken before the upgrade and every batch was compared with
    # it (a short batch may see too few requests of a kind to judge, but not every batch).
    assert record["latency"]["baseline"]["apiserver"]
    passed = [b for b in record["batches"] if b["state"] == "passed"]
    assert all("signals" in b["verdict"]["latency"] for b in passed)
    assert any(b["verdict"]["latency"]["signals"] for b in passed)
    report = Path(record["report"]["markdown"]).read_text()
    assert "**upgraded**" in report
    assert f"**{probe['failures']} failed" in report
    assert "etcd defragmented before the upgrade" in report
    assert "API probe over the whole run: reused connections" in report


def test_etcd_fault_after_the_etcd_step_restores_the_proven_snapshot_once_and_ends_red(
    small_cluster: LocalCluster, tmp_path: Path
) -> None:
    admin = small_cluster.admin_client()
    core = client.CoreV1Api(admin)
    core.create_namespaced_config_map("default", {"metadata": {"name": "written-before"}, "data": {"k": "v"}})
    # The local platform's game-day fault: right after the etcd step, etcd-1's data diverges.
    _chaos(small_cluster, {FAULT_DIVERGE_ETCD: "etcd-1"})
    state, record = _timed_run(small_cluster, tmp_path)
    assert state == "failed"
    assert verdict(record) == "rolled-back"
    kinds = [e["kind"] for e in record["events"]]
    # Seen by the check after the etcd step; no apiserver moved on the diverged data.
    assert kinds.index("fault-injected") < kinds.index("etcd-data-check-failed")
    assert kinds.index("etcd-data-check-failed") < kinds.index("control-plane-verification-failed")
    failed_check = record["control_plane"]["etcd_checks"][0]
    assert failed_check["after"] == "the etcd step" and not failed_check["ok"]
    assert any("etcd-1" in p and "different data" in p for p in failed_check["problems"])
    assert sorted(record["control_plane"]["steps"]) == ["etcd-0", "etcd-1", "etcd-2"]
    # An incident first, then exactly one restore, from the proven snapshot, digest checked.
    declared = [e for e in record["events"] if e["kind"] == "incident-declared"]
    assert [e["severity"] for e in declared] == ["SEV1"]
    assert (
        kinds.index("incident-declared") < kinds.index("etcd-restore-started") < kinds.index("etcd-restored")
    )
    assert kinds.count("etcd-restore-started") == kinds.count("etcd-restored") == 1
    backup, restore = record["backup"], record["etcd_restore"]
    assert restore["snapshot"] == backup["path"] and restore["digest_verified"]
    assert restore["sha256"] == backup["sha256"] == sha256_of(Path(backup["path"]))
    assert restore["result"]["etcd_version"] == ETCD_OLD
    assert stat.S_IMODE(Path(backup["path"]).stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(backup["path"]).parent.stat().st_mode) == 0o700
    set_aside = list((small_cluster.cfg.state_dir / "etcd").glob("*.before-restore-*"))
    assert len(set_aside) == small_cluster.cfg.etcd_members  # one restore: one old data dir per member
    # The data is back: what was written before the upgrade is there, the fault's marker is not,
    # every member holds the same data, and the whole control plane runs the old versions.
    assert core.read_namespaced_config_map("written-before", "default").data == {"k": "v"}
    etcd = EtcdEndpoints.for_local_cluster(small_cluster.cfg, ETCD_OLD)
    consistency = check_consistency(etcd)
    assert consistency.consistent and len(set(consistency.hashes.values())) == 1, consistency.problems
    assert not etcdctl(etcd, ["get", FAULT_MARKER_KEY], what="fault marker").data.get("kvs")
    _assert_old_control_plane(small_cluster)
    assert "batches" not in record  # the worker phase never started
    report = Path(record["report"]["markdown"]).read_text()
    assert "Incident" in report and "etcd-restored" in report


def test_a_failed_upgrade_step_takes_the_rollback_branch_with_an_incident(
    small_cluster: LocalCluster, tmp_path: Path
) -> None:
    # The apiserver step fails after its first instance moved (a game-day fault on the local platform).
    _chaos(small_cluster, {FAULT_FAIL_STEP: "kube-apiserver"})
    state, record = _timed_run(small_cluster, tmp_path)
    assert state == "failed"
    assert verdict(record) == "rolled-back"
    failures = record["control_plane"]["step_failures"]
    assert list(failures) == ["kube-apiserver"]
    assert failures["kube-apiserver"]["after"] == ["kube-apiserver-0"]
    kinds = [e["kind"] for e in record["events"]]
    assert kinds.index("control-plane-step-failed") < kinds.index("control-plane-verification-failed")
    assert kinds.index("control-plane-verification-failed") < kinds.index("incident-declared")
    assert kinds.index("incident-declared") < kinds.index("control-plane-rolled-back")
    assert any("upgrade step kube-apiserver failed" in p for p in record["control_plane"]["verification"])
    declared = [e for e in record["events"] if e["kind"] == "incident-declared"]
    assert [e["severity"] for e in declared] == ["SEV1"]
    # etcd's data was checked after the etcd step and after its members went back; no restore was needed.
    checks = record["control_plane"]["etcd_checks"]
    assert [(c["after"], c["ok"]) for c in checks] == [("the etcd step", True), ("the rollback", True)]
    assert "etcd-restored" not in kinds and "etcd_restore" not in record
    _assert_old_control_plane(small_cluster)
    assert "batches" not in record
    # Warnings on the run's own object, read as kubectl reads them (core/v1 Events).
    selector = f"involvedObject.name={record_name(record['run_id'])}"
    listed = client.CoreV1Api(small_cluster.admin_client()).list_namespaced_event(
        NAMESPACE, field_selector=selector
    )
    warnings = {e.reason for e in listed.items if e.type == "Warning"}
    assert {"SlipwayControlPlaneStepFailed", "SlipwayControlPlaneRolledBack"} <= warnings, warnings


def test_a_rejected_approval_ends_rejected_with_who_and_when_and_nothing_changed(
    small_cluster: LocalCluster, tmp_path: Path
) -> None:
    """approval=always parks the run in Airflow's Required Actions; an on-call engineer, signed
    in to a real api-server on the same metadata database, reads the risk reasons on the task's
    Required Actions page in chromium and clicks Reject; the run (dag.test() in this process)
    ends with the verdict ``rejected`` — who and when recorded — before any backup or component
    moved."""
    answered: list[str] = []
    seen: dict[str, str] = {}
    # The api-server reads the same artefact store as the run (the report view).
    served = airflow_api_server(tmp_path / "api-server", extra_env={"SLIPWAY_REPORTS_DIR": str(tmp_path)})
    with served as server, chromium(tmp_path / "chromium") as devtools:
        page = Page(devtools)
        log_in(page, server)
        token = server.token()
        earlier = _pending_actions(server, token)  # other runs' (and the HTTP client's imports done)
        answerer = threading.Thread(
            target=_reject_in_the_browser,
            args=(page, server, token, earlier, answered, seen, tmp_path),
            daemon=True,
        )
        answerer.start()
        state, record = run_dag("k8s_cluster_upgrade", CONF | {"approval": "always"}, small_cluster, tmp_path)
        answerer.join(timeout=60)
    assert answered == ["approve_upgrade"]
    assert f"Response received at {record['approval']['at'][:10]}" in seen["answered"]
    assert f"from {server.user}" in seen["answered"]
    assert state == "failed"  # ends red, as a refusal does; the verdict tells it apart
    assert _tries("approve_upgrade") == 1  # a rejection is final: never asked again by a retry
    assert verdict(record) == "rejected"
    assert record["risk"]["decision"] == "approval"
    assert record["approval"]["outcome"] == "approval-rejected"
    assert record["approval"]["by"] == "oncall-engineer"
    assert record["approval"]["at"]
    kinds = [e["kind"] for e in record["events"]]
    assert "approval-rejected" in kinds
    assert "backup" not in record and "backup-proven" not in kinds
    assert "component-upgraded" not in kinds and "batches" not in record
    _assert_old_control_plane(small_cluster)
    assert "**rejected**" in Path(record["report"]["markdown"]).read_text()
    # What the engineer read before deciding: the subject, both choices and every risk reason.
    assert f"Approve the Kubernetes upgrade to {CONF['target_version']}" in seen["asked"]
    assert "Approve\nReject" in seen["asked"]
    assert "the request asks for approval=always" in record["risk"]["reasons"]
    missing = [reason for reason in record["risk"]["reasons"] if reason not in seen["asked"]]
    assert not missing, f"risk reasons not on the approval page: {missing}"
    # Its report link showed the run so far: waiting, with the risk assessment.
    assert "Risk assessment" in seen["report"] and "Preflight checks" in seen["report"]


def _tries(task_id: str) -> int:
    """How many tries the newest run's ``task_id`` took."""
    with create_session(scoped=False) as session:
        ti = (
            session.query(TaskInstance)
            .filter(TaskInstance.task_id == task_id)
            .order_by(TaskInstance.start_date.desc())
            .first()
        )
        assert ti is not None
        return int(ti.try_number)


def _pending_actions(server: ApiServer, token: str) -> list[tuple[str, str, str]]:
    """(dag, run, task) of each Required Action waiting for an answer, as the api-server lists them."""
    found = server.get("/api/v2/dags/~/dagRuns/~/hitlDetails?response_received=false", token)
    return [
        (ti["dag_id"], ti["dag_run_id"], ti["task_id"])
        for ti in (detail["task_instance"] for detail in found["hitl_details"])
    ]


def _reject_in_the_browser(
    page: Page,
    server: ApiServer,
    token: str,
    earlier: list[tuple[str, str, str]],
    answered: list[str],
    seen: dict[str, str],
    shots: Path,
    timeout: float = 900.0,
) -> None:
    """Wait until the api-server lists a new Required Action (not in ``earlier``); then, in
    chromium as the signed-in user, open that task's Required Actions page, keep what it shows
    (``seen``, and screenshots in ``shots``), click Reject and wait for the page to show the
    answer.

    It asks the api-server over HTTP, never the ORM: the ORM's first query in a thread imports
    every model (SQLAlchemy's ``before_configured`` hook) and deadlocks on the import lock with
    dag.test() importing in the main thread (seen: both threads waiting, nothing run)."""
    deadline = time.monotonic() + timeout
    try:
        while not (pending := [a for a in _pending_actions(server, token) if a not in earlier]):
            assert time.monotonic() < deadline, "no Required Action listed"
            time.sleep(0.5)  # the interval between two looks at the list
        ((dag_id, run_id, task_id),) = pending
        run = quote(run_id, safe="")  # manual__2026-...+00:00
        required_actions = f"{server.url}/dags/{dag_id}/runs/{run}/tasks/{task_id}/required_actions"
        page.goto(required_actions)
        page.wait_for_text("Reject", timeout=60)
        seen["asked"] = page.text()
        page.screenshot(shots / "approval-asked.png")
        # The body links to the report so far (plan, checks, risk), written as the approval began.
        links = page.evaluate("[...document.querySelectorAll('a')].map(a => a.href)")
        (report,) = [link for link in links if "/slipway/reports/" in link]
        page.goto(report)
        page.wait_for_text("awaiting-approval", timeout=60)
        seen["report"] = page.text()
        page.screenshot(shots / "approval-report.png")
        page.goto(required_actions)
        page.wait_for_text("Reject", timeout=60)
        page.click("Reject", "button")
        page.wait_for_text("Response received at", timeout=60)
        seen["answered"] = page.text()
        page.screenshot(shots / "approval-rejected.png")
        answered.append(task_id)
    except Exception as err:  # shown by the test's assertion on ``answered``
        answered.append(f"answer failed: {err!r}")
        raise


@pytest.fixture
def small_cluster(airflow_db: Path) -> Iterator[LocalCluster]:
    # The rollback runs never reach the workers: 3 keep the cluster quick to start.
    with running_cluster("cprollback", 700, 3) as local:
        yield local


def _chaos(cluster: LocalCluster, data: dict[str, str]) -> None:
    client.CoreV1Api(cluster.admin_client()).create_namespaced_config_map(
        "slipway-system", {"metadata": {"name": CHAOS_CONFIGMAP}, "data": data}
    )


def _timed_run(cluster: LocalCluster, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    started = time.monotonic()
    state, record = run_dag("k8s_cluster_upgrade", CONF, cluster, tmp_path)
    print(
        f"dag.test() of k8s_cluster_upgrade took {time.monotonic() - started:.0f} s"
    )  # reported, not asserted
    return state, record


def _kubectl(cluster: LocalCluster, *args: str) -> str:
    """The official kubectl of the kit, as the admin: what an engineer at the node sees."""
    from slipway.localcluster.binaries import binary
    from slipway.localcluster.kit import kubernetes_release

    kubectl = binary(kubernetes_release(KUBERNETES_NEW), "kubectl")
    out = subprocess.run(
        [str(kubectl), f"--kubeconfig={cluster.admin_kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


def _assert_old_control_plane(cluster: LocalCluster) -> None:
    versions = cluster.versions()
    for name in ("kube-apiserver-0", "kube-apiserver-1", "kube-controller-manager", "kube-scheduler"):
        assert versions[name] == KUBERNETES_OLD, name
    for i in range(cluster.cfg.etcd_members):
        assert versions[f"etcd-{i}"] == ETCD_OLD
    assert client.VersionApi(cluster.admin_client()).get_code().git_version == f"v{KUBERNETES_OLD}"
    for node in kube_nodes.list_workers(cluster.admin_client()):
        assert kube_nodes.kubelet_version(node) == KUBERNETES_OLD
        assert not kube_nodes.is_cordoned(node)


# Grants of orchestrator-rbac.yaml the full upgrade above does not need, each with the code path
# that does. Every other grant must be used by a request in the apiservers' audit log.
GRANTS_USED_ELSEWHERE = {
    "ClusterRole slipway-orchestrator: get apps/deployments": (
        "health checks of kind deployment between batches (slipway.validation.health)"
    ),
    "ClusterRole slipway-orchestrator: watch core/nodes": (
        "slipway.kube.readiness.wait_node_ready watches a node that is not Ready yet (blocking "
        "callers, tests/integration/test_nodes.py); the DAG waits through its deferrable trigger"
    ),
}
# Paths the default roles system:discovery and system:public-info-viewer open to every user.
PUBLIC_PATHS = ("/api", "/apis", "/version", "/readyz", "/livez", "/healthz", "/openapi")


def test_audit_log_shows_the_orchestrator_allowed_everything_and_using_every_grant(
    cluster: LocalCluster,
) -> None:
    """The real apiservers' audit log of the full upgrade above (same cluster): every request of
    the orchestrator identity was allowed, every one is granted by orchestrator-rbac.yaml itself
    (or is public), and every grant was needed by a request or is listed with its code path."""
    from collections import Counter

    from slipway.kube.client import load_manifest
    from slipway.localcluster import audit
    from slipway.localcluster.cluster import ORCHESTRATOR_USER, RBAC_MANIFEST

    found = audit.user_requests(cluster.cfg, ORCHESTRATOR_USER)
    sizes = sum(f.stat().st_size for f in audit.log_files(cluster.cfg))
    print(f"audit log: {len(found)} orchestrator requests, {sizes / 2**20:.1f} MiB")  # reported
    assert any(r.verb == "create" and r.subresource == "eviction" for r in found)  # the upgrade ran here
    # The probe's direct paths ask each apiserver as soon as it accepts connections again, before
    # its RBAC caches are synced: it answers 403 (kubernetes#92506) until /readyz, which the load
    # balancer waits for. Those are that instance's outage, measured as such; only probe reads
    # and writes in the probe's own namespace, never anything through the load balancer.
    starting = [r for r in audit.refused(found) if r.user_agent.startswith(DIRECT_USER_AGENT)]
    assert all(r.namespace == "slipway-probe" and r.resource == "configmaps" for r in starting), starting
    print(f"audit log: {len(starting)} direct-probe requests refused by a starting apiserver")
    refused = Counter(r.describe() for r in audit.refused(found) if r not in starting)
    assert not refused, refused.most_common(20)
    grants = audit.grants(load_manifest(RBAC_MANIFEST))
    assert set(GRANTS_USED_ELSEWHERE) <= {g.describe() for g in grants}, "allowlist names a grant no more"
    unused = {g.describe() for g in audit.unused(grants, found)}
    assert unused <= set(GRANTS_USED_ELSEWHERE), sorted(unused - set(GRANTS_USED_ELSEWHERE))
    uncovered = {
        r.describe()
        for r in audit.uncovered(grants, found)
        if not (r.non_resource and r.path.startswith(PUBLIC_PATHS))
    }
    assert not uncovered, sorted(uncovered)
