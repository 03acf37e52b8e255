"""Drain a node through the Eviction API, modelled on kubectl's ``pkg/drain``.

Each pod on the node goes through a pipeline of small filters (:data:`POD_FILTERS`). A
filter returns a :class:`PodStatus` whose behaviour is ``evict`` (no objection, maybe a
note), ``wait`` (already terminating: await it, as kubectl does), ``skip`` (leave the pod
alone) or ``refuse`` (the drain must not start). The first ``skip`` or ``refuse`` decides;
adding a rule is adding a filter. The filters, their order and their exemptions follow
kubectl's ``pkg/drain/filters.go``, so a plan agrees with ``kubectl drain`` pod by pod.

:func:`drain_node` refuses before touching anything, cordons, then evicts concurrently.
It never deletes a pod: the Eviction API is the only door, so PodDisruptionBudgets are
honoured. A 429 (the budget allows no disruption now) is retried with backoff until
the drain's timeout; pods already terminating are awaited until they are gone. When it
gives up, :class:`DrainBlocked` names the pods still on the node grouped by what holds
them (a PDB, a termination that did not finish), at most :data:`MAX_NAMED_PODS` per group.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from slipway.kube import nodes
from slipway.kube.pdb import blocking_pdbs, describe_block, list_pdbs, pdb_for_pod

log = logging.getLogger(__name__)

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
FINISHED_PHASES = ("Succeeded", "Failed")
# Who is recorded as the cordon's owner when drain_node has to cordon a node itself;
# DAG tasks pass their run id instead so their teardown can uncordon.
DRAIN_OWNER = "slipway-drain"

CREATED = 201
NOT_FOUND = 404
CONFLICT = 409  # the UID precondition failed: the pod we planned to evict is already gone
TOO_MANY_REQUESTS = 429  # the pod's PDB allows no disruption right now
NO_REPLY = 0
# Worth retrying: the PDB may allow it later, or the apiserver is restarting behind the LB.
TRANSIENT_STATUSES = (NO_REPLY, TOO_MANY_REQUESTS, 502, 503, 504)
FORBIDDEN = 403
# A kube-apiserver that has just restarted passes /readyz and may still deny, for a moment,
# requests its RBAC allows (its authorizer's informers have not synced: kubernetes/kubernetes
# #92506, #121635); seen in the fault matrix after an apiserver was killed mid-drain. A 403 is
# therefore retried this many times (with the usual backoff) before it counts as a refusal.
FORBIDDEN_RETRIES = 4
REQUEST_TIMEOUT_SECONDS = 30.0
# Messages name at most this many pods per reason, then "and N more": a 300-pod node stays readable.
MAX_NAMED_PODS = 5
# kubectl's --grace-period=-1: send no grace period, so each pod keeps its own.
POD_OWN_GRACE = -1


@dataclass(frozen=True)
class DrainOptions:
    """How a drain behaves. Defaults are the seed's: grace 300 s, timeout 600 s, ignore
    DaemonSets, keep local data, no force, await every terminating pod.

    :param grace_period_seconds: termination grace given to each evicted pod; -1 means the
        pod's own ``terminationGracePeriodSeconds`` (kubectl's ``--grace-period=-1``).
    :param timeout_seconds: the whole drain gives up after this long and names its blockers;
        terminating pods are awaited up to it too.
    :param skip_wait_for_delete_timeout_seconds: kubectl's ``--skip-wait-for-delete-timeout``:
        when above 0, a pod whose ``deletionTimestamp`` is more than this many seconds in the
        past is not awaited (it is reported as skipped). 0 awaits every terminating pod.
    :param ignore_daemonsets: skip DaemonSet pods (their controller would recreate them).
    :param delete_emptydir_data: evict pods whose emptyDir data is lost with them.
    :param force: evict bare pods that no controller will recreate.
    :param concurrency: evictions in flight at once.
    :param concurrency_per_pdb: evictions in flight at once for pods under one PDB. Every
        eviction rewrites its PDB's status; the apiserver retries a conflicting rewrite only
        every 0.5 s, so beyond a few at a time they queue there and the drain gets slower.
    :param backoff_initial_seconds: first wait after a 429; doubles per retry of that pod.
    :param backoff_max_seconds: cap on that wait.
    :param poll_seconds: how often to look whether evicted pods have left the node.
    """

    grace_period_seconds: int = 300
    timeout_seconds: float = 600.0
    skip_wait_for_delete_timeout_seconds: int = 0
    ignore_daemonsets: bool = True
    delete_emptydir_data: bool = False
    force: bool = False
    concurrency: int = 16
    concurrency_per_pdb: int = 4
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 5.0
    poll_seconds: float = 0.25

    def __post_init__(self) -> None:
        positive = (
            "timeout_seconds",
            "concurrency",
            "concurrency_per_pdb",
            "backoff_initial_seconds",
            "poll_seconds",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"drain option {name}: {getattr(self, name)} must be greater than 0")
        if self.grace_period_seconds < POD_OWN_GRACE:
            raise ValueError(
                f"drain option grace_period_seconds: {self.grace_period_seconds} must be 0 or more, "
                "or -1 for each pod's own grace period"
            )
        if self.skip_wait_for_delete_timeout_seconds < 0:
            raise ValueError(
                "drain option skip_wait_for_delete_timeout_seconds: "
                f"{self.skip_wait_for_delete_timeout_seconds} must be 0 (await all) or more"
            )
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError(
                f"drain option backoff_max_seconds: {self.backoff_max_seconds} is below "
                f"backoff_initial_seconds {self.backoff_initial_seconds}"
            )


class Behaviour(StrEnum):
    EVICT = "evict"
    WAIT = "wait"  # already terminating: no eviction, the drain awaits it
    SKIP = "skip"
    REFUSE = "refuse"


@dataclass(frozen=True)
class PodStatus:
    """What the drain does with one pod, why (a short tag) and a message naming the pod."""

    pod: str
    behaviour: Behaviour
    reason: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {
            "pod": self.pod,
            "behaviour": str(self.behaviour),
            "reason": self.reason,
            "message": self.message,
        }


PodFilter = Callable[[client.V1Pod, DrainOptions], PodStatus]


# ---- pod filters: pure functions of a V1Pod and the options ----------------------------------


def pod_key(pod: client.V1Pod) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def _evict(pod: client.V1Pod, reason: str = "ok", message: str = "") -> PodStatus:
    return PodStatus(pod_key(pod), Behaviour.EVICT, reason, message)


def _finished(pod: client.V1Pod) -> bool:
    return bool(pod.status and pod.status.phase in FINISHED_PHASES)


def _controller(pod: client.V1Pod) -> client.V1OwnerReference | None:
    return next((ref for ref in pod.metadata.owner_references or [] if ref.controller), None)


def overdue_seconds(deletion_timestamp: datetime | str | None, now: datetime | None = None) -> float | None:
    """Seconds since ``deletionTimestamp`` (negative while the grace period runs: the apiserver
    sets it to the delete time plus the grace period); None for a pod not being deleted."""
    if not deletion_timestamp:
        return None
    stamp = (
        datetime.fromisoformat(deletion_timestamp)
        if isinstance(deletion_timestamp, str)
        else deletion_timestamp
    )
    return ((now or datetime.now(UTC)) - stamp).total_seconds()


def skip_waiting(overdue: float | None, opts: DrainOptions) -> bool:
    """kubectl's ``shouldSkipPod``: whole seconds past the deletionTimestamp above the limit."""
    limit = opts.skip_wait_for_delete_timeout_seconds
    return limit > 0 and overdue is not None and int(overdue) > limit


