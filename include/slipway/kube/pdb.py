"""PodDisruptionBudgets that stop evictions, named with the pods they guard.

One function, :func:`blocking_pdbs`, serves both the preflight check (before a run) and
the drain's blocker report (when a drain gives up), so the two always agree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from kubernetes import client


def list_pdbs(api: client.ApiClient) -> list[client.V1PodDisruptionBudget]:
    return list(client.PolicyV1Api(api).list_pod_disruption_budget_for_all_namespaces().items)


def pdb_for_pod(
    pdbs: list[client.V1PodDisruptionBudget], pod: client.V1Pod
) -> client.V1PodDisruptionBudget | None:
    """The PDB guarding ``pod``, or None. With several (which the Eviction API refuses
    outright), the first by name is returned."""
    matching = [
        p
        for p in pdbs
        if p.metadata.namespace == pod.metadata.namespace
        and selector_matches(p.spec.selector, pod.metadata.labels or {})
    ]
    return min(matching, key=lambda p: p.metadata.name, default=None)


def blocking_pdbs(api: client.ApiClient, pods: Sequence[client.V1Pod] | None = None) -> list[dict[str, Any]]:
    """PDBs that allow no eviction now, each with the pods it guards and why it blocks.

    A PDB blocks when ``status.disruptionsAllowed`` is 0. ``permanent`` says whether it
    will stay that way however healthy the workload gets (``maxUnavailable: 0``, or a
    ``minAvailable`` as large as the replica count such as one replica guarded by
    ``minAvailable: 1``) — those need a human; the others clear once pods become ready.
    """
    pdbs = list_pdbs(api)
    pods_by_namespace: dict[str, list[client.V1Pod]] = defaultdict(list)
    listed = client.CoreV1Api(api).list_pod_for_all_namespaces().items if pods is None else pods
    for pod in listed:
        if not pod.metadata.deletion_timestamp:
            pods_by_namespace[pod.metadata.namespace].append(pod)
    blocking = []
    for pdb in sorted(pdbs, key=lambda p: (p.metadata.namespace, p.metadata.name)):
        status = pdb.status
        allowed = status.disruptions_allowed if status else 0
        permanent = _never_allows(pdb)
        if allowed and not permanent:
            continue
        guarded = [p for p in pods_by_namespace[pdb.metadata.namespace] if pdb_for_pod([pdb], p) is not None]
        blocking.append(
            {
                "pdb": f"{pdb.metadata.namespace}/{pdb.metadata.name}",
                "disruptions_allowed": allowed or 0,
                "min_available": _text(pdb.spec.min_available),
                "max_unavailable": _text(pdb.spec.max_unavailable),
                "expected_pods": (status.expected_pods if status else None) or 0,
                "current_healthy": (status.current_healthy if status else None) or 0,
                "desired_healthy": (status.desired_healthy if status else None) or 0,
                "permanent": permanent,
                "reason": _reason(pdb, permanent),
                "pods": sorted(f"{p.metadata.namespace}/{p.metadata.name}" for p in guarded),
                "nodes": sorted({p.spec.node_name for p in guarded if p.spec.node_name}),
            }
        )
    return blocking


def selector_matches(selector: client.V1LabelSelector | None, labels: dict[str, str]) -> bool:
    """Whether ``labels`` satisfy a label selector (policy/v1: an empty selector matches all,
    a missing one matches nothing)."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.match_labels or {}).items()):
        return False
    return all(_requirement_holds(r, labels) for r in selector.match_expressions or [])


def _requirement_holds(req: client.V1LabelSelectorRequirement, labels: dict[str, str]) -> bool:
    values = req.values or []
    if req.operator == "In":
        return labels.get(req.key) in values
    if req.operator == "NotIn":
        return labels.get(req.key) not in values
    if req.operator == "Exists":
        return req.key in labels
    if req.operator == "DoesNotExist":
        return req.key not in labels
    raise ValueError(f"label selector on key {req.key!r}: unknown operator {req.operator!r}")


def describe_block(entry: dict[str, Any]) -> str:
    """``PDB shop/payments-api (0 disruptions allowed: maxUnavailable is 0)``."""
    return f"PDB {entry['pdb']} ({entry['disruptions_allowed']} disruptions allowed: {entry['reason']})"


def _never_allows(pdb: client.V1PodDisruptionBudget) -> bool:
    spec, status = pdb.spec, pdb.status
    if spec.max_unavailable is not None and str(spec.max_unavailable) in ("0", "0%"):
        return True
    if spec.min_available is None:
        return False
    if str(spec.min_available) == "100%":
        return True
    expected = status.expected_pods if status else None
    return isinstance(spec.min_available, int) and expected is not None and spec.min_available >= expected > 0


def _reason(pdb: client.V1PodDisruptionBudget, permanent: bool) -> str:
    spec, status = pdb.spec, pdb.status
    if spec.max_unavailable is not None and str(spec.max_unavailable) in ("0", "0%"):
        return f"maxUnavailable is {spec.max_unavailable}"
    expected = (status.expected_pods if status else None) or 0
    if permanent:
        return f"minAvailable {spec.min_available} with {expected} pod{'s' if expected != 1 else ''}"
    healthy = (status.current_healthy if status else None) or 0
    desired = (status.desired_healthy if status else None) or 0
    return f"{healthy} healthy, {desired} needed: waiting for pods to become ready"


def _text(value: int | str | None) -> str | None:
    return None if value is None else str(value)
