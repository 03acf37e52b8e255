"""The worker phase: batch slots run strictly in order, one mapped task group per node.

Why slots: batch *k+1* must never start before batch *k* passed validation, and
``dag.test()`` must run the whole phase, so the order is in the graph itself. Each slot
opens its batch from what the cluster still needs; a slot with nothing to do ends the
phase. The number of slots is a DAG-file setting (``SLIPWAY_MAX_BATCHES``); when nodes
remain after the last slot the phase fails and says so, and a new run resumes there.
"""

from __future__ import annotations

from http.client import HTTPException
from typing import Any

from airflow.sdk import TaskGroup, TriggerRule, task, task_group
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from kubernetes.client.exceptions import ApiException

from slipway import lease, workers
from slipway.airflow import runbooks
from slipway.airflow.runtime import current_run_id, orchestrator_api, platform, record, request_from
from slipway.airflow.sensors import NodesReadySensor
from slipway.airflow.stage_common import declare_incident
from slipway.airflow.stage_lease import holds_cluster_lease
from slipway.kube import nodes as kube_nodes
from slipway.kube.drain import DrainBlocked, DrainRefused, drain_node, plan_drain
from slipway.kube.pdb import blocking_pdbs
from slipway.platform import TWIN_STRATEGIES

GROUP = "workers"


def _v(version: str) -> str:
    return version if version.startswith("v") else f"v{version}"


def _quarantined(node: str) -> bool:
    """A quarantined node is left alone by every later step (read from the node itself)."""
    from kubernetes import client

    return kube_nodes.is_quarantined(client.CoreV1Api(orchestrator_api()).read_node(node))


def _open_latency_window(index: int) -> None:
    # Latency is an observation, not a precondition: unreadable metrics are recorded and
    # the batch goes on (its verdict then says the comparison was skipped).
    try:
        workers.open_latency_window(platform().control_plane_reader(), record(), index)
    except (OSError, HTTPException, ApiException) as err:
        record().event("latency-unavailable", f"batch {index}: metrics unreadable: {err}", batch=index)


def _adopt_cordon_of_earlier_run(node: str) -> None:
    """A run that died mid-batch left its cordon: the run resuming the work takes it over,
    so its own uncordon undoes it. An operator's (external) cordon is never adopted, nor the
    cordon of a run that still holds the cluster lease (it is still working on the node)."""
    from kubernetes import client

    api = orchestrator_api()
    core = client.CoreV1Api(api)
    current = core.read_node(node)
    owner = kube_nodes.cordon_owner(current)
    if kube_nodes.is_cordoned(current) and owner not in (None, kube_nodes.EXTERNAL_CORDON, current_run_id()):
        if lease.cordoned_by_other_live_run(api, [current], current_run_id()):
            raise AirflowFailException(
                f"node {node} is cordoned by run {owner}, which holds the cluster lease"
            )
        # Guarded by the resourceVersion read above: a 409 means the node changed; the retry decides again.
        annotations = {kube_nodes.CORDONED_BY: current_run_id()}
        core.patch_node(
            node,
            {"metadata": {"annotations": annotations, "resourceVersion": current.metadata.resource_version}},
        )
        record().event("cordon-adopted", f"node {node}: cordon of run {owner} taken over", node=node)


@task(doc_md=runbooks.PRE_DRAIN, retries=2)
@holds_cluster_lease
def pre_drain_check(node: str, request: dict[str, Any]) -> dict[str, Any]:
    req = request_from(request)
    api = orchestrator_api()
    plan = plan_drain(api, node, workers.drain_options(req))
    if plan.refuse:
        raise AirflowFailException("; ".join(s.message for s in plan.refuse))
    # Only a PDB that can never allow a disruption is worth acting on before the drain;
    # a transient block (replacement pods still starting) is what the drain's retries are for.
    permanent = {e["pdb"] for e in blocking_pdbs(api) if e["permanent"]}
    stuck = [b for b in plan.blocked if b.pdb in permanent]
    if stuck:
        blockers = "; ".join(str(b) for b in stuck)
        if req.blocked_drain_policy == "quarantine":
            kube_nodes.quarantine(api, node, f"drain blocked: {blockers}")
            record().event("quarantined", f"node {node} quarantined (left cordoned): {blockers}", node=node)
            return plan.to_dict() | {"quarantined": True}
        if req.blocked_drain_policy == "rollback":
            raise AirflowFailException(f"drain of {node} would be blocked: {blockers}")
    return plan.to_dict()


@task(doc_md=runbooks.CORDON, retries=3)
@holds_cluster_lease
def cordon_node(node: str) -> bool:
    api = orchestrator_api()
    if _quarantined(node):
        return False
    _adopt_cordon_of_earlier_run(node)
    changed = kube_nodes.cordon(api, node, current_run_id())
    kube_nodes.set_step(api, node, current_run_id(), "cordoned")
    return changed


