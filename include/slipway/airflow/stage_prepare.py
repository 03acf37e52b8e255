"""The preparation stage (§4.1): plan, one task per preflight check, risk assessment.

Shared by ``k8s_upgrade_preflight`` (which stops after the report) and
``k8s_cluster_upgrade`` (which goes on through the risk gate).
"""

from __future__ import annotations

from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import TaskGroup, get_current_context, task

from slipway.airflow import runbooks
from slipway.check_names import CHECK_TASKS
from slipway.lazy import api_exception, lazy

if TYPE_CHECKING:
    from slipway import planner, preflight, reports, workers
    from slipway.airflow import runtime
else:
    planner = lazy("slipway.planner")
    preflight = lazy("slipway.preflight")
    reports = lazy("slipway.reports")
    runtime = lazy("slipway.airflow.runtime")
    workers = lazy("slipway.workers")


GROUP = "prepare"


def artefacts_dir() -> Path:
    """This run's local working folder on this worker (tools such as etcdctl write there);
    what later tasks or people read is copied to the artefact store (:func:`publish`)."""
    context = get_current_context()
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in context["run_id"])
    return reports.reports_root() / context["dag"].dag_id / safe


def publish(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The preflight's files (the etcd-backup check's proven snapshot, private) copied to this
    run's folder in the artefact store; the check's evidence names the copy (``stored``). With
    the default store, the working folder is that folder already: nothing to copy."""
    from slipway import artefacts
    from slipway.reports.run import report_dir

    context = get_current_context()
    for result in results:
        evidence = result.get("evidence")
        if not isinstance(evidence, dict) or not evidence.get("restore_ok") or not evidence.get("path"):
            continue
        if artefacts.is_default():
            continue
        local = Path(str(evidence["path"]))
        target = report_dir(context["dag"].dag_id, str(context["run_id"])) / local.name
        artefacts.upload(local, target, private=True)  # every Secret of the cluster is in it
        evidence["stored"] = artefacts.location(target)
    return results


def _preflight(request: dict[str, Any]) -> preflight.Preflight:
    return preflight.Preflight(runtime.platform(), runtime.request_from(request), artefacts_dir())


@task(doc_md=runbooks.PLAN_UPGRADE, retries=2)
def plan_upgrade(request: dict[str, Any]) -> dict[str, Any]:
    rec = runtime.record()
    try:
        summary = _preflight(request).plan_summary()
    except planner.PlanRefused as err:
        # No safe path is a decision, not a crash: the upgrade-path check reports the same
        # refusal as a blocker, so the risk gate ends the run "refused" with this reason.
        summary = {"refused": err.to_dict()}
        rec.update(plan=summary)
        rec.event("plan-refused", f"no safe upgrade path ({err.rule}): {err.reason}")
        return summary
    if get_current_context()["dag"].dag_id == "k8s_cluster_upgrade":
        # What runs must be what the plan says: a plan one run cannot execute as printed is
        # refused at the risk gate, naming the run to trigger first.
        from slipway.plan_execution import not_one_run

        why = not_one_run(summary, str(runtime.request_from(request).target))
        if why:
            summary["not_one_run"] = why
            rec.event("plan-refused", why)
    rec.update(plan=summary)
    try:  # the performance baseline, before anything changes; the batches compare against it
        workers.record_latency_baseline(runtime.platform().control_plane_reader(), rec)
    except (OSError, HTTPException, api_exception()) as err:
        rec.event("latency-unavailable", f"no performance baseline: metrics unreadable: {err}")
    return summary


def check_task(name: str) -> Any:
    @task(task_id=f"check_{name.replace('-', '_')}", doc_md=runbooks.CHECK, retries=2)
    def run_check(request: dict[str, Any]) -> list[dict[str, Any]]:
        results = _preflight(request).run(name)
        return publish([r.model_dump(mode="json") for r in results])

    return run_check


@task(doc_md=runbooks.ASSESS_RISK)
def assess_risk(
    request: dict[str, Any], plan: dict[str, Any], results: list[list[dict[str, Any]]]
) -> dict[str, Any]:
    flat = [r for family in results for r in family]
    risk = preflight.assess_run(flat, plan, runtime.request_from(request)).model_dump(mode="json")
    if plan.get("not_one_run"):
        risk["decision"] = "refuse"
        risk["reasons"] = [plan["not_one_run"], *risk.get("reasons", [])]
    rec = runtime.record()
    rec.update(checks=flat, risk=risk)
    failed = [r["name"] for r in flat if not r["passed"]]
    rec.event("risk-assessed", f"decision {risk['decision']}; findings: {', '.join(failed) or 'none'}")
    return {"decision": risk["decision"], "reasons": risk["reasons"]}


def preparation(request: Any) -> tuple[Any, Any]:
    """plan → every check (in parallel, each its own task) → risk decision; returns (plan, risk)."""
    with TaskGroup(group_id=GROUP):
        plan: Any = plan_upgrade(request)
        results = [check_task(name)(request) for name in CHECK_TASKS]
        risk = assess_risk(request, plan, results)
    return plan, risk
