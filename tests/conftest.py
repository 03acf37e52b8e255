"""Shared fixtures: one real local HA cluster for the whole test session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.config import ClusterConfig
from slipway.localcluster.workloads import install_samples

TEST_BASE_PORT = int(os.environ.get("SLIPWAY_TEST_BASE_PORT", "32000"))


def state_root_for_tests() -> Path:
    return Path(os.environ.get("SLIPWAY_TEST_STATE_DIR") or tempfile.mkdtemp(prefix="slipway-test-"))


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    """The 12-node HA cluster with the sample workloads, started once and purged at the end."""
    cfg = ClusterConfig(name="test", base_port=TEST_BASE_PORT, nodes=12, state_root=state_root_for_tests())
    cluster = LocalCluster(cfg)
    cluster.down(purge=True)
    cluster.up()
    install_samples(cluster.admin_client())
    yield cluster
    cluster.down(purge=True)
