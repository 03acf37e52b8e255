"""The fault matrix: each fault injected into a real operation run by Slipway's own code on
the real local HA cluster, the operation finished or failed, run again where the product
would retry, then every invariant checked (slipway.validation.invariants) and figures taken:
outcome, seconds from the fault to a recovered cluster, and the API probe's failed requests
through the load balancer over the whole operation.

One module-scoped cluster serves every fault (each leaves it healthy); the matrix is written
to ``fault-matrix.md`` in the cluster's state root and printed at the end (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway import lease
from slipway.airflow.triggers import NodesReadyTrigger
from slipway.etcd.client import EtcdEndpoints, EtcdError
from slipway.etcd.store import SnapshotStore
from slipway.inventory import LocalControlPlaneReader
from slipway.kube import nodes as kube_nodes
from slipway.kube.drain import DrainBlocked, DrainOptions, DrainResult, drain_node, plan_drain
from slipway.kube.readiness import wait_node_ready
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from slipway.notifications import NotificationError, send_webhook
from slipway.runrecord import RunRecord
from slipway.upgraders.controlplane import ComponentRef
from slipway.upgraders.local_controlplane import LocalControlPlaneUpgrader
from slipway.upgraders.nodes import NOT_READY, SIMULATE_LABEL, LocalInPlaceUpgrader
from slipway.validation.health import check_prometheus
from slipway.validation.invariants import Checked, PdbWatcher, Sentinels, check_invariants
from slipway.validation.probe import ApiProbe, ProbeReport, ProbeSettings
from slipway.workers import rollback_batch
from tests.conftest import REPO, running_cluster
from tests.localhttp import QuietHandler, serving

pytestmark = pytest.mark.cluster

PORT_OFFSET = 400
WORKERS = 5
KUBELET_OLD = "1.35.4"  # one minor behind the control plane: the node upgrade has work to do
TARGET = KUBERNETES_OLD
NS = "fault-load"
LOAD = "fault-load"
LOAD_REPLICAS = 8
STUCK = "fault-stuck"
PROBE_BASELINE = 20
OPTS = DrainOptions(timeout_seconds=180, delete_emptydir_data=True, grace_period_seconds=0)
BLOCKED_OPTS = DrainOptions(timeout_seconds=15, delete_emptydir_data=True, grace_period_seconds=0)
LEASE_SECONDS = 900
FREE_BYTES = 16 * 1024  # room for the run folder's manifest, not for a snapshot

ROWS: list[dict[str, Any]] = []


# ---- the cluster and its baseline ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    started = time.monotonic()
    with running_cluster("faults-matrix", PORT_OFFSET, WORKERS, kubelet_version=KUBELET_OLD) as c:
        core = client.CoreV1Api(c.admin_client())
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
        wait_until(
            f"default service account in {NS}",
            lambda: bool(core.list_namespaced_service_account(NS).items),
            60,
        )
        yield c
        _write_matrix(c, time.monotonic() - started)


@pytest.fixture(scope="module")
def etcd(cluster: LocalCluster) -> EtcdEndpoints:
    return EtcdEndpoints.for_local_cluster(cluster.cfg)


@dataclass
class Run:
    """One operation under a fault: its run id, the lease it holds, the probe and PDB watch."""

    cluster: LocalCluster
    etcd: EtcdEndpoints
    fault: str
    run_id: str = ""
    sentinels: Sentinels = field(default_factory=Sentinels)
    probe: ApiProbe | None = None
    watcher: PdbWatcher | None = None
    report: ProbeReport | None = None
    fault_at: float = 0.0
    recovered_at: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def admin(self) -> client.ApiClient:
        return self.cluster.admin_client()

    @property
    def orchestrator(self) -> client.ApiClient:
        return self.cluster.orchestrator_client()

    @property
    def holder(self) -> str:
        return lease.holder_for("fault-matrix", self.run_id)

    def inject(self) -> None:
        self.fault_at = time.monotonic()

    def recovered(self) -> None:
        self.recovered_at = time.monotonic()


@pytest.fixture
def run(cluster: LocalCluster, etcd: EtcdEndpoints, request: pytest.FixtureRequest) -> Iterator[Run]:
    """Sentinels in etcd, the lease, a PDB watch and the API probe around one test's operation."""
    fault = request.node.name.removeprefix("test_")
    r = Run(cluster, etcd, fault, run_id=f"fault-{fault.replace('_', '-')}-{os.getpid()}")
    r.sentinels = Sentinels.write(etcd, fault)
    lease.acquire(r.orchestrator, r.holder, LEASE_SECONDS)
    r.probe = ApiProbe.from_kubeconfig(cluster.admin_kubeconfig, ProbeSettings(rate_per_second=10.0))
    r.probe.start()
    wait_until(
        "probe baseline", lambda: r.probe is not None and r.probe.count("baseline") >= PROBE_BASELINE, 60
    )
    r.probe.end_baseline()
    r.watcher = PdbWatcher(r.admin).__enter__()
    try:
        yield r
    finally:
        if r.watcher is not None:
            r.watcher.__exit__(None, None, None)
        if r.probe is not None and r.report is None:
            r.report = r.probe.stop()
        _release(r)