def terminating(pod: client.V1Pod, opts: DrainOptions) -> PodStatus:
    """Await a pod that is already being deleted (a retried drain after a worker crash finds
    its own evictions still terminating); the other filters still judge it, as in kubectl."""
    overdue = overdue_seconds(pod.metadata.deletion_timestamp)
    if overdue is None:
        return _evict(pod)
    if skip_waiting(overdue, opts):
        return PodStatus(
            pod_key(pod),
            Behaviour.SKIP,
            "terminating-too-long",
            f"{pod_key(pod)} was due to be gone {int(overdue)}s ago, more than "
            f"skip_wait_for_delete_timeout_seconds ({opts.skip_wait_for_delete_timeout_seconds}s): "
            "not awaited",
        )
    return PodStatus(
        pod_key(pod),
        Behaviour.WAIT,
        "terminating",
        f"{pod_key(pod)} is already terminating: the drain waits until it is gone",
    )


def skip_mirror(pod: client.V1Pod, opts: DrainOptions) -> PodStatus:
    if MIRROR_POD_ANNOTATION in (pod.metadata.annotations or {}):
        return PodStatus(
            pod_key(pod),
            Behaviour.SKIP,
            "mirror",
            f"{pod_key(pod)} is a static pod's mirror: the kubelet owns it, not the API",
        )
    return _evict(pod)


