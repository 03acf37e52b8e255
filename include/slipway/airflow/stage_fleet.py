"""The tasks of ``k8s_fleet_upgrade``: the fleet file, the fleet-wide preflight, the wave.

The wave is one mapped task (one instance per cluster) and one mapped approval (one per
approval gate); each instance asks :func:`slipway.fleet.waves.next_action` what the recorded
outcomes allow, acts only on its own cluster or gate, and otherwise defers and asks again.
The records are the clusters' own ``k8s_cluster_upgrade`` runs (their Airflow state, refined
by their run record's verdict) and the approvals' task states: a cleared or resumed fleet run
continues where they say it stopped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.providers.standard.triggers.external_task import DagStateTrigger
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseHook, TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException, AirflowSkipException
from airflow.utils.state import DagRunState

from slipway import gitops
from slipway.airflow.runbooks import runbook
from slipway.fleet import FleetError, load_fleet, plan_fleet
from slipway.fleet.report import build_fleet_report, cluster_run_facts, write_fleet_report
from slipway.fleet.waves import (
    Action,
    ApprovalState,
    ClusterRecord,
    FleetPlan,
    Outcome,
    next_action,
    refused_by_preflight,
)
from slipway.models import parse_request

if TYPE_CHECKING:
    from slipway.platform import Platform

# The kubernetes client, and what imports it, loads in the task bodies only: the DAG file is
# parsed again and again, and the client is most of a parse.

UPGRADE_DAG = "k8s_cluster_upgrade"
# The wave may wait days (soak, a weekly window, a human): its tasks wait deferred, and the
# execution timeout counts the waiting too.
WAVE_TIMEOUT = timedelta(days=8)
VALIDATE, PREFLIGHT, ASSESS = "validate_fleet", "preflight_cluster", "assess_fleet_risk"
APPROVE, UPGRADE = "approve_gate", "upgrade_cluster"
# How often a waiting instance asks again (rescheduled: no worker slot is held meanwhile).
# Each ask is a task process (a DAG parse): kept at 30 s on purpose.
RECHECK_SECONDS = 30
# How often the triggerer reads a running child's state: a query, no task process, so short;
# it bounds how late the fleet learns that a child ended (a canary's failure, say).
AWAIT_POLL_SECONDS = 10
RUNNING_STATES = ("queued", "running")

# --- runbooks (what each task does, what to check when it fails, whether clearing is safe) ----

VALIDATE_FLEET = runbook(
    "Reads the fleet file (`gitops/fleet.yaml`, or the `fleet_file` parameter under the gitops folder), "
    "validates clusters, labels, stages, groups, gates and the upgrade request, and resolves every "
    "group to cluster names. Nothing touches a cluster.",
    "The log lists every refused field as `field: reason` (unknown cluster or label, a cluster in two "
    "stages, max_concurrency below 1, a malformed window). Fix the file in git and trigger again. "
    "`k8s_cluster_upgrade is paused` refuses the wave too: its runs would stay queued forever; unpause "
    "that DAG, then trigger again.",
    "Safe, but pointless until the file changes.",
)
PREFLIGHT_CLUSTER = runbook(
    "For one cluster of the wave, through its own two connections: the plan and every preflight check "
    "(all but the etcd backup proof, which the cluster's own run does) and the risk decision. Every "
    "cluster is checked before the first one changes.",
    "A failure means the checks could not run: the log names the connection (missing, no kubeconfig) "
    "or the call that failed. Fix the connection and clear this instance.",
    "Safe: read-only.",
)
ASSESS_FLEET_RISK = runbook(
    "Stops the wave before it starts when any cluster's preflight decided `refuse`, one line per cluster "
    "with its blockers.",
    "Fix the named clusters, or exclude them in the fleet file (`strategy.exclude`), and trigger again.",
    "Safe: pure computation over the preflight results.",
)
APPROVE_GATE = runbook(
    "One approval gate of the strategy. It asks only when the fleet reaches it (earlier it waits, "
    "deferred); approve to open the stage or group, reject to stop the fleet with the verdict "
    "`rejected`. When the fleet halts before reaching it, it skips.",
    "A rejection or a timeout fails this task and halts the fleet; read the fleet report.",
    "Clearing it asks again; the clusters already upgraded stay upgraded.",
)
UPGRADE_CLUSTER = runbook(
    "One cluster: waits (deferred) until the strategy lets it start (stage order, max_concurrency, "
    "soak, gates), then starts a `k8s_cluster_upgrade` run `fleet__<fleet run>__<cluster>` with the "
    "fleet's request and awaits it deferrably. When another cluster failed, was rolled back or "
    "rejected, it skips: an untouched cluster stays untouched.",
    "Failed: that cluster's upgrade run failed; open it (the run id is in the log) and its report. "
    "The rest of the wave halts on its own.",
    "Safe: an existing run for this cluster is awaited, never started twice.",
)
APPROVAL_GATES = runbook(
    "Lists the strategy's approval gates, one approval task each (map index = gate order).",
    "It fails only when validate_fleet gave no plan; clear that first.",
    "Safe: pure computation.",
)
FLEET_REPORT = runbook(
    "Writes `fleet-report.json` and `fleet-report.md`: each cluster's path, risk and verdict side by "
    "side, the halt (who, what stayed untouched) and the fleet's figures.",
    "Check that the artefact store (a `file://` `SLIPWAY_ARTEFACTS_URL`, else the folder "
    "`SLIPWAY_REPORTS_DIR`) is writable.",
    "Safe: it rewrites the same files from the records.",
)
FLEET_VERDICT = runbook(
    "Ends the fleet run red unless every stage finished: names the failed cluster or rejected gate and "
    "the report.",
    "Read the fleet report, then the named cluster's own run and report.",
    "Safe: read-only.",
)


# --- per-cluster clients from the cluster's own connections --------------------------------


def connection_extra(conn_id: str) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowNotFoundException

    from slipway.airflow.runtime import provider_fields

    try:
        extra = BaseHook.get_connection(conn_id).extra_dejson
    except AirflowNotFoundException:
        raise AirflowFailException(f"connection {conn_id}: not defined") from None
    return provider_fields(extra)


def cluster_api(conn_id: str) -> Any:
    """A client for one fleet cluster, built like every run's (no key on disk)."""
    from slipway.airflow.runtime import orchestrator_api

    extra = connection_extra(conn_id)
    if not (extra.get("kube_config_path") or extra.get("kube_config")):
        # Without one, the provider would fall back to in-cluster or ~/.kube/config: another cluster.
        raise AirflowFailException(
            f"connection {conn_id}: names no kubeconfig (kube_config_path or kube_config)"
        )
    return orchestrator_api(conn_id)