def _release(r: Run) -> None:
    with contextlib.suppress(lease.LeaseError):
        lease.release(r.orchestrator, r.holder)


def finish(
    r: Run, outcome: str, *, record: dict[str, Any] | None = None, target: str | None = None
) -> list[str]:
    """Stop the probe, release the lease, check every invariant, add the matrix row."""
    assert r.probe is not None and r.watcher is not None
    r.watcher.__exit__(None, None, None)
    r.report = r.probe.stop()
    _release(r)
    violations = check_invariants(
        r.admin,
        Checked(
            reader=LocalControlPlaneReader(r.cluster),
            etcd=r.etcd,
            sentinels=r.sentinels,
            record=record,
            target=target,
            watcher=r.watcher,
        ),
    )
    recover = round(r.recovered_at - r.fault_at, 1) if r.recovered_at and r.fault_at else None
    ROWS.append(
        {
            "fault": r.fault,
            "outcome": outcome,
            "invariants": "held" if not violations else "; ".join(violations),
            "recover_s": recover,
            "requests": r.report.requests,
            "failed": r.report.failures,
            "retried": r.report.retries,
            "pdb_events": r.watcher.events,
            "notes": "; ".join(r.notes),
        }
    )
    print(json.dumps(ROWS[-1] | {"failure_samples": [e.error for e in r.report.failure_samples[:3]]}))
    return violations


# ---- load and targets ---------------------------------------------------------------------------


def _load_deployment(node: str, replicas: int = LOAD_REPLICAS, name: str = LOAD) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "affinity": {
                        "nodeAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "preference": {
                                        "matchExpressions": [
                                            {
                                                "key": "kubernetes.io/hostname",
                                                "operator": "In",
                                                "values": [node],
                                            }
                                        ]
                                    },
                                }
                            ]
                        }
                    },
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.local/fault-load:1.0",
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                        }
                    ],
                },
            },
        },
    }


def _pdb(name: str, **budget: Any) -> client.V1PodDisruptionBudget:
    return client.V1PodDisruptionBudget(
        metadata=client.V1ObjectMeta(name=name, namespace=NS),
        spec=client.V1PodDisruptionBudgetSpec(
            selector=client.V1LabelSelector(match_labels={"app": name}), **budget
        ),
    )


def _drainable_worker(api: client.ApiClient) -> str:
    """A worker nothing blocks from draining (the samples hold PDBs that never allow eviction)."""
    for node in kube_nodes.list_workers(api):
        name = node.metadata.name
        if kube_nodes.is_cordoned(node) or kube_nodes.is_quarantined(node):
            continue
        plan = plan_drain(api, name, OPTS)
        if not plan.refuse and not plan.blocked:
            return str(name)
    raise AssertionError("no worker can be drained without a blocker")


