"""Preflight checks (§2.1, §2.2, §3.2): each returns a :class:`~slipway.models.CheckResult`.

One module per family; names follow :data:`slipway.risk.RISK_SOURCES` so the risk matrix
counts them. Every family has a pure ``judge_*`` part (tested on plain data) and a thin
``check_*`` part that reads the cluster through the orchestrator's client, etcdctl or a
:class:`~slipway.inventory.ControlPlaneReader`.
"""

from __future__ import annotations

from slipway.checks.apis import (
    check_deprecated_api_requests,
    check_removed_api_manifests,
    check_removed_apis,
    check_served_removed_apis,
)
from slipway.checks.capacity import check_capacity
from slipway.checks.controlplane import check_control_plane_health
from slipway.checks.etcd import check_etcd_backup, check_etcd_consistency, check_etcd_health
from slipway.checks.gates import check_feature_gates
from slipway.checks.nodes import check_node_readiness
from slipway.checks.pdbs import check_pod_disruption_budgets
from slipway.checks.versions import check_upgrade_path, check_version_skew
from slipway.checks.window import check_maintenance_window
from slipway.checks.workloads import check_workloads

# Every name a check here can report (a family may add ``/suffix``).
CHECK_NAMES = (
    "upgrade-path",
    "removed-apis",
    "version-skew",
    "feature-gates",
    "etcd-backup",
    "stateful-workloads",
    "emptydir-data",
    "pod-disruption-budgets",
    "critical-workloads",
    "single-replicas",
    "capacity",
    "etcd-health",
    "node-readiness",
    "control-plane-health",
    "maintenance-window",
)

__all__ = [
    "CHECK_NAMES",
    "check_capacity",
    "check_control_plane_health",
    "check_deprecated_api_requests",
    "check_etcd_backup",
    "check_etcd_consistency",
    "check_etcd_health",
    "check_feature_gates",
    "check_maintenance_window",
    "check_node_readiness",
    "check_pod_disruption_budgets",
    "check_removed_api_manifests",
    "check_removed_apis",
    "check_served_removed_apis",
    "check_upgrade_path",
    "check_version_skew",
    "check_workloads",
]
