"""k8s_fleet_upgrade parses without network, stays small in the grid, and documents every task."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

from tests.conftest import REPO

MAX_TASKS = 30


@pytest.fixture(scope="module")
def fleet_dag() -> Any:
    original = socket.socket.connect

    def refuse(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"the fleet DAG opened a connection to {address} while being parsed")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    try:
        bag = DagBag(dag_folder=str(REPO / "dags" / "k8s_fleet_upgrade.py"))
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]
    assert bag.import_errors == {}
    return bag.dags["k8s_fleet_upgrade"]


def test_parses_small_and_every_task_has_a_runbook(fleet_dag: Any) -> None:
    assert len(fleet_dag.tasks) <= MAX_TASKS
    for task in fleet_dag.tasks:
        assert task.doc_md and "**What it does.**" in task.doc_md, task.task_id
        assert "**Clearing it.**" in task.doc_md, task.task_id
        assert "§" not in task.doc_md, task.task_id
        assert task.owner == "platform"


def test_shape_validate_preflight_risk_then_the_wave(fleet_dag: Any) -> None:
    ids = {t.task_id for t in fleet_dag.tasks}
    assert ids == {
        "validate_fleet",
        "preflight_cluster",
        "assess_fleet_risk",
        "approval_gates",
        "approve_gate",
        "upgrade_cluster",
        "fleet_report",
        "fleet_verdict",
    }
    # Nothing of the wave before every cluster's preflight and the fleet risk decision.
    assert fleet_dag.get_task("upgrade_cluster").upstream_task_ids == {"assess_fleet_risk", "validate_fleet"}
    assert fleet_dag.get_task("approve_gate").upstream_task_ids == {"assess_fleet_risk", "approval_gates"}
    assert "preflight_cluster" in fleet_dag.get_task("assess_fleet_risk").upstream_task_ids
    assert fleet_dag.get_task("fleet_report").trigger_rule == "all_done"
    assert fleet_dag.get_task("fleet_verdict").trigger_rule == "all_done"
    assert fleet_dag.max_active_runs == 1


def test_serialises(fleet_dag: Any) -> None:
    restored = DagSerialization.from_dict(DagSerialization.to_dict(fleet_dag))
    assert {t.task_id for t in restored.tasks} == {t.task_id for t in fleet_dag.tasks}


def test_every_task_times_out_and_the_wave_may_wait_days(fleet_dag: Any) -> None:
    from datetime import timedelta

    for task in fleet_dag.tasks:
        assert task.execution_timeout is not None, task.task_id
    # The deferred waiting (soak, windows, a human) counts toward the timeout.
    for task_id in ("upgrade_cluster", "approve_gate"):
        assert fleet_dag.get_task(task_id).execution_timeout >= timedelta(days=7)


def test_parsing_loads_no_kubernetes_client() -> None:
    import subprocess
    import sys

    probe = (
        "import runpy, sys; import airflow.sdk; runpy.run_path(sys.argv[1]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))"
    )
    path = REPO / "dags" / "k8s_fleet_upgrade.py"
    done = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"