@pytest.fixture
def load(cluster: LocalCluster) -> Iterator[str]:
    """A Deployment of small pods preferring one drainable worker, under a PDB of maxUnavailable 1:
    draining that worker takes one eviction at a time, so faults land mid-drain. Requested before
    ``run``, so the PDB watch starts on a settled workload."""
    admin = cluster.admin_client()
    node = _drainable_worker(admin)
    apps, policy, core = client.AppsV1Api(admin), client.PolicyV1Api(admin), client.CoreV1Api(admin)
    apps.create_namespaced_deployment(NS, _load_deployment(node))

    def ready() -> bool:
        d = apps.read_namespaced_deployment(LOAD, NS)
        return (d.status.available_replicas or 0) == LOAD_REPLICAS

    wait_until(f"{LOAD} available", ready, 120, interval=1.0)
    policy.create_namespaced_pod_disruption_budget(NS, _pdb(LOAD, max_unavailable=1))
    _wait_pdb_settled(policy, LOAD)
    try:
        yield node
    finally:
        apps.delete_namespaced_deployment(LOAD, NS)
        policy.delete_namespaced_pod_disruption_budget(LOAD, NS)
        wait_until(f"{LOAD} pods gone", lambda: not core.list_namespaced_pod(NS).items, 120, interval=1.0)


@pytest.fixture
def stuck(cluster: LocalCluster) -> Iterator[str]:
    """One pod bound to a drainable worker under a PDB of minAvailable 1: never evictable."""
    admin = cluster.admin_client()
    node = _drainable_worker(admin)
    apps, policy, core = client.AppsV1Api(admin), client.PolicyV1Api(admin), client.CoreV1Api(admin)
    body = _load_deployment(node, replicas=1, name=STUCK)
    body["spec"]["template"]["spec"]["affinity"]["nodeAffinity"] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
            ]
        }
    }
    apps.create_namespaced_deployment(NS, body)
    wait_until(
        f"{STUCK} available",
        lambda: (apps.read_namespaced_deployment(STUCK, NS).status.available_replicas or 0) == 1,
        120,
        interval=1.0,
    )
    policy.create_namespaced_pod_disruption_budget(NS, _pdb(STUCK, min_available=1))
    _wait_pdb_settled(policy, STUCK)
    try:
        yield node
    finally:
        apps.delete_namespaced_deployment(STUCK, NS)
        policy.delete_namespaced_pod_disruption_budget(STUCK, NS)
        kube_nodes.uncordon(admin, node, "fault-matrix-cleanup", force=True)  # lifts the quarantine
        wait_until(f"{STUCK} pods gone", lambda: not core.list_namespaced_pod(NS).items, 120, interval=1.0)


def _wait_pdb_settled(policy: client.PolicyV1Api, name: str) -> None:
    def settled() -> bool:
        status = policy.read_namespaced_pod_disruption_budget(name, NS).status
        return bool(
            status
            and status.desired_healthy is not None
            and status.expected_pods
            and status.current_healthy >= status.desired_healthy
        )

    wait_until(f"PDB {name} status computed", settled, 60, interval=0.5)


def _cordoned(api: client.ApiClient, node: str) -> bool:
    return kube_nodes.is_cordoned(client.CoreV1Api(api).read_node(node))


def upgrade_worker(r: Run, node: str, *, ready_timeout: float = 120) -> DrainResult:
    """The product's per-node step: drain (as the orchestrator), upgrade, wait Ready, uncordon."""
    result = drain_node(r.orchestrator, node, OPTS, run_id=r.run_id)
    LocalInPlaceUpgrader(r.admin).upgrade_node(node, TARGET)
    if not wait_node_ready(r.admin, node, ready_timeout):
        raise NodeNeverReady(node)
    kube_nodes.uncordon(r.orchestrator, node, r.run_id)
    return result


class NodeNeverReady(RuntimeError):
    pass


