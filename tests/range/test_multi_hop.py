"""The source document's range for real (``make test-range``; not part of ``make test``).

A local cluster at 1.31.14 with etcd 3.5.21 and its kubelets at 1.31 is upgraded to 1.34.4
through the DAGs: across the 1.32 flowcontrol v1beta3 removal, and with 1.34 moving etcd
3.5.21 -> 3.5.32 (the floor etcd's 3.5 -> 3.6 guide sets) -> 3.6.4. One run of
``k8s_cluster_upgrade`` moves etcd along its hops, the control plane one minor, then the
kubelets (``slipway.plan_execution``), so the path runs as one run per minor; the whole
target at once is refused before anything changes. Throughout: a :class:`SkewWatcher`
looks at every instance's version and every kubelet twice a second (the Version Skew
Policy must hold at every moment, https://kubernetes.io/releases/version-skew-policy/), a
:class:`PdbWatcher` sees every PodDisruptionBudget change, and each run's API probe may
fail no request but writes etcd dropped while its leader moved in an etcd step. Each run's
record is compared, hop by hop, with the plan that run printed.

The kubelets start at 1.28, 1.30 and 1.31 (kwok reports what the node status says): the
first minor would leave the 1.28 kubelet four behind, so that run is refused naming the
kubelet catch-up (``k8s_worker_upgrade`` to 1.31), which runs first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from slipway.inventory import LocalControlPlaneReader
from slipway.kube import nodes as kube_nodes
from slipway.kube.readiness import workloads_available
from slipway.localcluster.cluster import LocalCluster
from slipway.validation.invariants import PdbWatcher, SkewWatcher
from tests.conftest import running_cluster
from tests.dags.dagrun import remove_never_evictable_samples, run_dag, verdict
from tests.probe_checks import assert_no_failures_but_etcd_drops, etcd_step_windows

pytestmark = pytest.mark.cluster

START, START_ETCD, FINAL = "1.31.14", "3.5.21", "1.34.4"
HOPS = ("1.32.13", "1.33.13", FINAL)
CONTROL_PLANE = ("kube-apiserver-0", "kube-apiserver-1", "kube-controller-manager", "kube-scheduler")
CONF = {"soak_seconds": 1, "approval": "never", "force_bare_pods": True, "delete_emptydir_data": True}


@pytest.fixture(scope="module")
def seed_cluster(airflow_db: Path) -> Iterator[LocalCluster]:
    versions = {"kubernetes_version": START, "etcd_version": START_ETCD, "kubelet_version": START}
    with running_cluster("range", 1700, 3, **versions) as cluster:
        remove_never_evictable_samples(cluster)
        yield cluster


def _kubelet_versions(cluster: LocalCluster) -> dict[str, str]:
    return {
        n.metadata.name: kube_nodes.kubelet_version(n)
        for n in kube_nodes.list_workers(cluster.admin_client())
    }


def _at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["at"])


def _assert_executed_as_planned(cluster: LocalCluster, record: dict[str, Any], target: str) -> None:
    """Each hop the run's plan printed, and nothing else, is what the run did."""
    hops = [(h["kind"], h["from"], h["to"]) for h in record["plan"]["hops"]]
    etcd = [(a, b) for kind, a, b in hops if kind == "etcd"]
    assert [k for k, _, _ in hops] == ["etcd"] * len(etcd) + ["control-plane", "kubelet"], hops
    steps = record["control_plane"]["steps"]
    _, cp_from, cp_to = hops[len(etcd)]
    assert cp_to == target
    for name in CONTROL_PLANE:
        assert (steps[name]["from"], steps[name]["to"], steps[name]["action"]) == (cp_from, cp_to, "upgraded")
    members = [n for n in steps if n.startswith("etcd-")]
    assert len(members) == 3
    for name in members:
        if etcd:  # every member through every etcd hop, in order
            path = [steps[name]["from"], *steps[name].get("via", []), steps[name]["to"]]
            assert path == [etcd[0][0], *[b for _, b in etcd]], (name, steps[name])
        else:
            assert steps[name]["action"] == "already at target"
    _, _, kubelet_to = hops[-1]
    upgraded = [n for b in record["batches"] if b["state"] == "passed" for n in b["nodes"]]
    workers = kube_nodes.list_workers(cluster.admin_client())
    assert sorted(upgraded) == sorted(n.metadata.name for n in workers)
    assert {kube_nodes.kubelet_version(n) for n in workers} == {kubelet_to}
    kinds_seen = [e["kind"] for e in record["events"]]
    assert kinds_seen.index("control-plane-verified") < kinds_seen.index("batch-opened")


def _set_kubelets(cluster: LocalCluster, versions: list[str]) -> dict[str, str]:
    """Workers' kubelets at these versions (kwok keeps what the node status says), one each."""
    core = client.CoreV1Api(cluster.admin_client())
    names = sorted(n.metadata.name for n in kube_nodes.list_workers(cluster.admin_client()))
    for name, version in zip(names, versions, strict=True):
        core.patch_node_status(name, {"status": {"nodeInfo": {"kubeletVersion": f"v{version}"}}})
    return dict(zip(names, versions, strict=True))


def _figures(record: dict[str, Any], label: str) -> dict[str, Any]:
    events = record["events"]
    steps = record.get("control_plane", {}).get("steps", {})
    probe = record.get("control_plane", {}).get("probe", {})
    return {
        "run": label,
        "seconds": round((_at(events[-1]) - _at(events[0])).total_seconds(), 1),
        "control_plane_seconds": round(sum(s["seconds"] for s in steps.values()), 1),
        "etcd": sorted({s["to"] for n, s in steps.items() if n.startswith("etcd-")}),
        "batches": len(record["batches"]),
        "probe_requests": probe.get("requests"),
        "probe_failures": probe.get("failures"),
        "probe_dropped_by_etcd": probe.get("dropped_by_etcd"),
        "probe_p99_ms": round(probe["p99_ms"], 1) if probe else None,
    }


