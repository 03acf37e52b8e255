"""The preflight of one fleet cluster, before the first cluster of the wave changes.

The same :class:`slipway.preflight.Preflight` checks the single-cluster DAGs run, minus the
etcd backup proof: that one writes a snapshot, and each cluster's own upgrade run proves its
backup right before it changes anything. Read-only otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slipway.fleet.report import path_text
from slipway.models import UpgradeRequest
from slipway.planner import PlanRefused
from slipway.platform import Platform
from slipway.preflight import Preflight, assess_run

try:  # the check names are moving to their own module; either home works
    from slipway.check_names import CHECK_TASKS
except ImportError:  # pragma: no cover
    from slipway.preflight import CHECK_TASKS  # type: ignore[attr-defined,no-redef]

FLEET_CHECKS = tuple(name for name in CHECK_TASKS if name != "etcd-backup")


def preflight_cluster(platform: Platform, request: UpgradeRequest, artefacts: Path) -> dict[str, Any]:
    """``{"path", "risk", "decision", "blockers", "reasons"}``: small enough for XCom."""
    checked = Preflight(platform, request, artefacts)
    try:
        plan = checked.plan_summary()
    except PlanRefused as err:
        # No path is a finding: the upgrade-path check reports it as a blocker too.
        plan = {"refused": err.to_dict()}
    results = [r.model_dump(mode="json") for name in FLEET_CHECKS for r in checked.run(name)]
    risk = assess_run(results, plan, request)
    return {
        "path": path_text(plan),
        "risk": risk.highest_level,
        "decision": risk.decision,
        "blockers": sorted({r["name"] for r in results if r["severity"] == "blocker"}),
        "reasons": risk.reasons[:10],
    }


def blocking(preflight: dict[str, dict[str, Any]]) -> list[str]:
    """One line per cluster whose preflight refuses the upgrade (a blocker anywhere stops the wave)."""
    return [
        f"{name}: preflight decision refuse ({', '.join(found['blockers']) or 'see its reasons'})"
        for name, found in sorted(preflight.items())
        if found.get("decision") == "refuse"
    ]
