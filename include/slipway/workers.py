"""The worker phase's decisions, as plain functions over the cluster and the run record.

The Airflow tasks are thin wrappers around these, so the same logic is tested without
a scheduler and every decision is re-derived from the cluster on a retry:

- :func:`select_batch` opens batch *k* (or returns the one already opened by an earlier
  try), never before batch *k-1* passed, and not when it cannot finish in the window;
- :func:`validate_batch` decides whether a finished batch is healthy;
- :func:`rollback_batch` returns a batch's nodes to the old version and uncordons them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from slipway import lease
from slipway.batching import AdaptiveBatcher, next_batch, plan_batches
from slipway.checks.capacity import describe_shortfall, largest_fitting, running_pods
from slipway.inventory import ControlPlaneReader, node_info
from slipway.kube import nodes as kube_nodes
from slipway.kube.drain import DrainOptions
from slipway.kube.pdb import blocking_pdbs
from slipway.kube.readiness import pending_pods, workloads_available
from slipway.models import Batch, NodeInfo, UpgradeRequest
from slipway.runrecord import RunRecord
from slipway.upgraders.nodes import REPLACES, RETIRE, NodeUpgrader
from slipway.validation.baseline import Baseline, compare, ratios, raw_histograms, window_latency
from slipway.validation.health import health_check
from slipway.versions import Version
from slipway.windows import predict_duration, slow_progress

PASSED, FAILED, RUNNING, ROLLED_BACK = "passed", "failed", "running", "rolled-back"
NO_CAPACITY = "no-capacity"
# Seconds per node assumed before any history exists (drain + upgrade + readiness).
DEFAULT_NODE_SECONDS = 120.0


@dataclass
class Selection:
    """What a batch slot does: upgrade ``nodes``, or nothing for ``reason``."""

    index: int
    nodes: list[str] = field(default_factory=list)
    pool: str = ""
    reason: str = ""  # "done", "paused", "stopped", "no-capacity" when nodes is empty

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "nodes": self.nodes, "pool": self.pool, "reason": self.reason}


def drain_options(request: UpgradeRequest) -> DrainOptions:
    """The drain the request asked for (the seed's defaults unless the form changed them)."""
    return DrainOptions(
        grace_period_seconds=request.drain_grace_period_seconds,
        timeout_seconds=float(request.drain_timeout_seconds),
        delete_emptydir_data=request.delete_emptydir_data,
        force=request.force_bare_pods,
    )


def serving_workers(
    api: client.ApiClient, workers: Sequence[client.V1Node] | None = None
) -> list[client.V1Node]:
    """The workers that should now run the target: not quarantined, and not a replaced old
    node that surge or blue-green keeps (cordoned, empty) as the way back."""
    return [
        n
        for n in (kube_nodes.list_workers(api) if workers is None else workers)
        if not kube_nodes.is_quarantined(n) and not (n.metadata.annotations or {}).get(RETIRE)
    ]


def _upgradable(
    api: client.ApiClient, workers: Sequence[client.V1Node] | None = None
) -> tuple[list[NodeInfo], dict[str, str]]:
    """Workers Slipway may upgrade (not quarantined, not surge leftovers or replacements),
    and each one's current kubelet version (what a rollback returns it to)."""
    keep, versions = [], {}
    for node in serving_workers(api, workers):
        if (node.metadata.annotations or {}).get(REPLACES):
            continue
        keep.append(node_info(node))
        versions[node.metadata.name] = kube_nodes.kubelet_version(node)
    return keep, versions


def select_batch(
    api: client.ApiClient,
    record: RunRecord,
    request: UpgradeRequest,
    index: int,
    *,
    now: datetime | None = None,
) -> Selection:
    """Open batch ``index`` from what the cluster still needs; idempotent per index."""
    data = record.load_state()
    batches: list[dict[str, Any]] = data.get("batches", [])
    if index < len(batches):
        opened = batches[index]
        return Selection(index, list(opened["nodes"]), opened.get("pool", ""))
    if any(b["state"] in (FAILED, ROLLED_BACK) for b in batches):
        return Selection(index, reason="stopped")
    if batches and batches[-1]["state"] != PASSED:
        raise RuntimeError(
            f"batch {index} cannot open: batch {len(batches) - 1} is {batches[-1]['state']}, not passed"
        )
    if index != len(batches):
        raise RuntimeError(f"batch {index} cannot open before batch {len(batches)}")
    every_worker = kube_nodes.list_workers(api)
    candidates, versions = _upgradable(api, every_worker)
    busy = lease.cordoned_by_other_live_run(api, every_worker, record.run_id)  # that run is on them
    candidates = [c for c in candidates if c.name not in busy]
    plan = plan_batches(candidates, request)
    batcher = None
    if request.batch_policy == "adaptive":
        state = data.get("adaptive")
        batcher = AdaptiveBatcher.from_state(state) if state else AdaptiveBatcher.for_plan(plan)
    batch = next_batch(plan, done=(), batcher=batcher)
    if batch is None:
        return Selection(index, reason="done")
    if request.strategy == "in-place":  # surge and blue-green add their room before the drain
        fitted = _fit_to_capacity(api, record, request, index, batch, every_worker)
        if fitted is None:
            return Selection(index, reason=NO_CAPACITY)
        batch = fitted
    if request.window_end is not None:
        history = [float(s) for s in data.get("seconds_per_node", [])] or [DEFAULT_NODE_SECONDS]
        predicted = predict_duration(history, len(batch.nodes), len(batch.nodes), request.soak_seconds)
        moment = now or datetime.now(UTC)
        if moment + predicted > request.window_end:
            record.event(
                "paused",
                f"batch {index} ({len(batch.nodes)} nodes, ~{predicted}) would not finish "
                f"before the window closes at {request.window_end.isoformat()}",
            )
            return Selection(index, reason="paused")
    entry = {
        "index": index,
        "pool": batch.pool,
        "nodes": batch.nodes,
        "state": RUNNING,
        "from_versions": {n: versions[n] for n in batch.nodes},
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    record.update(
        batches=[*batches, entry],
        capacity_refused=None,
        **({"adaptive": batcher.to_state()} if batcher else {}),
    )
    record.event("batch-opened", f"batch {index}: {', '.join(batch.nodes)}", batch=index)
    return Selection(index, list(batch.nodes), batch.pool)


def _fit_to_capacity(
    api: client.ApiClient,
    record: RunRecord,
    request: UpgradeRequest,
    index: int,
    batch: Batch,
    workers: Sequence[client.V1Node],
) -> Batch | None:
    """The batch cut to what the nodes staying schedulable can absorb right now, or None.

    The plan-time capacity check cannot see what the run itself changed since (nodes
    quarantined by earlier batches stay cordoned); draining a node whose pods cannot go
    anywhere only ends in a drain timeout with the node cordoned, so it is refused here,
    before anything is cordoned, and the refusal is kept in the run record.
    """
    pods = client.CoreV1Api(api).list_pod_for_all_namespaces().items
    held: set[str] = set()
    if request.blocked_drain_policy == "quarantine":
        # Nodes holding a pod no eviction will ever move are quarantined, not drained.
        held = {n for e in blocking_pdbs(api, pods) if e["permanent"] for n in e["nodes"]}
    fitted, whole = largest_fitting(batch, [node_info(n) for n in workers], running_pods(api, pods), held)
    if fitted is None:
        cordoned = sorted(n.metadata.name for n in workers if n.spec.unschedulable)
        message = (
            f"batch {index} refused before any cordon: the nodes that stay schedulable cannot absorb "
            f"its pods: {describe_shortfall(whole)}"
            + (f"; cordoned now: {', '.join(cordoned)}" if cordoned else "")
        )
        record.update(capacity_refused={"batch": index, "message": message})
        record.event(NO_CAPACITY, message, batch=index)
        return None
    if fitted.nodes != batch.nodes:
        record.event(
            "batch-shrunk",
            f"batch {index}: {', '.join(fitted.nodes)} of {', '.join(batch.nodes)} — the rest would not fit "
            f"now: {describe_shortfall(whole)}",
            batch=index,
        )
    return fitted


@dataclass
class Verdict:
    passed: bool
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    latency: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        found = {"passed": self.passed, "problems": self.problems, "checked": self.checked}
        return found | ({"latency": self.latency} if self.latency else {})


def node_problems(api: client.ApiClient, node_names: list[str], target: str) -> list[str]:
    """Why any of these nodes is not done: NotReady, wrong kubelet, still cordoned by Slipway."""
    core = client.CoreV1Api(api)
    problems = []
    wanted = Version.parse(target)
    for name in node_names:
        node = core.read_node(name)
        if kube_nodes.is_quarantined(node):
            continue  # left cordoned on purpose; reported, not a batch failure
        if not kube_nodes.node_ready(node):
            problems.append(f"node {name} is not Ready")
        if Version.parse(kube_nodes.kubelet_version(node)) != wanted:
            problems.append(
                f"node {name} reports kubelet {kube_nodes.kubelet_version(node)}, expected {wanted}"
            )
        if kube_nodes.is_cordoned(node) and kube_nodes.cordon_owner(node) not in (
            None,
            kube_nodes.EXTERNAL_CORDON,
        ):
            problems.append(f"node {name} is still cordoned by {kube_nodes.cordon_owner(node)}")
    return problems


def validate_batch(
    api: client.ApiClient,
    request: UpgradeRequest,
    nodes_to_check: list[str],
    extra_checks: Sequence[Callable[[], list[str]]] = (),
    *,
    latency: Callable[[], tuple[list[str], dict[str, Any]]] | None = None,
) -> Verdict:
    """Settle, then soak: the SLOs must hold for ``request.soak_seconds`` of watching.

    Workloads may legitimately be catching up right after the batch, so first the SLOs get
    up to ``soak_seconds`` to come clean (a problem still there then fails the batch). Then
    they are watched for another ``soak_seconds``: anything that breaks during that hold
    fails the batch, named "during the soak". The request's health checks run with the
    SLOs; ``latency`` (the batch's p99 against the baseline) is judged once, at the end.
    """
    checks = [*(health_check(api, c) for c in request.health_checks), *extra_checks]
    checked = ["nodes ready at target", "workloads available", "no pods pending"]
    checked += [getattr(c, "__name__", "custom check") for c in checks]

    def problems() -> list[str]:
        found = node_problems(api, nodes_to_check, str(request.target))
        found += [f"{w} is below its desired availability" for w in workloads_available(api)]
        found += [f"pod {p} is not scheduled" for p in pending_pods(api)]
        for check in checks:
            found += check()
        return found

    current = _watch(problems, request.soak_seconds, until_clean=True)
    if not current:
        checked.append(f"held for {request.soak_seconds}s")
        current = [f"during the soak: {p}" for p in _watch(problems, request.soak_seconds, until_clean=False)]
    figures: dict[str, Any] = {}
    if latency is not None:
        checked.append(f"apiserver/scheduler p99 within {request.latency_tolerance:g}x the baseline")
        slow, figures = latency()
        current += slow
    return Verdict(not current, current, checked, figures)


def _watch(problems: Callable[[], list[str]], seconds: float, *, until_clean: bool) -> list[str]:
    """Re-observe the SLOs for ``seconds``: until they are clean (settling), or until one
    breaks (holding). Returns the last problems seen (empty when clean)."""
    deadline = time.monotonic() + seconds
    current = problems()
    while bool(current) == until_clean and time.monotonic() < deadline:
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))  # re-observe, not a fixed wait
        current = problems()
    return current


