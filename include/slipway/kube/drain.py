"""Drain a node through the Eviction API, modelled on kubectl's ``pkg/drain``.

Each pod on the node goes through a pipeline of small filters (:data:`POD_FILTERS`). A
filter returns a :class:`PodStatus` whose behaviour is ``evict`` (no objection, maybe a
note), ``skip`` (leave the pod alone) or ``refuse`` (the drain must not start). The first
``skip`` or ``refuse`` decides; adding a rule is adding a filter.

:func:`drain_node` refuses before touching anything, cordons, then evicts concurrently.
It never deletes a pod: the Eviction API is the only door, so PodDisruptionBudgets are
honoured. A 429 (the budget allows no disruption now) is retried with backoff until
the drain's timeout; when it gives up, :class:`DrainBlocked` names each pod still on the
node and the PDB that holds it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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
REQUEST_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class DrainOptions:
    """How a drain behaves. Defaults are the seed's (§2.1): grace 300 s, timeout 600 s,
    ignore DaemonSets, keep local data, no force.

    :param grace_period_seconds: termination grace given to each evicted pod; negative
        means the pod's own ``terminationGracePeriodSeconds`` (as kubectl's -1).
    :param timeout_seconds: the whole drain gives up after this long and names its blockers.
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
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError(
                f"drain option backoff_max_seconds: {self.backoff_max_seconds} is below "
                f"backoff_initial_seconds {self.backoff_initial_seconds}"
            )


class Behaviour(StrEnum):
    EVICT = "evict"
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


def skip_deleted(pod: client.V1Pod, opts: DrainOptions) -> PodStatus:
    if pod.metadata.deletion_timestamp:
        return PodStatus(pod_key(pod), Behaviour.SKIP, "deleted", f"{pod_key(pod)} is already terminating")
    return _evict(pod)


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
    if owner is None or owner.kind != "DaemonSet":
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
    skip_deleted,
    skip_mirror,
    note_completed,
    daemonset_pods,
    local_storage,
    unreplicated,
)


def classify_pod(
    pod: client.V1Pod, opts: DrainOptions, filters: Iterable[PodFilter] = POD_FILTERS
) -> PodStatus:
    """Run ``pod`` through the filters: the first skip or refuse decides; otherwise it is
    evicted, carrying the notes the filters made on the way."""
    notes: list[PodStatus] = []
    for pod_filter in filters:
        status = pod_filter(pod, opts)
        if status.behaviour is not Behaviour.EVICT:
            return status
        if status.message:
            notes.append(status)
    if not notes:
        return _evict(pod, "ok", f"{pod_key(pod)} is evicted")
    return _evict(pod, notes[0].reason, "; ".join(n.message for n in notes))


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
    allows no disruption at the moment (filled by :func:`plan_drain`)."""

    node: str
    evict: tuple[PodStatus, ...]
    skip: tuple[PodStatus, ...]
    refuse: tuple[PodStatus, ...]
    blocked: tuple[Blocker, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "evict": [s.pod for s in self.evict],
            "skip": [{"pod": s.pod, "reason": s.reason} for s in self.skip],
            "refuse": [s.to_dict() for s in self.refuse],
            "blocked": [b.to_dict() for b in self.blocked],
        }


@dataclass
class DrainResult:
    """The outcome of :func:`drain_node`; ``to_dict`` is small enough for XCom."""

    node: str
    drained: bool = False
    cordoned: bool = False
    evicted: list[str] = field(default_factory=list)
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
            "skipped": [{"pod": s.pod, "reason": s.reason} for s in self.skipped],
            "blockers": [b.to_dict() for b in self.blockers],
            "attempts": self.attempts,
            "too_many_requests": self.too_many_requests,
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        verdict = "drained" if self.drained else "blocked"
        return (
            f"node {self.node} {verdict} in {self.seconds:.1f}s: {len(self.evicted)} evicted, "
            f"{len(self.skipped)} skipped, {self.too_many_requests} evictions refused (429) and retried"
        )


class DrainError(RuntimeError):
    """A drain that did not complete; the message names the node, the pods and why."""


class DrainRefused(DrainError):
    """Pods that the options forbid evicting, each named with why; raised before any eviction."""

    def __init__(self, plan: DrainPlan) -> None:
        self.plan = plan
        reasons = "; ".join(s.message for s in plan.refuse)
        super().__init__(f"drain of node {plan.node} refused: {reasons}")


class DrainBlocked(DrainError):
    """The drain timed out or hit a hard error with pods left; ``blockers`` names them."""

    def __init__(self, result: DrainResult) -> None:
        self.result = result
        self.blockers = list(result.blockers)
        blockers = "; ".join(str(b) for b in self.blockers)
        evicted = len(result.evicted)
        super().__init__(
            f"drain of node {result.node} blocked: {blockers} "
            f"(gave up after {result.seconds:.0f}s; {evicted} other pod{'' if evicted == 1 else 's'} evicted)"
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
    return DrainPlan(plan.node, plan.evict, plan.skip, plan.refuse, blocked)


def drain_node(
    api: client.ApiClient, node: str, opts: DrainOptions | None = None, *, run_id: str = DRAIN_OWNER
) -> DrainResult:
    """Cordon ``node`` (as ``run_id``) and evict its pods until none that needs evicting is left.

    Idempotent: a drained node is a no-op success, a half-drained one is drained again.

    :raises DrainRefused: when the options forbid evicting some pod: before anything is
        evicted, and before the cordon unless that pod landed while the cordon was being set.
    :raises DrainBlocked: when pods are still on the node at the timeout (or an eviction
        failed for good); its ``result`` and ``blockers`` name them and their PDBs.
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
        while plan.evict and evictor.run_round(pool, plan, pods):
            fresh = _look_again(core, node, pods, opts)
            if fresh is None:
                break
            pods, plan = fresh
            result.skipped = list(plan.skip)
    result.evicted = sorted(evictor.evicted)
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


