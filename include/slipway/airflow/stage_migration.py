"""The tasks of ``k8s_cluster_migration``: thin adapters from Airflow context to
:mod:`slipway.migration`. Both clusters are reached only through the ``slipway_migration``
connection (the migrator identity's kubeconfigs); every task re-reads the clusters, so any
task can be cleared and re-run.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from slipway.airflow.runbooks import runbook
from slipway.lazy import lazy
from slipway.migration import frontdoor
from slipway.migration.assess import markdown
from slipway.migration.connection import CONN_ID, MigrationConnection, parse_connection
from slipway.migration.errors import ChecksumMismatch, MigrationError, NotAvailable
from slipway.migration.objects import CONFIG_KINDS, WORKLOAD_KINDS
from slipway.migration.request import MigrationRequest, parse_migration_request

if TYPE_CHECKING:
    from slipway.migration import clusters
else:  # the kubernetes client loads when a task first runs, not when the DAG file is parsed
    clusters = lazy("slipway.migration.clusters")

DAG_ID = "k8s_cluster_migration"

# --- runbooks (what on-call engineers read in the UI) ---------------------------------------------
VALIDATE = runbook(
    "Validates the trigger form and the `slipway_migration` connection (source and target kubeconfigs) "
    "before any cluster is contacted.",
    "The log lists every refused field or connection key as `field: reason`. Fix the form or the "
    "connection's extras and trigger a new run.",
    "Safe, but pointless: the same input gives the same refusal.",
)
ASSESS = runbook(
    "Reads the selected namespaces on the source: inventory, the dependency map of every workload (from "
    "its pod template) and what cannot move and why (hostPath or PVC volumes, host ports, node pinning, "
    "API versions the target no longer serves). Writes `assessment.json` and `assessment.md` to the "
    "run's report folder. Refuses unknown namespaces, a selector matching nothing and a target that is "
    "the source. Changes nothing.",
    "A refusal names the field. Objects that cannot move fail a real run (not a dry run): read "
    "`assessment.md`, then narrow the selection or fix the objects on the source.",
    "Safe: read-only.",
)
PROCEED = runbook(
    "Ends a dry run here (assessment only); a real run goes on to the copy.",
    "It cannot fail on its own; an upstream failure shows here as upstream_failed.",
    "Safe.",
)
COPY_CONFIGURATION = runbook(
    "Applies the Namespaces, ServiceAccounts, Roles, RoleBindings, ConfigMaps, Secrets, Services, "
    "PodDisruptionBudgets, HorizontalPodAutoscalers and NetworkPolicies of the selection to the target, "
    "read fresh from the source, with server-side apply (field manager `slipway-migration`). The source "
    "is never changed.",
    "A 403 means the migrator manifest (`migrator-rbac.yaml`) is missing on the target or the token "
    "expired; a 404 on a kind means the target does not serve it (the assessment lists those).",
    "Safe: re-applying identical objects changes nothing on the target.",
)
VERIFY_CONFIGURATION = runbook(
    "Computes a sha256 per object over its normalised form (status and cluster-assigned fields dropped) "
    "on the source and on the target and compares them; any mismatch fails the task naming the object.",
    "A mismatch means the object changed on the source after the copy, or someone changed the copy on "
    "the target. Clear `copy_configuration` (it re-applies from the source) and this task.",
    "Safe: read-only.",
)
COPY_WORKLOADS = runbook(
    "Applies the selection's Deployments and StatefulSets to the target (server-side apply), after the "
    "configuration they depend on is proven equal.",
    "As for `copy_configuration`: check the migrator's permissions on the target and the log's object name.",
    "Safe: re-applying identical objects changes nothing on the target.",
)
VALIDATE_WORKLOADS = runbook(
    "Proves every copied Deployment and StatefulSet equal to the source (sha256) and waits until each is "
    "available on the target (every replica updated and ready) within the form's availability timeout.",
    "A mismatch names the object (see `verify_configuration`). Not available: look at the workload's "
    "events on the target (image pulls, quotas, scheduling on the target's nodes).",
    "Safe: read-only.",
)
SWITCH_TRAFFIC = runbook(
    "Moves traffic from the source to the target through the front door (HAProxy, whose admin socket "
    "and URL the `slipway_migration` connection names): weights 0, 10, 50 and 100 % to the target, with "
    "a probe of 40 requests through the front door after each step. A failed probe request or the "
    "target's health check going down puts the weights back (100 % source): that is the rollback. "
    "Without a front door in the connection it does nothing and says so.",
    "A rollback is not a task failure here: the report records it and fails the run. To roll back by "
    "hand: `echo 'set weight app/source 100; set weight app/target 0' | socat stdio <socket>`.",
    "Safe: weights are set, never added to; a re-run starts again from 0 %.",
)
REPORT = runbook(
    "Writes `migration-report.json` and `migration-report.md` (objects copied, checksums compared, "
    "mismatches, objects per second, availability, the traffic switch) to the run's report folder. Fails "
    "the run when the traffic switch rolled back, after writing the report.",
    "Check that `SLIPWAY_REPORTS_DIR` is writable by the worker; a rolled-back switch names its step and "
    "reason in the log and the report.",
    "Safe: it rewrites the same report.",
)

_DROPPED = ("default", "description", "title")


def migration_params() -> dict[str, Param]:
    """The trigger form: one Param per :class:`MigrationRequest` field, from its JSON schema."""
    schema = MigrationRequest.model_json_schema()["properties"]
    params = {}
    for name, field in MigrationRequest.model_fields.items():
        keywords = {k: v for k, v in schema[name].items() if k not in _DROPPED}
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        params[name] = Param(
            default, title=schema[name].get("title"), description=field.description, **keywords
        )
    return params


# --- helpers ------------------------------------------------------------------------------------------
def _connection() -> MigrationConnection:
    from airflow.sdk import BaseHook

    return parse_connection(BaseHook.get_connection(CONN_ID).extra_dejson)


def _sides() -> tuple[clusters.Side, clusters.Side]:
    conn = _connection()
    return clusters.Side(conn.source.api_client(), "source"), clusters.Side(
        conn.target.api_client(), "target"
    )


def _report_folder() -> Path:
    from slipway.reports.run import report_dir  # loads the kubernetes client: at run time only

    context = get_current_context()
    folder = report_dir(DAG_ID, context["run_id"])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _fail(err: Exception) -> AirflowFailException:
    return AirflowFailException(str(err))


# --- tasks --------------------------------------------------------------------------------------------
@task(doc_md=VALIDATE, retries=0)
def validate_migration() -> dict[str, Any]:
    """The request as JSON, after the form and the connection were both accepted."""
    try:
        request = parse_migration_request(dict(get_current_context()["params"]))
        _connection()
    except MigrationError as err:
        raise _fail(err) from err
    return request.model_dump()


@task(doc_md=ASSESS)
def assess(request: dict[str, Any]) -> dict[str, Any]:
    wanted = MigrationRequest.model_validate(request)
    try:
        source, target = _sides()
        result, namespaces, _ = clusters.assessment(source, target, wanted)
    except MigrationError as err:
        raise _fail(err) from err
    folder = _report_folder()
    (folder / "assessment.json").write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    (folder / "assessment.md").write_text(markdown(result))
    summary = {
        "namespaces": [n["metadata"]["name"] for n in namespaces],
        "objects": len(result.objects),
        "cannot_move": len(result.blockers),
        "dry_run": wanted.dry_run,
        "available_timeout_seconds": wanted.available_timeout_seconds,
        "report": str(folder / "assessment.md"),
    }
    if result.blockers and not wanted.dry_run:
        names = ", ".join(sorted(result.blockers))
        raise AirflowFailException(
            f"{len(result.blockers)} object(s) cannot move: {names} (reasons in {summary['report']})"
        )
    return summary


@task.short_circuit(doc_md=PROCEED)
def proceed(summary: dict[str, Any]) -> bool:
    """False on a dry run: every later task is skipped, the assessment is the run's report."""
    return not summary["dry_run"]


