"""Workloads a rolling drain puts at risk (§2.1 critical-workload identification, §3.2 downtime
and data-loss risks): critical ones, single replicas, stateful ones and emptyDir data.

Pods are grouped into workloads by their controller (a ReplicaSet's pods under its
Deployment), so findings name ``Deployment shop/ledger``, not a pod hash. DaemonSet and
static (mirror) pods are left out: a drain does not move them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from kubernetes import client

from slipway.checks.result import finding, listed, names
from slipway.kube.drain import FINISHED_PHASES, MIRROR_POD_ANNOTATION, pod_key
from slipway.kube.pdb import list_pdbs, pdb_for_pod
from slipway.models import CheckResult, UpgradeRequest

# The scheduler's own threshold for system-critical priorities; user classes at or above it
# are treated the same (the samples' business-critical class is exactly 1,000,000).
CRITICAL_PRIORITY = 1_000_000
SYSTEM_PRIORITY_CLASSES = ("system-cluster-critical", "system-node-critical")
SYSTEM_NAMESPACE = "kube-system"


@dataclass(frozen=True)
class Workload:
    """Running pods of one controller (or one bare pod), as the risk checks see them."""

    ref: str
    kind: str
    namespace: str
    pods: tuple[str, ...]
    nodes: tuple[str, ...]
    priority: int = 0
    priority_class: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    emptydir_volumes: tuple[str, ...] = ()
    claims: tuple[str, ...] = ()
    host_paths: tuple[str, ...] = ()
    guarded_by: str | None = None

    @property
    def replicas(self) -> int:
        return len(self.pods)


# ---- pure judgements --------------------------------------------------------------------------


def critical_reason(workload: Workload, critical_labels: Sequence[tuple[str, str]] = ()) -> str | None:
    """Why ``workload`` counts as critical, or None."""
    if workload.priority_class in SYSTEM_PRIORITY_CLASSES:
        return f"priority class {workload.priority_class}"
    if workload.namespace == SYSTEM_NAMESPACE:
        return f"namespace {SYSTEM_NAMESPACE}"
    if workload.priority >= CRITICAL_PRIORITY:
        return f"priority {workload.priority} ({workload.priority_class or 'no class'})"
    labels = dict(workload.labels)
    matched = [f"{k}={v}" for k, v in critical_labels if labels.get(k) == v or (not v and k in labels)]
    return f"label {matched[0]}" if matched else None


def judge_critical(workloads: Sequence[Workload], request: UpgradeRequest) -> CheckResult:
    """Warning when a critical workload has one replica or no PDB; info listing them otherwise."""
    pairs = request.critical_label_pairs()
    critical = [(w, reason) for w in workloads if (reason := critical_reason(w, pairs)) is not None]
    exposed = [(w, r) for w, r in critical if w.replicas < 2 or w.guarded_by is None]
    evidence = {
        "critical": listed(
            [
                {
                    "workload": w.ref,
                    "why": r,
                    "replicas": w.replicas,
                    "pdb": w.guarded_by,
                    "nodes": list(w.nodes),
                }
                for w, r in critical
            ]
        ),
        "exposed": [w.ref for w, _ in exposed],
    }
    if exposed:
        return finding(
            "critical-workloads",
            "warning",
            f"{len(exposed)} critical workload(s) would go down or lose their guard during drains: "
            + names(
                [f"{w.ref} ({r}; {w.replicas} replica(s), {_guard(w)})" for w, r in exposed],
                3,
            ),
            evidence,
            "Give each critical workload at least 2 replicas and a PodDisruptionBudget before the run.",
        )
    if critical:
        return finding(
            "critical-workloads",
            "info",
            f"{len(critical)} critical workload(s), each replicated and guarded by a PDB: "
            + names([w.ref for w, _ in critical]),
            evidence,
        )
    return finding(
        "critical-workloads", "ok", "no critical workloads run on nodes a drain would touch", evidence
    )


def _guard(workload: Workload) -> str:
    return f"PDB {workload.guarded_by}" if workload.guarded_by else "no PDB"


def judge_single_replicas(workloads: Sequence[Workload]) -> CheckResult:
    """Warning for every workload with one running pod: its drain is an outage."""
    single = [w for w in workloads if w.replicas == 1]
    evidence = {
        "single": listed(
            [{"workload": w.ref, "pod": w.pods[0], "node": w.nodes[0] if w.nodes else None} for w in single]
        )
    }
    if not single:
        return finding("single-replicas", "ok", "every workload runs more than one replica", evidence)
    bare = [w.ref for w in single if w.kind == "Pod"]
    extra = f"; {len(bare)} bare pod(s) nothing recreates (drain refuses them unless forced)" if bare else ""
    return finding(
        "single-replicas",
        "warning",
        f"{len(single)} workload(s) run a single replica and go down while their node drains: "
        f"{names([w.ref for w in single])}{extra}",
        evidence,
        "Scale them to 2+ replicas before the run, or announce the short outage to their owners.",
    )


def judge_stateful(workloads: Sequence[Workload]) -> CheckResult:
    """Warning for workloads holding data on volumes (claims or hostPath); info for other StatefulSets."""
    with_data = [w for w in workloads if w.claims or w.host_paths]
    stateful_sets = [w for w in workloads if w.kind == "StatefulSet" and w not in with_data]
    evidence = {
        "with_data": listed(
            [
                {"workload": w.ref, "claims": list(w.claims), "host_paths": list(w.host_paths)}
                for w in with_data
            ]
        ),
        "stateful_sets_without_volumes": [w.ref for w in stateful_sets],
    }
    if with_data:
        node_bound = [w.ref for w in with_data if w.host_paths]
        extra = f"; {len(node_bound)} keep data on the node itself (hostPath)" if node_bound else ""
        return finding(
            "stateful-workloads",
            "warning",
            f"{len(with_data)} workload(s) keep data on volumes that move or detach during drains: "
            f"{names([w.ref for w in with_data])}{extra}",
            evidence,
            "Snapshot their persistent volumes (and verify the checksums) before the run.",
        )
    if stateful_sets:
        return finding(
            "stateful-workloads",
            "info",
            f"{len(stateful_sets)} StatefulSet(s) without persistent volumes: "
            + names([w.ref for w in stateful_sets]),
            evidence,
        )
    return finding("stateful-workloads", "ok", "no workload keeps data on volumes", evidence)


def judge_emptydir(workloads: Sequence[Workload], request: UpgradeRequest) -> CheckResult:
    """Warning for workloads with emptyDir data: lost on eviction, or the drain refuses them."""
    local = [w for w in workloads if w.emptydir_volumes]
    evidence = {
        "workloads": listed(
            [{"workload": w.ref, "volumes": list(w.emptydir_volumes), "pods": list(w.pods)} for w in local]
        ),
        "delete_emptydir_data": request.delete_emptydir_data,
    }
    if not local:
        return finding("emptydir-data", "ok", "no pod keeps data in emptyDir volumes", evidence)
    listing = names([f"{w.ref} ({', '.join(w.emptydir_volumes)})" for w in local])
    if request.delete_emptydir_data:
        return finding(
            "emptydir-data",
            "warning",
            f"drains will delete the emptyDir data of {len(local)} workload(s): {listing}",
            evidence,
            "Confirm with the owners that this data is a cache that can be rebuilt.",
        )
    return finding(
        "emptydir-data",
        "warning",
        f"drains will refuse nodes running {len(local)} workload(s) with emptyDir data: {listing}",
        evidence,
        "Set delete_emptydir_data once the owners confirm the data is disposable, or move it to a volume.",
    )


# ---- from the API -------------------------------------------------------------------------------


def _controller(meta: client.V1ObjectMeta) -> client.V1OwnerReference | None:
    return next((ref for ref in meta.owner_references or [] if ref.controller), None)


def list_workloads(api: client.ApiClient) -> list[Workload]:
    """Running pods grouped by top-level controller; DaemonSet and mirror pods left out."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    replica_sets = {
        (rs.metadata.namespace, rs.metadata.name): _controller(rs.metadata)
        for rs in apps.list_replica_set_for_all_namespaces().items
    }
    pdbs = list_pdbs(api)
    groups: dict[str, list[client.V1Pod]] = defaultdict(list)
    kinds: dict[str, str] = {}
    for pod in core.list_pod_for_all_namespaces().items:
        meta = pod.metadata
        if meta.deletion_timestamp or MIRROR_POD_ANNOTATION in (meta.annotations or {}):
            continue
        if (pod.status.phase or "") in FINISHED_PHASES:
            continue
        owner = _controller(meta)
        if owner is not None and owner.kind == "DaemonSet":
            continue
        if owner is not None and owner.kind == "ReplicaSet":
            owner = replica_sets.get((meta.namespace, owner.name)) or owner
        kind, name = (owner.kind, owner.name) if owner is not None else ("Pod", meta.name)
        ref = f"{kind} {meta.namespace}/{name}"
        groups[ref].append(pod)
        kinds[ref] = kind
    return [_workload(ref, kinds[ref], pods, pdbs) for ref, pods in sorted(groups.items())]


