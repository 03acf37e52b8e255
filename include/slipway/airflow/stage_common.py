"""Tasks every DAG shares: the request gate at the start, the verdict at the end."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from airflow.sdk import TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from slipway.airflow import runbooks
from slipway.airflow.params import approval_never_problem, conf_to_request, dag_request_problems
from slipway.lazy import api_exception, lazy
from slipway.models import RequestError, parse_request
from slipway.versions import Version

if TYPE_CHECKING:
    import slipway.kube.nodes as kube_nodes
    from slipway import platform, reports, runrecord
    from slipway.airflow import runtime
else:
    kube_nodes = lazy("slipway.kube.nodes")
    platform = lazy("slipway.platform")
    reports = lazy("slipway.reports")
    runrecord = lazy("slipway.runrecord")
    runtime = lazy("slipway.airflow.runtime")


WORKERS_ONLY_DAG = "k8s_worker_upgrade"


def _served_version(api: Any) -> Version:
    """The version the apiserver behind the orchestrator's endpoint reports."""
    from kubernetes import client

    return Version.parse(client.VersionApi(api).get_code().git_version)


def _refuse_kubelets_newer_than_control_plane(api: Any, request: Any) -> None:
    """The skew policy forbids a kubelet newer than the apiserver: the worker-only DAG
    cannot be the one that moves the cluster forward."""
    served = _served_version(api)
    if request.target > served:
        raise RequestError(
            [
                (
                    "target_version",
                    f"{request.target} is newer than the control plane ({served}); kubelets may not be newer "
                    "than the apiserver: run k8s_cluster_upgrade, which upgrades the control plane first",
                )
            ]
        )


FULL_UPGRADE_DAG = "k8s_cluster_upgrade"


def _refuse_strategy_not_runnable_here(dag_id: str, request: Any) -> None:
    """A strategy the platform cannot run, or that this DAG cannot finish, is refused up front."""
    problem = runtime.platform().strategy_problem(request.strategy)
    if problem is None and request.strategy == "blue-green" and dag_id == WORKERS_ONLY_DAG:
        problem = (
            "blue-green keeps the old nodes until the whole cluster is validated, then retires them or "
            f"switches back: run it with {FULL_UPGRADE_DAG}"
        )
    if problem:
        raise RequestError([("strategy", problem)])


def _refuse_more_than_one_control_plane_minor(api: Any, request: Any) -> None:
    """One run moves the control plane one minor (its workers follow in the same run);
    a longer path is run hop by hop so the kubelets never fall outside the skew policy."""
    served = _served_version(api)
    if request.target.major == served.major and request.target.minor - served.minor > 1:
        hop = f"{served.major}.{served.minor + 1}"
        raise RequestError(
            [
                (
                    "target_version",
                    f"{request.target} is {request.target.minor - served.minor} minors above the "
                    f"control plane ({served}); this DAG moves one minor per run: "
                    f"upgrade to the latest {hop} patch first",
                )
            ]
        )


@task(doc_md=runbooks.VALIDATE_REQUEST, retries=0)
def validate_request() -> dict[str, Any]:
    """Refuse a bad form before anything touches the cluster; one line per bad field."""
    context = get_current_context()
    interval_end = context.get("data_interval_end")
    try:
        conf = conf_to_request(dict(context["params"]))
        runtime.check_connections()  # before any client: a bad one names its field
        scheduled = context["dag_run"].run_type == "scheduled"
        if scheduled:
            platform.refuse_unless_enabled_for_schedule(
                runtime.platform_settings(), context["dag"].dag_id, context["dag_run"].run_type
            )
        if conf.get("window_end") is None and scheduled and interval_end:
            conf["window_end"] = interval_end.isoformat()  # a scheduled run's interval is its window
        if scheduled and context["dag"].dag_id == WORKERS_ONLY_DAG:
            # Nobody chose a target for an unattended window: the kubelets follow the control
            # plane (never the newest release Slipway knows, which the skew policy forbids).
            conf["target_version"] = str(_served_version(runtime.orchestrator_api()))
        # Loopback health-check targets are refused unless the cluster is the local one.
        local = runtime.platform().settings.platform == "local"
        request = parse_request(conf, local_platform=local)
        dag_problems = dag_request_problems(context["dag"].dag_id, request)
        if dag_problems:
            raise RequestError(dag_problems)
        api = runtime.orchestrator_api()
        workers = kube_nodes.list_workers(api)
        versions = [Version.parse(kube_nodes.kubelet_version(n)) for n in workers]
        if versions:
            request.validate_against(min(versions), len(workers))
        if context["dag"].dag_id == WORKERS_ONLY_DAG:
            _refuse_kubelets_newer_than_control_plane(api, request)
        if context["dag"].dag_id == FULL_UPGRADE_DAG:
            _refuse_more_than_one_control_plane_minor(api, request)
        _refuse_strategy_not_runnable_here(context["dag"].dag_id, request)
    except (RequestError, platform.PlatformError) as err:
        raise AirflowFailException(str(err)) from err
    rec = runtime.record()
    run_type = context["dag_run"].run_type
    rec.update(
        request=request.model_dump(mode="json"),
        dag_id=context["dag"].dag_id,
        run_type=str(getattr(run_type, "value", run_type)),  # scheduled = unattended (§1.1)
    )
    rec.event("run-started", f"{context['dag'].dag_id}: upgrade to {request.target_version}")
    return request.model_dump(mode="json")


