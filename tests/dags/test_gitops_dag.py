"""``k8s_gitops_sync`` with dag.test() against the real cluster: in sync does nothing; drift
triggers one ``k8s_cluster_upgrade`` run carrying the desired state from git."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client

from slipway.gitops import gitops_root
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from tests.dags.dagrun import run_dag

pytestmark = pytest.mark.cluster


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A copy of the gitops folder this test may commit to."""
    copy = tmp_path / "gitops"
    shutil.copytree(gitops_root(), copy)
    saved = os.environ.get("SLIPWAY_GITOPS_DIR")
    os.environ["SLIPWAY_GITOPS_DIR"] = str(copy)
    yield copy
    if saved is None:
        os.environ.pop("SLIPWAY_GITOPS_DIR", None)
    else:
        os.environ["SLIPWAY_GITOPS_DIR"] = saved


def _desire(repo: Path, version: str) -> None:
    """Commit ``version`` as the desired one."""
    desired = repo / "base" / "desired-state.yaml"
    text = re.sub(r'target_version: "[^"]*"', f'target_version: "{version}"', desired.read_text())
    desired.write_text(text)


def _triggered(run_id: str) -> list[tuple[str, dict[str, object]]]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "k8s_cluster_upgrade").all()
        found = [(r.run_id, dict(r.conf or {})) for r in runs if r.run_id == f"gitops__{run_id}"]
        for r in runs:
            if r.run_id == f"gitops__{run_id}":
                session.delete(r)  # nothing runs it here; do not leave it queued for later tests
        return found


def test_in_sync_does_nothing_and_drift_triggers_the_upgrade(
    local_cluster: LocalCluster, airflow_db: Path, tmp_path: Path, repo: Path
) -> None:
    states = _states
    _desire(repo, KUBERNETES_OLD)  # what the session cluster runs
    state, _ = run_dag("k8s_gitops_sync", {"environment": "staging"}, local_cluster, tmp_path / "a")
    assert state == "success"
    synced = _last_run_id()
    assert states(synced)["in_sync"] == "success" and states(synced)["trigger_upgrade"] == "skipped"
    assert _triggered(synced) == []

    _desire(repo, KUBERNETES_NEW)
    state, _ = run_dag("k8s_gitops_sync", {"environment": "production"}, local_cluster, tmp_path / "b")
    assert state == "success"
    drifted = _last_run_id()
    assert states(drifted)["trigger_upgrade"] == "success" and states(drifted)["in_sync"] == "skipped"
    ((run_id, conf),) = _triggered(drifted)
    assert run_id == f"gitops__{drifted}"
    assert (conf["target_version"], conf["approval"], conf["soak_seconds"]) == (KUBERNETES_NEW, "always", 120)


def test_a_scheduled_sync_triggers_nothing_on_a_cluster_not_enabled_for_it(
    local_cluster: LocalCluster, airflow_db: Path, tmp_path: Path, repo: Path
) -> None:
    _desire(repo, KUBERNETES_NEW)  # drift: an enabled cluster would be upgraded
    before = client.VersionApi(local_cluster.admin_client()).get_code().git_version
    now = datetime.now(UTC)
    state, _ = run_dag(
        "k8s_gitops_sync",
        {"environment": "production"},
        local_cluster,
        tmp_path,
        scheduled_window=(now - timedelta(hours=1), now),
    )
    assert state == "failed"
    refused = _last_run_id()
    assert refused.startswith("scheduled__")
    found = _states(refused)
    assert found["render_desired_state"] == "success"
    assert found["compare_with_cluster"] == "failed"  # the gate, before the cluster is read
    assert found["trigger_upgrade"] != "success"
    assert _triggered(refused) == []
    assert client.VersionApi(local_cluster.admin_client()).get_code().git_version == before


def _states(run_id: str) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.run_id == run_id).all()
        return {ti.task_id: str(ti.state) for ti in tis}


def _last_run_id() -> str:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = (
            session.query(DagRun)
            .filter(DagRun.dag_id == "k8s_gitops_sync")
            .order_by(DagRun.id.desc())
            .first()
        )
        assert run is not None
        return str(run.run_id)
