"""PodDisruptionBudgets that would stop every drain (§2.1 pre-drain PDB validation).

The PDBs and their pods come from :func:`slipway.kube.pdb.blocking_pdbs`, the same function the
drain uses to name its blockers, so the preflight warning and a stuck drain always agree.
The finding is a warning: the request's ``blocked_drain_policy`` decides at drain time whether
Slipway waits, quarantines the node or rolls the batch back.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from kubernetes import client

from slipway.checks.result import finding, listed, names
from slipway.kube.pdb import blocking_pdbs
from slipway.models import CheckResult, UpgradeRequest

NAME = "pod-disruption-budgets"


def judge_pdbs(
    entries: Sequence[dict[str, Any]], request: UpgradeRequest, nodes: Collection[str] | None = None
) -> CheckResult:
    """Warn about each blocking PDB whose pods run on ``nodes`` (default: anywhere).

    :param entries: :func:`~slipway.kube.pdb.blocking_pdbs` output.
    """
    relevant = [e for e in entries if nodes is None or set(e["nodes"]) & set(nodes)]
    # Permanent blocks need a human; transient ones clear once pods become ready.
    relevant = sorted(relevant, key=lambda e: (not e["permanent"], e["pdb"]))
    evidence = {
        "blocking": listed(
            [
                {k: e[k] for k in ("pdb", "reason", "permanent", "disruptions_allowed", "pods", "nodes")}
                for e in relevant
            ]
        ),
        "blocked_drain_policy": request.blocked_drain_policy,
    }
    if not relevant:
        return finding(NAME, "ok", "every PodDisruptionBudget allows at least one eviction", evidence)
    described = [f"{e['pdb']} ({e['reason']}; pods {', '.join(e['pods']) or 'none'})" for e in relevant]
    return finding(
        NAME,
        "warning",
        f"{len(relevant)} PodDisruptionBudget(s) allow no eviction, so drains of their nodes will block: "
        + names(described, 3),
        evidence,
        f"Scale the guarded workloads up or relax the budgets with their owners before the run; otherwise "
        f"blocked_drain_policy={request.blocked_drain_policy} decides when a drain stalls on them.",
    )


def check_pod_disruption_budgets(
    api: client.ApiClient, request: UpgradeRequest, nodes: Collection[str] | None = None
) -> CheckResult:
    """``pod-disruption-budgets``: PDBs that allow no eviction now, with the pods they guard."""
    return judge_pdbs(blocking_pdbs(api), request, nodes)
