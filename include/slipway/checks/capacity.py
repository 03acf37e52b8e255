"""Can the rest of the cluster absorb each batch's evicted pods? (§2.1 capacity assessment, §6)

For every planned batch, the pods a drain would evict and that a controller recreates are
placed, largest first, on the nodes that stay schedulable, the way the scheduler's filters
would allow: CPU, memory and pod slots left after what already runs there, ``nodeSelector``,
required node affinity, and ``NoSchedule``/``NoExecute`` taints against the pod's tolerations.
A pod that finds no node is a shortfall; the batch that causes it is named.

This is a first-fit estimate, not the scheduler: it ignores pod (anti-)affinity, topology
spread and volume zones, so "fits" is necessary, not sufficient. Everything except
:func:`check_capacity` is pure, for tests on plain data.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from kubernetes import client

from slipway.batching import plan_batches
from slipway.checks.result import finding, listed, names
from slipway.kube.drain import FINISHED_PHASES, Behaviour, DrainOptions, classify_pod, pod_key
from slipway.models import (
    Batch,
    CheckResult,
    ClusterInventory,
    NodeInfo,
    Taint,
    UpgradeRequest,
    parse_cpu,
    parse_memory,
)

NAME = "capacity"
# Taints that keep a pod off a node; PreferNoSchedule only discourages.
BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")
# What decides whether a drain evicts a pod that needs a new home: emptyDir pods move too
# (their data is a separate finding), bare pods are not recreated and need no room.
_MOVES = DrainOptions(delete_emptydir_data=True, force=False)

Requirement = tuple[str, str, tuple[str, ...]]  # (key, operator, values)


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""


@dataclass(frozen=True)
class PodDemand:
    """What one pod asks of a node; ``moves`` when a drain evicts it and something recreates it."""

    ref: str
    node: str
    cpu_millis: int
    memory_bytes: int
    moves: bool = True
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    # Required node affinity: any term may match, every requirement of a term must.
    affinity_terms: tuple[tuple[Requirement, ...], ...] = ()


@dataclass
class NodeRoom:
    """What a schedulable node has left."""

    name: str
    labels: Mapping[str, str]
    taints: Sequence[Taint]
    cpu_millis: int
    memory_bytes: int
    pods: int
    cpu_allocatable: int
    memory_allocatable: int

    def fits(self, pod: PodDemand) -> bool:
        return pod.cpu_millis <= self.cpu_millis and pod.memory_bytes <= self.memory_bytes and self.pods >= 1

    def take(self, pod: PodDemand) -> None:
        self.cpu_millis -= pod.cpu_millis
        self.memory_bytes -= pod.memory_bytes
        self.pods -= 1

    def headroom(self) -> float:
        """The smaller of the CPU and memory shares left: the scheduler spreads onto the emptiest."""
        cpu = self.cpu_millis / self.cpu_allocatable if self.cpu_allocatable else 0.0
        memory = self.memory_bytes / self.memory_allocatable if self.memory_allocatable else 0.0
        return min(cpu, memory)


@dataclass(frozen=True)
class BatchFit:
    """Where a batch's evicted pods would go, and the ones that find no room, with why."""

    batch: Batch
    evicted: list[PodDemand]
    placed: dict[str, str]
    unplaced: list[tuple[PodDemand, str]]

    @property
    def fits(self) -> bool:
        return not self.unplaced


# ---- scheduling predicates (pure) ---------------------------------------------------------------


def tolerates(tolerations: Sequence[Toleration], taint: Taint) -> bool:
    """Whether any toleration matches ``taint``, by Kubernetes' rules (empty key with Exists
    matches every taint; empty effect matches every effect)."""
    for tol in tolerations:
        if tol.effect and tol.effect != taint.effect:
            continue
        if tol.operator == "Exists":
            if not tol.key or tol.key == taint.key:
                return True
        elif tol.key == taint.key and tol.value == taint.value:
            return True
    return False


def requirement_holds(requirement: Requirement, labels: Mapping[str, str]) -> bool:
    """One ``nodeSelectorTerms`` match expression against a node's labels."""
    key, operator, values = requirement
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt") and key in labels and values:
        try:
            have, bound = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def why_not_eligible(pod: PodDemand, room: NodeRoom) -> str | None:
    """None when ``pod`` may land on ``room`` by labels and taints; else the reason."""
    wrong = {k: v for k, v in pod.node_selector.items() if room.labels.get(k) != v}
    if wrong:
        return f"nodeSelector {_pairs(pod.node_selector)}"
    if pod.affinity_terms and not any(
        all(requirement_holds(r, room.labels) for r in term) for term in pod.affinity_terms
    ):
        return "required node affinity"
    untolerated = [
        t for t in room.taints if t.effect in BLOCKING_EFFECTS and not tolerates(pod.tolerations, t)
    ]
    if untolerated:
        return f"taint {untolerated[0].key}:{untolerated[0].effect}"
    return None


