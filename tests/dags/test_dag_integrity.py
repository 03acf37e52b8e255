"""Every DAG imports without network access, follows the house rules and serialises."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

from slipway.airflow.timetable import MaintenanceWindowTimetable
from tests.conftest import REPO

EXPECTED_DAGS = {
    "k8s_upgrade_preflight",
    "k8s_cluster_upgrade",
    "k8s_worker_upgrade",
    "k8s_upgrade_history",
    "k8s_gitops_sync",
    "k8s_cluster_migration",
}


class NetworkAtParseTime(AssertionError):
    pass


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    original = socket.socket.connect

    def refuse(self: socket.socket, address: Any) -> None:
        raise NetworkAtParseTime(f"a DAG file opened a connection to {address} while being parsed")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    try:
        return DagBag(dag_folder=str(REPO / "dags"))
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]


def test_every_dag_imports_without_network(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) >= EXPECTED_DAGS


def test_house_rules(dagbag: DagBag) -> None:
    for dag in dagbag.dags.values():
        assert dag.dag_id.startswith("k8s_"), dag.dag_id
        assert "slipway" in dag.tags
        assert dag.doc_md, f"{dag.dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.owner == "platform", task.task_id
            assert task.doc_md, f"{dag.dag_id}.{task.task_id} has no doc_md runbook"


def test_dags_serialise_with_their_timetable(dagbag: DagBag) -> None:
    for dag in dagbag.dags.values():
        restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        assert type(restored.timetable).__name__ == type(dag.timetable).__name__
        if isinstance(dag.timetable, MaintenanceWindowTimetable):
            assert restored.timetable.windows == dag.timetable.windows


# The shape limits an on-call engineer and the scheduler feel: a grid one can read, a
# serialised DAG the scheduler and the UI load quickly (issue: the lean graph).
MAX_TASKS = 150
MAX_SERIALISED_BYTES = 1_000_000


def test_every_dag_stays_lean(dagbag: DagBag) -> None:
    import json

    for dag in dagbag.dags.values():
        assert len(dag.tasks) <= MAX_TASKS, f"{dag.dag_id}: {len(dag.tasks)} tasks"
        size = len(json.dumps(DagSerialization.to_dict(dag), default=str))
        assert size <= MAX_SERIALISED_BYTES, f"{dag.dag_id}: serialises to {size} bytes"


def test_the_form_is_serialised_once_not_per_task(dagbag: DagBag) -> None:
    dag = dagbag.dags["k8s_cluster_upgrade"]
    assert "target_version" in dag.params
    copied = [t.task_id for t in dag.tasks if "target_version" in t.params]
    assert copied == [], f"the DAG's Params are copied into {len(copied)} tasks"


def test_a_node_is_one_task_resumable_from_its_recorded_step(dagbag: DagBag) -> None:
    from slipway.airflow.node_operator import STEPS, still_to_do

    dag = dagbag.dags["k8s_cluster_upgrade"]
    slot = [t.task_id for t in dag.tasks if t.task_id.startswith("workers.batch_0.")]
    assert sorted(slot) == [
        "workers.batch_0.rollback_batch",
        "workers.batch_0.select_batch",
        "workers.batch_0.upgrade_node",
        "workers.batch_0.validate_batch",
    ]
    assert still_to_do(None) == STEPS
    assert still_to_do("drained") == ("upgraded", "done")
    assert still_to_do("done") == ()
