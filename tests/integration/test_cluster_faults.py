"""Bad input and faults: a one-line error, a non-zero exit, and no process left running."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.localcluster import components
from slipway.localcluster.cluster import ClusterError, LocalCluster
from slipway.localcluster.config import ClusterConfig
from tests.conftest import TEST_BASE_PORT, state_root_for_tests

FAULTS_BASE_PORT = TEST_BASE_PORT + 100


@pytest.fixture
def faults_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster(
        ClusterConfig(name="faults", base_port=FAULTS_BASE_PORT, nodes=1, state_root=state_root_for_tests())
    )
    yield cluster
    cluster.down(purge=True)


def _cli(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "slipway.localcluster.cli",
            "--name",
            "faults",
            "--state-dir",
            str(state_dir),
            *args,
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )


def test_port_in_use_is_named_and_nothing_starts(faults_cluster: LocalCluster) -> None:
    cfg = faults_cluster.cfg
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", cfg.apiserver_port(1)))
        holder.listen()
        with pytest.raises(
            ClusterError, match=rf"port {cfg.apiserver_port(1)} \(kube-apiserver-1\) is already in use"
        ):
            faults_cluster.up()
    assert faults_cluster.sup.names() == []


def test_half_started_cluster_is_refused_and_cleaned_up(faults_cluster: LocalCluster) -> None:
    cfg = faults_cluster.cfg
    cfg.save()
    faults_cluster._write_pki()
    faults_cluster.sup.start(
        components.etcd_name(0), components.etcd_argv(cfg, 0, cfg.etcd_version, new_cluster=True)
    )
    assert faults_cluster.sup.is_running("etcd-0")
    with pytest.raises(ClusterError, match="half-started"):
        faults_cluster.up()
    assert not any(faults_cluster.sup.is_running(n) for n in faults_cluster.component_names())


def test_cli_unknown_version_one_line_nonzero(tmp_path: Path) -> None:
    result = _cli("up", "--kubernetes-version", "1.99.0", state_dir=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: --kubernetes-version: '1.99.0' is not in the local kit")
    assert not (tmp_path / "faults" / "run").exists()


def test_cli_port_in_use_exits_nonzero(tmp_path: Path) -> None:
    cfg = ClusterConfig(name="faults", base_port=31000, state_root=tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", FAULTS_BASE_PORT + 40))
        holder.listen()
        result = _cli("up", "--base-port", str(FAULTS_BASE_PORT), "--nodes", "1", state_dir=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: port {FAULTS_BASE_PORT + 40} (load balancer) is already in use on 127.0.0.1: "
        "stop what holds it or choose another --base-port"
    )
    assert not list((tmp_path / cfg.name / "run").glob("*.json"))
