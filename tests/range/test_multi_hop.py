"""The source document's range for real (``make test-range``; not part of ``make test``).

A local cluster at 1.31.14 with etcd 3.5.21 and its kubelets at 1.31 is upgraded to 1.33.13
through the DAGs, crossing the 1.32 flowcontrol v1beta3 removal. One run of
``k8s_cluster_upgrade`` moves the control plane one minor and then the kubelets
(``slipway.plan_execution``), so the path runs as one run per minor, each asked for the hop
the refusal of the whole target names. Throughout: a :class:`SkewWatcher` looks at every
instance's version and every kubelet twice a second (the Version Skew Policy must hold at
every moment, https://kubernetes.io/releases/version-skew-policy/), a :class:`PdbWatcher`
sees every PodDisruptionBudget change, and each run's API probe must record 0 failed
requests (no etcd hop on this path, so no leader change). Each run's record is compared,
step by step, with the plan that run printed.

Not on this path: 1.34 (etcd 3.5 -> 3.6 needs every member at 3.5.26 or later first, and
one run executes one etcd hop), kubelets at older minors than the control plane.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from slipway.inventory import LocalControlPlaneReader
from slipway.kube import nodes as kube_nodes
from slipway.kube.readiness import workloads_available
from slipway.localcluster.cluster import LocalCluster
from slipway.validation.invariants import PdbWatcher, SkewWatcher
from tests.conftest import running_cluster
from tests.dags.dagrun import remove_never_evictable_samples, run_dag, verdict

pytestmark = pytest.mark.cluster

START, START_ETCD, FINAL = "1.31.14", "3.5.21", "1.33.13"
CONTROL_PLANE = ("kube-apiserver-0", "kube-apiserver-1", "kube-controller-manager", "kube-scheduler")
CONF = {"soak_seconds": 1, "approval": "never", "force_bare_pods": True, "delete_emptydir_data": True}


@pytest.fixture(scope="module")
def seed_cluster(airflow_db: Path) -> Iterator[LocalCluster]:
    versions = {"kubernetes_version": START, "etcd_version": START_ETCD, "kubelet_version": START}
    with running_cluster("range", 1700, 3, **versions) as cluster:
        remove_never_evictable_samples(cluster)
        yield cluster


def _at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["at"])


def _assert_executed_as_planned(cluster: LocalCluster, record: dict[str, Any], target: str) -> None:
    """Each hop the run's plan printed, and nothing else, is what the run did."""
    hops = [(h["kind"], h["from"], h["to"]) for h in record["plan"]["hops"]]
    kinds = [k for k, _, _ in hops]
    assert kinds == ["control-plane", "kubelet"], hops  # no etcd hop on this path
    steps = record["control_plane"]["steps"]
    _, cp_from, cp_to = hops[0]
    assert cp_to == target
    for name in CONTROL_PLANE:
        assert (steps[name]["from"], steps[name]["to"], steps[name]["action"]) == (cp_from, cp_to, "upgraded")
    assert all(step["action"] == "already at target" for n, step in steps.items() if n.startswith("etcd-"))
    _, _, kubelet_to = hops[1]
    upgraded = [n for b in record["batches"] if b["state"] == "passed" for n in b["nodes"]]
    workers = kube_nodes.list_workers(cluster.admin_client())
    assert sorted(upgraded) == sorted(n.metadata.name for n in workers)
    assert {kube_nodes.kubelet_version(n) for n in workers} == {kubelet_to}
    kinds_seen = [e["kind"] for e in record["events"]]
    assert kinds_seen.index("control-plane-verified") < kinds_seen.index("batch-opened")


def test_from_1_31_with_etcd_3_5_to_1_33_hop_by_hop_through_the_dags(
    seed_cluster: LocalCluster, tmp_path: Path
) -> None:
    admin = seed_cluster.admin_client()
    figures: list[dict[str, Any]] = []
    with PdbWatcher(admin) as pdbs, SkewWatcher(admin, LocalControlPlaneReader(seed_cluster)) as skew:
        # The whole target at once is refused before anything changes, naming the first hop.
        state, record = run_dag(
            "k8s_cluster_upgrade", CONF | {"target_version": FINAL}, seed_cluster, tmp_path
        )
        assert state == "failed" and record == {}  # refused in validate_request: no record yet
        assert seed_cluster.versions()["kube-apiserver-0"] == START
        hop_targets = ["1.32.13", FINAL]
        for target in hop_targets:
            state, record = run_dag(
                "k8s_cluster_upgrade", CONF | {"target_version": target}, seed_cluster, tmp_path / target
            )
            assert state == "success", record.get("events")
            assert verdict(record) == "upgraded"
            _assert_executed_as_planned(seed_cluster, record, target)
            probe = record["control_plane"]["probe"]
            assert probe["requests"] > 0 and probe["failures"] == 0, probe["failure_samples"]
            events = record["events"]
            figures.append(
                {
                    "hop": f"{record['plan']['hops'][0]['from']} -> {target}",
                    "seconds": round((_at(events[-1]) - _at(events[0])).total_seconds(), 1),
                    "control_plane_seconds": round(
                        sum(s["seconds"] for s in record["control_plane"]["steps"].values()), 1
                    ),
                    "batches": len(record["batches"]),
                    "probe_requests": probe["requests"],
                    "probe_failures": probe["failures"],
                    "probe_p99_ms": round(probe["p99_ms"], 1),
                }
            )
    print(
        json.dumps(
            {
                "hops": figures,
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
    assert all(re.fullmatch(r"3\.5\.21", versions[f"etcd-{i}"]) for i in range(3))
    assert workloads_available(admin) == []