def record_latency_baseline(reader: ControlPlaneReader, record: RunRecord) -> Baseline:
    """The pre-upgrade reference, taken once per run: p99 of everything the components
    served before the first change (read again, it is never overwritten)."""
    latency = record.get("latency", {})
    if "baseline" not in latency:
        raw = raw_histograms(*reader.latency_metrics())
        latency["baseline"] = window_latency(raw).model_dump(mode="json")
        record.update(latency=latency)
    return Baseline.model_validate(latency["baseline"])


def open_latency_window(reader: ControlPlaneReader, record: RunRecord, index: int) -> None:
    """Remember the latency counters as batch ``index`` starts (once: a retry keeps the first).

    One read of the components serves both: the window's start and, when the run has none
    yet, the baseline; the run record is written once.
    """
    latency = record.get("latency", {})
    if latency.get("window_batch") == index:
        return
    raw = raw_histograms(*reader.latency_metrics())
    if "baseline" not in latency:
        latency["baseline"] = window_latency(raw).model_dump(mode="json")
    latency |= {"window_batch": index, "window_start": raw}
    record.update(latency=latency)


def latency_check(
    reader: ControlPlaneReader, latency: dict[str, Any], request: UpgradeRequest
) -> tuple[list[str], dict[str, Any]]:
    """p99 since the batch started (``latency`` as the run record keeps it) against the
    baseline: the problems, when the request enforces the tolerance, and the figures,
    which are recorded either way."""
    if "baseline" not in latency:
        return [], {"skipped": "no baseline was recorded when the batch opened"}
    now = raw_histograms(*reader.latency_metrics())
    baseline = Baseline.model_validate(latency["baseline"])
    during = window_latency(now, latency.get("window_start"))
    degraded = compare(baseline, during, request.latency_tolerance)
    signals = sorted(ratios(baseline, during), key=lambda r: -r[3])
    figures = {
        "signals": [
            {
                "signal": name,
                "baseline_ms": round(old.p99_seconds * 1000, 1),
                "batch_ms": round(new.p99_seconds * 1000, 1),
                "ratio": round(ratio, 2),
            }
            for name, old, new, ratio in signals
        ],
        "degraded": [d.message for d in degraded],
        "policy": request.latency_policy,
    }
    problems = [d.message for d in degraded] if request.latency_policy == "enforce" else []
    return problems, figures


