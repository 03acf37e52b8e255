"""Run a DAG with dag.test() against a local cluster, through the same connections a user sets."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

from kubernetes import client

from slipway.airflow_env import KUBE_CONN_ID, PLATFORM_CONN_ID, airflow_env
from slipway.localcluster.cluster import LocalCluster
from slipway.reports import run_verdict
from slipway.runrecord import RunRecord
from slipway.validation.invariants import PdbWatcher  # noqa: F401 (re-exported for the DAG tests)
from tests.conftest import REPO


def cluster_env(cluster: LocalCluster, home: Path, reports: Path) -> dict[str, str]:
    """The connections (``AIRFLOW_CONN_*``) and settings (``SLIPWAY_*``) that point Airflow at ``cluster``."""
    env = airflow_env(
        home,
        cluster,
        reports_dir=reports,
    )
    return {k: v for k, v in env.items() if k.startswith(("AIRFLOW_CONN_", "SLIPWAY_"))}


def run_dag(
    dag_id: str,
    conf: dict[str, Any],
    cluster: LocalCluster,
    reports: Path,
    *,
    record_from: LocalCluster | None = None,
    scheduled_window: tuple[datetime, datetime] | None = None,
    platform_extra: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """dag.test() one run with ``cluster`` behind the default connections; returns the run's
    state and its run record (the account on ``record_from``, by default ``cluster``).

    ``scheduled_window`` makes it the run the scheduler creates for that window (run type
    ``scheduled``, the window as its data interval); dag.test() itself only makes manual runs.
    ``platform_extra`` adds keys to the ``slipway_platform`` connection's extras."""
    env = cluster_env(cluster, Path(os.environ["AIRFLOW_HOME"]), reports)
    if platform_extra:
        key = f"AIRFLOW_CONN_{PLATFORM_CONN_ID.upper()}"
        conn = json.loads(env[key])
        conn["extra"] |= platform_extra
        env[key] = json.dumps(conn)
    os.environ.update(env)
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[dag_id]
    with _as_scheduled(scheduled_window):
        dag_run = dag.test(run_conf=conf)
    record = RunRecord((record_from or cluster).orchestrator_client(), dag_run.run_id).load()
    return str(dag_run.state), record


@contextlib.contextmanager
def _as_scheduled(window: tuple[datetime, datetime] | None) -> Iterator[None]:
    if window is None:
        yield
        return
    from airflow.serialization.serialized_objects import SerializedDAG
    from airflow.timetables.base import DataInterval
    from airflow.utils.types import DagRunType

    create = SerializedDAG.create_dagrun

    def create_scheduled(self: Any, **kwargs: Any) -> Any:
        from airflow.models.dagrun import DagRun

        # As dag.test() does for its own runs: an earlier run of this window makes way.
        session = kwargs["session"]
        session.query(DagRun).filter(DagRun.dag_id == self.dag_id, DagRun.logical_date == window[0]).delete()
        session.commit()
        kwargs.update(
            run_type=DagRunType.SCHEDULED,
            logical_date=window[0],
            data_interval=DataInterval(*window),
            run_id=f"scheduled__{window[0].isoformat()}",
        )
        return create(self, **kwargs)

    with mock.patch.object(SerializedDAG, "create_dagrun", create_scheduled):
        yield


def named_connections(cluster: LocalCluster, home: Path, reports: Path, suffix: str) -> dict[str, str]:
    """``cluster``'s two connections under ids of its own (``k8s_<suffix>``,
    ``slipway_platform_<suffix>``), as a fleet or a second cluster has them."""
    env = cluster_env(cluster, home, reports)
    return {
        f"AIRFLOW_CONN_K8S_{suffix.upper()}": env[f"AIRFLOW_CONN_{KUBE_CONN_ID.upper()}"],
        f"AIRFLOW_CONN_SLIPWAY_PLATFORM_{suffix.upper()}": env[f"AIRFLOW_CONN_{PLATFORM_CONN_ID.upper()}"],
    }


def remove_never_evictable_samples(cluster: LocalCluster) -> None:
    """Without the zero-budget samples (their PDBs never allow an eviction) no node is
    quarantined and every drain can finish, wherever the scheduler put those pods."""
    admin = cluster.admin_client()
    for name in ("payments-api", "ledger"):
        client.AppsV1Api(admin).delete_namespaced_deployment(name, "shop")
        client.PolicyV1Api(admin).delete_namespaced_pod_disruption_budget(name, "shop")


def verdict(record: dict[str, Any]) -> str:
    return run_verdict(record)