def _pod_uids(core: client.CoreV1Api, node: str) -> set[str]:
    """The uids of the pods on ``node``, read from the raw JSON: turning a hundred pods into
    V1Pod objects costs the client ten times what the request does."""
    response = core.list_pod_for_all_namespaces(
        field_selector=f"spec.nodeName={node}", _preload_content=False
    )
    return {item["metadata"]["uid"] for item in json.loads(response.data)["items"]}


def _look_again(
    core: client.CoreV1Api, node: str, pods: list[client.V1Pod], opts: DrainOptions
) -> tuple[list[client.V1Pod], DrainPlan] | None:
    """A fresh plan if pods have landed on the node since ``pods`` was read (before the cordon
    took, or bound by name during a round), else None.

    :raises DrainRefused: when a newcomer may not be evicted.
    """
    if _pod_uids(core, node) <= {p.metadata.uid for p in pods}:
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
    )


# ---- the eviction loop ----------------------------------------------------------------------


@dataclass(eq=False)  # identity, so a task can sit in a set while its fields change
class _Task:
    """One pod to evict, when to try next and what the last try said."""

    pod: client.V1Pod
    budget: str | None  # namespace/name of the PDB guarding the pod
    backoff: float
    next_at: float = 0.0
    state: str = "pending"  # pending -> evicted -> gone, or failed
    last_status: int | None = None
    last_message: str = ""

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
        look: Future[set[str]] | None = None
        next_look = 0.0
        while True:
            self._wake.clear()
            for future in [f for f in in_flight if f.done()]:
                self._record(in_flight.pop(future), *future.result())
            if look is not None and look.done():
                present = look.result()
                for task in round_tasks:
                    if task.state == "evicted" and task.pod.metadata.uid not in present:
                        task.state = "gone"
                look = None
            now = time.monotonic()
            open_tasks = [t for t in round_tasks if t.state in ("pending", "evicted")]
            if not open_tasks and not in_flight:
                return all(t.state == "gone" for t in round_tasks)
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
        self.tasks.update((t.key, t) for t in tasks)
        return tasks

    def _wake_up(self, _: object) -> None:
        self._wake.set()

    def _evict_once(self, task: _Task) -> tuple[int, str]:
        """One eviction call: the HTTP status (0 when no reply came) and the apiserver's reason."""
        grace = self.opts.grace_period_seconds if self.opts.grace_period_seconds >= 0 else None
        body = client.V1Eviction(
            metadata=client.V1ObjectMeta(name=task.pod.metadata.name, namespace=task.pod.metadata.namespace),
            delete_options=client.V1DeleteOptions(
                grace_period_seconds=grace, preconditions=client.V1Preconditions(uid=task.pod.metadata.uid)
            ),
        )
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
        elif status in TRANSIENT_STATUSES:
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
        """Every pod that has not left the node, with the PDB or the error that held it."""
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
            elif task.state == "evicted":
                found.append(Blocker(task.key, "evicted but still on the node (terminating)"))
            elif task.last_status is None:
                found.append(Blocker(task.key, "not tried before the timeout"))
            else:
                found.append(Blocker(task.key, f"eviction refused ({task.last_status}): {task.last_message}"))
        return found


def _api_reason(err: ApiException) -> str:
    """The apiserver's own words: the Status message and its causes (which name the PDB)."""
    try:
        body = json.loads(err.body or "{}")
    except ValueError:
        return str(err.reason)
    causes = [c.get("message", "") for c in (body.get("details") or {}).get("causes") or []]
    return " ".join([body.get("message", str(err.reason)), *causes]).strip()
