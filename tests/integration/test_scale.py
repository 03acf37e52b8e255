"""The local cluster carries 1,000 simulated nodes."""

from __future__ import annotations

import pytest
from kubernetes import client

from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.config import ClusterConfig
from tests.conftest import TEST_BASE_PORT, state_root_for_tests

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_cluster_with_1000_nodes_comes_up_ready() -> None:
    cluster = LocalCluster(
        ClusterConfig(
            name="scale", base_port=TEST_BASE_PORT + 200, nodes=1000, state_root=state_root_for_tests()
        )
    )
    try:
        cluster.up(node_timeout=900)
        nodes = client.CoreV1Api(cluster.admin_client()).list_node(limit=2000).items
        assert len(nodes) == 1003
        not_ready = [
            n.metadata.name
            for n in nodes
            if {c.type: c.status for c in n.status.conditions}.get("Ready") != "True"
        ]
        assert not_ready == []
        pools = {n.metadata.labels["slipway.dev/node-pool"] for n in nodes}
        assert pools == {"control-plane", "general", "compute", "memory"}
    finally:
        cluster.down(purge=True)