# ---- room per node and placement (pure) ---------------------------------------------------------


def node_rooms(nodes: Sequence[NodeInfo], pods: Sequence[PodDemand]) -> dict[str, NodeRoom]:
    """Room left on every node after the requests of the pods running there."""
    rooms = {
        n.name: NodeRoom(
            n.name,
            n.labels,
            n.taints,
            n.allocatable.cpu_millis,
            n.allocatable.memory_bytes,
            n.allocatable.pods,
            n.allocatable.cpu_millis,
            n.allocatable.memory_bytes,
        )
        for n in nodes
    }
    for pod in pods:
        if pod.node in rooms:
            rooms[pod.node].take(pod)
    return rooms


def fit_batch(
    batch: Batch, nodes: Sequence[NodeInfo], pods: Sequence[PodDemand], held: Collection[str] = ()
) -> BatchFit:
    """Place the pods evicted from ``batch`` on the nodes that stay schedulable, largest first.

    ``held``: nodes of the batch that will not be drained (quarantined for a PDB that never
    allows an eviction): their pods stay, and they take no new ones either.
    """
    draining = set(batch.nodes) - set(held)
    rooms = node_rooms(nodes, pods)
    usable = {n.name for n in nodes if n.ready and not n.unschedulable and n.name not in batch.nodes}
    targets = [rooms[name] for name in sorted(usable)]
    evicted = sorted(
        (p for p in pods if p.node in draining and p.moves),
        key=lambda p: (-p.cpu_millis, -p.memory_bytes, p.ref),
    )
    placed: dict[str, str] = {}
    unplaced: list[tuple[PodDemand, str]] = []
    for pod in evicted:
        eligible = [room for room in targets if why_not_eligible(pod, room) is None]
        candidates = [room for room in eligible if room.fits(pod)]
        if candidates:
            best = max(candidates, key=lambda room: (room.headroom(), room.name))
            best.take(pod)
            placed[pod.ref] = best.name
        else:
            unplaced.append((pod, _no_room_reason(pod, targets, eligible)))
    return BatchFit(batch, evicted, placed, unplaced)


def largest_fitting(
    batch: Batch, nodes: Sequence[NodeInfo], pods: Sequence[PodDemand], held: Collection[str] = ()
) -> tuple[Batch | None, BatchFit]:
    """The most of ``batch`` that the nodes staying schedulable can absorb *now*.

    The whole batch when it fits; else its longest prefix that fits; else the first of its
    nodes that fits alone. ``None`` when not one of them can be drained, with the whole
    batch's fit (what names the pods that have nowhere to go).
    """
    whole = fit_batch(batch, nodes, pods, held)
    if whole.fits:
        return batch, whole
    for size in range(len(batch.nodes) - 1, 0, -1):
        prefix = batch.model_copy(update={"nodes": batch.nodes[:size]})
        if fit_batch(prefix, nodes, pods, held).fits:
            return prefix, whole
    for name in batch.nodes[1:]:
        alone = batch.model_copy(update={"nodes": [name]})
        if fit_batch(alone, nodes, pods, held).fits:
            return alone, whole
    return None, whole


def describe_shortfall(fit: BatchFit) -> str:
    """One line naming the batch, its shortfall and the first pods with nowhere to go."""
    shown = "; ".join(f"{pod.ref} {reason}" for pod, reason in fit.unplaced[:3])
    more = f" (+{len(fit.unplaced) - 3} more)" if len(fit.unplaced) > 3 else ""
    return f"{_describe(fit)}: {shown}{more}"


def _no_room_reason(pod: PodDemand, targets: Sequence[NodeRoom], eligible: Sequence[NodeRoom]) -> str:
    need = f"needs {pod.cpu_millis}m CPU, {_mib(pod.memory_bytes)}"
    if not eligible:
        reasons = sorted({why_not_eligible(pod, room) or "" for room in targets} - {""})
        return f"{need}; no schedulable node is left that it may run on ({'; '.join(reasons) or 'none left'})"
    best = max(eligible, key=lambda room: (min(room.cpu_millis, pod.cpu_millis), room.memory_bytes))
    return (
        f"{need}; the roomiest of {len(eligible)} node(s) it may run on ({best.name}) has "
        f"{best.cpu_millis}m CPU, {_mib(best.memory_bytes)}, {best.pods} pod slot(s) left"
    )


