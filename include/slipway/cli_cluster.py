"""What the ``slipway`` CLI reads from the cluster, through the same core code the DAGs run.

Each ``gather_*`` function returns the plain dict ``-o json`` prints; nothing here decides
anything the core does not already decide (planner, ``Preflight``, risk matrix, run verdict,
maturity). The only write is the etcd snapshot of the ``etcd-backup`` check, and only when
the caller asks for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway import incidents
from slipway import lease as cluster_lease
from slipway.kube import nodes as kube_nodes
from slipway.redact import redact, redact_value
from slipway.reports.maturity import assess as assess_maturity
from slipway.reports.maturity import load_run_records, run_facts
from slipway.reports.run import PHASES, phase_timings, render_markdown, run_verdict
from slipway.runrecord import NAMESPACE, RunRecord, record_name

if TYPE_CHECKING:  # plan and preflight import the checks and models when they run, not status
    from slipway.models import UpgradeRequest
    from slipway.platform import PlatformSettings
    from slipway.preflight import Preflight

BACKUP_CHECK = "etcd-backup"
PREFLIGHT_DAG = "k8s_upgrade_preflight"


class Refused(RuntimeError):
    """The cluster showed the request cannot go ahead before any check ran (exit code 1)."""


class NotFound(LookupError):
    """A named object (a run) is not in the cluster (a usage error, exit code 3)."""


@dataclass(frozen=True)
class Target:
    """Everything a plan or preflight needs besides the cluster."""

    request: UpgradeRequest
    settings: PlatformSettings
    artefacts: Path


def _age(now: datetime, stamp: str | datetime | None) -> float | None:
    if not stamp:
        return None
    moment = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(str(stamp))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (now - moment).total_seconds()


# ---- plan and preflight --------------------------------------------------------------------------


def _preflight(api: client.ApiClient, target: Target) -> Preflight:
    from slipway.platform import Platform
    from slipway.preflight import Preflight

    return Preflight(Platform(target.settings, api), target.request, target.artefacts)


def _plan_with_names(pre: Preflight) -> dict[str, Any]:
    """The DAG's plan summary, but with each hop's node names (the CLI is not XCom-bound)."""
    summary = pre.plan_summary()
    full = pre.path.to_dict()
    for hop, named in zip(summary.get("hops", []), full["hops"], strict=True):
        hop["nodes"] = named["nodes"]
    summary["current"] = full["current"]  # every instance and kubelet, not only the oldest apiserver
    return summary


def gather_plan(api: client.ApiClient, target: Target) -> dict[str, Any]:
    """The planner's path from the live cluster and the risk matrix of the plan alone.

    :raises Refused: the planner found no safe path (its reason names the component).
    """
    from slipway.preflight import assess_run

    pre = _preflight(api, target)
    try:
        plan = _plan_with_names(pre)
    except ValueError as err:
        raise Refused(f"plan refused: {err}") from err
    risk = assess_run([], pre.plan_summary(), target.request)
    return {"plan": plan, "risk": risk.model_dump(mode="json")}


def refuse_request_for_this_cluster(api: client.ApiClient, target: Target) -> None:
    """What the DAGs' first task refuses once it sees the cluster: a downgrade without
    rollback, a batch larger than the cluster, a strategy the platform cannot run.

    :raises Refused: one line naming each field.
    """
    from slipway.models import RequestError
    from slipway.platform import Platform
    from slipway.versions import Version

    workers = kube_nodes.list_workers(api)
    versions = [Version.parse(kube_nodes.kubelet_version(n)) for n in workers]
    problem = Platform(target.settings, api).strategy_problem(target.request.strategy)
    try:
        if versions:
            target.request.validate_against(min(versions), len(workers))
        if problem:
            raise RequestError([("strategy", problem)])
    except RequestError as err:
        raise Refused("request refused: " + "; ".join(f"{f}: {r}" for f, r in err.problems)) from err


def gather_preflight(
    api: client.ApiClient,
    target: Target,
    *,
    with_backup: bool,
    connection_lost: Callable[[BaseException], bool] = lambda _: False,
) -> dict[str, Any]:
    """Every preflight check the DAG runs (the backup only when asked), the risk matrix and
    the decision. A check that raises is reported as an error, as its DAG task would fail."""
    from slipway.check_names import CHECK_TASKS
    from slipway.preflight import assess_run

    refuse_request_for_this_cluster(api, target)
    pre = _preflight(api, target)
    result: dict[str, Any] = {
        "target": target.request.target_version,
        "ran": [],  # the check families run (one DAG task each); a family may yield several results
        "checks": [],
        "skipped": [],
        "errors": [],
    }
    try:
        result["plan"] = _plan_with_names(pre)
        plan_for_risk = pre.plan_summary()
    except ValueError as err:
        # The upgrade-path check reports the same reason as a blocker below.
        result["plan_refused"] = str(err)
        plan_for_risk = {}
    for name in CHECK_TASKS:
        if name == BACKUP_CHECK and not with_backup:
            result["skipped"].append(
                {
                    "name": name,
                    "reason": "not run: it takes an etcd snapshot; pass --with-backup and --platform "
                    "to prove one (the upgrade DAG always runs it)",
                }
            )
            continue
        result["ran"].append(name)
        try:
            result["checks"] += [r.model_dump(mode="json") for r in pre.run(name)]
        except Exception as err:  # the DAG's task for this check would fail; say why and go on
            if connection_lost(err):
                raise
            result["errors"].append({"name": name, "error": f"{type(err).__name__}: {_one_line(err)}"})
    risk = assess_run(result["checks"], plan_for_risk, target.request)
    result["risk"] = risk.model_dump(mode="json")
    result["decision"] = risk.decision
    return result


def _one_line(err: BaseException) -> str:
    if isinstance(err, ApiException):
        try:  # the API's own sentence names the resource and the verb
            message = json.loads(err.body or "{}").get("message", "")
        except ValueError:
            message = ""
        return f"{err.status} {err.reason}" + (f": {message}" if message else "")
    return " ".join(str(err).split())[:300]


# ---- status ----------------------------------------------------------------------------------------


def read_lease(api: client.ApiClient, now: datetime) -> dict[str, Any] | None:
    """The upgrade Lease as :mod:`slipway.lease` reads and judges it: who holds it, whether it
    is live (``renewTime + leaseDurationSeconds`` ahead), when it expires."""
    state = cluster_lease.read(api)
    if state is None:
        return None
    holder = state.holder or ""
    expires = state.expires_at
    return {
        "holder": holder,
        "dag_id": holder.split("/", 1)[0] if "/" in holder else "",
        "run_id": cluster_lease.run_of(holder) if holder else "",
        "renewed_at": state.renewed.isoformat() if state.renewed else None,
        "renewed_seconds_ago": _age(now, state.renewed),
        "duration_seconds": state.duration,
        "expires_in_seconds": (expires - now).total_seconds() if expires else None,
        "live": cluster_lease.is_live(state, now),
    }


def current_phase(data: dict[str, Any]) -> str:
    """The furthest phase the run's timeline started (the report's phases); ``finished`` once
    the report was written."""
    if "report" in data:
        return "finished"
    kinds = {e["kind"] for e in data.get("events", [])}
    # The preflight DAG stops after preparation: its risk-assessed event starts no backup.
    phases = PHASES[:1] if data.get("dag_id") == PREFLIGHT_DAG else PHASES
    reached = [name for name, starts, _ in phases if kinds & set(starts)]
    return reached[-1] if reached else "starting"


def run_summary(data: dict[str, Any], lease: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    events = data.get("events", [])
    run_id = str(data.get("run_id", ""))
    holds = bool(lease and lease["live"] and lease["run_id"] == run_id)
    finished = "report" in data
    state = "finished" if finished else ("running" if holds else "not running")
    started = _age(now, events[0]["at"]) if events else None
    # A running run has taken until now; any other, until its last event.
    total = started if state == "running" else dict(phase_timings(events)).get("total")
    last = events[-1] if events else None
    return {
        "run_id": run_id,
        "dag_id": data.get("dag_id", ""),
        "record": record_name(run_id),
        "target": data.get("request", {}).get("target_version", ""),
        "started_at": events[0]["at"] if events else None,
        "started_seconds_ago": started,
        "seconds": total,
        "phase": current_phase(data),
        "state": state,
        "verdict": run_verdict(data) if finished else None,
        "holds_lease": holds,
        "last_event": {k: last.get(k) for k in ("at", "kind", "message")} if last else None,
    }


def node_summary(node: client.V1Node, now: datetime) -> dict[str, Any]:
    from slipway.inventory import node_pool

    annotations = node.metadata.annotations or {}
    cordoned = kube_nodes.is_cordoned(node)
    step = kube_nodes.step_of(node)
    owner = kube_nodes.cordon_owner(node)
    return {
        "name": node.metadata.name,
        "pool": node_pool(node),
        "cordoned": cordoned,
        "cordoned_by": owner or "not recorded (cordoned outside Slipway)",
        "cordoned_at": annotations.get(kube_nodes.CORDONED_AT),
        "cordoned_seconds_ago": _age(now, annotations.get(kube_nodes.CORDONED_AT)),
        "quarantined": kube_nodes.is_quarantined(node),
        "quarantine_reason": annotations.get(kube_nodes.QUARANTINE_REASON),
        "step": step.step if step else None,
        "step_run": step.run_id if step else None,
        "step_at": step.at if step else None,
    }


def gather_status(api: client.ApiClient, limit: int, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    lease = read_lease(api, now)
    records = load_run_records(api)
    runs = [run_summary(data, lease, now) for data in records]
    runs.sort(key=lambda r: r["started_at"] or "", reverse=True)
    nodes = client.CoreV1Api(api).list_node().items
    flagged = [
        node_summary(n, now)
        for n in sorted(nodes, key=lambda n: n.metadata.name)
        if kube_nodes.is_cordoned(n) or kube_nodes.is_quarantined(n)
    ]
    return {
        "lease": lease,
        "runs": runs[:limit],
        "total_runs": len(runs),
        "nodes": flagged,
        "node_count": len(nodes),
    }


# ---- report and history ----------------------------------------------------------------------------


def load_run(api: client.ApiClient, run: str) -> dict[str, Any]:
    """One run's record, by Airflow run id or by its ConfigMap name.

    :raises NotFound: naming the runs that do exist.
    """
    data = RunRecord(api, run).load()
    if data:
        return data
    records = load_run_records(api)
    for candidate in records:
        if record_name(str(candidate.get("run_id", ""))) == run:
            return candidate
    known = ", ".join(sorted(str(r.get("run_id", "")) for r in records)[:5]) or "none"
    raise NotFound(f"RUN: no run record for {run!r} in {NAMESPACE} (runs recorded: {known})")


def report_document(data: dict[str, Any]) -> dict[str, Any]:
    """What ``upgrade-report.json`` holds: the verdict, the incident and the whole record,
    redacted as :func:`~slipway.reports.run.write_run_report` redacts it."""
    data = redact_value(data)
    incident = incidents.classify(data)
    return {"verdict": run_verdict(data), "incident": incident.to_dict() if incident else None} | data


def report_markdown(data: dict[str, Any]) -> str:
    """``upgrade-report.md`` as the DAG's report task writes it."""
    data = redact_value(data)
    return redact(render_markdown(data, run_verdict(data)))


def gather_history(api: client.ApiClient) -> dict[str, Any]:
    facts = [f for f in (run_facts(data) for data in load_run_records(api)) if f is not None]
    return assess_maturity(facts).to_dict()