def cluster_platform(cluster: dict[str, str]) -> Platform:
    from slipway.platform import Platform, parse_settings

    extra = connection_extra(cluster["platform_connection"])
    return Platform(parse_settings(extra), cluster_api(cluster["connection"]))


def paused_child_refusal(ti: Any) -> str | None:
    """The refusal when ``k8s_cluster_upgrade`` is paused: the child runs the fleet starts would
    stay queued forever, silently (None when it runs; a loud warning when it cannot be read)."""
    try:
        paused = ti.get_dag(UPGRADE_DAG).is_paused
    except Exception as err:  # not parsed yet, or an execution API without the call
        print(
            f"WARNING: cannot tell whether {UPGRADE_DAG} is paused ({err}); "
            "a paused one leaves the child runs queued"
        )
        return None
    if paused:
        return (
            f"{UPGRADE_DAG} is paused: every cluster's run would stay queued and the wave would never move; "
            f"unpause it (airflow dags unpause {UPGRADE_DAG}) and trigger the fleet again"
        )
    return None


def child_run_id(fleet_run_id: str, cluster: str) -> str:
    return f"fleet__{fleet_run_id}__{cluster}"


def fleet_dir() -> Path:
    """This fleet run's folder in the artefact store when the store is a folder (the default
    ``SLIPWAY_REPORTS_DIR``, or a ``file://`` mount every worker shares); with a remote store,
    this worker's local folder (the preflight's etcdctl writes need a local disk)."""
    from slipway import artefacts

    context = get_current_context()
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in context["run_id"])
    store = artefacts.local_path(artefacts.root())
    return (store if store is not None else artefacts.local_root()) / context["dag"].dag_id / safe


# --- reading the records ---------------------------------------------------------------------


