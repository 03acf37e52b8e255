"""A human rejects a risky upgrade: the run stops before anything changes, the decision
(who, when) is in the run record and the verdict is ``rejected`` — not a failed attempt."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes import client

from slipway.kube import nodes as kube_nodes
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from slipway.reports.maturity import NOT_ATTEMPTS
from tests.conftest import running_cluster
from tests.dags.dagrun import run_dag, verdict

pytestmark = pytest.mark.cluster

REVIEWER = {"id": "oncall-7", "name": "Ada on call"}


@pytest.fixture
def small_cluster(airflow_db: Path) -> Iterator[LocalCluster]:
    with running_cluster("approval", 700, 3) as cluster:
        yield cluster


class Reviewer(threading.Thread):
    """Answers the first approval request of the run the way the Airflow UI does: it
    writes the response on the request's HITL detail, which the waiting trigger reads."""

    def __init__(self, answer: str) -> None:
        super().__init__(daemon=True)
        self.answer = answer
        self.answered = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        from airflow.models.hitl import HITLDetail
        from airflow.utils.session import create_session

        while not self.stop.wait(1.0):  # poll until the approval task has asked
            with create_session() as session:
                waiting = session.query(HITLDetail).filter(HITLDetail.responded_at.is_(None)).first()
                if waiting is None:
                    continue
                waiting.chosen_options = [self.answer]
                waiting.responded_by = REVIEWER
                waiting.responded_at = datetime.now(UTC)
                waiting.params_input = {}
            self.answered.set()
            return


def test_a_rejected_approval_stops_the_run_untouched_and_is_recorded(
    small_cluster: LocalCluster, tmp_path: Path
) -> None:
    api = small_cluster.admin_client()
    versions_before = small_cluster.status()
    reviewer = Reviewer("Reject")
    reviewer.start()
    try:
        state, record = run_dag(
            "k8s_cluster_upgrade",
            {"target_version": KUBERNETES_NEW, "approval": "always", "soak_seconds": 3},
            small_cluster,
            tmp_path,
        )
    finally:
        reviewer.stop.set()
    assert reviewer.answered.is_set(), "the run never asked for approval"
    assert state == "failed"
    assert verdict(record) == "rejected"
    assert "rejected" in NOT_ATTEMPTS  # the maturity score does not count it as a failure
    approval = record["approval"]
    assert approval["outcome"] == "approval-rejected"
    assert approval["by"] == REVIEWER["name"]
    assert approval["at"]
    kinds = [e["kind"] for e in record["events"]]
    assert "approval-rejected" in kinds
    # Nothing changed after the rejection: no backup taken, control plane and kubelets as before.
    assert "component-upgraded" not in kinds
    assert not [k for k in kinds if k.startswith("backup")], kinds
    assert small_cluster.status() == versions_before
    for node in kube_nodes.list_workers(api):
        assert kube_nodes.kubelet_version(node).lstrip("v") == KUBERNETES_OLD
        assert not kube_nodes.is_cordoned(node)
    nodes = client.CoreV1Api(api).list_node().items
    assert not any(kube_nodes.cordon_owner(n) for n in nodes)