def _workload(
    ref: str, kind: str, pods: list[client.V1Pod], pdbs: list[client.V1PodDisruptionBudget]
) -> Workload:
    first = pods[0]
    volumes = first.spec.volumes or []
    guard = pdb_for_pod(pdbs, first)
    return Workload(
        ref=ref,
        kind=kind,
        namespace=first.metadata.namespace,
        pods=tuple(sorted(pod_key(p) for p in pods)),
        nodes=tuple(sorted({p.spec.node_name for p in pods if p.spec.node_name})),
        priority=first.spec.priority or 0,
        priority_class=first.spec.priority_class_name or "",
        labels=tuple(sorted((first.metadata.labels or {}).items())),
        emptydir_volumes=tuple(v.name for v in volumes if v.empty_dir is not None),
        claims=tuple(v.persistent_volume_claim.claim_name for v in volumes if v.persistent_volume_claim),
        host_paths=tuple(v.host_path.path for v in volumes if v.host_path),
        guarded_by=f"{guard.metadata.namespace}/{guard.metadata.name}" if guard else None,
    )


def check_workloads(api: client.ApiClient, request: UpgradeRequest) -> list[CheckResult]:
    """``critical-workloads``, ``single-replicas``, ``stateful-workloads`` and ``emptydir-data``."""
    workloads = list_workloads(api)
    return [
        judge_critical(workloads, request),
        judge_single_replicas(workloads),
        judge_stateful(workloads),
        judge_emptydir(workloads, request),
    ]