def _outcome(airflow_state: str | None, verdict: str | None) -> Outcome:
    if airflow_state is None:
        return "not-started"
    if airflow_state in RUNNING_STATES:
        return "running"
    if airflow_state == "success":
        return "succeeded"
    if verdict in ("rolled-back", "rejected"):
        return verdict  # type: ignore[return-value]
    return "failed"


def _child_verdict(cluster: dict[str, str], run_id: str) -> dict[str, Any]:
    """The child's run record as the cluster keeps it ({} when unreadable or absent)."""
    from slipway.runrecord import RunRecord

    try:
        data = RunRecord(cluster_api(cluster["connection"]), run_id).load()
    except Exception as err:  # the report says what it could not read; the wave does not need it
        print(f"{cluster['name']}: run record {run_id} unreadable: {err}")
        return {}
    return data or {}


def observe(
    context: Any, *, with_records: bool = False
) -> tuple[FleetPlan, Action, dict[str, dict[str, Any]]]:
    """The plan, the decision the recorded outcomes give now, and per-cluster run facts."""
    from slipway.reports import run_verdict

    ti = context["ti"]
    validated = ti.xcom_pull(task_ids=VALIDATE, key="plan")
    clusters = {c["name"]: c for c in ti.xcom_pull(task_ids=VALIDATE)}
    plan = FleetPlan.from_dict(validated)
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    finished = {
        x["cluster"]: x["finished_at"]
        for x in (ti.xcom_pull(task_ids=UPGRADE, map_indexes=list(range(len(plan.clusters)))) or [])
        if isinstance(x, dict) and x.get("finished_at")
    }
    records: dict[str, ClusterRecord] = {}
    facts: dict[str, dict[str, Any]] = {}
    for name in plan.clusters:
        child = child_run_id(run_id, name)
        state = (
            ti.get_dagrun_state(UPGRADE_DAG, child) if ti.get_dr_count(UPGRADE_DAG, run_ids=[child]) else None
        )
        data = _child_verdict(clusters[name], child) if state and (with_records or state == "failed") else {}
        verdict = run_verdict(data) if data else None
        outcome = _outcome(state, verdict)
        at = finished.get(name)
        records[name] = ClusterRecord(outcome, datetime.fromisoformat(at) if at else None)
        if state:
            facts[name] = cluster_run_facts(child, outcome, verdict, data)
    states = ti.get_task_states(dag_id=dag_id, task_ids=[APPROVE], run_ids=[run_id]).get(run_id, {})
    approvals: dict[str, ApprovalState] = {}
    for index, gate_id in enumerate(plan.approvals):
        state = states.get(f"{APPROVE}_{index}")
        approvals[gate_id] = (
            "approved" if state == "success" else "rejected" if state == "failed" else "pending"
        )
    return plan, next_action(plan, records, approvals, datetime.now(UTC)), facts


# --- tasks -----------------------------------------------------------------------------------


@task(doc_md=VALIDATE_FLEET, retries=0)
def validate_fleet() -> list[dict[str, str]]:
    """Returns the wave's clusters (what the mapped tasks expand over); pushes the plan, the
    request and the approval subjects under their own keys."""
    context = get_current_context()
    name = str(context["params"]["fleet_file"])
    root = gitops.gitops_root().resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise AirflowFailException(f"fleet_file: {name!r} is outside the gitops folder")
    try:
        fleet = load_fleet(path)
    except FleetError as err:
        raise AirflowFailException(str(err)) from err
    plan = plan_fleet(fleet)
    refusal = paused_child_refusal(context["ti"])
    if refusal:
        raise AirflowFailException(refusal)
    print(f"fleet {fleet.name}: " + "; ".join(f"{s.name}: {', '.join(s.clusters)}" for s in plan.stages))
    ti = context["ti"]
    ti.xcom_push(key="plan", value=plan.to_dict())
    ti.xcom_push(key="request", value=parse_request(fleet.request).model_dump(mode="json"))
    members = [fleet.cluster(n) for n in plan.clusters]
    return [c.model_dump(include={"name", "connection", "platform_connection"}) for c in members]