def with_retry(r: Run, operation: Callable[[], Any], attempts: int = 3) -> tuple[Any, int]:
    """Run ``operation`` as an Airflow task with retries would: again after an error."""
    for attempt in range(1, attempts + 1):
        try:
            return operation(), attempt
        except Exception as err:  # any task error is retried
            r.notes.append(f"attempt {attempt}: {_describe(err)}")
            if attempt == attempts:
                raise
            r.cluster.wait_ready(120)
    raise AssertionError("unreachable")


def _describe(err: Exception) -> str:
    if isinstance(err, ApiException):
        try:
            message = json.loads(err.body or "{}").get("message", "")
        except ValueError:
            message = (err.body or "")[:200]
        return f"HTTP {err.status} {err.reason}: {message[:300]}"
    return f"{type(err).__name__}: {str(err)[:200]}"


def _in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


# ---- the faults ---------------------------------------------------------------------------------


def _fill(path: Path, leave: int) -> None:
    """Fill the file system holding ``path`` until only about ``leave`` bytes are free."""
    stats = os.statvfs(path.parent)
    free = stats.f_bavail * stats.f_frsize
    with path.open("wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


def test_h_snapshot_folder_full(run: Run, tmp_path: Path) -> None:
    folder = tmp_path / "snapshots"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    store = SnapshotStore(folder)
    filler = folder / "filler"
    try:
        _fill(filler, leave=FREE_BYTES)
        run.inject()
        with pytest.raises((EtcdError, OSError)) as err:
            store.take(run.etcd, run.run_id, 1)
        left = sorted(p.name for p in folder.rglob("*") if p.is_file() and p != filler)
        run.notes.append(f"refused: {type(err.value).__name__}: …{str(err.value)[-120:]}")
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    # Nothing half-written stays behind to pass for a backup (only the run's manifest).
    assert not [name for name in left if name.endswith(".db") or ".saving" in name], left
    # The retry with room again takes attempt 1: the refused save left nothing to collide with.
    proof = store.take(run.etcd, run.run_id, 1)
    run.recovered()
    assert proof.keys > 0
    assert not finish(run, "backup refused (etcdctl: no space), nothing written; retry with room succeeded")


def test_f_webhook_down(run: Run) -> None:
    token, password = "tok-" + run.run_id, "pw-" + run.run_id
    with serving(QuietHandler) as base:
        url = f"http://user:{password}@{base.removeprefix('http://')}/hook"
    run.inject()  # the server is gone: nothing listens on that port any more
    with pytest.raises(NotificationError) as err:
        send_webhook(url, {"text": f"run {run.run_id} finished"}, token=token)
    message = str(err.value)
    assert "unreachable" in message
    assert token not in message and password not in message, message
    record = RunRecord(run.orchestrator, run.run_id)
    record.event("notify-failed", message)  # what the notify task records
    saved = json.dumps(record.load())
    assert token not in saved and password not in saved
    run.recovered()
    assert not finish(
        run, "notify failed visibly (NotificationError), no secret in message or record", record=record.load()
    )


class _Prometheus(QuietHandler):
    def do_GET(self) -> None:
        body = json.dumps(
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)


def test_g_prometheus_down(run: Run) -> None:
    with serving(_Prometheus) as base:
        assert check_prometheus(base, "up", 1, None) == []
    run.inject()
    problems = check_prometheus(base, "up", 1, None)
    run.recovered()
    assert problems and "health check query 'up'" in problems[0], problems
    run.notes.append(problems[0][:100])
    assert not finish(run, "failed check (a list of problems), no exception")


def test_j_pdb_never_allows_eviction(stuck: str, run: Run) -> None:
    node = stuck
    apps = client.AppsV1Api(run.admin)
    run.inject()
    for attempt in (1, 2):  # the retry meets the same budget and blocks the same way
        with pytest.raises(DrainBlocked) as err:
            drain_node(run.orchestrator, node, BLOCKED_OPTS, run_id=run.run_id)
        assert [b.pdb for b in err.value.blockers] == [f"{NS}/{STUCK}"], err.value.blockers
        # The blocked-drain policy "quarantine": the node stays cordoned on purpose.
        kube_nodes.quarantine(run.orchestrator, node, f"drain blocked: {err.value.blockers[0].reason}")
        run.notes.append(f"attempt {attempt}: blocked by {NS}/{STUCK}")
    run.recovered()
    assert (apps.read_namespaced_deployment(STUCK, NS).status.available_replicas or 0) == 1
    assert not finish(run, "drain blocked by the PDB, node quarantined (left cordoned on purpose)")


def test_i_node_never_ready(run: Run) -> None:
    admin, orchestrator = run.admin, run.orchestrator
    node = _drainable_worker(admin)
    before = kube_nodes.kubelet_version(client.CoreV1Api(admin).read_node(node))
    record = RunRecord(orchestrator, run.run_id)
    record.update(
        batches=[{"index": 0, "nodes": [node], "state": "running", "from_versions": {node: before}}]
    )
    client.CoreV1Api(admin).patch_node(node, {"metadata": {"labels": {SIMULATE_LABEL: NOT_READY}}})
    run.inject()
    with pytest.raises(NodeNeverReady):
        upgrade_worker(run, node, ready_timeout=20)
    # The batch's validation fails and its rollback branch runs (twice: it is idempotent).
    record.update(batches=[record.get("batches")[0] | {"state": "failed"}])
    upgrader = LocalInPlaceUpgrader(admin)
    rollback_batch(orchestrator, record, 0, upgrader)
    rollback_batch(orchestrator, record, 0, upgrader)
    assert wait_node_ready(admin, node, 120)
    run.recovered()
    assert not _cordoned(admin, node)
    violations = finish(
        run,
        "node NotReady after upgrade; batch rolled back, node Ready at its old version",
        record=record.load(),
        target=TARGET,
    )
    assert not violations


def test_c_drain_process_killed(load: str, run: Run) -> None:
    node = load
    script = (
        "import sys\n"
        "from slipway.kube.client import api_client\n"
        "from slipway.kube.drain import DrainOptions, drain_node\n"
        "drain_node(api_client(sys.argv[1]), sys.argv[2], DrainOptions(timeout_seconds=180, "
        "delete_emptydir_data=True, grace_period_seconds=0), run_id=sys.argv[3])\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'include'}:{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(run.cluster.orchestrator_kubeconfig), node, run.run_id], env=env
    )
    try:
        core = client.CoreV1Api(run.admin)
        total = len(core.list_namespaced_pod(NS, field_selector=f"spec.nodeName={node}").items)
        wait_until(
            "drain under way",
            lambda: (
                (
                    _cordoned(run.admin, node)
                    and len(core.list_namespaced_pod(NS, field_selector=f"spec.nodeName={node}").items)
                    < total
                )
                or proc.poll() is not None
            ),
            60,
            interval=0.1,
        )
        run.inject()
        killed_mid_drain = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    run.notes.append("killed mid-drain" if killed_mid_drain else "drain had finished before the kill")
    owner = kube_nodes.cordon_owner(client.CoreV1Api(run.admin).read_node(node))
    assert owner == run.run_id  # the cordon names its run: the retry adopts it
    result, _attempts = with_retry(run, lambda: upgrade_worker(run, node))
    run.recovered()
    assert result.drained
    assert killed_mid_drain
    assert not finish(
        run, f"task killed; re-run drained ({len(result.evicted)} left to evict) and uncordoned"
    )


def _fault_mid_drain(run: Run, node: str, fault: Callable[[], None]) -> tuple[DrainResult, int]:
    """Start the worker step; once the node is cordoned, inject ``fault`` beside it."""
    outcome: dict[str, Any] = {}

    def operate() -> None:
        try:
            outcome["result"] = with_retry(run, lambda: upgrade_worker(run, node))
        except Exception as err:  # reported by the test
            outcome["error"] = err

    worker = _in_thread(operate)
    wait_until(
        "node cordoned by the drain",
        lambda: _cordoned(run.admin, node) or not worker.is_alive(),
        60,
        interval=0.1,
    )
    run.inject()
    assert worker.is_alive(), "the drain ended before the fault could land"
    fault()
    worker.join(400)
    run.recovered()
    assert "error" not in outcome, outcome.get("error")
    result, attempts = outcome["result"]
    return result, attempts


def test_a_apiserver_killed_mid_drain(load: str, run: Run) -> None:
    def kill() -> None:
        run.cluster.sup.stop("kube-apiserver-0", sig=signal.SIGKILL)
        # Started again at once, as its supervisor (systemd, the kubelet) would.
        run.cluster.start_component("kube-apiserver-0")

    result, attempts = _fault_mid_drain(run, load, kill)
    assert result.drained
    assert not finish(run, f"{len(result.evicted)} evicted, drained and uncordoned on attempt {attempts}")


def test_d_scheduler_restarted_mid_drain(load: str, run: Run) -> None:
    result, attempts = _fault_mid_drain(run, load, lambda: run.cluster.restart_component("kube-scheduler"))
    assert result.drained
    assert not finish(run, f"{len(result.evicted)} evicted, drained and uncordoned on attempt {attempts}")


def test_e_haproxy_backend_flapping(load: str, run: Run) -> None:
    def flap() -> None:
        for _ in range(3):
            run.cluster.stop_component("kube-apiserver-1")
            run.cluster.start_component("kube-apiserver-1")

    result, attempts = _fault_mid_drain(run, load, flap)
    assert result.drained
    assert not finish(
        run,
        f"{len(result.evicted)} evicted, drained and uncordoned on attempt {attempts} "
        "(kube-apiserver-1 stopped and started 3 times)",
    )


def test_k_second_run_mid_drain(load: str, run: Run) -> None:
    second = "fault-second-run"

    def refuse_second() -> None:
        with pytest.raises(lease.LeaseHeld) as err:
            lease.acquire(run.orchestrator, lease.holder_for("fault-matrix", second), LEASE_SECONDS)
        assert run.holder in str(err.value), str(err.value)
        # Its batch selection may not pick or adopt the node the live run is draining.
        workers = kube_nodes.list_workers(run.orchestrator)
        assert lease.cordoned_by_other_live_run(run.orchestrator, workers, second) == {load}
        run.notes.append(f"second run refused: {str(err.value)[:100]}")

    result, _attempts = _fault_mid_drain(run, load, refuse_second)
    assert result.drained
    assert not finish(
        run, f"second run refused (lease held, node not adoptable); first drained {len(result.evicted)} pods"
    )


def test_b_etcd_member_killed_mid_controlplane_upgrade(run: Run) -> None:
    upgrader = LocalControlPlaneUpgrader(run.cluster)
    ref = ComponentRef(kind="kube-apiserver", name="kube-apiserver-0")
    outcome: dict[str, Any] = {}

    def upgrade() -> None:
        try:
            outcome["step"] = upgrader.upgrade(ref, KUBERNETES_NEW)
        except Exception as err:  # reported by the test
            outcome["error"] = err

    worker = _in_thread(upgrade)
    # Mid-step: HAProxy has taken kube-apiserver-0 out while it shuts down for its restart.
    wait_until(
        "kube-apiserver-0 leaving the load balancer",
        lambda: not upgrader.lb_status("kube-apiserver-0").startswith("UP") or not worker.is_alive(),
        120,
        interval=0.1,
    )
    run.inject()
    assert worker.is_alive(), "the upgrade step ended before the fault could land"
    run.cluster.sup.stop("etcd-1", sig=signal.SIGKILL)
    worker.join(300)
    run.cluster.start_component("etcd-1")
    if "error" in outcome:
        run.notes.append(f"first attempt: {type(outcome['error']).__name__}: {str(outcome['error'])[:120]}")
    again = upgrader.upgrade(ref, KUBERNETES_NEW)  # the retry (or a no-op when the step landed)
    run.recovered()
    assert upgrader.current_version(ref) == KUBERNETES_NEW
    run.notes.append(f"retry changed={again.changed}")
    violations = finish(run, "kube-apiserver-0 upgraded despite etcd-1 SIGKILLed; etcd-1 rejoined")
    # Back to one version for the rest of the cluster's life (and the next run of this module).
    upgrader.rollback(ref, KUBERNETES_OLD)
    assert not violations


def test_l_triggerer_restarted_mid_node_wait(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """The triggerer process dies while a node's Ready wait is deferred in it. Airflow keeps
    only the trigger's serialized kwargs (its table row); the next triggerer rebuilds the
    trigger from them. The rebuilt one must keep the original deadline (not restart its
    clock) and fire once the node is Ready; the node operator then resumes from it."""
    admin = run.admin
    node = _drainable_worker(admin)
    before = kube_nodes.kubelet_version(client.CoreV1Api(admin).read_node(node))
    conn_id = "fault_matrix_k8s"
    kube = {
        "conn_type": "kubernetes",
        "extra": {"kube_config_path": str(run.cluster.orchestrator_kubeconfig)},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(kube))
    upgrader = LocalInPlaceUpgrader(admin)
    client.CoreV1Api(admin).patch_node(node, {"metadata": {"labels": {SIMULATE_LABEL: NOT_READY}}})
    upgrader.upgrade_node(node, TARGET)  # the new kubelet is not back yet: NotReady at the target
    trigger = NodesReadyTrigger([node], f"v{TARGET}", timeout=600, poll_interval=0.5, conn_id=conn_id)

    async def first_triggerer() -> None:
        events = trigger.run()
        # Polling the NotReady node, no event: then the triggerer dies mid-wait.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(events), timeout=3)
        await events.aclose()

    asyncio.run(first_triggerer())
    run.inject()
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert rebuilt.started == trigger.started  # the deadline survives the restart
    # A rebuilt trigger whose deadline passed while no triggerer ran fires "timeout" at once
    # (the node is still NotReady), rather than waiting a whole new timeout.
    late = type(rebuilt)(**(kwargs | {"timeout": time.time() - trigger.started - 1}))

    async def first_event(t: NodesReadyTrigger, timeout: float) -> dict[str, Any]:
        event = await asyncio.wait_for(anext(t.run()), timeout=timeout)
        return dict(event.payload)

    assert asyncio.run(first_event(late, 30)) == {"status": "timeout", "waiting": [node]}
    client.CoreV1Api(admin).patch_node(node, {"metadata": {"labels": {SIMULATE_LABEL: None}}})
    fired = asyncio.run(first_event(rebuilt, 120))  # the kubelet is back: Ready at the target
    run.recovered()
    assert fired == {"status": "ready", "nodes": [node]}
    upgrader.rollback_node(node, before)  # back to the cluster's version for the next fault
    assert wait_node_ready(admin, node, 120)
    run.notes.append(f"rebuilt trigger kept started={trigger.started:.0f}; fired {fired['status']}")
    assert not finish(run, "node wait resumed in a rebuilt trigger with its original deadline; fired ready")


# ---- the matrix ---------------------------------------------------------------------------------


def _write_matrix(cluster: LocalCluster, seconds: float) -> None:
    header = "| fault | outcome | invariants | s fault to outcome | probe requests | failed | retried |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for row in sorted(ROWS, key=lambda r: r["fault"]):
        lines.append(
            f"| {row['fault']} | {row['outcome']} | {row['invariants']} | {row['recover_s']} | "
            f"{row['requests']} | {row['failed']} | {row['retried']} |"
        )
    text = "\n".join(lines) + f"\n\n{len(ROWS)} faults; module runtime {seconds:.0f} s\n"
    out = Path(
        os.environ.get("SLIPWAY_FAULT_MATRIX", Path(tempfile.gettempdir()) / "slipway-fault-matrix.md")
    )
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps(ROWS, indent=1))
    print("\n" + text + f"(written to {out})")