@task(trigger_rule=TriggerRule.ALL_DONE, doc_md=runbooks.WRITE_REPORT)
def write_upgrade_report() -> dict[str, str]:
    context = get_current_context()
    rec = runtime.record()

    from slipway.reports.maturity import load_run_records

    # The cluster's earlier runs predict this one's phases; unreadable, the stated model does.
    try:
        history = load_run_records(runtime.orchestrator_api())
    except api_exception():
        history = []
    paths = reports.write_run_report(
        rec.load(), dag_id=context["dag"].dag_id, run_id=context["run_id"], history=history
    )
    from slipway.artefacts import location

    where = {k: location(v) for k, v in paths.items()}  # a local path, or the artefact store's URL
    rec.update(report=where)
    return where


@task(trigger_rule=TriggerRule.ALL_DONE, doc_md=runbooks.FINAL_VERDICT)
def final_verdict() -> str:
    """A rolled-back or refused upgrade must end red, even when the rollback itself succeeded."""
    data = runtime.record().load()
    verdict = reports.run_verdict(data)
    if verdict not in reports.GREEN_VERDICTS:
        where = data.get("report", {}).get("markdown", "no report written")
        raise AirflowFailException(f"run ended {verdict}; report: {where}")
    return verdict


@task.branch(doc_md=runbooks.RISK_GATE)
def risk_gate(risk: dict[str, Any], request: dict[str, Any], proceed_to: str) -> str:
    """dry run → stop; refuse → stop red; approval → a human decides; proceed → go on."""
    if request.get("dry_run"):
        return "dry_run_done"
    decision = risk["decision"]
    if decision == "refuse":
        return "refused"
    if decision == "approval":
        return "approve_upgrade"
    if request.get("approval") == "never":
        # never may not skip a human the risk asks for: recorded as a refusal with its reason.
        problem = approval_never_problem(risk, local_platform=runtime.platform().settings.platform == "local")
        if problem:
            rec = runtime.record()
            rec.update(risk=risk | {"decision": "refuse", "reasons": [problem, *risk["reasons"]]})
            rec.event("approval-never-refused", problem)
            raise AirflowFailException(problem)
    return proceed_to


@task(doc_md=runbooks.RISK_GATE_REFUSED)
def refused(risk: dict[str, Any]) -> None:
    raise AirflowFailException("the risk assessment refused the upgrade: " + "; ".join(risk["reasons"]))


@task(doc_md=runbooks.RISK_GATE)
def dry_run_done() -> str:
    runtime.record().event("dry-run", "dry run: planned and checked, nothing changed")
    return "dry-run"


@task(doc_md=runbooks.VALIDATE_CLUSTER, retries=1)
def validate_cluster(request: dict[str, Any]) -> dict[str, Any]:
    """§4.1 validation: the whole cluster healthy at the end, or the run fails naming why."""
    from slipway import workers

    api = runtime.orchestrator_api()
    req = parse_request(request)
    upgraded = [n.metadata.name for n in workers.serving_workers(api)]
    verdict = workers.validate_batch(api, req, upgraded)
    rec = runtime.record()
    rec.update(validation=verdict.to_dict())
    rec.event(
        "validated" if verdict.passed else "validation-failed",
        "cluster healthy" if verdict.passed else "; ".join(verdict.problems),
    )
    if not verdict.passed:
        raise AirflowFailException("post-upgrade validation failed: " + "; ".join(verdict.problems))
    return verdict.to_dict()


def _deliver(rec: runrecord.RunRecord, payload: dict[str, Any], what: str) -> str:
    """Send ``payload`` on every configured channel (the notifiers of ``slipway_notify``,
    ``slipway_slack``, ``slipway_smtp``; the task log always); records each outcome on the
    timeline. Raises NotificationError naming every failed channel (redacted)."""
    from slipway.airflow.notifiers import deliver
    from slipway.notifications import NotificationError

    print(payload["text"])
    outcomes = deliver(payload)
    if not outcomes:
        rec.event("notified", f"{what}: task log only (no notification connection)")
        return "log"
    for outcome in outcomes:
        rec.event("notified" if outcome.ok else "notification-failed", f"{what}: {outcome.detail}")
    failed = [o.detail for o in outcomes if not o.ok]
    if failed:
        raise NotificationError("; ".join(failed))
    return ",".join(o.channel for o in outcomes)


def declare_incident(severity: str, title: str) -> None:
    """§5.2: declare the incident when the rollback starts and page at once, not at the run's
    end. Paging is best effort here: a dead webhook must never stop a rollback."""
    from slipway import incidents
    from slipway.notifications import NotificationError, incident_payload

    rec = runtime.record()
    if not incidents.declare(rec, severity, title):
        return  # a retried rollback task: declared and paged already
    # A failure is recorded on the timeline by _deliver; the end-of-run notify task fails visibly.
    with contextlib.suppress(NotificationError):
        _deliver(rec, incident_payload(rec.load(), severity, title), f"incident {severity}")


@task(doc_md=runbooks.NOTIFY, trigger_rule=TriggerRule.ALL_DONE, retries=2)
def notify() -> str:
    """Tell the operators how the run ended: every configured notifier (webhook, Slack,
    e-mail), the task log always. A failed channel fails this task (red in the UI), not the run."""
    from slipway.notifications import notification_payload

    rec = runtime.record()
    data = rec.load()
    verdict = reports.run_verdict(data)
    payload = notification_payload(data, verdict, data.get("report", {}).get("markdown", ""))
    return _deliver(rec, payload, verdict)
