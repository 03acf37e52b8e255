"""The worker phase: batch slots run strictly in order, one task per node inside a slot.

Why slots: batch *k+1* must never start before batch *k* passed validation, and
``dag.test()`` must run the whole phase, so the order is in the graph itself. Each slot
is four tasks — select (opens the batch from what the cluster still needs), one mapped
task per node (:class:`~slipway.airflow.node_operator.UpgradeNodeOperator`, resumable
from the step recorded on the node), validate, and a rollback that runs only when the
validation failed. A slot with nothing to do ends the phase (its node task and validation
skip, and so does every later slot). The number of slots is a DAG-file setting
(``SLIPWAY_MAX_BATCHES``); when nodes remain after the last slot the phase fails and says
so, and a new run resumes there.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from http.client import HTTPException
from typing import TYPE_CHECKING, Any

from airflow.sdk import TaskGroup, TriggerRule, task, task_group
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from slipway.airflow import runbooks
from slipway.airflow.node_operator import UpgradeNodeOperator, node_step_event
from slipway.airflow.stage_common import declare_incident
from slipway.airflow.stage_lease import holds_cluster_lease
from slipway.lazy import api_exception, lazy

if TYPE_CHECKING:
    from slipway import workers
    from slipway.airflow import runtime
else:
    runtime = lazy("slipway.airflow.runtime")
    workers = lazy("slipway.workers")


# 25 slots of four tasks keep the largest DAG under 150 tasks; the adaptive batcher grows
# batches after clean ones, so 25 batches cover 100+ nodes at 10 % max unavailable.
DEFAULT_MAX_BATCHES = 25


def max_batches() -> int:
    return int(os.environ.get("SLIPWAY_MAX_BATCHES", str(DEFAULT_MAX_BATCHES)))


GROUP = "workers"
log = logging.getLogger(__name__)


def _open_latency_window(index: int) -> None:
    # Latency is an observation, not a precondition: unreadable metrics are recorded and
    # the batch goes on (its verdict then says the comparison was skipped).
    try:
        workers.open_latency_window(runtime.platform().control_plane_reader(), runtime.record(), index)
    except (OSError, HTTPException, api_exception()) as err:
        runtime.record().event(
            "latency-unavailable", f"batch {index}: metrics unreadable: {err}", batch=index
        )


def batch_slot(index: int, request: Any, entry_after: Any | None) -> tuple[Any, Any, Any]:
    """One batch: select → one task per node → validate → rollback (only when it failed).

    Returns the slot's entry (select), its validation (the next slot waits on it) and its
    rollback."""
    with TaskGroup(group_id=f"batch_{index}"):

        @task(doc_md=runbooks.SELECT_BATCH, retries=2)
        @holds_cluster_lease
        def select_batch(request: dict[str, Any]) -> list[str]:
            req = runtime.request_from(request)
            selection = workers.select_batch(runtime.orchestrator_api(), runtime.record(), req, index)
            if selection.nodes:
                # Surge nodes and the latency window open with the batch; both are no-ops on a retry.
                _open_latency_window(index)
                added = (
                    runtime.platform()
                    .node_upgrader(req.strategy)
                    .prepare_batch(selection.nodes, str(req.target))
                )
                if added:
                    runtime.record().event(
                        "surge-added", f"batch {index}: surge nodes {', '.join(added)}", batch=index
                    )
            if not selection.nodes:
                log.info("batch %d: nothing to do (%s): the worker phase ends here", index, selection.reason)
            # Just the names (the node tasks map over them); the selection is in the run record.
            return list(selection.nodes)

        # Runs even when node tasks failed (that is what it judges), so it takes no XCom that
        # a failed upstream would leave missing: the batch and the request come from the run record.
        @task(doc_md=runbooks.VALIDATE_BATCH, trigger_rule=TriggerRule.NONE_SKIPPED)
        def validate_batch() -> dict[str, Any]:
            rec = runtime.record()
            data = rec.load_state()
            batches = data.get("batches", [])
            if index >= len(batches) or "request" not in data:
                raise AirflowSkipException(f"batch {index} never opened: nothing to validate")
            return _validate_opened_batch(rec, index, batches[index], runtime.request_from(data["request"]))

        @task(doc_md=runbooks.ROLLBACK_BATCH, retries=2, trigger_rule=TriggerRule.ONE_FAILED)
        @holds_cluster_lease
        def rollback_batch(request: dict[str, Any]) -> list[dict[str, str]]:
            req = runtime.request_from(request)
            batches = runtime.record().get("batches", [])
            if index >= len(batches):
                raise AirflowSkipException(f"batch {index} never opened: nothing to roll back")
            verdict = batches[index].get("verdict", {})
            why = (
                "; ".join(verdict.get("problems", [])[:2]) or "the validation did not conclude (see its log)"
            )
            declare_incident("SEV2", f"batch {index} failed validation: {why}")
            done = workers.rollback_batch(
                runtime.orchestrator_api(),
                runtime.record(),
                index,
                runtime.platform().node_upgrader(req.strategy),
            )
            for result in done:
                node_step_event(
                    result["node"], "SlipwayRolledBack", f"batch {index} rolled back: {why}", "Rollback"
                )
            return done

        selection: Any = select_batch(request)
        if entry_after is not None:
            entry_after >> selection
        per_node = UpgradeNodeOperator.partial(
            task_id="upgrade_node",
            request=request,
            doc_md=runbooks.UPGRADE_ONE_NODE,
            retries=2,
            # Every node step is bounded by its own timeouts (drain, readiness); this is the backstop.
            execution_timeout=timedelta(hours=2),
        ).expand(node=selection)
        verdict: Any = validate_batch()
        per_node >> verdict
        back = rollback_batch(request)
        verdict >> back
    return selection, verdict, back


def _validate_opened_batch(rec: Any, index: int, selection: dict[str, Any], req: Any) -> dict[str, Any]:
    """Judge an opened batch and record the verdict; a failed verdict fails the task (the
    slot's rollback then runs). Any exception here also fails it, so a check that cannot
    conclude takes the rollback branch too."""
    from slipway.airflow.stage_lease import keep_cluster_lease

    with keep_cluster_lease():
        api = runtime.orchestrator_api()
        upgrader = runtime.platform().node_upgrader(req.strategy)
        check_nodes = upgrader.nodes_to_wait_for(selection["nodes"]) or selection["nodes"]
        reader = runtime.platform().control_plane_reader()
        verdict = workers.validate_batch(
            api,
            req,
            check_nodes,
            latency=lambda: workers.latency_check(reader, rec.get("latency", {}), req),
        )
        workers.record_verdict(rec, index, verdict, workers.batch_seconds_per_node(rec, index))
        if not verdict.passed:
            problems = "; ".join(verdict.problems[:3]) or "see the run record"
            raise AirflowFailException(f"batch {index} failed validation: {problems}")
        upgrader.finalize_batch(selection["nodes"])
    return verdict.to_dict()


@task_group(group_id=GROUP)
def worker_phase(request: Any, slots: int) -> None:
    """Batches strictly in order; the first slot with nothing to do ends the phase."""
    entries, verdicts, rollbacks = [], [], []
    previous = None
    for index in range(slots):
        entry, verdict, back = batch_slot(index, request, previous)
        previous = verdict
        entries.append(entry)
        verdicts.append(verdict)
        rollbacks.append(back)

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, doc_md=runbooks.WORKERS_DONE)
    def workers_done(request: dict[str, Any]) -> dict[str, Any]:
        summary = workers.phase_summary(
            runtime.orchestrator_api(), runtime.record(), runtime.request_from(request)
        )
        if summary["reason"] == workers.NO_CAPACITY:
            raise AirflowFailException(
                f"{summary['refused']}. Nothing of this batch was cordoned; {summary['remaining']} nodes "
                "still need the upgrade. Free capacity (resolve the quarantined nodes' blocking PDBs and "
                "uncordon them, add nodes, or use strategy=surge), then trigger the run again"
            )
        if summary["remaining"] and summary["reason"] == "slots-exhausted":
            raise AirflowFailException(
                f"{summary['remaining']} nodes still need the upgrade after {slots} batches: "
                "trigger the run again to continue (it resumes from the cluster's state)"
            )
        return summary

    @task(trigger_rule=TriggerRule.ONE_SUCCESS, doc_md=runbooks.WORKER_PHASE_ROLLED_BACK)
    def worker_phase_rolled_back() -> None:
        raise AirflowFailException("a batch failed validation and was rolled back; remaining batches stopped")

    done = workers_done(request)
    # The first slot's selection is the one success a phase with nothing to do has; a failed
    # validation anywhere keeps the summary from running (the rollback leaf speaks instead).
    [*entries, *verdicts] >> done  # type: ignore[list-item]
    rollbacks >> worker_phase_rolled_back()
