"""Every DAG imports without network access, follows the house rules and serialises."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

from slipway.airflow.defaults import MAX_CLUSTERS_AT_ONCE
from slipway.airflow.timetable import MaintenanceWindowTimetable
from slipway.airflow_env import KUBE_CONN_ID, PLATFORM_CONN_ID
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
    assert still_to_do("drained") == ("upgrading", "upgraded", "done")
    assert still_to_do("done") == ()


def test_parsing_a_dag_file_loads_no_kubernetes_client() -> None:
    """The dag-processor parses every file again and again: the kubernetes client (most of a
    file's parse time) is loaded by the task bodies only. Checked in a fresh interpreter per
    file, since this test process has long imported it."""
    import subprocess
    import sys

    probe = (
        "import runpy, sys; import airflow.sdk; runpy.run_path(sys.argv[1]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'kubernetes_asyncio')))"
    )
    for path in sorted((REPO / "dags").glob("k8s_*.py")):
        done = subprocess.run(
            [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, f"{path.name}: {done.stderr[-2000:]}"
        assert done.stdout.strip().splitlines()[-1] == "[]", f"{path.name} loads the kubernetes client"


def test_chaos_key_names_the_verification_fault() -> None:
    from slipway.airflow.stage_control_plane import CHAOS_KEY
    from slipway.upgraders.controlplane import FAULT_FAIL_VERIFICATION

    assert CHAOS_KEY == FAULT_FAIL_VERIFICATION


def test_every_task_has_an_execution_timeout(dagbag: DagBag) -> None:
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            assert task.execution_timeout is not None, f"{dag.dag_id}.{task.task_id} may hang forever"


def test_upgrade_runs_name_their_cluster_and_take_turns_per_cluster_not_per_dag(dagbag: DagBag) -> None:
    # A fleet's group upgrades several clusters at once: one run each, side by side, each on
    # the connections its form names; the cluster lease (not max_active_runs) keeps one run
    # per cluster (tests/dags/test_concurrent_runs_dag.py, test_run_connections_dag.py).
    for dag_id in ("k8s_cluster_upgrade", "k8s_worker_upgrade"):
        dag = dagbag.dags[dag_id]
        assert dag.max_active_runs == MAX_CLUSTERS_AT_ONCE > 1
        assert dag.params["kubernetes_conn_id"] == KUBE_CONN_ID
        assert dag.params["platform_conn_id"] == PLATFORM_CONN_ID


def test_every_template_pulls_xcom_from_a_task_of_its_own_dag(dagbag: DagBag) -> None:
    """A rendered field naming a task that does not exist renders nothing, silently (the
    approval page once said "Why:" and then no reasons)."""
    import re

    pulls = re.compile(r"xcom_pull\(task_ids=['\"]([^'\"]+)['\"]")
    checked = 0
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            for field in task.template_fields:
                value = getattr(task, field, None)
                for task_id in pulls.findall(value if isinstance(value, str) else ""):
                    assert task_id in dag.task_dict, (
                        f"{dag.dag_id}.{task.task_id}.{field} pulls from {task_id}"
                    )
                    checked += 1
    assert checked, "no template pulls an XCom: the approval body should"
