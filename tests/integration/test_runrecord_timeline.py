"""The run record's timeline in chunks, against a real apiserver pair: concurrent appenders lose
nothing, chunks roll over, old single-ConfigMap records still load, redaction holds, and the
bytes one append sends stay flat however long the timeline already is.

Writes go through the orchestrator identity (least privilege: get, list, create, update on
ConfigMaps in slipway-system); the admin identity plays the operator who cleans up.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.config import ClusterConfig
from slipway.localcluster.health import wait_until
from slipway.reports.maturity import load_run_records
from slipway.runrecord import (
    CURSOR,
    MAX_EVENT_BYTES,
    NAMESPACE,
    TIMELINE_OF,
    RunRecord,
    _fit,
    record_name,
    records_from,
)
from tests.conftest import TEST_BASE_PORT, state_root_for_tests

PORT_OFFSET = 1200


class Traffic:
    """Requests and request-body bytes an ApiClient sends to the apiserver (counted where the
    client hands the body to urllib3)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.requests = 0
        self.sent = 0
        self._lock = threading.Lock()
        pool = api.rest_client.pool_manager
        original = pool.request

        def counting(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            body = kwargs.get("body")
            size = len(body.encode() if isinstance(body, str) else body or b"")
            with self._lock:
                self.requests += 1
                self.sent += size
            return original(method, url, *args, **kwargs)

        pool.request = counting

    def since(self, mark: tuple[int, int]) -> tuple[int, int]:
        return self.requests - mark[0], self.sent - mark[1]

    def mark(self) -> tuple[int, int]:
        return self.requests, self.sent


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A small cluster: one etcd member, two apiservers behind the load balancer (appenders
    land on either), one kwok node."""
    cfg = ClusterConfig(
        name="timeline",
        base_port=TEST_BASE_PORT + PORT_OFFSET,
        etcd_members=1,
        apiservers=2,
        control_plane_nodes=0,
        nodes=1,
        pools=("general",),
        state_root=state_root_for_tests(),
    )
    local = LocalCluster(cfg)
    local.down(purge=True)
    try:
        local.up()
        yield local
    finally:
        local.down(purge=True)


@pytest.fixture
def admin(cluster: LocalCluster) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.admin_client())


@pytest.fixture
def cleanup(admin: client.CoreV1Api) -> Iterator[Callable[[str], str]]:
    """Registers run ids whose records the operator deletes afterwards (chunks go with them)."""
    runs: list[str] = []

    def register(run_id: str) -> str:
        runs.append(run_id)
        return run_id

    yield register
    for run_id in runs:
        try:
            admin.delete_namespaced_config_map(record_name(run_id), NAMESPACE)
        except client.exceptions.ApiException as err:
            if err.status != 404:
                raise


def chunks_of(admin: client.CoreV1Api, record: RunRecord) -> list[client.V1ConfigMap]:
    main = admin.read_namespaced_config_map(record.name, NAMESPACE)
    selector = f"{TIMELINE_OF}={main.metadata.uid}"
    return list(admin.list_namespaced_config_map(NAMESPACE, label_selector=selector).items)


@pytest.mark.cluster
def test_concurrent_appenders_lose_nothing_and_keep_their_order(
    cluster: LocalCluster, admin: client.CoreV1Api, cleanup: Callable[[str], str]
) -> None:
    run_id = cleanup("manual__timeline-concurrent")
    writers, each = 6, 25
    start = threading.Barrier(writers)
    failures: list[BaseException] = []

    def append(writer: int) -> None:
        # Each thread is a mapped task: its own client and record, as a task process has.
        record = RunRecord(cluster.orchestrator_client(), run_id, chunk_events=10)
        start.wait()
        try:
            for seq in range(each):
                record.event("node-step", f"writer {writer} step {seq}", writer=writer, seq=seq)
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures

    events = RunRecord(cluster.orchestrator_client(), run_id).load()["events"]
    assert len(events) == writers * each
    for writer in range(writers):
        assert [e["seq"] for e in events if e["writer"] == writer] == list(range(each))
    chunks = chunks_of(admin, RunRecord(cluster.admin_client(), run_id))
    assert len(chunks) == writers * each // 10  # every chunk filled to 10, none overfilled
    assert all((c.data or {})["events"].count("\n") == 10 for c in chunks)


@pytest.mark.cluster
def test_a_chunk_rolls_over_and_load_returns_every_event_in_order(
    cluster: LocalCluster, admin: client.CoreV1Api, cleanup: Callable[[str], str]
) -> None:
    run_id = cleanup("manual__timeline-rollover")
    api = cluster.orchestrator_client()
    record = RunRecord(api, run_id, chunk_events=5)
    record.update(state="running", request={"target_version": "1.34.2"})
    for i in range(23):
        record.event("step", f"step {i}", i=i)

    chunks = chunks_of(admin, record)
    sizes = sorted(
        (int(c.metadata.labels["slipway.dev/timeline-chunk"]), c.data["events"].count("\n")) for c in chunks
    )
    assert sizes == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 3)]
    assert all(c.metadata.owner_references[0].name == record.name for c in chunks)
    main = admin.read_namespaced_config_map(record.name, NAMESPACE)
    assert "events" not in main.data and json.loads(main.data[CURSOR]) == 4

    # A cleared task: a new instance reads the cluster and appends after the last event.
    RunRecord(api, run_id, chunk_events=5).event("step", "step 23", i=23)
    data = RunRecord(api, run_id).load()
    assert [e["i"] for e in data["events"]] == list(range(24))
    assert data["state"] == "running" and CURSOR not in data
    assert record.get("events") == data["events"]
    assert record.get("state") == "running" and record.get(CURSOR) is None
    # The history's one list assembles the same record and takes no chunk for a record.
    listed = [r for r in load_run_records(api) if r.get("run_id") == run_id]
    assert listed == [data]
    # What a batch task reads: everything but the timeline.
    assert record.load_state() == {k: v for k, v in data.items() if k != "events"}


@pytest.mark.cluster
def test_a_record_written_before_chunking_still_loads_and_grows(
    cluster: LocalCluster, admin: client.CoreV1Api, cleanup: Callable[[str], str]
) -> None:
    run_id = cleanup("manual__timeline-old-format")
    old_events = [
        {"at": "2026-01-01T00:00:00+00:00", "kind": "run-started", "message": "old", "n": n} for n in range(3)
    ]
    admin.create_namespaced_config_map(
        NAMESPACE,
        {
            "metadata": {"name": record_name(run_id), "labels": {"app.kubernetes.io/managed-by": "slipway"}},
            "data": {
                "run_id": json.dumps(run_id),
                "events": json.dumps(old_events, sort_keys=True),
                "state": json.dumps("running"),
            },
        },
    )
    record = RunRecord(cluster.orchestrator_client(), run_id)
    assert record.load()["events"] == old_events
    record.event("batch-opened", "new")
    record.update(state="done")
    data = record.load()
    assert data["events"][:3] == old_events and [e["message"] for e in data["events"][3:]] == ["new"]
    assert data["state"] == "done"
    assert [
        r["events"] for r in load_run_records(cluster.orchestrator_client()) if r["run_id"] == run_id
    ] == [data["events"]]


@pytest.mark.cluster
def test_chunked_events_are_redacted_in_the_cluster(
    cluster: LocalCluster, admin: client.CoreV1Api, cleanup: Callable[[str], str]
) -> None:
    run_id = cleanup("manual__timeline-redaction")
    record = RunRecord(cluster.orchestrator_client(), run_id)
    record.event(
        "notification-failed",
        "webhook https://user:hunter2pw@hooks.example/x failed",
        detail={"token": "s3cr3t-token-value"},
    )
    stored = json.dumps([c.data for c in chunks_of(admin, record)])
    assert "hunter2pw" not in stored and "s3cr3t-token-value" not in stored
    (event,) = record.load()["events"]
    assert event["message"] == "webhook https://***@hooks.example/x failed"
    assert event["detail"]["token"] == "***"


@pytest.mark.cluster
def test_the_bytes_one_append_sends_stay_flat_however_long_the_timeline(
    cluster: LocalCluster, cleanup: Callable[[str], str]
) -> None:
    """20 appends to a fresh record and to one already holding 5,000 events (a 700-node run)
    send the same requests and, within a few bytes, the same bytes: nothing grows with n."""
    per_chunk, window = 20, 40
    costs = []
    for run_id, before in (("manual__timeline-flat-a", 0), ("manual__timeline-flat-b", 5000)):
        cleanup(run_id)
        api = cluster.orchestrator_client()
        record = RunRecord(api, run_id, chunk_events=per_chunk)
        record.update(
            events=[{"at": "t", "kind": "step", "message": f"earlier {i:05d}"} for i in range(before)]
        )
        traffic = Traffic(api)
        mark = traffic.mark()
        for i in range(window):
            record.event("node-uncordoned", f"node kwok-node-{i:04d} uncordoned", node=f"kwok-node-{i:04d}")
        costs.append(traffic.since(mark))
        assert len(record.load()["events"]) == before + window

    (fresh_requests, fresh_bytes), (long_requests, long_bytes) = costs
    print(
        f"{window} appends (requests, bytes sent): fresh {costs[0]}, after 5,000 events {costs[1]}"
    )  # reported
    # One write per append; per new chunk a read and the cursor's read and write; one read of
    # the full chunk a fresh instance starts from.
    bound = window + 3 * (window // per_chunk) + 1
    assert fresh_requests <= bound and long_requests <= bound, costs
    assert abs(long_bytes - fresh_bytes) <= 0.05 * fresh_bytes, costs
    # The whole 5,000-event timeline would be >500 KB per write; a chunk of 20 is a few KB.
    assert long_bytes / window < 8_000, costs


@pytest.mark.cluster
def test_a_100000_event_timeline_is_kept_whole_and_still_cheap_to_append_to(
    cluster: LocalCluster, cleanup: Callable[[str], str]
) -> None:
    """No cap drops events: 100,000 (a run far past 1,000 nodes) load back in order, and an
    append to them, at the product's chunk size, sends a chunk at most, never the timeline."""
    run_id = cleanup("manual__timeline-100k")
    api = cluster.orchestrator_client()
    many = [{"at": "t", "kind": "step", "message": f"event {i:06d}"} for i in range(100_000)]
    RunRecord(api, run_id).update(events=many)
    record = RunRecord(api, run_id)  # a fresh task
    traffic = Traffic(api)
    for i in range(10):
        record.event("node-uncordoned", f"node kwok-node-{i:04d} back in service", node=f"kwok-node-{i:04d}")
    requests, sent = traffic.since((0, 0))
    events = record.load()["events"]
    assert len(events) == 100_010
    assert [e["message"] for e in events[:100_000]] == [e["message"] for e in many]
    assert events[-1]["node"] == "kwok-node-0009"
    # Open (read the record, the full last chunk, the absent next one, move the cursor), then
    # one write per append.
    assert requests <= 10 + 5, requests
    timeline = len(json.dumps(many))
    assert sent < 0.01 * timeline, (sent, timeline)
    print(f"10 appends after 100,000 events: {requests} requests, {sent} bytes; timeline {timeline} bytes")


@pytest.mark.cluster
def test_replacing_the_timeline_writes_exactly_the_given_events(
    cluster: LocalCluster, admin: client.CoreV1Api, cleanup: Callable[[str], str]
) -> None:
    """What putting a record back after an etcd restore does: the timeline becomes the list."""
    run_id = cleanup("manual__timeline-replace")
    record = RunRecord(cluster.orchestrator_client(), run_id, chunk_events=4)
    for i in range(10):
        record.event("step", f"step {i}", i=i)
    saved = record.load()
    kept = saved["events"][:5]
    record.update(**(saved | {"events": kept, "state": "restored"}))
    assert record.load()["events"] == kept and record.get("state") == "restored"
    record.event("etcd-restored", "after")
    assert [e.get("i") for e in record.load()["events"]] == [0, 1, 2, 3, 4, None]
    assert len(chunks_of(admin, record)) == 3  # the third emptied, not deleted


@pytest.mark.cluster
def test_a_writer_whose_record_vanished_rereads_the_cluster(
    cluster: LocalCluster, admin: client.CoreV1Api, cleanup: Callable[[str], str]
) -> None:
    """As after an etcd restore to before the run: record and chunks gone under a writer that
    remembers a chunk. Its next append starts a new record; putting the saved record back (what
    slipway.etcd.safety does) restores the whole timeline."""
    run_id = cleanup("manual__timeline-vanished")
    record = RunRecord(cluster.orchestrator_client(), run_id, chunk_events=3)
    for i in range(5):
        record.event("step", f"step {i}")
    saved = record.load()
    uid = admin.read_namespaced_config_map(record.name, NAMESPACE).metadata.uid
    admin.delete_namespaced_config_map(record.name, NAMESPACE)
    admin.delete_collection_namespaced_config_map(NAMESPACE, label_selector=f"{TIMELINE_OF}={uid}")
    assert record.load() == {}

    record.event("etcd-restore-started", "after the restore")
    assert [e["message"] for e in record.load()["events"]] == ["after the restore"]
    current = record.load()["events"]
    record.update(**(saved | {"events": saved["events"] + current}))
    record.event("etcd-restored", "put back")
    messages = [e["message"] for e in record.load()["events"]]
    assert messages == [f"step {i}" for i in range(5)] + ["after the restore", "put back"]


@pytest.mark.cluster
def test_deleting_a_record_deletes_its_timeline(cluster: LocalCluster, admin: client.CoreV1Api) -> None:
    record = RunRecord(cluster.orchestrator_client(), "manual__timeline-delete", chunk_events=2)
    for i in range(5):
        record.event("step", f"step {i}")
    uid = admin.read_namespaced_config_map(record.name, NAMESPACE).metadata.uid
    assert len(chunks_of(admin, record)) == 3
    admin.delete_namespaced_config_map(record.name, NAMESPACE)

    def gone() -> bool:
        left = admin.list_namespaced_config_map(NAMESPACE, label_selector=f"{TIMELINE_OF}={uid}").items
        return not left

    wait_until("the garbage collector deletes the chunks", gone, 60, interval=0.5)


def _cm(
    name: str, data: dict[str, str], uid: str, labels: dict[str, str] | None = None
) -> client.V1ConfigMap:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, uid=uid, labels=labels or {}), data=data
    )