@task(doc_md=COPY_CONFIGURATION)
def copy_configuration(summary: dict[str, Any]) -> dict[str, Any]:
    source, target = _sides()
    started = time.monotonic()
    try:
        applied = clusters.copy_configuration(source, target, summary["namespaces"])
    except MigrationError as err:
        raise _fail(err) from err
    return {"applied": len(applied), "seconds": round(time.monotonic() - started, 3)}


@task(doc_md=VERIFY_CONFIGURATION)
def verify_configuration(summary: dict[str, Any]) -> dict[str, Any]:
    source, target = _sides()
    try:
        sums = clusters.verify(source, target, summary["namespaces"], CONFIG_KINDS, with_namespaces=True)
    except ChecksumMismatch as err:
        raise _fail(err) from err
    return {"compared": len(sums.source), "mismatches": 0, "target_defaults": len(sums.defaulted)}


@task(doc_md=COPY_WORKLOADS)
def copy_workloads(summary: dict[str, Any]) -> dict[str, Any]:
    source, target = _sides()
    started = time.monotonic()
    applied = clusters.copy_workloads(source, target, summary["namespaces"])
    return {"applied": len(applied), "seconds": round(time.monotonic() - started, 3)}


# Waits up to the form's availability timeout (at most an hour), then checksums: past the default.
@task(doc_md=VALIDATE_WORKLOADS, execution_timeout=timedelta(minutes=70))
def validate_workloads(summary: dict[str, Any]) -> dict[str, Any]:
    source, target = _sides()
    started = time.monotonic()
    try:
        sums = clusters.verify(source, target, summary["namespaces"], WORKLOAD_KINDS)
        available = clusters.wait_available(
            target, summary["namespaces"], WORKLOAD_KINDS, summary["available_timeout_seconds"]
        )
    except (ChecksumMismatch, NotAvailable) as err:
        raise _fail(err) from err
    return {
        "compared": len(sums.source),
        "mismatches": 0,
        "target_defaults": sorted(f"{name}: {', '.join(paths)}" for name, paths in sums.defaulted.items()),
        "available": available,
        "seconds_to_available": round(time.monotonic() - started, 3),
    }