def note_completed(pod: client.V1Pod, opts: DrainOptions) -> PodStatus:
    if _finished(pod):
        return _evict(pod, "completed", f"{pod_key(pod)} has finished ({pod.status.phase}): nothing runs")
    return _evict(pod)


def daemonset_pods(pod: client.V1Pod, opts: DrainOptions) -> PodStatus:
    owner = _controller(pod)
    # A finished DaemonSet pod runs nothing: kubectl evicts it like any finished pod.
    if owner is None or owner.kind != "DaemonSet" or _finished(pod):
        return _evict(pod)
    owner_name = f"DaemonSet {pod.metadata.namespace}/{owner.name}"
    if opts.ignore_daemonsets:
        return PodStatus(
            pod_key(pod),
            Behaviour.SKIP,
            "daemonset",
            f"{pod_key(pod)} belongs to {owner_name}, which would recreate it at once",
        )
    return PodStatus(
        pod_key(pod),
        Behaviour.REFUSE,
        "daemonset",
        f"{pod_key(pod)} belongs to {owner_name} (set ignore_daemonsets to leave it)",
    )


def local_storage(pod: client.V1Pod, opts: DrainOptions) -> PodStatus:
    volumes = [v.name for v in pod.spec.volumes or [] if v.empty_dir is not None]
    if not volumes or _finished(pod):
        return _evict(pod)
    where = f"emptyDir volume{'s' if len(volumes) > 1 else ''} {', '.join(volumes)}"
    if opts.delete_emptydir_data:
        return _evict(pod, "local-storage", f"{pod_key(pod)}: data in {where} is deleted")
    return PodStatus(
        pod_key(pod),
        Behaviour.REFUSE,
        "local-storage",
        f"{pod_key(pod)} keeps data in {where} that eviction would lose "
        "(set delete_emptydir_data to evict it)",
    )


def unreplicated(pod: client.V1Pod, opts: DrainOptions) -> PodStatus:
    if _controller(pod) is not None or _finished(pod):
        return _evict(pod)
    if opts.force:
        return _evict(pod, "unreplicated", f"{pod_key(pod)} has no controller: it is not recreated")
    return PodStatus(
        pod_key(pod),
        Behaviour.REFUSE,
        "unreplicated",
        f"{pod_key(pod)} is not managed by a controller, nothing would recreate it (set force to evict it)",
    )


POD_FILTERS: tuple[PodFilter, ...] = (
    terminating,
    skip_mirror,
    note_completed,
    daemonset_pods,
    local_storage,
    unreplicated,
)


def classify_pod(
    pod: client.V1Pod, opts: DrainOptions, filters: Iterable[PodFilter] = POD_FILTERS
) -> PodStatus:
    """Run ``pod`` through the filters: the first skip or refuse decides; a terminating pod
    that no filter objects to is awaited; otherwise it is evicted, carrying the notes the
    filters made on the way."""
    notes: list[PodStatus] = []
    waiting: PodStatus | None = None
    for pod_filter in filters:
        status = pod_filter(pod, opts)
        if status.behaviour is Behaviour.WAIT:
            waiting = status
        elif status.behaviour is not Behaviour.EVICT:
            return status
        elif status.message:
            notes.append(status)
    if waiting is not None:
        return waiting
    if not notes:
        return _evict(pod, "ok", f"{pod_key(pod)} is evicted")
    return _evict(pod, notes[0].reason, "; ".join(n.message for n in notes))


# ---- messages: pods grouped by reason, a few named per group --------------------------------

# What a refusal means, and the option that lifts it (the per-pod detail stays in the plan).
REFUSAL_LABELS = {
    "daemonset": "managed by a DaemonSet (set ignore_daemonsets to leave them alone)",
    "local-storage": "with emptyDir data that eviction would lose (set delete_emptydir_data to evict)",
    "unreplicated": "without a controller, nothing would recreate them (set force to evict)",
}


