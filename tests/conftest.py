"""Shared fixtures: one real local HA cluster for the whole test session."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database: dag.test() needs one."""
    home = Path(os.environ["AIRFLOW_HOME"])
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=dict(os.environ))
    return home
