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