def test_from_1_31_with_etcd_3_5_and_mixed_kubelets_to_1_34_hop_by_hop_through_the_dags(
    seed_cluster: LocalCluster, tmp_path: Path
) -> None:
    admin = seed_cluster.admin_client()
    figures: list[dict[str, Any]] = []
    # Kubelets at three minors, the oldest three behind the control plane (the policy's limit).
    kubelets = _set_kubelets(seed_cluster, ["1.28.15", "1.30.14", START])
    with PdbWatcher(admin) as pdbs, SkewWatcher(admin, LocalControlPlaneReader(seed_cluster)) as skew:
        # The whole target at once is refused before anything changes, naming the first hop.
        state, record = run_dag(
            "k8s_cluster_upgrade", CONF | {"target_version": FINAL}, seed_cluster, tmp_path
        )
        assert state == "failed" and record == {}  # refused in validate_request: no record yet
        # The first minor would leave the 1.28 kubelet four behind: its plan starts with a
        # kubelet catch-up, which one cluster run would not execute as printed: refused, naming it.
        state, record = run_dag(
            "k8s_cluster_upgrade", CONF | {"target_version": HOPS[0]}, seed_cluster, tmp_path / "refused"
        )
        assert state == "failed" and verdict(record) == "refused"
        kinds = [h["kind"] for h in record["plan"]["hops"]]
        assert kinds == ["kubelet", "control-plane", "kubelet"], record["plan"]["hops"]
        named = re.search(
            r"trigger (k8s_worker_upgrade) with target_version=(\S+)", record["plan"]["not_one_run"]
        )
        assert named is not None and named[2] == START, record["plan"]["not_one_run"]
        assert _kubelet_versions(seed_cluster) == kubelets  # nothing moved
        state, record = run_dag(
            named[1], CONF | {"target_version": named[2]}, seed_cluster, tmp_path / "catch-up"
        )
        assert state == "success", record.get("events")
        assert set(_kubelet_versions(seed_cluster).values()) == {START}
        figures.append(_figures(record, f"k8s_worker_upgrade -> {START} (kubelet catch-up)"))
        for target in HOPS:
            state, record = run_dag(
                "k8s_cluster_upgrade", CONF | {"target_version": target}, seed_cluster, tmp_path / target
            )
            assert state == "success", record.get("events")
            assert verdict(record) == "upgraded"
            _assert_executed_as_planned(seed_cluster, record, target)
            probe = record["control_plane"]["probe"]
            assert probe["requests"] > 0
            assert_no_failures_but_etcd_drops(
                probe["failures"],
                probe["dropped_by_etcd"],
                probe["failure_samples"],
                etcd_step_windows(record),
            )
            figures.append(_figures(record, f"k8s_cluster_upgrade -> {target}"))
    print(
        json.dumps(
            {
                "runs": figures,
                "skew_looks": skew.looks,
                "skew_unreadable": skew.unreadable,
                "version_sets_seen": len(skew.seen),
                "pdb_events": pdbs.events,
            },
            indent=1,
        )
    )
    assert skew.violations == {}
    assert skew.looks > 100 and len(skew.seen) > 4  # it watched the versions move, hop by hop
    assert pdbs.events > 0 and pdbs.violations == []
    versions = seed_cluster.versions()
    assert all(versions[name] == FINAL for name in CONTROL_PLANE)
    assert all(versions[f"etcd-{i}"] == "3.6.4" for i in range(3))
    assert workloads_available(admin) == []


@pytest.fixture
def lagging_manager(airflow_db: Path) -> Iterator[LocalCluster]:
    """A 1.33 control plane whose kube-controller-manager still runs 1.31: two minors behind,
    outside the policy (it may be one minor older than the oldest apiserver)."""
    versions = {"kubernetes_version": "1.33.13", "etcd_version": START_ETCD, "kubelet_version": "1.33.13"}
    with running_cluster("range-skew", 1800, 2, **versions) as cluster:
        cluster.restart_component("kube-controller-manager", START)
        yield cluster


def test_a_plan_the_planner_refuses_ends_refused_with_its_reason_in_the_report(
    lagging_manager: LocalCluster, tmp_path: Path
) -> None:
    assert lagging_manager.versions()["kube-controller-manager"] == START
    before = _kubelet_versions(lagging_manager)
    state, record = run_dag(
        "k8s_cluster_upgrade", CONF | {"target_version": FINAL}, lagging_manager, tmp_path
    )
    assert state == "failed" and verdict(record) == "refused"
    refused = record["plan"]["refused"]
    assert refused["rule"] == "control-plane-skew" and "controller_managers: 1.31.14" in refused["reason"]
    assert record["risk"]["decision"] == "refuse"
    assert any(e["kind"] == "plan-refused" for e in record["events"])
    report = Path(record["report"]["markdown"]).read_text()
    assert "**refused**" in report and "controller_managers: 1.31.14 is 2 minors older" in report
    # Nothing moved: no component step, no kubelet, no cordon.
    assert not record.get("control_plane", {}).get("steps")
    assert _kubelet_versions(lagging_manager) == before
    assert not [
        n for n in kube_nodes.list_workers(lagging_manager.admin_client()) if kube_nodes.is_cordoned(n)
    ]
