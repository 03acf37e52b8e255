"""Upgrade a Kubernetes cluster end to end, control plane first, with rollback branches.

prepare (plan, every preflight check, risk matrix) → risk gate (proceed / human approval /
refuse / dry run) → proven etcd backup → control plane (etcd → etcd data check → kube-apiserver →
kube-controller-manager → kube-scheduler, one instance at a time; an API probe measures
downtime from here to the end of the run, through the load balancer and per apiserver) →
verification (rollback branch) → workers in ordered batches (rollback branch after every batch)
→ cluster validation → (blue-green: retire the blue nodes, or switch back to them) → report →
notification.
A rolled-back or refused run ends red.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

import pendulum
from airflow.sdk import TaskGroup, dag

from slipway.airflow.approval import RecordedApprovalOperator
from slipway.airflow.defaults import MAX_CLUSTERS_AT_ONCE, default_args
from slipway.airflow.notifiers import run_failure_notifiers
from slipway.airflow.params import request_params, share_dag_params
from slipway.airflow.routing import route_near_cluster
from slipway.airflow.stage_blue_green import retire_blue_nodes, switch_back_to_blue
from slipway.airflow.stage_common import (
    dry_run_done,
    final_verdict,
    notify,
    refused,
    risk_gate,
    validate_cluster,
    validate_request,
    write_upgrade_report,
)
from slipway.airflow.stage_control_plane import (
    GROUP,
    KINDS,
    backup_etcd,
    check_etcd_data,
    control_plane_failed,
    defragment_etcd,
    probe_tasks,
    rollback_control_plane,
    upgrade_kind,
    verify_control_plane,
)
from slipway.airflow.stage_lease import cluster_lease
from slipway.airflow.stage_prepare import preparation
from slipway.airflow.stage_workers import max_batches, worker_phase


@dag(
    dag_id="k8s_cluster_upgrade",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=MAX_CLUSTERS_AT_ONCE,  # one per cluster: the cluster lease
    params=request_params(),
    tags=["slipway", "kubernetes", "upgrade"],
    default_args=default_args(),
    # A run killed, timed out or marked failed still tells someone (every configured channel).
    on_failure_callback=run_failure_notifiers(),
    doc_md=__doc__,
)
def k8s_cluster_upgrade() -> None:
    request = validate_request()
    # The cluster lease before anything else: preparation (so everything after it) waits for it.
    taken, release = cluster_lease(request)
    plan, risk = preparation(taken)
    gate = risk_gate(risk, request, proceed_to="backup_etcd")
    approve = RecordedApprovalOperator(
        task_id="approve_upgrade",
        subject="Approve the Kubernetes upgrade to {{ params.target_version }}",
        # A human has 12 hours (response_timeout); the task may wait that long.
        execution_timeout=timedelta(hours=13),
    )
    backup = backup_etcd()
    gate >> [approve, backup, refused(risk), dry_run_done()]
    approve >> backup

    with TaskGroup(group_id=GROUP):
        probe, stopped = probe_tasks()
        steps = [upgrade_kind(kind)(plan) for kind in KINDS]
        # etcd's data is checked right after the etcd step, before any apiserver moves; verification
        # runs when every step ended (also a failed one) and sends failures to the rollback.
        steps.insert(1, check_etcd_data(backup))
        verdict = verify_control_plane(plan, next_task="workers.batch_0.select_batch")
        backup >> defragment_etcd() >> probe >> steps[0]
        for earlier, later in itertools.pairwise(steps):
            earlier >> later
        steps[-1] >> verdict
        probe >> stopped
        rolled_back = rollback_control_plane(plan, backup)
        verdict >> rolled_back >> control_plane_failed()

    workers = worker_phase(request, max_batches())
    verdict >> workers
    validated = validate_cluster(request)
    # Only after the phase summary: the phase's other leaf (rolled back) is skipped on a
    # clean run and must not skip the validation, nor let the report run before the workers end.
    workers.children["workers.workers_done"] >> validated
    # Blue-green: retire the blue nodes once the cluster is validated, or switch back to them
    # when the validation or a batch failed (both skip for the other strategies).
    retired, switched = retire_blue_nodes(request), switch_back_to_blue(request)
    validated >> retired
    [validated, workers.children["workers.worker_phase_rolled_back"]] >> switched
    report = write_upgrade_report()
    # The probe measures the whole run: it stops when everything that changes the cluster ended.
    [validated, rolled_back, retired, switched] >> stopped >> report
    [validated, rolled_back, retired, switched] >> report
    report >> notify() >> final_verdict() >> release


route_near_cluster(share_dag_params(k8s_cluster_upgrade()))