@task(doc_md=runbooks.DRAIN, retries=1)
@holds_cluster_lease
def drain(node: str, request: dict[str, Any]) -> dict[str, Any]:
    req = request_from(request)
    api = orchestrator_api()
    if _quarantined(node):
        return {"node": node, "quarantined": True}
    try:
        result = drain_node(api, node, workers.drain_options(req), run_id=current_run_id())
    except DrainRefused as err:
        raise AirflowFailException(str(err)) from err
    except DrainBlocked as err:
        if req.blocked_drain_policy == "quarantine":
            kube_nodes.quarantine(api, node, str(err))
            record().event("quarantined", f"node {node} quarantined (left cordoned): {err}", node=node)
            return {"node": node, "quarantined": True, "blockers": [b.to_dict() for b in err.blockers]}
        raise AirflowFailException(str(err)) from err
    kube_nodes.set_step(api, node, current_run_id(), "drained")
    return result.to_dict()


@task(doc_md=runbooks.UPGRADE_NODE, retries=2)
@holds_cluster_lease
def upgrade_node(node: str, request: dict[str, Any]) -> dict[str, Any]:
    req = request_from(request)
    if _quarantined(node):
        return {"nodes": [], "version": _v(str(req.target)), "timeout": req.node_ready_timeout_seconds}
    upgrader = platform().node_upgrader(req.strategy)
    result = upgrader.upgrade_node(node, str(req.target))
    kube_nodes.set_step(orchestrator_api(), node, current_run_id(), "upgraded")
    record().event("node-upgraded", f"node {node}: {result.action} {result.version}", node=node)
    return {
        "nodes": upgrader.nodes_to_wait_for([node]),
        "version": _v(str(req.target)),
        "timeout": req.node_ready_timeout_seconds,
    }


@task(doc_md=runbooks.UNCORDON, retries=3)
@holds_cluster_lease
def uncordon_node(node: str, request: dict[str, Any]) -> bool:
    if request_from(request).strategy in TWIN_STRATEGIES:
        return False  # a replaced (blue) node stays cordoned until retired
    from kubernetes import client

    api = orchestrator_api()
    current = client.CoreV1Api(api).read_node(node)
    if kube_nodes.is_quarantined(current):
        return False  # a quarantine stays for a human
    since = (current.metadata.annotations or {}).get(kube_nodes.CORDONED_AT)
    changed = kube_nodes.uncordon(api, node, current_run_id())
    if changed:
        out = kube_nodes.seconds_since(since) if since else None
        took = f" after {out:.0f}s out of service" if out is not None else ""
        record().event("node-uncordoned", f"node {node} back in service{took}", node=node, seconds=out)
    return changed


@task(doc_md=runbooks.POST_CHECKS, retries=2)
@holds_cluster_lease
def post_checks(node: str, request: dict[str, Any]) -> str:
    """The node (or, for surge/blue-green, its twin) is Ready at the target and back in
    service before its step is marked done; a failure here fails the batch's node."""
    if _quarantined(node):
        return node
    req = request_from(request)
    api = orchestrator_api()
    serving = platform().node_upgrader(req.strategy).nodes_to_wait_for([node]) or [node]
    problems = workers.node_problems(api, serving, str(req.target))
    if problems:
        raise AirflowFailException("; ".join(problems))
    kube_nodes.set_step(api, node, current_run_id(), "done")
    return node


@task_group
def upgrade_one_node(node: str, request: dict[str, Any]) -> Any:
    """pre-drain checks → cordon → drain → upgrade → wait Ready → uncordon → post-checks."""
    checked = pre_drain_check(node, request)
    cordoned = cordon_node(node)
    drained = drain(node, request)
    waiting_for: Any = upgrade_node(node, request)
    ready = NodesReadySensor(
        task_id="wait_node_ready",
        nodes=waiting_for["nodes"],
        version=waiting_for["version"],
        node_startup_timeout=waiting_for["timeout"],
        retries=3,  # idempotent: a retry looks at the node again
        doc_md=runbooks.WAIT_READY,
    )
    uncordoned = uncordon_node(node, request)
    done = post_checks(node, request)
    checked >> cordoned >> drained >> waiting_for >> ready >> uncordoned >> done
    return done


