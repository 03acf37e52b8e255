"""Reconcile the cluster with the desired version declared in git.

Hourly: render the environment's kustomize overlay (``gitops/overlays/<env>``), validate the
desired state it declares as an upgrade request, compare it with the live cluster, and when
they differ trigger ``k8s_cluster_upgrade`` with that request — unless an upgrade run is
already queued or running. A bad commit fails the first task naming the overlay and field;
a desired version older than the cluster is refused (a downgrade is an explicit rollback).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from slipway.airflow import runbooks
from slipway.airflow.defaults import default_args
from slipway.lazy import lazy
from slipway.models import parse_request
from slipway.versions import Version

if TYPE_CHECKING:
    import slipway.kube.nodes as kube_nodes
    from slipway import gitops, lease
    from slipway.airflow import runtime
else:
    gitops = lazy("slipway.gitops")
    kube_nodes = lazy("slipway.kube.nodes")
    lease = lazy("slipway.lease")
    runtime = lazy("slipway.airflow.runtime")


UPGRADE_DAG = "k8s_cluster_upgrade"
ENVIRONMENT = os.environ.get("SLIPWAY_GITOPS_ENV", "production")


@task(doc_md=runbooks.RENDER_DESIRED_STATE, retries=0)
def render_desired_state() -> dict[str, Any]:
    overlay = gitops.gitops_root() / "overlays" / str(get_current_context()["params"]["environment"])
    try:
        return gitops.desired_request(overlay).model_dump(mode="json")
    except gitops.GitOpsError as err:
        raise AirflowFailException(str(err)) from err


@task.branch(doc_md=runbooks.COMPARE_DESIRED_STATE, retries=2)
def compare_with_cluster(desired: dict[str, Any]) -> str:
    from kubernetes import client

    from slipway.platform import PlatformError, refuse_unless_enabled_for_schedule

    context = get_current_context()
    try:  # an unpaused sync still triggers nothing on a cluster nobody enabled for it
        refuse_unless_enabled_for_schedule(
            runtime.platform_settings(), context["dag"].dag_id, context["dag_run"].run_type
        )
    except PlatformError as err:
        raise AirflowFailException(str(err)) from err
    api = runtime.orchestrator_api()
    control_plane = Version.parse(client.VersionApi(api).get_code().git_version)
    kubelets = [Version.parse(kube_nodes.kubelet_version(n)) for n in kube_nodes.list_workers(api)]
    try:
        reasons = gitops.drift(parse_request(desired), control_plane, kubelets)
    except gitops.GitOpsError as err:
        raise AirflowFailException(str(err)) from err
    if not reasons:
        print(f"in sync with git: cluster at {desired['target_version']}")
        return "in_sync"
    print("drift from git: " + "; ".join(reasons))
    held = lease.holder(api)  # any upgrade of this cluster, whichever DAG runs it
    if held:
        print(f"the cluster lease is held by {held}: not triggering another upgrade")
        return "upgrade_in_progress"
    active = context["ti"].get_dr_count(UPGRADE_DAG, states=["queued", "running"])
    if active:
        print(f"{UPGRADE_DAG} already has {active} run(s) queued or running: not triggering another")
        return "upgrade_in_progress"
    return "trigger_upgrade"


@task(doc_md=runbooks.IN_SYNC)
def in_sync() -> str:
    return "in-sync"


@task(doc_md=runbooks.IN_SYNC)
def upgrade_in_progress() -> str:
    return "upgrade-in-progress"


@dag(
    dag_id="k8s_gitops_sync",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # Triggers upgrades on a schedule: acts only once someone unpauses it on purpose.
    is_paused_upon_creation=True,
    params={
        "environment": Param(
            ENVIRONMENT,
            type="string",
            title="Environment (gitops overlay)",
            description="The folder under gitops/overlays whose desired state this run reconciles.",
            pattern="^[a-z0-9][a-z0-9-]*$",
        )
    },
    tags=["slipway", "kubernetes", "upgrade", "gitops"],
    default_args=default_args(),
    doc_md=__doc__,
)
def k8s_gitops_sync() -> None:
    desired = render_desired_state()
    branch = compare_with_cluster(desired)
    trigger = TriggerDagRunOperator(
        task_id="trigger_upgrade",
        trigger_dag_id=UPGRADE_DAG,
        # One upgrade run per reconcile run: clearing this task does not start a second one.
        trigger_run_id="gitops__{{ run_id }}",
        conf=desired,
        skip_when_already_exists=True,
        doc_md=runbooks.TRIGGER_FROM_GIT,
    )
    branch >> [in_sync(), upgrade_in_progress(), trigger]


k8s_gitops_sync()
