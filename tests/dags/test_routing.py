"""Tasks that must run near the cluster go to SLIPWAY_CLUSTER_QUEUE; everything else stays on
the default queue. Checked on the DAG files as the dag-processor parses them (a fresh
interpreter with the variable set), so a renamed task cannot silently lose its routing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slipway.airflow.routing import ENV, NEAR_CLUSTER_TASKS, cluster_queue

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
assert not bag.import_errors, bag.import_errors
print(json.dumps({d.dag_id: {t.task_id: t.queue for t in d.tasks} for d in bag.dags.values()}))
"""


def _queues(tmp_path: Path, **env: str) -> tuple[dict[str, dict[str, str]], str]:
    home = tmp_path / "airflow-home"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "dags")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=os.environ | {"AIRFLOW_HOME": str(home)} | env,
    )
    if done.returncode != 0:
        return {}, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_near_cluster_tasks_go_to_the_cluster_queue_and_nothing_else_does(tmp_path: Path) -> None:
    routed, err = _queues(tmp_path, **{ENV: "near-etcd"})
    assert routed, err
    seen = set()
    for dag_id, tasks in routed.items():
        for task_id, queue in tasks.items():
            short = task_id.rsplit(".", 1)[-1]
            if short in NEAR_CLUSTER_TASKS:
                seen.add(short)
                assert queue == "near-etcd", f"{dag_id}.{task_id} runs near the cluster but is on {queue}"
            else:
                assert queue != "near-etcd", f"{dag_id}.{task_id} needs only the API, yet is routed"
    # Every name in the list is a task of some DAG: a rename would leave it on any worker.
    assert seen == NEAR_CLUSTER_TASKS
    assert "k8s_cluster_upgrade" in routed and "k8s_cluster_migration" in routed


def test_without_the_setting_every_task_uses_the_default_queue(tmp_path: Path) -> None:
    routed, err = _queues(tmp_path, **{ENV: ""})
    assert routed, err
    queues = {queue for tasks in routed.values() for queue in tasks.values()}
    assert len(queues) == 1 and "near-etcd" not in queues


def test_a_malformed_queue_name_fails_the_dag_file_naming_the_variable(tmp_path: Path) -> None:
    routed, err = _queues(tmp_path, **{ENV: "etcd, workers"})
    assert not routed
    # Each routed DAG file lists the import error (quotes escaped in the dump).
    assert f"{ENV}: " in err and "etcd, workers" in err and "is not a queue name" in err


@pytest.mark.parametrize("value", ["a b", "x,y", "-lead", "q" * 65, "naïve"])
def test_queue_names_are_checked(value: str) -> None:
    with pytest.raises(ValueError, match=ENV):
        cluster_queue({ENV: value})


def test_a_good_queue_name_is_taken_and_blank_means_default() -> None:
    assert cluster_queue({ENV: " etcd-side.eu_1 "}) == "etcd-side.eu_1"
    assert cluster_queue({ENV: ""}) is None
    assert cluster_queue({}) is None