@task(doc_md=APPROVAL_GATES, retries=0)
def approval_gates() -> list[str]:
    """One subject per approval gate, in strategy order (map index i is the i-th gate)."""
    plan = FleetPlan.from_dict(get_current_context()["ti"].xcom_pull(task_ids=VALIDATE, key="plan"))
    return [f"Fleet {plan.name}: approve {gate}" for gate in plan.approvals]


@task(task_id=PREFLIGHT, doc_md=PREFLIGHT_CLUSTER, retries=1, map_index_template="{{ fleet_cluster }}")
def preflight_one(cluster: dict[str, str]) -> dict[str, Any]:
    from slipway.fleet.preflight import preflight_cluster

    context = get_current_context()
    context["fleet_cluster"] = cluster["name"]  # type: ignore[typeddict-unknown-key]
    request = parse_request(context["ti"].xcom_pull(task_ids=VALIDATE, key="request"))
    found = preflight_cluster(cluster_platform(cluster), request, fleet_dir() / "preflight" / cluster["name"])
    print(f"{cluster['name']}: {found['path']}, risk {found['risk']}, decision {found['decision']}")
    return {"cluster": cluster["name"]} | found


@task(task_id=ASSESS, doc_md=ASSESS_FLEET_RISK, retries=0)
def assess_fleet_risk(results: Any) -> dict[str, Any]:
    from slipway.fleet.preflight import blocking

    found = {r["cluster"]: r for r in results}
    problems = blocking(found)
    if problems:
        raise AirflowFailException("the wave does not start; refused by preflight:\n" + "\n".join(problems))
    return found


