"""The end of a blue-green upgrade (§1.2): retire the blue nodes, or switch back to them.

Both tasks do nothing (skip) for the other strategies, so the graph is the same for every
run; the strategy is read from the validated request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import TriggerRule, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from slipway.airflow import runbooks
from slipway.airflow.stage_common import declare_incident
from slipway.airflow.stage_lease import holds_cluster_lease
from slipway.lazy import lazy
from slipway.models import UpgradeRequest

if TYPE_CHECKING:
    import slipway.kube.drain as kube_drain
    from slipway.airflow import runtime
    from slipway.kube import readiness
else:
    kube_drain = lazy("slipway.kube.drain")
    readiness = lazy("slipway.kube.readiness")
    runtime = lazy("slipway.airflow.runtime")


SWITCHED_BACK = "switched-back"
# How long the switched-back workloads get to be whole again (evicted pods rescheduled on
# blue, controllers caught up with the removed green nodes) before the task says they are not.
SETTLE_SECONDS = 180.0


def _blue_green_only(request: dict[str, Any]) -> UpgradeRequest:
    req = runtime.request_from(request)
    if req.strategy != "blue-green":
        raise AirflowSkipException(f"strategy is {req.strategy}: no blue nodes to retire or return to")
    return req


@task(doc_md=runbooks.RETIRE_BLUE, retries=2)
@holds_cluster_lease
def retire_blue_nodes(request: dict[str, Any]) -> list[str]:
    req = _blue_green_only(request)
    upgrader = runtime.platform().blue_green()
    retired = upgrader.retire_blue(str(req.target))
    kept = upgrader.kept_blue()
    runtime.record().event("blue-retired", f"blue nodes retired: {', '.join(retired) or 'none'}")
    if kept:
        raise AirflowFailException(
            f"blue nodes {', '.join(kept)} kept: their green twins are not Ready at {req.target}"
        )
    return retired


@task(doc_md=runbooks.SWITCH_BACK, trigger_rule=TriggerRule.ONE_FAILED, retries=1)
@holds_cluster_lease
def switch_back_to_blue(request: dict[str, Any]) -> list[str]:
    _blue_green_only(request)
    upgrader = runtime.platform().blue_green()
    if not upgrader.kept_blue():
        raise AirflowSkipException("no blue node is kept: nothing to switch back to")
    declare_incident("SEV2", "blue-green upgrade failed: switching workloads back to the blue nodes")
    try:
        restored = upgrader.switch_back()
    except (kube_drain.DrainBlocked, kube_drain.DrainRefused) as err:
        raise AirflowFailException(f"switch back stopped, clear this task to go on: {err}") from err
    short = readiness.wait_workloads_available(runtime.orchestrator_api(), SETTLE_SECONDS)
    whole = "every workload available" if not short else f"still short: {'; '.join(short)}"
    runtime.record().event(
        SWITCHED_BACK, f"workloads back on blue nodes {', '.join(restored)}; green nodes removed; {whole}"
    )
    if short:
        raise AirflowFailException(
            f"switched back, but after {SETTLE_SECONDS:g}s {'; '.join(short)}: look at those "
            "workloads' pods (clearing this task waits again)"
        )
    return restored