def judge_capacity(
    batches: Sequence[Batch], nodes: Sequence[NodeInfo], pods: Sequence[PodDemand]
) -> CheckResult:
    """Blocker naming every batch whose evicted pods the remaining nodes cannot absorb."""
    fits = [fit_batch(batch, nodes, pods) for batch in batches]
    short = [fit for fit in fits if not fit.fits]
    checked = {"batches": len(fits), "pods_moved_at_most": max((len(f.evicted) for f in fits), default=0)}
    if not short:
        return finding(NAME, "ok", f"every one of {len(fits)} batch(es) fits on the remaining nodes", checked)
    evidence = checked | {"short": listed([_short_evidence(fit) for fit in short])}
    first = short[0]
    pod, reason = first.unplaced[0]
    return finding(
        NAME,
        "blocker",
        f"{len(short)} of {len(fits)} batch(es) cannot be absorbed by the remaining nodes: "
        + names([_describe(fit) for fit in short], 3)
        + f"; e.g. {pod.ref} {reason}",
        evidence,
        "Lower the batch size, add nodes (or use strategy=surge) to the short pools, or lower the requests "
        "of the pods that find no room.",
    )


def _describe(fit: BatchFit) -> str:
    cpu = sum(p.cpu_millis for p, _ in fit.unplaced)
    memory = sum(p.memory_bytes for p, _ in fit.unplaced)
    return (
        f"batch {fit.batch.index} (pool {fit.batch.pool}: {', '.join(fit.batch.nodes)}) is short "
        f"{cpu}m CPU, {_mib(memory)} for {len(fit.unplaced)} pod(s)"
    )


def _short_evidence(fit: BatchFit) -> dict[str, object]:
    return {
        "batch": fit.batch.index,
        "pool": fit.batch.pool,
        "nodes": list(fit.batch.nodes),
        "evicted": len(fit.evicted),
        "shortfall": {
            "cpu_millis": sum(p.cpu_millis for p, _ in fit.unplaced),
            "memory_bytes": sum(p.memory_bytes for p, _ in fit.unplaced),
            "pods": len(fit.unplaced),
        },
        "unplaced": listed([{"pod": p.ref, "reason": reason} for p, reason in fit.unplaced], 10),
    }


def _mib(memory: int) -> str:
    return f"{memory / 2**20:.0f}Mi"


def _pairs(mapping: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(mapping.items()))


# ---- from the API --------------------------------------------------------------------------------


def _requests(containers: Sequence[client.V1Container] | None) -> list[tuple[int, int]]:
    found = []
    for container in containers or []:
        requests = (container.resources.requests if container.resources else None) or {}
        found.append((parse_cpu(requests.get("cpu", "0")), parse_memory(requests.get("memory", "0"))))
    return found


def pod_demand(pod: client.V1Pod) -> PodDemand:
    """A V1Pod's effective requests (the larger of its containers' sum and its largest init
    container, plus overhead, as the scheduler counts) and its placement constraints."""
    spec = pod.spec
    running = _requests(spec.containers)
    init = _requests(spec.init_containers)
    overhead = spec.overhead or {}
    cpu = max(sum(c for c, _ in running), max((c for c, _ in init), default=0)) + parse_cpu(
        overhead.get("cpu", "0")
    )
    memory = max(sum(m for _, m in running), max((m for _, m in init), default=0)) + parse_memory(
        overhead.get("memory", "0")
    )
    affinity = spec.affinity.node_affinity if spec.affinity else None
    required = affinity.required_during_scheduling_ignored_during_execution if affinity else None
    terms = tuple(
        tuple((e.key, e.operator, tuple(e.values or ())) for e in term.match_expressions or [])
        for term in (required.node_selector_terms if required else None) or []
    )
    return PodDemand(
        ref=pod_key(pod),
        node=spec.node_name or "",
        cpu_millis=cpu,
        memory_bytes=memory,
        moves=classify_pod(pod, _MOVES).behaviour is Behaviour.EVICT and _phase(pod) not in FINISHED_PHASES,
        node_selector=dict(spec.node_selector or {}),
        tolerations=tuple(
            Toleration(t.key or "", t.operator or "Equal", t.value or "", t.effect or "")
            for t in spec.tolerations or []
        ),
        affinity_terms=terms,
    )


def _phase(pod: client.V1Pod) -> str:
    return str(pod.status.phase or "") if pod.status else ""


def running_pods(api: client.ApiClient, pods: Sequence[client.V1Pod] | None = None) -> list[PodDemand]:
    """Every pod bound to a node that still holds its requests there (``pods``: a listing
    the caller already has)."""
    if pods is None:
        pods = client.CoreV1Api(api).list_pod_for_all_namespaces().items
    return [pod_demand(p) for p in pods if p.spec.node_name and _phase(p) not in FINISHED_PHASES]


def check_capacity(
    api: client.ApiClient, inventory: ClusterInventory, request: UpgradeRequest
) -> CheckResult:
    """``capacity``: can the remaining schedulable nodes absorb every planned batch's pods?"""
    plan = plan_batches(inventory.nodes, request)
    result = judge_capacity(plan.batches, inventory.nodes, running_pods(api))
    if result.severity == "blocker" and request.strategy != "in-place":
        # Surge and blue-green add nodes before draining; the shortfall is what they must cover.
        return result.model_copy(
            update={
                "severity": "warning",
                "summary": f"{result.summary} (before the {request.strategy} nodes)",
            }
        )
    return result