def batch_slot(index: int, request: Any) -> tuple[Any, Any, Any, Any]:
    """One batch: select → (per node) → validate → pass/rollback. Returns entry and exits."""
    with TaskGroup(group_id=f"batch_{index}") as group:
        prefix = group.group_id

        @task(doc_md=runbooks.SELECT_BATCH, retries=2)
        @holds_cluster_lease
        def select_batch(request: dict[str, Any]) -> dict[str, Any]:
            selection = workers.select_batch(orchestrator_api(), record(), request_from(request), index)
            return selection.to_dict()

        @task.branch(doc_md=runbooks.SELECT_BATCH)
        def route_batch(selection: dict[str, Any]) -> str:
            return f"{prefix}.prepare_batch" if selection["nodes"] else f"{prefix}.no_more_batches"

        @task(doc_md=runbooks.NO_MORE_BATCHES)
        def no_more_batches(selection: dict[str, Any]) -> str:
            return str(selection["reason"])

        @task(doc_md=runbooks.UPGRADE_NODE, retries=2)
        @holds_cluster_lease
        def prepare_batch(selection: dict[str, Any], request: dict[str, Any]) -> list[str]:
            req = request_from(request)
            _open_latency_window(index)
            added = platform().node_upgrader(req.strategy).prepare_batch(selection["nodes"], str(req.target))
            if added:
                record().event("surge-added", f"batch {index}: surge nodes {', '.join(added)}", batch=index)
            return list(selection["nodes"])

        # Runs even when node steps failed (that is what it judges), so it takes no XCom that
        # a failed upstream would leave missing: the batch and the request come from the run record.
        @task(doc_md=runbooks.VALIDATE_BATCH, trigger_rule=TriggerRule.NONE_SKIPPED)
        @holds_cluster_lease
        def validate_batch() -> dict[str, Any]:
            rec = record()
            data = rec.load()
            batches = data.get("batches", [])
            if index >= len(batches) or "request" not in data:
                raise AirflowSkipException(f"batch {index} never opened: nothing to validate")
            selection = batches[index]
            req = request_from(data["request"])
            api = orchestrator_api()
            upgrader = platform().node_upgrader(req.strategy)
            check_nodes = upgrader.nodes_to_wait_for(selection["nodes"]) or selection["nodes"]
            reader = platform().control_plane_reader()
            verdict = workers.validate_batch(
                api,
                req,
                check_nodes,
                latency=lambda: workers.latency_check(reader, rec.get("latency", {}), req),
            )
            workers.record_verdict(rec, index, verdict, workers.batch_seconds_per_node(rec, index))
            if verdict.passed:
                upgrader.finalize_batch(selection["nodes"])
            return verdict.to_dict()

        @task.branch(doc_md=runbooks.VALIDATE_BATCH)
        def pass_or_rollback(verdict: dict[str, Any]) -> str:
            return f"{prefix}.batch_passed" if verdict["passed"] else f"{prefix}.rollback_batch"

        @task(doc_md=runbooks.BATCH_PASSED)
        def batch_passed() -> int:
            return index

        @task(doc_md=runbooks.ROLLBACK_BATCH, retries=2)
        @holds_cluster_lease
        def rollback_batch(request: dict[str, Any]) -> list[dict[str, str]]:
            req = request_from(request)
            batches = record().get("batches", [])
            verdict = batches[index].get("verdict", {}) if index < len(batches) else {}
            why = "; ".join(verdict.get("problems", [])[:2]) or "see the report"
            declare_incident("SEV2", f"batch {index} failed validation: {why}")
            return workers.rollback_batch(
                orchestrator_api(), record(), index, platform().node_upgrader(req.strategy)
            )

        selection: Any = select_batch(request)
        routed = route_batch(selection)
        ended = no_more_batches(selection)
        nodes = prepare_batch(selection, request)
        routed >> [ended, nodes]
        per_node = upgrade_one_node.partial(request=request).expand(node=nodes)
        verdict: Any = validate_batch()
        [nodes, per_node] >> verdict
        decision = pass_or_rollback(verdict)
        ok, back = batch_passed(), rollback_batch(request)
        decision >> [ok, back]
    return selection, ok, ended, back


@task_group(group_id=GROUP)
def worker_phase(request: Any, max_batches: int) -> None:
    """Batches strictly in order; the first slot with nothing to do ends the phase."""
    ends, rollbacks = [], []
    previous_ok = None
    for index in range(max_batches):
        entry, ok, ended, back = batch_slot(index, request)
        if previous_ok is not None:
            previous_ok >> entry
        previous_ok = ok
        ends.append(ended)
        rollbacks.append(back)

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, doc_md=runbooks.WORKERS_DONE)
    def workers_done(request: dict[str, Any]) -> dict[str, Any]:
        summary = workers.phase_summary(orchestrator_api(), record(), request_from(request))
        if summary["reason"] == workers.NO_CAPACITY:
            raise AirflowFailException(
                f"{summary['refused']}. Nothing of this batch was cordoned; {summary['remaining']} nodes "
                "still need the upgrade. Free capacity (resolve the quarantined nodes' blocking PDBs and "
                "uncordon them, add nodes, or use strategy=surge), then trigger the run again"
            )
        if summary["remaining"] and summary["reason"] == "slots-exhausted":
            raise AirflowFailException(
                f"{summary['remaining']} nodes still need the upgrade after {max_batches} batches: "
                "trigger the run again to continue (it resumes from the cluster's state)"
            )
        return summary

    @task(trigger_rule=TriggerRule.ONE_SUCCESS, doc_md=runbooks.WORKER_PHASE_ROLLED_BACK)
    def worker_phase_rolled_back() -> None:
        raise AirflowFailException("a batch failed validation and was rolled back; remaining batches stopped")

    done = workers_done(request)
    [*ends, previous_ok] >> done  # type: ignore[list-item]
    rollbacks >> worker_phase_rolled_back()
