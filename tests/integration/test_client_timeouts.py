"""No Kubernetes call hangs: the orchestrator's client puts a (connect, read) timeout on every
request its caller left without one, and retries reads with backoff on transient errors.

Two kinds of proof. Against a *black hole* (a loopback socket that accepts connections and
never answers: what a half-open connection looks like from the client; it plays no apiserver)
the call must come back with a timeout error. Against the real local cluster, calls with the
default timeout answer, and watches with their own server-side timeout run to their end.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3.exceptions
from kubernetes import client, watch

from slipway.airflow.runtime import (
    DEFAULT_TIMEOUT,
    WATCH_MARGIN_SECONDS,
    TimeoutApiClient,
    _client_for,
    with_default_timeouts,
)
from slipway.airflow_env import KUBE_CONN_ID
from slipway.kube.retry import Backoff
from slipway.localcluster.cluster import LocalCluster
from tests.conftest import running_cluster

# Bounds for waiting on a call that must come back; far above the timeouts it runs with.
COME_BACK_WITHIN = 30.0


class BlackHole:
    """Accepts every connection and never sends a byte; counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def _client(port: int, **kw: Any) -> TimeoutApiClient:
    conf = client.Configuration()
    conf.host = f"http://127.0.0.1:{port}"
    return TimeoutApiClient(conf, **kw)


def _outcome(call: Callable[[], Any]) -> BaseException | None:
    """Run ``call`` in a thread; what it raised. Fails the test if it does not come back."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            raised.append(None)
        except BaseException as err:
            raised.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(COME_BACK_WITHIN)
    assert not thread.is_alive(), "the call hung past every timeout"
    return raised[0]


def test_the_default_timeout_makes_a_silent_server_raise(black_hole: BlackHole) -> None:
    api = _client(black_hole.port, timeout=(2.0, 0.5), backoff=Backoff(attempts=1))
    err = _outcome(lambda: client.VersionApi(api).get_code())
    assert isinstance(err, urllib3.exceptions.ReadTimeoutError), repr(err)
    assert isinstance(err, urllib3.exceptions.TimeoutError)
    assert len(black_hole.accepted) == 1  # the pool itself did not retry


def test_a_read_is_retried_a_write_is_not(black_hole: BlackHole) -> None:
    api = _client(black_hole.port, timeout=(2.0, 0.3), backoff=Backoff(attempts=3, base=0.01))
    err = _outcome(lambda: client.CoreV1Api(api).list_namespace())
    assert isinstance(err, urllib3.exceptions.ReadTimeoutError), repr(err)
    assert len(black_hole.accepted) == 3
    # A create whose answer was lost may have been applied: raised after one attempt.
    body = client.V1Namespace(metadata=client.V1ObjectMeta(name="x"))
    err = _outcome(lambda: client.CoreV1Api(api).create_namespace(body))
    assert isinstance(err, urllib3.exceptions.ReadTimeoutError), repr(err)
    assert len(black_hole.accepted) == 4


def test_the_callers_own_timeout_wins(black_hole: BlackHole) -> None:
    # The default (an hour) would hang this test: the caller's 0.3 s read timeout applies.
    api = _client(black_hole.port, timeout=(3600.0, 3600.0), backoff=Backoff(attempts=1))
    err = _outcome(lambda: client.VersionApi(api).get_code(_request_timeout=(2.0, 0.3)))
    assert isinstance(err, urllib3.exceptions.ReadTimeoutError), repr(err)


def test_a_refused_connection_is_retried_even_for_a_write(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = _client(port, backoff=Backoff(attempts=3, base=0.01))
    body = client.V1Namespace(metadata=client.V1ObjectMeta(name="x"))
    with (
        caplog.at_level("WARNING", logger="slipway.airflow.runtime"),
        pytest.raises(urllib3.exceptions.NewConnectionError),
    ):
        client.CoreV1Api(api).create_namespace(body)
    # The request never left: safe to repeat; each retry is logged.
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2, retries


def test_watches_get_a_read_timeout_past_their_own() -> None:
    api = TimeoutApiClient(timeout=(10.0, 60.0))
    assert api.timeout_for([("limit", 500)]) == (10.0, 60.0)
    assert api.timeout_for([("watch", True), ("timeoutSeconds", 300)]) == (10.0, 300 + WATCH_MARGIN_SECONDS)
    assert api.timeout_for([("watch", "true"), ("timeoutSeconds", 5)]) == (10.0, 60.0)
    assert api.timeout_for([("follow", True)]) == (10.0, 3600.0)
    assert api.timeout_for(None) == DEFAULT_TIMEOUT == (10.0, 60.0)


# ---- the real local cluster ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_cluster("timeouts", 1000, 1) as running:
        yield running


@pytest.mark.cluster
def test_the_orchestrator_client_has_the_default_and_answers(cluster: LocalCluster) -> None:
    extra = json.dumps({"kube_config_path": str(cluster.orchestrator_kubeconfig)}, sort_keys=True)
    api = _client_for(KUBE_CONN_ID, extra)
    try:
        assert isinstance(api, TimeoutApiClient)
        assert api.default_timeout == DEFAULT_TIMEOUT
        assert api.configuration.retries is False
        assert client.VersionApi(api).get_code().git_version.startswith("v")
        nodes = client.CoreV1Api(api).list_node().items
        assert nodes, "the cluster has nodes"
    finally:
        _client_for.cache_clear()


@pytest.mark.cluster
def test_a_watch_with_its_own_timeout_runs_to_its_end(cluster: LocalCluster) -> None:
    """A default read timeout (0.5 s) shorter than the watch's silence does not cut the watch:
    the server closes it after its ``timeoutSeconds`` and the stream simply ends."""
    api = with_default_timeouts(cluster.admin_client())
    api.default_timeout = (5.0, 0.5)
    # PodDisruptionBudgets (what the invariant watcher watches): nothing changes them here.
    policy = client.PolicyV1Api(api)
    existing = len(policy.list_pod_disruption_budget_for_all_namespaces().items)
    seen = list(watch.Watch().stream(policy.list_pod_disruption_budget_for_all_namespaces, timeout_seconds=3))
    # The initial list arrives as ADDED events, then 3 s of silence, then the server ends it.
    assert len(seen) == existing
    assert all(e["type"] == "ADDED" for e in seen)


@pytest.mark.cluster
def test_a_watch_with_a_client_timeout_of_its_own_keeps_it(cluster: LocalCluster) -> None:
    api = with_default_timeouts(cluster.admin_client())
    policy = client.PolicyV1Api(api)
    stream = watch.Watch().stream(
        policy.list_pod_disruption_budget_for_all_namespaces, timeout_seconds=30, _request_timeout=(5.0, 1.0)
    )
    # The caller asked for a 1 s read timeout on a 30 s watch: silence ends it with a timeout.
    err = _outcome(lambda: list(stream))
    assert isinstance(err, urllib3.exceptions.ReadTimeoutError | urllib3.exceptions.ProtocolError), repr(err)
