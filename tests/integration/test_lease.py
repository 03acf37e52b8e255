"""The cluster lease against a real apiserver: one holder at a time, whatever the race."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway import lease, workers
from slipway.kube import nodes as kube_nodes
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import KUBERNETES_NEW
from slipway.models import parse_request
from slipway.runrecord import RunRecord

pytestmark = pytest.mark.cluster

A = "k8s_cluster_upgrade/manual__run-a"
B = "k8s_worker_upgrade/scheduled__run-b"


def _delete_lease(admin: client.ApiClient) -> None:
    try:
        client.CoordinationV1Api(admin).delete_namespaced_lease(lease.NAME, lease.NAMESPACE)
    except ApiException as err:
        if err.status != 404:
            raise


@pytest.fixture
def no_lease(local_cluster: LocalCluster) -> Iterator[client.ApiClient]:
    """The orchestrator's client, with no lease before and after (the admin cleans up: the
    orchestrator may not delete it)."""
    admin = local_cluster.admin_client()
    _delete_lease(admin)
    yield local_cluster.orchestrator_client()
    _delete_lease(admin)


def _write_expired(admin: client.ApiClient, holder: str) -> None:
    """A lease ``holder`` stopped renewing ten minutes ago (a run whose worker died)."""
    renewed = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = {
        "metadata": {"name": lease.NAME, "namespace": lease.NAMESPACE},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 120,
            "renewTime": renewed,
            "acquireTime": renewed,
            "leaseTransitions": 3,
        },
    }
    _delete_lease(admin)
    client.CoordinationV1Api(admin).create_namespaced_lease(lease.NAMESPACE, body)


def _race(
    local_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, holders: list[str]
) -> tuple[list[str], list[lease.LeaseHeld]]:
    """Every holder acquires at once, each with its own client, after all of them read the
    same lease: every write is decided on the same resourceVersion, so the race is real."""
    real_read: Callable[[client.ApiClient], lease.LeaseState | None] = lease.read
    barrier = threading.Barrier(len(holders), timeout=60)
    first = threading.local()

    def read_then_wait(api: client.ApiClient) -> lease.LeaseState | None:
        state = real_read(api)
        if not getattr(first, "done", False):
            first.done = True
            barrier.wait()  # nobody writes before everybody has read
        return state

    monkeypatch.setattr(lease, "read", read_then_wait)
    won: list[str] = []
    refused: list[lease.LeaseHeld] = []
    errors: list[BaseException] = []

    def contend(holder: str) -> None:
        try:
            won.append(lease.acquire(local_cluster.orchestrator_client(), holder).holder or "")
        except lease.LeaseHeld as err:
            refused.append(err)
        except BaseException as err:  # surfaced below: a thread's failure must fail the test
            errors.append(err)

    threads = [threading.Thread(target=contend, args=(h,)) for h in holders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    monkeypatch.setattr(lease, "read", real_read)
    assert errors == []
    return won, refused


@pytest.mark.parametrize("start", ["no lease", "expired lease"])
def test_racing_acquirers_exactly_one_wins(
    local_cluster: LocalCluster, no_lease: client.ApiClient, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    contenders = [f"k8s_worker_upgrade/run-{i}" for i in range(4)]
    for _ in range(3):
        if start == "expired lease":
            _write_expired(local_cluster.admin_client(), "k8s_cluster_upgrade/dead-run")
        else:
            _delete_lease(local_cluster.admin_client())
        won, refused = _race(local_cluster, monkeypatch, contenders)
        assert len(won) == 1, won
        assert len(refused) == len(contenders) - 1
        assert {err.state.holder for err in refused} == set(won)  # each loser names the winner
        assert lease.holder(no_lease) == won[0]


def test_live_lease_of_another_run_is_refused_naming_holder_and_expiry(no_lease: client.ApiClient) -> None:
    taken = lease.acquire(no_lease, A, 120)
    with pytest.raises(lease.LeaseHeld) as refused:
        lease.acquire(no_lease, B, 120)
    message = str(refused.value)
    assert A in message
    assert taken.expires_at is not None
    assert taken.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") in message
    assert "\n" not in message
    with pytest.raises(lease.LeaseHeld, match=A):
        lease.renew(no_lease, B)
    assert lease.holder(no_lease) == A


def test_expired_lease_is_taken_over(local_cluster: LocalCluster, no_lease: client.ApiClient) -> None:
    _write_expired(local_cluster.admin_client(), A)
    assert lease.holder(no_lease) is None  # expired: nobody holds it
    state = lease.acquire(no_lease, B, 90)
    assert state.holder == B
    assert state.duration == 90
    assert state.transitions == 4
    assert lease.is_live(state)
    # The run that lost it cannot renew it any more, nor release it.
    with pytest.raises(lease.LeaseHeld, match=B):
        lease.renew(no_lease, A)
    with pytest.raises(lease.NotHolder):
        lease.release(no_lease, A)


def test_lapsed_lease_taken_by_another_cannot_be_renewed(
    local_cluster: LocalCluster, no_lease: client.ApiClient
) -> None:
    _write_expired(local_cluster.admin_client(), B)  # B's lease lapsed and B took it over from A...
    with pytest.raises(lease.LeaseLost, match=B):
        lease.renew(no_lease, A)  # ...so A's renewal is refused, not silently re-taken


def test_release_only_by_the_holder_and_idempotent(no_lease: client.ApiClient) -> None:
    lease.acquire(no_lease, A)
    with pytest.raises(lease.NotHolder, match=A):
        lease.release(no_lease, B)
    assert lease.holder(no_lease) == A
    assert lease.release(no_lease, A) is True
    assert lease.holder(no_lease) is None
    assert lease.release(no_lease, A) is False  # a teardown run twice
    with pytest.raises(lease.LeaseLost):
        lease.renew(no_lease, A)
    assert lease.acquire(no_lease, B).holder == B  # free for the next run


def test_reacquire_by_the_holder_renews_and_keeps_the_acquisition(no_lease: client.ApiClient) -> None:
    first = lease.acquire(no_lease, A)
    again = lease.acquire(no_lease, A)
    renewed = lease.renew(no_lease, A)
    assert again.holder == renewed.holder == A
    assert again.acquired == first.acquired
    assert again.transitions == renewed.transitions == first.transitions == 0
    assert first.renewed is not None and again.renewed is not None and renewed.renewed is not None
    assert first.renewed <= again.renewed <= renewed.renewed
    assert again.resource_version != first.resource_version  # it was written, not just read


def test_batch_selection_skips_nodes_a_live_run_cordoned(
    local_cluster: LocalCluster, no_lease: client.ApiClient
) -> None:
    admin = local_cluster.admin_client()
    api = no_lease
    request = parse_request({"target_version": KUBERNETES_NEW, "soak_seconds": 1})
    records: list[RunRecord] = []
    node = ""

    def first_batch(run_id: str) -> list[str]:
        record = RunRecord(api, run_id)
        records.append(record)
        return workers.select_batch(api, record, request, 0).nodes

    try:
        alone = first_batch("lease-test-alone")
        node = alone[0]
        kube_nodes.cordon(api, node, lease.run_of(A))  # run A is working on this node...
        lease.acquire(api, A)  # ...and holds the lease
        assert lease.cordoned_by_other_live_run(api, kube_nodes.list_workers(api), "other") == {node}
        assert node not in first_batch("lease-test-while-a-lives")
        lease.release(api, A)  # run A ended (its cordon is now a dead run's: adoptable)
        assert first_batch("lease-test-after-a") == alone
    finally:
        if node:
            kube_nodes.uncordon(admin, node, lease.run_of(A), force=True)
        for record in records:
            _delete_record(admin, record)


def _delete_record(admin: client.ApiClient, record: RunRecord) -> None:
    """The orchestrator may not delete run records: the admin cleans up."""
    try:
        client.CoreV1Api(admin).delete_namespaced_config_map(record.name, "slipway-system")
    except ApiException as err:
        if err.status != 404:
            raise
