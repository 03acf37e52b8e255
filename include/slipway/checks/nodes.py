"""Node readiness before the run (§2.1): every node Ready, and who already cordoned what."""

from __future__ import annotations

from slipway.checks.result import finding, listed, names
from slipway.models import CheckResult, ClusterInventory


def check_node_readiness(inventory: ClusterInventory) -> CheckResult:
    """``node-readiness``: blocker naming NotReady nodes; cordoned nodes are listed as info.

    A node that is NotReady before the run would make every later readiness gate ambiguous
    (did the upgrade break it?), and its pods may already be elsewhere.
    """
    not_ready = [n.name for n in inventory.nodes if not n.ready]
    cordoned = [n.name for n in inventory.nodes if n.unschedulable]
    evidence = {
        "nodes": len(inventory.nodes),
        "not_ready": listed(not_ready),
        "cordoned": listed(cordoned),
        "control_plane_not_ready": [n.name for n in inventory.nodes if n.control_plane and not n.ready],
    }
    if not_ready:
        return finding(
            "node-readiness",
            "blocker",
            f"{len(not_ready)} of {len(inventory.nodes)} node(s) are NotReady: {names(not_ready)}",
            evidence,
            "Repair or remove the NotReady nodes first, so that every readiness gate during the run "
            "means one thing.",
        )
    if cordoned:
        return finding(
            "node-readiness",
            "info",
            f"all {len(inventory.nodes)} nodes Ready; {len(cordoned)} already cordoned (left as they are): "
            f"{names(cordoned)}",
            evidence,
        )
    return finding(
        "node-readiness", "ok", f"all {len(inventory.nodes)} nodes Ready and schedulable", evidence
    )
