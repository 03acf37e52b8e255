"""The oldest release of the source document's range (``make test-range``): a stock local
cluster at 1.25.16 with etcd 3.5.21, built from the Go modules with Go 1.26 like every other
release of the kit, upgraded to 1.26.15 through ``k8s_cluster_upgrade``.

1.26 stops serving flowcontrol.apiserver.k8s.io/v1beta1 and autoscaling/v2beta2 (Deprecated API
Migration Guide, https://kubernetes.io/docs/reference/using-api/deprecation-guide/#v1-26): a
stock cluster serves them by default without anything using them, so the preflight must list
them and still not refuse. The Version Skew Policy is watched at every moment of the run, no
PodDisruptionBudget may be violated, the API probe may fail nothing but writes etcd dropped
while its leader moved, and the run does what its plan printed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.inventory import LocalControlPlaneReader
from slipway.kube.readiness import workloads_available
from slipway.localcluster.cluster import LocalCluster
from slipway.validation.invariants import PdbWatcher, SkewWatcher
from tests.conftest import running_cluster
from tests.dags.dagrun import remove_never_evictable_samples, run_dag, verdict
from tests.probe_checks import assert_no_failures_but_etcd_drops, etcd_step_windows
from tests.range.test_multi_hop import CONF, CONTROL_PLANE, _assert_executed_as_planned, _figures

pytestmark = pytest.mark.cluster

START, ETCD, TARGET = "1.25.16", "3.5.21", "1.26.15"


@pytest.fixture
def oldest_cluster(airflow_db: Path) -> Iterator[LocalCluster]:
    versions = {"kubernetes_version": START, "etcd_version": ETCD, "kubelet_version": START}
    with running_cluster("oldest", 2100, 2, **versions) as cluster:
        remove_never_evictable_samples(cluster)
        yield cluster


def test_a_stock_1_25_cluster_is_upgraded_to_1_26_across_the_flowcontrol_v1beta1_removal(
    oldest_cluster: LocalCluster, tmp_path: Path
) -> None:
    admin = oldest_cluster.admin_client()
    with PdbWatcher(admin) as pdbs, SkewWatcher(admin, LocalControlPlaneReader(oldest_cluster)) as skew:
        state, record = run_dag(
            "k8s_cluster_upgrade", CONF | {"target_version": TARGET}, oldest_cluster, tmp_path
        )
    assert state == "success", record.get("events")
    assert verdict(record) == "upgraded"
    served = next(c for c in record["checks"] if c["name"] == "removed-apis/served")
    assert served["severity"] == "info", served
    assert "flowcontrol.apiserver.k8s.io/v1beta1" in served["summary"], served
    assert record["risk"]["decision"] != "refuse"
    _assert_executed_as_planned(oldest_cluster, record, TARGET)
    probe = record["control_plane"]["probe"]
    assert probe["requests"] > 0
    assert_no_failures_but_etcd_drops(
        probe["failures"], probe["dropped_by_etcd"], probe["failure_samples"], etcd_step_windows(record)
    )
    print(json.dumps({"run": _figures(record, f"{START} -> {TARGET}"), "skew_looks": skew.looks}, indent=1))
    assert skew.violations == {} and skew.looks > 10
    assert pdbs.violations == []
    versions = oldest_cluster.versions()
    assert all(versions[name] == TARGET for name in CONTROL_PLANE)
    assert workloads_available(admin) == []
