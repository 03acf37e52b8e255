"""Upgrade a fleet of Kubernetes clusters in waves, as declared in ``gitops/fleet.yaml``.

validate the fleet file → preflight every cluster of the wave (each through its own
connections) → stop before anything changes when any preflight refuses → the wave: per stage,
in order, at most ``max_concurrency`` clusters at once, each one a ``k8s_cluster_upgrade`` run
started and awaited deferrably; approval and maintenance-window gates before or after a stage
or group; a soak between stages → fleet report (each cluster's path, risk and verdict) →
verdict. A failed, rolled-back or rejected cluster, or a rejected gate, halts the fleet: every
cluster not yet started stays untouched, and the verdict names who stopped it.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag

from slipway.airflow.defaults import default_args
from slipway.airflow.stage_fleet import (
    APPROVE,
    APPROVE_GATE,
    UPGRADE,
    UPGRADE_CLUSTER,
    WAVE_TIMEOUT,
    FleetApprovalOperator,
    FleetClusterOperator,
    approval_gates,
    assess_fleet_risk,
    fleet_report,
    fleet_verdict,
    preflight_one,
    validate_fleet,
)


@dag(
    dag_id="k8s_fleet_upgrade",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "fleet_file": Param(
            "fleet.yaml",
            type="string",
            title="Fleet file",
            description="The fleet and its strategy, a path under the gitops folder.",
            pattern="^[A-Za-z0-9][A-Za-z0-9._/-]*\\.ya?ml$",
        )
    },
    tags=["slipway", "kubernetes", "upgrade", "fleet"],
    default_args=default_args(),
    doc_md=__doc__,
)
def k8s_fleet_upgrade() -> None:
    validated = validate_fleet()
    checked = preflight_one.expand(cluster=validated)
    risk = assess_fleet_risk(checked)
    gates = approval_gates()
    validated >> gates
    approvals = FleetApprovalOperator.partial(
        task_id=APPROVE, doc_md=APPROVE_GATE, execution_timeout=WAVE_TIMEOUT
    ).expand(subject=gates)
    upgrades = FleetClusterOperator.partial(
        task_id=UPGRADE, doc_md=UPGRADE_CLUSTER, execution_timeout=WAVE_TIMEOUT
    ).expand(cluster=validated)
    risk >> [approvals, upgrades]
    report = fleet_report()
    [approvals, upgrades] >> report
    fleet_verdict(report)


k8s_fleet_upgrade()
