"""The node readiness sensor against the real cluster: it looks once, and defers only
when a node is not back yet (the long wait belongs to the triggerer)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow.sdk.exceptions import TaskDeferred

from slipway.airflow.sensors import NodesReadySensor
from slipway.airflow.triggers import NodesReadyTrigger
from slipway.kube import nodes as kube_nodes
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from tests.dags.dagrun import cluster_env

pytestmark = pytest.mark.cluster


@pytest.fixture
def connection(local_cluster: LocalCluster, tmp_path: Path) -> Iterator[None]:
    """``kubernetes_default`` for the session cluster, as the demo and the DAG tests set it."""
    conns = {
        k: v
        for k, v in cluster_env(local_cluster, tmp_path, tmp_path).items()
        if k.startswith("AIRFLOW_CONN_")
    }
    saved = {k: os.environ.get(k) for k in conns}
    os.environ.update(conns)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _workers(cluster: LocalCluster) -> list[str]:
    return sorted(n.metadata.name for n in kube_nodes.list_workers(cluster.admin_client()))[:2]


def test_nodes_already_ready_need_no_deferral(local_cluster: LocalCluster, connection: None) -> None:
    nodes = _workers(local_cluster)
    sensor = NodesReadySensor(task_id="wait_node_ready", nodes=nodes, version=f"v{KUBERNETES_OLD}")
    assert sensor.execute({}) == nodes


def test_a_node_not_at_the_version_defers_to_the_trigger(
    local_cluster: LocalCluster, connection: None
) -> None:
    nodes = _workers(local_cluster)
    sensor = NodesReadySensor(
        task_id="wait_node_ready", nodes=nodes, version=f"v{KUBERNETES_NEW}", node_startup_timeout=42
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, NodesReadyTrigger)
    assert deferred.value.method_name == "execute_complete"
    _, kwargs = trigger.serialize()
    assert kwargs["nodes"] == nodes and kwargs["version"] == f"v{KUBERNETES_NEW}" and kwargs["timeout"] == 42