def name_pods(pods: Sequence[str], limit: int = MAX_NAMED_PODS) -> str:
    """``a, b, c, d, e and 3 more``."""
    shown = ", ".join(pods[:limit])
    rest = len(pods) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


def group_pods(entries: Iterable[tuple[str, str]], limit: int = MAX_NAMED_PODS) -> str:
    """``(label, pod)`` pairs as one clause per label, in order of first appearance:
    ``2 pods <label>: a, b; 1 pod <other label>: c``."""
    groups: dict[str, list[str]] = {}
    for label, pod in entries:
        groups.setdefault(label, []).append(pod)
    return "; ".join(
        f"{len(pods)} pod{'' if len(pods) == 1 else 's'} {label}: {name_pods(pods, limit)}"
        for label, pods in groups.items()
    )


def describe_refusals(refused: Iterable[PodStatus]) -> str:
    """Refused pods grouped by reason, e.g. ``2 pods without a controller, ... (set force to
    evict): shop/a, shop/b``; a reason without a label (an added filter) is named by its tag."""
    return group_pods((REFUSAL_LABELS.get(s.reason, f"refused ({s.reason})"), s.pod) for s in refused)


def describe_blockers(blockers: Iterable[Blocker]) -> str:
    """Blockers grouped by what holds them, e.g. ``3 pods blocked by PDB shop/payments-api
    (0 disruptions allowed: maxUnavailable is 0): shop/payments-api-1, ...``."""
    return group_pods((f"blocked by {b.reason}" if b.pdb else b.reason, b.pod) for b in blockers)


# ---- plans, blockers, results -----------------------------------------------------------------


@dataclass(frozen=True)
class Blocker:
    """A pod the drain could not move off the node, and what held it."""

    pod: str
    reason: str
    pdb: str | None = None

    def __str__(self) -> str:
        return f"{self.pod} by {self.reason}" if self.pdb else f"{self.pod}: {self.reason}"

    def to_dict(self) -> dict[str, str | None]:
        return {"pod": self.pod, "pdb": self.pdb, "reason": self.reason}


@dataclass(frozen=True)
class DrainPlan:
    """What a drain of ``node`` would do now; ``blocked`` are evictable pods whose PDB
    allows no disruption at the moment (filled by :func:`plan_drain`); ``wait`` are pods
    already terminating, which the drain awaits without evicting."""

    node: str
    evict: tuple[PodStatus, ...]
    skip: tuple[PodStatus, ...]
    refuse: tuple[PodStatus, ...]
    blocked: tuple[Blocker, ...] = ()
    wait: tuple[PodStatus, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "evict": [s.pod for s in self.evict],
            "wait": [s.pod for s in self.wait],
            "skip": [{"pod": s.pod, "reason": s.reason} for s in self.skip],
            "refuse": [s.to_dict() for s in self.refuse],
            "blocked": [b.to_dict() for b in self.blocked],
        }

    def summary(self) -> str:
        """One line for logs and task failures: refusals and blockers grouped by reason."""
        parts = [
            f"node {self.node}: {len(self.evict)} to evict, {len(self.wait)} terminating to await, "
            f"{len(self.skip)} left alone"
        ]
        if self.refuse:
            parts.append(f"refused: {describe_refusals(self.refuse)}")
        if self.blocked:
            parts.append(f"would be blocked: {describe_blockers(self.blocked)}")
        return "; ".join(parts)


