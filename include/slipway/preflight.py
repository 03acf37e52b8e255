"""Preflight: the plan and every check, run against the live cluster before anything changes.

Each check is named so an Airflow task can run exactly one (visible and retryable on its
own); :func:`run_check` computes what that check needs from the cluster itself, so no
large inventory travels between tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from slipway import checks
from slipway.batching import plan_batches
from slipway.check_names import CHECK_TASKS
from slipway.checks.versions import cluster_versions
from slipway.inventory import ControlPlaneReader, collect_inventory
from slipway.models import CheckResult, ClusterInventory, RiskAssessment, UpgradeRequest, WorkerPlan
from slipway.planner import UpgradePath, plan_upgrade
from slipway.platform import Platform
from slipway.risk import assess
from slipway.versions import Version

# One Airflow task each; families that yield several results stay one task.


@dataclass
class Preflight:
    """Everything one check needs, read lazily from the cluster."""

    platform: Platform
    request: UpgradeRequest
    artefacts: Path
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @cached_property
    def reader(self) -> ControlPlaneReader:
        return self.platform.control_plane_reader()

    @cached_property
    def inventory(self) -> ClusterInventory:
        return collect_inventory(self.platform.api, self.reader.versions())

    @cached_property
    def current(self) -> Version:
        return self.inventory.apiserver_version

    @cached_property
    def path(self) -> UpgradePath:
        return plan_upgrade(
            cluster_versions(self.inventory), self.request.target, allow_downgrade=self.request.rollback
        )

    @cached_property
    def worker_plan(self) -> WorkerPlan:
        return plan_batches(self.inventory.nodes, self.request)

    def plan_summary(self) -> dict[str, Any]:
        """The hops and the batch plan, small enough for XCom and the run record."""
        plan = self.worker_plan
        summary = self.path.to_dict()
        for hop in summary.get("hops", []):
            hop["nodes"] = len(hop.get("nodes", []))  # counts only: XCom stays small at 1,000 nodes
        return summary | {
            "current": str(self.current),
            "etcd": min(self.inventory.etcd_versions.values(), key=Version.parse, default=""),
            "batches": len(plan.batches),
            "worker_nodes": plan.node_count,
            "pools": [p.pool for p in plan.pools],
        }

    def run(self, name: str) -> list[CheckResult]:
        """Run one named check family; unknown names are refused."""
        api, target = self.platform.api, self.request.target
        runners = {
            "upgrade-path": lambda: [
                checks.check_upgrade_path(self.inventory, target, allow_downgrade=self.request.rollback)
            ],
            "version-skew": lambda: [checks.check_version_skew(self.inventory)],
            "removed-apis": lambda: checks.check_removed_apis(api, self.current, target),
            "feature-gates": lambda: [checks.check_feature_gates(self.reader, self.current, target)],
            "pod-disruption-budgets": lambda: [checks.check_pod_disruption_budgets(api, self.request)],
            "workloads": lambda: checks.check_workloads(api, self.request),
            "capacity": lambda: [checks.check_capacity(api, self.inventory, self.request)],
            "etcd-health": lambda: [
                checks.check_etcd_health(self.platform.etcd()),
                checks.check_etcd_consistency(self.platform.etcd()),
            ],
            "etcd-backup": lambda: [
                checks.check_etcd_backup(self.platform.etcd(), self.backup_path(), overwrite=True)
            ],
            "node-readiness": lambda: [checks.check_node_readiness(self.inventory)],
            "control-plane-health": lambda: [checks.check_control_plane_health(self.reader)],
            "maintenance-window": lambda: [
                checks.check_maintenance_window(
                    self.request, self.worker_plan, self.now, history=self.batch_history()
                )
            ],
        }
        if name not in runners:
            raise ValueError(f"unknown preflight check {name!r}: one of {', '.join(CHECK_TASKS)}")
        return runners[name]()

    def batch_history(self) -> list[float]:
        """Seconds per batch of this cluster's earlier end-to-end upgrades (its run records):
        the window check predicts from them, and from the stated model without any."""
        from slipway.reports.maturity import load_run_records
        from slipway.reports.prediction import earlier_upgrades
        from slipway.windows import batch_history

        return batch_history(earlier_upgrades({}, load_run_records(self.platform.api)))

    def backup_path(self) -> Path:
        self.artefacts.mkdir(parents=True, exist_ok=True)
        return self.artefacts / "etcd-pre-upgrade.db"


def assess_run(
    results: list[dict[str, Any]], plan: dict[str, Any], request: UpgradeRequest
) -> RiskAssessment:
    """The §3.2 matrix from the checks' JSON results and the plan summary."""
    parsed = [CheckResult.model_validate(r) for r in results]
    path_risk: Literal["low", "high"] = "high" if plan.get("risk") in ("medium", "high") else "low"
    return assess(
        parsed, path_risk, int(plan.get("minors_crossed", 0)), int(plan.get("worker_nodes", 0)), request
    )
