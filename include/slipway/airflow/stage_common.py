"""Tasks every DAG shares: the request gate at the start, the verdict at the end."""

from __future__ import annotations

from typing import Any

from airflow.sdk import TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from slipway import reports
from slipway.airflow import runbooks
from slipway.airflow.params import conf_to_request
from slipway.airflow.runtime import orchestrator_api, record
from slipway.kube import nodes as kube_nodes
from slipway.models import RequestError, parse_request
from slipway.versions import Version


@task(doc_md=runbooks.VALIDATE_REQUEST, retries=0)
def validate_request() -> dict[str, Any]:
    """Refuse a bad form before anything touches the cluster; one line per bad field."""
    context = get_current_context()
    conf = conf_to_request(dict(context["params"]))
    interval_end = context.get("data_interval_end")
    if conf.get("window_end") is None and context["dag_run"].run_type == "scheduled" and interval_end:
        conf["window_end"] = interval_end.isoformat()  # a scheduled run's interval is its window
    try:
        request = parse_request(conf)
        workers = kube_nodes.list_workers(orchestrator_api())
        versions = [Version.parse(kube_nodes.kubelet_version(n)) for n in workers]
        if versions:
            request.validate_against(min(versions), len(workers))
    except RequestError as err:
        raise AirflowFailException(str(err)) from err
    rec = record()
    rec.update(request=request.model_dump(mode="json"), dag_id=context["dag"].dag_id)
    rec.event("run-started", f"{context['dag'].dag_id}: upgrade to {request.target_version}")
    return request.model_dump(mode="json")


@task(trigger_rule=TriggerRule.ALL_DONE, doc_md=runbooks.WRITE_REPORT)
def write_upgrade_report() -> dict[str, str]:
    context = get_current_context()
    rec = record()
    paths = reports.write_run_report(rec.load(), dag_id=context["dag"].dag_id, run_id=context["run_id"])
    rec.update(report={k: str(v) for k, v in paths.items()})
    return {k: str(v) for k, v in paths.items()}


@task(trigger_rule=TriggerRule.ALL_DONE, doc_md=runbooks.FINAL_VERDICT)
def final_verdict() -> str:
    """A rolled-back or refused upgrade must end red, even when the rollback itself succeeded."""
    data = record().load()
    verdict = reports.run_verdict(data)
    if verdict not in reports.GREEN_VERDICTS:
        where = data.get("report", {}).get("markdown", "no report written")
        raise AirflowFailException(f"run ended {verdict}; report: {where}")
    return verdict
