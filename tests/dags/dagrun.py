"""Run a DAG with dag.test() against a local cluster, through the same connections a user sets."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from urllib3.exceptions import ProtocolError

from slipway.airflow_env import airflow_env
from slipway.localcluster.cluster import LocalCluster
from slipway.reports import run_verdict
from slipway.runrecord import RunRecord
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


class PdbWatcher:
    """Watches every PodDisruptionBudget and records any moment a workload was below its budget."""

    def __init__(self, api: client.ApiClient) -> None:
        self.policy = client.PolicyV1Api(api)
        self.violations: list[str] = []
        self.events = 0
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PdbWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._watch.stop()
        self._thread.join(10)

    def _run(self) -> None:
        stream = self._watch.stream(
            self.policy.list_pod_disruption_budget_for_all_namespaces, timeout_seconds=3600
        )
        with contextlib.suppress(ProtocolError):  # the stream is cut when the test stops watching
            self._consume(stream)

    def _consume(self, stream: Any) -> None:
        for event in stream:
            pdb = event["object"]
            self.events += 1
            status = pdb.status
            if (
                status
                and status.desired_healthy is not None
                and status.current_healthy < status.desired_healthy
            ):
                self.violations.append(
                    f"{pdb.metadata.namespace}/{pdb.metadata.name}: {status.current_healthy} healthy "
                    f"< {status.desired_healthy} required"
                )
