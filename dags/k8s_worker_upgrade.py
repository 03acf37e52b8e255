"""Upgrade the worker nodes only, batch by batch, with a rollback branch after every batch.

For clusters whose control plane is already at the target (a managed control plane, or
a run of ``k8s_cluster_upgrade`` that paused in its worker phase) and for maintenance
windows: scheduled runs happen only inside the declared windows and never start a batch
that cannot finish before the window closes; the next window's run resumes from the
cluster's state.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import dag

from slipway.airflow.defaults import MAX_CLUSTERS_AT_ONCE, default_args
from slipway.airflow.notifiers import run_failure_notifiers
from slipway.airflow.params import request_params, share_dag_params
from slipway.airflow.routing import route_near_cluster
from slipway.airflow.stage_common import final_verdict, validate_request, write_upgrade_report
from slipway.airflow.stage_control_plane import probe_tasks
from slipway.airflow.stage_lease import cluster_lease
from slipway.airflow.stage_workers import max_batches, worker_phase
from slipway.airflow.timetable import MaintenanceWindowTimetable

WINDOWS = [
    w.strip() for w in os.environ.get("SLIPWAY_WINDOWS", "Sat 01:00-05:00 UTC").split(";") if w.strip()
]
BLACKOUTS = [b.strip() for b in os.environ.get("SLIPWAY_BLACKOUTS", "").split(";") if b.strip()]


@dag(
    dag_id="k8s_worker_upgrade",
    schedule=MaintenanceWindowTimetable(WINDOWS, BLACKOUTS),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=MAX_CLUSTERS_AT_ONCE,  # one per cluster: the cluster lease
    # Changes clusters on a schedule: acts only once someone unpauses it on purpose.
    is_paused_upon_creation=True,
    params=request_params(),
    tags=["slipway", "kubernetes", "upgrade", "workers"],
    default_args=default_args(),
    # A run killed, timed out or marked failed still tells someone (every configured channel).
    on_failure_callback=run_failure_notifiers(),
    doc_md=__doc__,
)
def k8s_worker_upgrade() -> None:
    request = validate_request()
    taken, release = cluster_lease(request)
    workers = worker_phase(request, max_batches())
    # The API probe measures the whole worker phase (kubelets restarting must not disturb the API).
    probe, stopped = probe_tasks()
    taken >> probe >> workers  # the cluster lease before the first batch opens
    report = write_upgrade_report()
    workers >> stopped >> report
    workers >> report >> final_verdict() >> release


route_near_cluster(share_dag_params(k8s_worker_upgrade()))