class FleetApprovalOperator(ApprovalOperator):
    """Asks only once the fleet reaches this gate; skips when the fleet halted before it."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("response_timeout", timedelta(hours=12))
        kwargs.setdefault("doc_md", APPROVE_GATE)
        kwargs.setdefault(
            "body",
            "The fleet reached this gate. Approve to go on; reject to stop the fleet (verdict rejected).",
        )
        super().__init__(fail_on_reject=True, **kwargs)

    def execute(self, context: Any) -> Any:
        plan, action, _ = observe(context)
        gate = plan.approvals[context["ti"].map_index]
        if action.kind == "halt":
            raise AirflowSkipException(f"the fleet halted before gate {gate}: {action.reason}")
        if action.kind == "done":
            raise AirflowSkipException("the fleet is done")
        if action.kind == "gate" and action.gate == gate:
            return super().execute(context)
        self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=RECHECK_SECONDS)), method_name="recheck")
        return None

    def recheck(self, context: Any, event: Any = None) -> Any:
        return self.execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from slipway.airflow.approval import final_decision

        return final_decision(lambda: super(FleetApprovalOperator, self).execute_complete(context, event))


class FleetClusterOperator(TriggerDagRunOperator):
    """Starts and awaits one cluster's ``k8s_cluster_upgrade`` run when the strategy says so."""

    def __init__(self, *, cluster: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("doc_md", UPGRADE_CLUSTER)
        super().__init__(
            trigger_dag_id=UPGRADE_DAG,
            wait_for_completion=True,
            deferrable=True,
            poke_interval=AWAIT_POLL_SECONDS,
            allowed_states=["success"],
            failed_states=["failed"],
            **kwargs,
        )
        self.cluster = cluster["name"]
        # The child run talks to this cluster only: its own two connections, named in its form.
        self.connections = {
            "kubernetes_conn_id": cluster["connection"],
            "platform_conn_id": cluster["platform_connection"],
        }

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        child = child_run_id(context["run_id"], self.cluster)
        if ti.get_dr_count(UPGRADE_DAG, run_ids=[child]):  # resumed: await, never start twice
            state = ti.get_dagrun_state(UPGRADE_DAG, child)
            if state in RUNNING_STATES:
                self.defer(
                    trigger=DagStateTrigger(
                        dag_id=UPGRADE_DAG,
                        states=[DagRunState.SUCCESS, DagRunState.FAILED],
                        run_ids=[child],
                        poll_interval=AWAIT_POLL_SECONDS,
                    ),
                    method_name="execute_complete",
                )
            return self._finished(child, state)
        _, action, _ = observe(context)
        if action.kind == "halt":
            raise AirflowSkipException(f"{self.cluster} left untouched: {action.reason}")
        if action.kind == "start" and self.cluster in action.clusters:
            print(f"{self.cluster}: starting {UPGRADE_DAG} run {child} ({action.reason})")
            self.trigger_run_id = child
            self.conf = (ti.xcom_pull(task_ids=VALIDATE, key="request") or {}) | self.connections
            return super().execute(context)  # raises: the runner starts the run, then defers on it
        wait = RECHECK_SECONDS
        if action.until is not None:
            wait = int(min(max((action.until - datetime.now(UTC)).total_seconds(), 1), RECHECK_SECONDS))
        print(f"{self.cluster}: not yet ({action.kind}: {action.reason})")
        # Not this cluster's turn: give the slot back and look again later (reschedule holds
        # no worker and needs no triggerer). A deferral would also hold nothing under a real
        # triggerer, but dag.test() runs a deferred task's trigger inline until the task ends,
        # so a later stage picked first would wait forever for a canary that never gets to run.
        raise AirflowRescheduleException(datetime.now(UTC) + timedelta(seconds=wait))

    def execute_complete(self, context: Any, event: Any) -> Any:
        child = child_run_id(context["run_id"], self.cluster)
        _, data = event
        return self._finished(child, data.get(child))

    def _finished(self, child: str, state: str | None) -> dict[str, Any]:
        if state != "success":
            raise AirflowFailException(
                f"cluster {self.cluster}: {UPGRADE_DAG} run {child} ended {state}; the fleet halts "
                "(every cluster not yet started stays untouched)"
            )
        return {"cluster": self.cluster, "run_id": child, "finished_at": datetime.now(UTC).isoformat()}


def _preflight_results(ti: Any, plan: FleetPlan) -> dict[str, dict[str, Any]]:
    found = ti.xcom_pull(task_ids=PREFLIGHT, map_indexes=list(range(len(plan.clusters)))) or []
    return {r["cluster"]: r for r in found if isinstance(r, dict)}


def _stopped_before_start(
    context: Any, plan: FleetPlan, preflight: dict[str, dict[str, Any]], started: dict[str, Any]
) -> Action | None:
    """The halt when the fleet-wide risk step did not pass and no cluster started."""
    from slipway.fleet.preflight import blocking

    run_id = context["run_id"]
    states = context["ti"].get_task_states(dag_id=context["dag"].dag_id, task_ids=[ASSESS], run_ids=[run_id])
    if started or states.get(run_id, {}).get(ASSESS) == "success":
        return None
    missing = [f"{name}: no preflight result" for name in plan.clusters if name not in preflight]
    return refused_by_preflight(plan, blocking(preflight) + missing)


@task(trigger_rule=TriggerRule.ALL_DONE, doc_md=FLEET_REPORT, retries=1)
def fleet_report() -> dict[str, str]:
    context = get_current_context()
    ti = context["ti"]
    if ti.xcom_pull(task_ids=VALIDATE, key="plan") is None:
        raise AirflowFailException("no fleet plan: validate_fleet failed (its log names the fields)")
    plan, action, facts = observe(context, with_records=True)
    preflight = _preflight_results(ti, plan)
    action = _stopped_before_start(context, plan, preflight, facts) or action
    started = context["dag_run"].start_date
    wall = (datetime.now(UTC) - started).total_seconds() if started else None
    report = build_fleet_report(plan, preflight, facts, action, wall_seconds=wall)
    paths = write_fleet_report(report, fleet_dir())
    print(f"fleet report: {paths['markdown']}")
    return {k: str(v) for k, v in paths.items()}


@task(trigger_rule=TriggerRule.ALL_DONE, doc_md=FLEET_VERDICT, retries=0)
def fleet_verdict(report: Any = None) -> str:
    context = get_current_context()
    if context["ti"].xcom_pull(task_ids=VALIDATE, key="plan") is None:
        raise AirflowFailException("no fleet plan: validate_fleet failed")
    plan, action, facts = observe(context)
    action = _stopped_before_start(context, plan, _preflight_results(context["ti"], plan), facts) or action
    where = (report or {}).get("markdown", "no report written")
    if action.kind == "halt":
        raise AirflowFailException(
            f"fleet halted ({action.verdict}) by {action.failed}: {action.reason}; report: {where}"
        )
    if action.kind != "done":
        raise AirflowFailException(f"fleet did not finish ({action.kind}: {action.reason}); report: {where}")
    return "upgraded"