def record_verdict(record: RunRecord, index: int, verdict: Verdict, seconds_per_node: float | None) -> None:
    data = record.load_state()
    batches = data.get("batches", [])
    if index >= len(batches):
        raise RuntimeError(f"batch {index} was never opened in run record {record.name}")
    batches[index] = batches[index] | {
        "state": PASSED if verdict.passed else FAILED,
        "verdict": verdict.to_dict(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    updates: dict[str, Any] = {"batches": batches}
    slow = None
    if seconds_per_node is not None:
        history = [float(s) for s in data.get("seconds_per_node", [])]
        slow = slow_progress(history, seconds_per_node)
        updates["seconds_per_node"] = [*history, round(seconds_per_node, 2)][-50:]
    if "adaptive" in data:
        updates["adaptive"] = AdaptiveBatcher.from_state(data["adaptive"]).record(verdict.passed).to_state()
    record.update(**updates)
    if slow:
        record.event("slow-progress", f"batch {index}: {slow}", batch=index)
    kind = "batch-passed" if verdict.passed else "batch-failed"
    record.event(
        kind, f"batch {index}: " + ("passed" if verdict.passed else "; ".join(verdict.problems)), batch=index
    )


def rollback_batch(
    api: client.ApiClient, record: RunRecord, index: int, upgrader: NodeUpgrader
) -> list[dict[str, str]]:
    """Return the batch's nodes to the versions they had when the batch opened and undo
    Slipway's cordons; idempotent."""
    batches = record.get("batches", [])
    entry = batches[index] if index < len(batches) else {"nodes": [], "from_versions": {}}
    nodes_in_batch: list[str] = entry["nodes"]
    done = []
    for name in nodes_in_batch:
        result = upgrader.rollback_node(name, entry["from_versions"][name])
        kube_nodes.uncordon(api, name, record.run_id)
        kube_nodes.set_step(api, name, record.run_id, "rolled-back")
        done.append(result.to_dict())
    batches = record.get("batches", [])
    if index < len(batches):
        batches[index] = batches[index] | {"state": ROLLED_BACK}
        record.update(batches=batches)
    record.event("batch-rolled-back", f"batch {index}: {', '.join(nodes_in_batch)} rolled back", batch=index)
    return done


def batch_seconds_per_node(record: RunRecord, index: int) -> float | None:
    """Wall time per node of an opened batch, for the duration prediction."""
    batches = record.get("batches", [])
    if index >= len(batches):
        return None
    started = datetime.fromisoformat(batches[index]["started_at"])
    return (datetime.now(UTC) - started).total_seconds() / max(1, len(batches[index]["nodes"]))


def phase_summary(api: client.ApiClient, record: RunRecord, request: UpgradeRequest) -> dict[str, Any]:
    """Where the worker phase stands, from the cluster: done, paused, or out of slots."""
    candidates, _ = _upgradable(api)
    remaining = [n.name for n in candidates if Version.parse(n.kubelet_version) != request.target]
    quarantined = [n.metadata.name for n in kube_nodes.list_workers(api) if kube_nodes.is_quarantined(n)]
    data = record.load()
    events = [e["kind"] for e in data.get("events", [])]
    batches = data.get("batches", [])
    if not remaining:
        reason = "done"
    elif any(b["state"] in (FAILED, ROLLED_BACK) for b in batches):
        reason = "stopped"
    elif data.get("capacity_refused"):
        reason = NO_CAPACITY
    else:
        reason = "paused" if "paused" in events else "slots-exhausted"
    summary = {
        "batches": len(batches),
        "passed": sum(b["state"] == PASSED for b in batches),
        "remaining": len(remaining),
        "quarantined": quarantined,
        "reason": reason,
    }
    if reason == NO_CAPACITY:
        summary["refused"] = data["capacity_refused"]["message"]
    record.update(worker_phase=summary)
    record.event(
        "worker-phase-ended",
        f"worker phase {reason}: {summary['passed']}/{summary['batches']} batches passed, "
        f"{len(remaining)} nodes remaining",
    )
    return summary
