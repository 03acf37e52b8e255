"""The local control plane upgraded for real, 1.36.3/etcd 3.6.16 -> 1.37.2/etcd 3.7.3.

One cluster of its own (the upgrade changes component versions, so the session cluster is
left alone). The tests share it in file order, and each first puts the cluster in the state
it needs through the upgrader itself: the steps are idempotent, so that is a no-op on a
fresh cluster and a real rollback after the upgrade test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.etcd import DEFAULT_BUMP_REVISION, back_up_and_prove
from slipway.etcd.client import etcdctl
from slipway.etcd.safety import check_data, restore_once
from slipway.etcd.store import ProvenSnapshot
from slipway.localcluster import binaries
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import ETCD_NEW, ETCD_OLD, KUBERNETES_NEW, KUBERNETES_OLD, kubernetes_release
from slipway.localcluster.nodes import count_ready
from slipway.localcluster.workloads import unavailable_samples
from slipway.runrecord import RunRecord
from slipway.upgraders.controlplane import (
    ComponentRef,
    ControlPlaneTarget,
    ControlPlaneUpgrader,
    StepFailed,
    StepRefused,
    rollback_control_plane,
)
from slipway.upgraders.local_controlplane import FAULT_MARKER_KEY, LocalControlPlaneUpgrader
from slipway.validation.baseline import Baseline, capture_baseline, compare
from slipway.validation.probe import ApiProbe, ProbeSettings
from tests.conftest import running_cluster
from tests.probe_checks import assert_no_failures_but_etcd_drops

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.skipif(
        not binaries.is_available(kubernetes_release(KUBERNETES_NEW)),
        reason=f"Kubernetes {KUBERNETES_NEW} binaries are not built: run `make binaries`",
    ),
]

CP_PORT_OFFSET = 300
OLD = ControlPlaneTarget(kubernetes=KUBERNETES_OLD, etcd=ETCD_OLD)
NEW = ControlPlaneTarget(kubernetes=KUBERNETES_NEW, etcd=ETCD_NEW)
BASELINE_REQUESTS = 200  # 10 s at the probe's default 20 requests/s
CHECK_NAMESPACE = "slipway-upgrade-check"
# More pods than baseline.MIN_SAMPLES, so the new scheduler's latency is judged too.
SCHEDULING_PODS = 24


@pytest.fixture(scope="module")
def cp_cluster() -> Iterator[LocalCluster]:
    with running_cluster("cpupgrade", CP_PORT_OFFSET, 3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def upgrader(cp_cluster: LocalCluster) -> LocalControlPlaneUpgrader:
    return LocalControlPlaneUpgrader(cp_cluster)


def _baseline(upgrader: LocalControlPlaneUpgrader) -> Baseline:
    apiservers = [upgrader.metrics_text(f"kube-apiserver-{i}") for i in range(upgrader.cfg.apiservers)]
    return capture_baseline(apiservers, upgrader.metrics_text("kube-scheduler"))


def _assert_runs(upgrader: ControlPlaneUpgrader, target: ControlPlaneTarget) -> None:
    running = {ref.name: upgrader.current_version(ref) for ref in upgrader.components()}
    assert running == {ref.name: target.version_for(ref) for ref in upgrader.components()}


def _assert_recorded(cluster: LocalCluster, target: ControlPlaneTarget) -> None:
    recorded = {k: v for k, v in cluster.versions().items() if k not in ("haproxy", "kwok")}
    assert recorded == {k: target.etcd if k.startswith("etcd-") else target.kubernetes for k in recorded}


def _assert_healthy(cluster: LocalCluster, upgrader: LocalControlPlaneUpgrader) -> None:
    assert all(upgrader.verify(ref) for ref in upgrader.components())
    consistency = upgrader.etcd_consistency()
    assert consistency.consistent, consistency.problems
    assert len(consistency.hashes) == cluster.cfg.etcd_members
    assert len(set(consistency.hashes.values())) == 1
    api = cluster.admin_client()
    names = {n.metadata.name for n in client.CoreV1Api(api).list_node().items}
    wait_until("every node Ready", lambda: count_ready(api, names) == len(names), 120, interval=1.0)
    wait_until("sample workloads available", lambda: not unavailable_samples(api), 180, interval=1.0)


def test_skew_and_load_balancer_guards_refuse_without_changing_anything(
    cp_cluster: LocalCluster, upgrader: LocalControlPlaneUpgrader
) -> None:
    rollback_control_plane(upgrader, OLD)
    manager = ComponentRef(kind="kube-controller-manager", name="kube-controller-manager")
    with pytest.raises(StepRefused, match=rf"from {KUBERNETES_OLD} to {KUBERNETES_NEW}: .*newer than"):
        upgrader.upgrade(manager, KUBERNETES_NEW)
    assert upgrader.current_version(manager) == KUBERNETES_OLD

    cp_cluster.stop_component("kube-apiserver-1")
    try:
        first = ComponentRef(kind="kube-apiserver", name="kube-apiserver-0")
        with pytest.raises(StepRefused, match="no other kube-apiserver is UP"):
            upgrader.upgrade(first, KUBERNETES_NEW)
        assert upgrader.current_version(first) == KUBERNETES_OLD
    finally:
        cp_cluster.start_component("kube-apiserver-1")
        wait_until(
            "kube-apiserver-1 back in the load balancer",
            lambda: upgrader.lb_status("kube-apiserver-1") == "UP",
            60,
        )


def test_probe_stops_by_itself_after_its_max_duration(cp_cluster: LocalCluster) -> None:
    probe = ApiProbe.from_kubeconfig(cp_cluster.admin_kubeconfig, ProbeSettings(max_duration_seconds=1.0))
    probe.start()
    wait_until("probe stopped by itself", lambda: not probe.running, 60)
    report = probe.stop()
    assert report.stopped_by == "max-duration"
    assert report.baseline_requests > 0 and report.baseline_failures == 0
    assert json.loads(report.model_dump_json())["stopped_by"] == "max-duration"


def test_full_upgrade_with_zero_failed_requests(
    cp_cluster: LocalCluster, upgrader: LocalControlPlaneUpgrader
) -> None:
    rollback_control_plane(upgrader, OLD)
    before = _baseline(upgrader)
    probe = ApiProbe.from_kubeconfig(cp_cluster.admin_kubeconfig)
    probe.start()
    try:
        wait_until("probe baseline", lambda: probe.count("baseline") >= BASELINE_REQUESTS, 120)
        probe.end_baseline()
        steps, repeats = [], []
        for ref in upgrader.components():
            steps.append(upgrader.upgrade(ref, NEW.version_for(ref)))
            repeats.append(upgrader.upgrade(ref, NEW.version_for(ref)))
    finally:
        report = probe.stop()
    _schedule_pods(cp_cluster.admin_client(), "after-upgrade")
    after = _baseline(upgrader)
    print(
        json.dumps(
            {
                "steps": [s.model_dump(mode="json") for s in steps],
                "probe": report.model_dump(mode="json"),
                "baseline_before": before.model_dump(),
                "baseline_after": after.model_dump(),
                "degradations": [d.model_dump() for d in compare(before, after)],
            },
            indent=1,
        )
    )

    etcd_steps = [
        (s.started_at, s.started_at + timedelta(seconds=s.duration_seconds))
        for s in steps
        if s.kind == "etcd"
    ]
    assert_no_failures_but_etcd_drops(
        report.failures, report.dropped_by_etcd, [e.model_dump() for e in report.failure_samples], etcd_steps
    )
    assert report.requests > 0 and report.stopped_by == "stop"
    assert [s.changed for s in steps] == [True] * len(steps)
    # A step run again finds its component at the target and changes nothing.
    assert all(
        not r.changed and r.from_version == r.to_version == s.to_version
        for s, r in zip(steps, repeats, strict=True)
    )
    for step in steps:
        if step.kind == "kube-apiserver":
            assert step.evidence["drained_before_exit"], (
                f"{step.component} stopped before HAProxy took it out"
            )
    etcd_steps = [s for s in steps if s.kind == "etcd"]
    assert etcd_steps[-1].evidence["leader_before"] == etcd_steps[-1].component  # the leader went last
    # ...after handing leadership to a member already at the new version.
    assert etcd_steps[-1].evidence["leader_moved_to"] in {s.component for s in etcd_steps[:-1]}
    assert all("leader_moved_to" not in s.evidence for s in etcd_steps[:-1])
    _assert_runs(upgrader, NEW)
    _assert_recorded(cp_cluster, NEW)
    _assert_healthy(cp_cluster, upgrader)
    assert before.apiserver and after.apiserver
    assert after.scheduler is not None and after.scheduler.samples >= SCHEDULING_PODS


def test_forced_rollback_restores_etcd_snapshot(
    cp_cluster: LocalCluster, upgrader: LocalControlPlaneUpgrader, tmp_path: Path
) -> None:
    # After the upgrade test this is the full binary rollback, etcd downgrade included.
    rolled_back = rollback_control_plane(upgrader, OLD)
    assert [r.component for r in rolled_back][:2] == ["kube-scheduler", "kube-controller-manager"]
    _assert_runs(upgrader, OLD)
    core = client.CoreV1Api(cp_cluster.admin_client())
    _ensure_check_namespace(core)
    core.create_namespaced_config_map(CHECK_NAMESPACE, _marker("before-snapshot"))
    snapshot = back_up_and_prove(upgrader.etcd(), tmp_path / "before-upgrade.db")
    assert snapshot.restore_ok, snapshot.problem

    apiservers = [ref for ref in upgrader.components() if ref.kind == "kube-apiserver"]
    for ref in apiservers:
        assert upgrader.upgrade(ref, KUBERNETES_NEW).changed
    core.create_namespaced_config_map(CHECK_NAMESPACE, _marker("after-snapshot"))

    rollback = rollback_control_plane(upgrader, OLD, kinds=("kube-apiserver",))
    assert [r.component for r in rollback] == [ref.name for ref in reversed(apiservers)]
    assert all(r.changed for r in rollback)
    assert not any(upgrader.rollback(ref, KUBERNETES_OLD).changed for ref in apiservers)
    proven = ProvenSnapshot.from_proof(snapshot)

    # A file that is not byte for byte the proven snapshot is refused before anything stops.
    tampered = tmp_path / "tampered.db"
    tampered.write_bytes(Path(snapshot.path).read_bytes() + b"\0")
    with pytest.raises(StepFailed, match="changed since it was proven"):
        upgrader.restore_etcd(ProvenSnapshot(str(tampered), proven.sha256, proven.revision, proven.keys))
    assert all(upgrader.verify(ref) for ref in upgrader.components())

    # The game-day fault: one member's data differs from its peers', and the data check names it.
    fault = upgrader.diverge_etcd_member("etcd-1")
    assert fault["places_changed"] >= 1 and "refused_to_start" not in fault
    diverged = check_data(upgrader.etcd(), proven, confirmations=2)
    assert not diverged.ok and not diverged.transient
    assert "hold different data" in diverged.problems[0], diverged.problems
    assert len(set(diverged.hashes.values())) == 2

    # Restored once: the run record, then the cluster itself, stop a second restore.
    rec = RunRecord(cp_cluster.admin_client(), "test-restore-once")
    done = restore_once(
        rec, upgrader.etcd(), proven, lambda s: upgrader.restore_etcd(s).model_dump(mode="json")
    )
    assert done.restored and done.entry["digest_verified"]
    restored = done.entry["result"]
    print(json.dumps(restored, indent=1))

    def restore_again(_: ProvenSnapshot) -> dict[str, Any]:
        raise AssertionError("etcd restored twice")

    again = restore_once(rec, upgrader.etcd(), proven, restore_again)
    assert not again.restored and "not restoring twice" in again.message
    rec.update(etcd_restore={})  # as if the task died before recording it: the cluster knows
    found = restore_once(rec, upgrader.etcd(), proven, restore_again)
    assert not found.restored and found.entry["found"] == "cluster"
    kinds = [e["kind"] for e in rec.load()["events"]]
    assert kinds.count("etcd-restore-started") == kinds.count("etcd-restored") == 1
    assert kinds.count("etcd-restore-skipped") == 2
    set_aside = list((cp_cluster.cfg.state_dir / "etcd").glob("*.before-restore-*"))
    assert len(set_aside) == cp_cluster.cfg.etcd_members  # one restore: one old data dir per member

    assert restored["sha256"] == proven.sha256
    assert restored["keys_after_restore"] >= snapshot.keys
    assert restored["revision_after_restore"] >= snapshot.revision + DEFAULT_BUMP_REVISION
    assert restored["consistency"]["consistent"]
    assert len(set(restored["consistency"]["hashes"].values())) == 1
    assert check_data(upgrader.etcd(), proven).ok
    assert not etcdctl(upgrader.etcd(), ["get", FAULT_MARKER_KEY], what="marker").data.get("kvs")
    core = client.CoreV1Api(cp_cluster.admin_client())
    names = {cm.metadata.name for cm in core.list_namespaced_config_map(CHECK_NAMESPACE).items}
    assert "before-snapshot" in names
    assert "after-snapshot" not in names  # written after the snapshot: rolled back with the data
    _assert_runs(upgrader, OLD)
    _assert_healthy(cp_cluster, upgrader)
    written = core.create_namespaced_config_map(CHECK_NAMESPACE, _marker("after-restore"))
    assert int(written.metadata.resource_version) > DEFAULT_BUMP_REVISION


def _marker(name: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"written": name})


def _ensure_check_namespace(core: client.CoreV1Api) -> None:
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=CHECK_NAMESPACE)))
    except ApiException as err:
        if err.status != 409:
            raise


def _schedule_pods(api: client.ApiClient, name: str) -> None:
    """A Deployment of :data:`SCHEDULING_PODS` small pods, waited for until all are available."""
    _ensure_check_namespace(client.CoreV1Api(api))
    apps = client.AppsV1Api(api)
    labels = {"app": name}
    container = {
        "name": "check",
        "image": "registry.local/check:1.0",
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
    }
    apps.create_namespaced_deployment(
        CHECK_NAMESPACE,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": SCHEDULING_PODS,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
    )
    wait_until(
        f"deployment {CHECK_NAMESPACE}/{name} available",
        lambda: (
            (apps.read_namespaced_deployment(name, CHECK_NAMESPACE).status.available_replicas or 0)
            == SCHEDULING_PODS
        ),
        180,
        interval=1.0,
    )
