"""Run a DAG with dag.test() against a local cluster, through the same connections a user sets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from slipway.airflow_env import airflow_env
from slipway.localcluster.cluster import LocalCluster
from slipway.reports import run_verdict
from slipway.runrecord import RunRecord
from slipway.validation.invariants import PdbWatcher  # noqa: F401 (re-exported for the DAG tests)
from tests.conftest import REPO


def cluster_env(cluster: LocalCluster, home: Path, reports: Path) -> dict[str, str]:
    """The connections (``AIRFLOW_CONN_*``) and settings (``SLIPWAY_*``) that point Airflow at ``cluster``."""
    env = airflow_env(
        home,
        admin_kubeconfig=cluster.admin_kubeconfig,
        orchestrator_kubeconfig=cluster.orchestrator_kubeconfig,
        cluster_name=cluster.cfg.name,
        state_root=cluster.cfg.state_root,
        reports_dir=reports,
    )
    return {k: v for k, v in env.items() if k.startswith(("AIRFLOW_CONN_", "SLIPWAY_"))}


def run_dag(
    dag_id: str, conf: dict[str, Any], cluster: LocalCluster, reports: Path
) -> tuple[str, dict[str, Any]]:
    """dag.test() one run; returns the run's state and its run record (the cluster's account)."""
    os.environ.update(cluster_env(cluster, Path(os.environ["AIRFLOW_HOME"]), reports))
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[dag_id]
    dag_run = dag.test(run_conf=conf)
    record = RunRecord(cluster.orchestrator_client(), dag_run.run_id).load()
    return str(dag_run.state), record


def verdict(record: dict[str, Any]) -> str:
    return run_verdict(record)