def test_records_from_one_list_joins_chunks_to_their_record_only() -> None:
    name = record_name("r1")

    def line(kind: str) -> str:
        return json.dumps({"kind": kind, "message": "m"}) + "\n"

    maps = [
        _cm(
            f"{name}-events-u2-0",
            {"events": line("a")},
            "c0",
            {TIMELINE_OF: "u2", "slipway.dev/timeline-chunk": "0"},
        ),
        _cm(name, {"run_id": '"r1"', CURSOR: "1"}, "u1"),
        _cm(
            f"{name}-events-u1-1",
            {"events": line("c")},
            "c2",
            {TIMELINE_OF: "u1", "slipway.dev/timeline-chunk": "1"},
        ),
        _cm(
            f"{name}-events-u1-0",
            {"events": line("b")},
            "c1",
            {TIMELINE_OF: "u1", "slipway.dev/timeline-chunk": "0"},
        ),
        _cm("slipway-chaos", {"x": '"y"'}, "u9"),
    ]
    # The chunk of a deleted predecessor (uid u2) joins nothing; chunk 0 comes before chunk 1.
    assert records_from(maps) == [
        {"run_id": "r1", "events": [{"kind": "b", "message": "m"}, {"kind": "c", "message": "m"}]}
    ]
    assert records_from([_cm(name, {"run_id": '"r1"'}, "u1")]) == [{"run_id": "r1"}]


def test_an_oversized_event_keeps_its_short_fields() -> None:
    entry = {
        "at": "t",
        "kind": "drain-blocked",
        "message": "x" * 40_000,
        "node": "n1",
        "pods": ["p"] * 10_000,
    }
    fitted = _fit(entry)
    assert len(json.dumps(fitted)) <= MAX_EVENT_BYTES
    assert fitted["kind"] == "drain-blocked" and fitted["node"] == "n1" and fitted["truncated"] == ["pods"]
    assert _fit({"kind": "k", "message": "short"}) == {"kind": "k", "message": "short"}