@dataclass
class DrainResult:
    """The outcome of :func:`drain_node`; ``to_dict`` is small enough for XCom."""

    node: str
    drained: bool = False
    cordoned: bool = False
    evicted: list[str] = field(default_factory=list)
    awaited: list[str] = field(default_factory=list)  # terminating before the drain, waited for
    skipped: list[PodStatus] = field(default_factory=list)
    blockers: list[Blocker] = field(default_factory=list)
    attempts: int = 0
    too_many_requests: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return self.cordoned or bool(self.evicted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "drained": self.drained,
            "cordoned": self.cordoned,
            "evicted": sorted(self.evicted),
            "awaited": sorted(self.awaited),
            "skipped": [{"pod": s.pod, "reason": s.reason} for s in self.skipped],
            "blockers": [b.to_dict() for b in self.blockers],
            "attempts": self.attempts,
            "too_many_requests": self.too_many_requests,
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        verdict = "drained" if self.drained else "blocked"
        line = (
            f"node {self.node} {verdict} in {self.seconds:.1f}s: {len(self.evicted)} evicted, "
            f"{len(self.awaited)} already terminating awaited, {len(self.skipped)} skipped, "
            f"{self.too_many_requests} evictions refused (429) and retried"
        )
        overdue = [s.pod for s in self.skipped if s.reason == "terminating-too-long"]
        if overdue:
            line += (
                f"; not awaited, terminating past skip_wait_for_delete_timeout_seconds: {name_pods(overdue)}"
            )
        return line


class DrainError(RuntimeError):
    """A drain that did not complete; the message names the node, the pods and why."""


class DrainRefused(DrainError):
    """Pods that the options forbid evicting, grouped by why (each pod's own message is in
    ``plan.refuse``); raised before any eviction."""

    def __init__(self, plan: DrainPlan) -> None:
        self.plan = plan
        super().__init__(f"drain of node {plan.node} refused: {describe_refusals(plan.refuse)}")


class DrainBlocked(DrainError):
    """The drain timed out or hit a hard error with pods left; ``blockers`` names them."""

    def __init__(self, result: DrainResult) -> None:
        self.result = result
        self.blockers = list(result.blockers)
        evicted = len(set(result.evicted) - {b.pod for b in self.blockers})
        super().__init__(
            f"drain of node {result.node} blocked after {result.seconds:.0f}s "
            f"({evicted} other pod{'' if evicted == 1 else 's'} evicted): {describe_blockers(self.blockers)}"
        )


def plan_drain(api: client.ApiClient, node: str, opts: DrainOptions | None = None) -> DrainPlan:
    """What a drain of ``node`` would evict, skip and refuse, and which evictions a PDB
    would block right now. Changes nothing: for dry runs and preflight checks."""
    opts = opts or DrainOptions()
    core = client.CoreV1Api(api)
    _require_node(core, node)
    plan = _classify(_pods_on(core, node), node, opts)
    pending = {s.pod for s in plan.evict}
    blocked = tuple(
        Blocker(pod, describe_block(entry), entry["pdb"])
        for entry in blocking_pdbs(api)
        for pod in entry["pods"]
        if pod in pending
    )
    return DrainPlan(plan.node, plan.evict, plan.skip, plan.refuse, blocked, plan.wait)


def drain_node(
    api: client.ApiClient, node: str, opts: DrainOptions | None = None, *, run_id: str = DRAIN_OWNER
) -> DrainResult:
    """Cordon ``node`` (as ``run_id``) and evict its pods until none that needs evicting is left.

    Idempotent: a drained node is a no-op success, a half-drained one is drained again, and
    pods still terminating from an earlier attempt are awaited, not counted as gone.

    :raises DrainRefused: when the options forbid evicting some pod: before anything is
        evicted, and before the cordon unless that pod landed while the cordon was being set.
    :raises DrainBlocked: when pods are still on the node at the timeout (or an eviction
        failed for good); its ``result`` and ``blockers`` name them and their PDBs, or that
        they were still terminating.
    """
    opts = opts or DrainOptions()
    started = time.monotonic()
    core = client.CoreV1Api(api)
    _require_node(core, node)
    pods = _pods_on(core, node)
    plan = _classify(pods, node, opts)
    if plan.refuse:
        raise DrainRefused(plan)
    result = DrainResult(node, cordoned=nodes.cordon(api, node, run_id))
    fresh = _look_again(core, node, pods, opts)
    if fresh is not None:
        pods, plan = fresh
    result.skipped = list(plan.skip)
    evictor = _Evictor(api, node, opts, deadline=started + opts.timeout_seconds)
    # One worker more than the evictions in flight: it looks whether evicted pods have left.
    with ThreadPoolExecutor(max_workers=opts.concurrency + 1, thread_name_prefix=f"evict-{node}") as pool:
        while (plan.evict or plan.wait) and evictor.run_round(pool, plan, pods):
            fresh = _look_again(core, node, pods, opts)
            if fresh is None:
                break
            pods, plan = fresh
            result.skipped = list(plan.skip)
    result.skipped += [s for s in evictor.given_up if s.pod not in {k.pod for k in result.skipped}]
    result.evicted = sorted(evictor.evicted)
    result.awaited = sorted(evictor.awaited)
    result.attempts = evictor.attempts
    result.too_many_requests = evictor.too_many_requests
    result.blockers = evictor.blockers()
    result.drained = not result.blockers
    result.seconds = time.monotonic() - started
    if not result.drained:
        raise DrainBlocked(result)
    log.info("%s", result.summary())
    return result


def _require_node(core: client.CoreV1Api, node: str) -> None:
    try:
        core.read_node(node)
    except ApiException as err:
        if err.status == NOT_FOUND:
            raise DrainError(f"drain of node {node} impossible: the node does not exist") from err
        raise


def _pods_on(core: client.CoreV1Api, node: str) -> list[client.V1Pod]:
    return list(core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items)


def _pod_uids(core: client.CoreV1Api, node: str) -> dict[str, str | None]:
    """The uids of the pods on ``node`` with their deletionTimestamp (None when not being
    deleted), read from the raw JSON: turning a hundred pods into V1Pod objects costs the
    client ten times what the request does."""
    response = core.list_pod_for_all_namespaces(
        field_selector=f"spec.nodeName={node}", _preload_content=False
    )
    return {
        item["metadata"]["uid"]: item["metadata"].get("deletionTimestamp")
        for item in json.loads(response.data)["items"]
    }


def _look_again(
    core: client.CoreV1Api, node: str, pods: list[client.V1Pod], opts: DrainOptions
) -> tuple[list[client.V1Pod], DrainPlan] | None:
    """A fresh plan if pods have landed on the node since ``pods`` was read (before the cordon
    took, or bound by name during a round), else None.

    :raises DrainRefused: when a newcomer may not be evicted.
    """
    if _pod_uids(core, node).keys() <= {p.metadata.uid for p in pods}:
        return None
    pods = _pods_on(core, node)
    plan = _classify(pods, node, opts)
    if plan.refuse:
        raise DrainRefused(plan)
    return pods, plan


def _classify(pods: list[client.V1Pod], node: str, opts: DrainOptions) -> DrainPlan:
    statuses = [classify_pod(p, opts) for p in sorted(pods, key=pod_key)]
    return DrainPlan(
        node,
        tuple(s for s in statuses if s.behaviour is Behaviour.EVICT),
        tuple(s for s in statuses if s.behaviour is Behaviour.SKIP),
        tuple(s for s in statuses if s.behaviour is Behaviour.REFUSE),
        wait=tuple(s for s in statuses if s.behaviour is Behaviour.WAIT),
    )


# ---- the eviction loop ----------------------------------------------------------------------


@dataclass(eq=False)  # identity, so a task can sit in a set while its fields change
class _Task:
    """One pod to evict (or, already terminating, to await), when to try next and what the
    last try said."""

    pod: client.V1Pod
    budget: str | None  # namespace/name of the PDB guarding the pod
    backoff: float
    next_at: float = 0.0
    # pending -> evicted -> gone, or failed; an awaited pod starts at evicted (its deletion
    # is under way) and ends gone, or skipped once past skip_wait_for_delete_timeout_seconds.
    state: str = "pending"
    awaited: bool = False
    last_status: int | None = None
    last_message: str = ""
    forbidden_tries: int = 0

    @property
    def key(self) -> str:
        return pod_key(self.pod)


class _Evictor:
    """Evicts the pods of one round concurrently, retries 429s, waits until they are gone.

    One coordinating thread decides what to send when; the pool only makes the calls, so
    a pod stuck behind its PDB never keeps another pod from being tried.
    """

    def __init__(self, api: client.ApiClient, node: str, opts: DrainOptions, deadline: float) -> None:
        self.api, self.core = api, client.CoreV1Api(api)
        self.node, self.opts, self.deadline = node, opts, deadline
        self.tasks: dict[str, _Task] = {}
        self.evicted: set[str] = set()
        self.awaited: set[str] = set()
        self.given_up: list[PodStatus] = []
        self.attempts = 0
        self.too_many_requests = 0
        self._wake = threading.Event()

    def run_round(self, pool: ThreadPoolExecutor, plan: DrainPlan, pods: list[client.V1Pod]) -> bool:
        """Evict ``plan.evict``; True when every pod of the round has left the node.

        ``pool`` needs a worker beyond ``concurrency``: looking whether evicted pods have left
        runs there too, so the coordinator never stops sending evictions to wait for a list.
        """
        round_tasks = self._tasks_for(plan, pods)
        in_flight: dict[Future[tuple[int, str]], _Task] = {}
        look: Future[dict[str, str | None]] | None = None
        next_look = 0.0
        while True:
            self._wake.clear()
            for future in [f for f in in_flight if f.done()]:
                self._record(in_flight.pop(future), *future.result())
            if look is not None and look.done():
                self._note_left(round_tasks, look.result())
                look = None
            now = time.monotonic()
            open_tasks = [t for t in round_tasks if t.state in ("pending", "evicted")]
            if not open_tasks and not in_flight:
                return all(t.state in ("gone", "skipped") for t in round_tasks)
            if now >= self.deadline:
                # Replies already on their way still count: an eviction that succeeded is evicted.
                for future, task in in_flight.items():
                    self._record(task, *future.result())
                return False
            leaving = any(t.state == "evicted" for t in open_tasks)
            if leaving and look is None and now >= next_look:
                look = pool.submit(_pod_uids, self.core, self.node)
                look.add_done_callback(self._wake_up)
                next_look = now + self.opts.poll_seconds
            next_due = self._send_due(pool, in_flight, open_tasks, now)
            # Wait only until something can change: a reply, a retry falling due, the next look.
            wake_at = [self.deadline]
            if next_due is not None:
                wake_at.append(next_due)
            if leaving and look is None:
                wake_at.append(next_look)
            self._wake.wait(max(0.0, min(wake_at) - time.monotonic()))

    def _note_left(self, round_tasks: list[_Task], present: dict[str, str | None]) -> None:
        """Mark deleted pods that left the node gone, and stop awaiting those past
        ``skip_wait_for_delete_timeout_seconds`` (kubectl's waitForDelete does the same)."""
        for task in round_tasks:
            if task.state != "evicted":
                continue
            uid = task.pod.metadata.uid
            if uid not in present:
                task.state = "gone"
                continue
            overdue = overdue_seconds(present[uid])
            if skip_waiting(overdue, self.opts):
                task.state = "skipped"
                self.given_up.append(
                    PodStatus(
                        task.key,
                        Behaviour.SKIP,
                        "terminating-too-long",
                        f"{task.key} was due to be gone {int(overdue or 0)}s ago, more than "
                        f"skip_wait_for_delete_timeout_seconds "
                        f"({self.opts.skip_wait_for_delete_timeout_seconds}s): no longer awaited",
                    )
                )

    def _send_due(
        self,
        pool: ThreadPoolExecutor,
        in_flight: dict[Future[tuple[int, str]], _Task],
        open_tasks: list[_Task],
        now: float,
    ) -> float | None:
        """Send the evictions that are due, within both concurrency limits; return when the
        next one that could be sent falls due (None: only a reply can free a slot)."""
        busy = set(in_flight.values())
        per_budget = Counter(t.budget for t in busy if t.budget)
        waiting = sorted(
            (t for t in open_tasks if t.state == "pending" and t not in busy), key=lambda t: t.next_at
        )
        next_due = None
        for task in waiting:
            if task.budget and per_budget[task.budget] >= self.opts.concurrency_per_pdb:
                continue  # a reply from one of its budget's evictions frees a slot and wakes the loop
            if len(in_flight) >= self.opts.concurrency:
                return None
            if task.next_at > now:
                next_due = task.next_at if next_due is None else min(next_due, task.next_at)
                continue
            self.attempts += 1
            future = pool.submit(self._evict_once, task)
            future.add_done_callback(self._wake_up)
            in_flight[future] = task
            if task.budget:
                per_budget[task.budget] += 1
        return next_due

    def _tasks_for(self, plan: DrainPlan, pods: list[client.V1Pod]) -> list[_Task]:
        by_key = {pod_key(p): p for p in pods}
        pdbs = list_pdbs(self.api)
        tasks = []
        for status in plan.evict:
            pod = by_key[status.pod]
            pdb = pdb_for_pod(pdbs, pod)
            budget = f"{pdb.metadata.namespace}/{pdb.metadata.name}" if pdb else None
            tasks.append(_Task(pod, budget, backoff=self.opts.backoff_initial_seconds))
        # Already terminating: evicting again could only shorten the grace its deleter chose.
        for status in plan.wait:
            known = self.tasks.get(status.pod)
            if known is not None and known.pod.metadata.uid == by_key[status.pod].metadata.uid:
                tasks.append(known)  # evicted by an earlier round and still terminating
                continue
            tasks.append(_Task(by_key[status.pod], None, backoff=0.0, state="evicted", awaited=True))
            self.awaited.add(status.pod)
        self.tasks.update((t.key, t) for t in tasks)
        return tasks

    def _wake_up(self, _: object) -> None:
        self._wake.set()

    def _evict_once(self, task: _Task) -> tuple[int, str]:
        """One eviction call: the HTTP status (0 when no reply came) and the apiserver's reason."""
        body = eviction_body(task.pod, self.opts)
        try:
            self.core.create_namespaced_pod_eviction(
                task.pod.metadata.name,
                task.pod.metadata.namespace,
                body,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as err:
            return err.status, _api_reason(err)
        except HTTPError as err:  # connection reset or timed out: the apiserver may be restarting
            return NO_REPLY, f"request failed: {err}"
        return CREATED, ""

    def _record(self, task: _Task, status: int, message: str) -> None:
        task.last_status, task.last_message = status, message
        if status == CREATED:
            task.state = "evicted"
            self.evicted.add(task.key)
        elif status in (NOT_FOUND, CONFLICT):
            task.state = "gone"
        elif status in TRANSIENT_STATUSES or (
            status == FORBIDDEN and task.forbidden_tries < FORBIDDEN_RETRIES
        ):
            if status == FORBIDDEN:
                task.forbidden_tries += 1
            if status == TOO_MANY_REQUESTS:
                self.too_many_requests += 1
            log.debug(
                "eviction of %s refused (%s): %s; retry in %.1fs", task.key, status, message, task.backoff
            )
            task.next_at = time.monotonic() + task.backoff
            task.backoff = min(task.backoff * 2, self.opts.backoff_max_seconds)
        else:
            task.state = "failed"
            log.warning("eviction of %s from node %s failed (%s): %s", task.key, self.node, status, message)

    def blockers(self) -> list[Blocker]:
        """Every pod that has not left the node, with the PDB, the error or the unfinished
        termination that held it."""
        stuck = sorted(
            (t for t in self.tasks.values() if t.state in ("pending", "evicted", "failed")),
            key=lambda t: t.key,
        )
        if not stuck:
            return []
        by_pod = {pod: entry for entry in blocking_pdbs(self.api) for pod in entry["pods"]}
        found = []
        for task in stuck:
            entry = by_pod.get(task.key)
            if task.state == "pending" and entry is not None:
                found.append(Blocker(task.key, describe_block(entry), entry["pdb"]))
            elif task.state == "evicted" and task.awaited:
                found.append(
                    Blocker(task.key, "already terminating before the drain, still there at the timeout")
                )
            elif task.state == "evicted":
                found.append(Blocker(task.key, "evicted, still terminating at the timeout"))
            elif task.last_status is None:
                found.append(Blocker(task.key, "not tried before the timeout"))
            else:
                found.append(Blocker(task.key, f"eviction refused ({task.last_status}): {task.last_message}"))
        return found


def eviction_body(pod: client.V1Pod, opts: DrainOptions) -> client.V1Eviction:
    """The Eviction for ``pod``: no grace period at all for -1, so the pod keeps its own
    ``terminationGracePeriodSeconds`` (what kubectl sends for ``--grace-period=-1``); the
    UID precondition keeps a same-named replacement from being evicted by mistake."""
    grace = opts.grace_period_seconds if opts.grace_period_seconds >= 0 else None
    return client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=pod.metadata.namespace),
        delete_options=client.V1DeleteOptions(
            grace_period_seconds=grace, preconditions=client.V1Preconditions(uid=pod.metadata.uid)
        ),
    )


def _api_reason(err: ApiException) -> str:
    """The apiserver's own words: the Status message and its causes (which name the PDB)."""
    try:
        body = json.loads(err.body or "{}")
    except ValueError:
        return str(err.reason)
    causes = [c.get("message", "") for c in (body.get("details") or {}).get("causes") or []]
    return " ".join([body.get("message", str(err.reason)), *causes]).strip()