@task(doc_md=SWITCH_TRAFFIC)
def switch_traffic() -> dict[str, Any]:
    door = _connection().front_door
    if door is None:
        return {"switched": False, "reason": "no front door in the slipway_migration connection"}
    api = frontdoor.RuntimeApi(door.socket)
    try:
        steps = frontdoor.switch(api, door.url)
    except frontdoor.SwitchRolledBack as err:
        return {"switched": False, "rolled_back": True, "reason": str(err), "steps": _steps(err.steps)}
    return {"switched": True, "rolled_back": False, "target_percent": 100, "steps": _steps(steps)}


def _steps(steps: list[frontdoor.StepResult]) -> list[dict[str, Any]]:
    return [
        {"percent": s.percent, "sent": s.sent, "failed": s.failed, "answered_by": s.answered_by}
        for s in steps
    ]


@task(doc_md=REPORT)
def write_migration_report(
    summary: dict[str, Any],
    config_copy: dict[str, Any],
    config_check: dict[str, Any],
    workload_copy: dict[str, Any],
    workload_check: dict[str, Any],
    traffic: dict[str, Any],
) -> str:
    applied = config_copy["applied"] + workload_copy["applied"]
    seconds = config_copy["seconds"] + workload_copy["seconds"]
    report = {
        "namespaces": summary["namespaces"],
        "objects_copied": applied,
        "checksums_compared": config_check["compared"] + workload_check["compared"],
        "checksum_mismatches": config_check["mismatches"] + workload_check["mismatches"],
        "copy_seconds": round(seconds, 3),
        "objects_per_second": round(applied / seconds, 1) if seconds > 0 else None,
        "workloads_available": workload_check["available"],
        "seconds_to_available": workload_check["seconds_to_available"],
        "target_defaults_ignored": workload_check["target_defaults"],
        "traffic": traffic,
        "failed_requests_during_switch": sum(step["failed"] for step in traffic.get("steps", [])),
        "assessment": summary["report"],
        "not_in_this_slice": "volume data (rclone), Velero; the source is left unchanged",
    }
    folder = _report_folder()
    (folder / "migration-report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    lines = ["# Migration report", ""] + [f"- **{k.replace('_', ' ')}**: {v}" for k, v in report.items()]
    (folder / "migration-report.md").write_text("\n".join(lines) + "\n")
    if traffic.get("rolled_back"):
        raise AirflowFailException(f"{traffic['reason']}; report: {folder / 'migration-report.md'}")
    return str(folder / "migration-report.json")
