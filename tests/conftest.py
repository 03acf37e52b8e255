"""Shared fixtures: one real local HA cluster for the whole test session."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.config import ClusterConfig
from slipway.localcluster.workloads import install_samples

REPO = Path(__file__).resolve().parents[1]
# Airflow reads its configuration when first imported: point it at a throwaway home first.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="slipway-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
# Tests upgrade clusters of at most 6 workers: 8 batch slots are plenty and keeps dag.test() quick.
os.environ.setdefault("SLIPWAY_MAX_BATCHES", "8")

# Every test cluster takes a block of 100 ports from here (offsets up to 1,900; 0 belongs to the
# session cluster, alive through the whole run, so no other test may use it): the whole range
# stays below 32768, where the kernel hands out ephemeral ports to outgoing connections.
TEST_BASE_PORT = int(os.environ.get("SLIPWAY_TEST_BASE_PORT", "21000"))


def state_root_for_tests() -> Path:
    return Path(os.environ.get("SLIPWAY_TEST_STATE_DIR") or tempfile.mkdtemp(prefix="slipway-test-"))


@contextmanager
def running_cluster(name: str, port_offset: int, nodes: int, **versions: str) -> Iterator[LocalCluster]:
    """A fresh local cluster with the sample workloads, purged afterwards (also when a test
    fails). ``port_offset`` keeps each cluster's ports apart; ``versions`` are ClusterConfig's."""
    cfg = ClusterConfig(
        name=name,
        base_port=TEST_BASE_PORT + port_offset,
        nodes=nodes,
        state_root=state_root_for_tests(),
        **versions,
    )
    cluster = LocalCluster(cfg)
    cluster.down(purge=True)
    try:
        cluster.up()
        install_samples(cluster.admin_client())
        yield cluster
    finally:
        cluster.down(purge=True)


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    """The 12-node HA cluster with the sample workloads, started once and purged at the end."""
    with running_cluster("test", 0, 12) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database: dag.test() needs one."""
    home = Path(os.environ["AIRFLOW_HOME"])
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=dict(os.environ))
    return home
