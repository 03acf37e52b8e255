"""What a batch is judged on besides its nodes: the user's health checks and the
components' latency during the batch against the baseline, read from the real cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from slipway import workers
from slipway.inventory import KubeadmControlPlaneReader, LocalControlPlaneReader
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import KUBERNETES_NEW
from slipway.models import parse_request
from slipway.runrecord import NAMESPACE, RunRecord
from slipway.validation.baseline import APISERVER_HISTOGRAM
from tests.localhttp import QuietHandler, serving

pytestmark = pytest.mark.cluster

SAMPLE_DEPLOYMENT = ("shop", "web")
TRAFFIC_REQUESTS = 40


class _AppHandler(QuietHandler):
    """A user's application endpoint: healthy on /healthz, failing on /broken."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()


@pytest.fixture
def app_url() -> Iterator[str]:
    with serving(_AppHandler) as url:
        yield url


def test_declared_health_checks_pass_a_healthy_batch(local_cluster: LocalCluster, app_url: str) -> None:
    namespace, name = SAMPLE_DEPLOYMENT
    request = parse_request(
        {
            "target_version": KUBERNETES_NEW,
            "soak_seconds": 1,
            "health_checks": [
                {"kind": "http", "url": f"{app_url}/healthz"},
                {"kind": "deployment", "namespace": namespace, "name": name},
            ],
        }
    )
    verdict = workers.validate_batch(local_cluster.orchestrator_client(), request, [])
    assert verdict.passed, verdict.problems
    assert f"http {app_url}/healthz" in verdict.checked
    assert f"deployment {namespace}/{name} available" in verdict.checked


def test_failing_health_checks_fail_the_batch_naming_each(local_cluster: LocalCluster, app_url: str) -> None:
    request = parse_request(
        {
            "target_version": KUBERNETES_NEW,
            "soak_seconds": 2,
            "health_checks": [
                {"kind": "http", "url": f"{app_url}/broken"},
                {"kind": "http", "url": "http://127.0.0.1:9/nothing-listens"},
                {"kind": "deployment", "namespace": "shop", "name": "no-such-deployment"},
            ],
        }
    )
    verdict = workers.validate_batch(local_cluster.orchestrator_client(), request, [])
    assert not verdict.passed
    assert f"health check {app_url}/broken answered HTTP 503" in verdict.problems
    assert any(
        p.startswith("health check http://127.0.0.1:9/nothing-listens failed") for p in verdict.problems
    )
    assert "health check deployment shop/no-such-deployment: not found" in verdict.problems


def test_the_soak_holds_a_clean_batch_and_fails_what_breaks_during_it(local_cluster: LocalCluster) -> None:
    """A batch clean at its first look is still watched for soak_seconds: a check that
    breaks during the hold fails the batch (the soak used to end at the first clean look)."""
    request = parse_request({"target_version": KUBERNETES_NEW, "soak_seconds": 3})
    looks: list[int] = []

    def breaks_after_first_look() -> list[str]:
        looks.append(1)
        return [] if len(looks) == 1 else ["checkout error rate 12%"]

    verdict = workers.validate_batch(
        local_cluster.orchestrator_client(), request, [], extra_checks=[breaks_after_first_look]
    )
    assert not verdict.passed
    assert verdict.problems == ["during the soak: checkout error rate 12%"]
    assert "held for 3s" in verdict.checked

    steady: list[int] = []

    def always_clean() -> list[str]:
        steady.append(1)
        return []

    verdict = workers.validate_batch(
        local_cluster.orchestrator_client(), request, [], extra_checks=[always_clean]
    )
    assert verdict.passed, verdict.problems
    assert len(steady) >= 2, "a clean batch must be looked at again during the soak"


def _traffic(admin: client.ApiClient, run: str) -> None:
    """Reads and writes through the load balancer, as a batch's drain and rescheduling make."""
    core = client.CoreV1Api(admin)
    for i in range(TRAFFIC_REQUESTS):
        core.list_namespaced_pod("shop", limit=50)
        core.create_namespaced_config_map(
            NAMESPACE, {"metadata": {"name": f"latency-{run}-{i}", "labels": {"test": run}}}
        )
    core.delete_collection_namespaced_config_map(NAMESPACE, label_selector=f"test={run}")


def test_latency_during_a_batch_is_measured_on_every_instance(local_cluster: LocalCluster) -> None:
    api = local_cluster.orchestrator_client()
    reader = LocalControlPlaneReader(local_cluster)
    apiservers, schedulers = reader.latency_metrics()
    assert sorted(apiservers) == ["kube-apiserver-0", "kube-apiserver-1"]
    assert list(schedulers) == ["kube-scheduler"]
    record = RunRecord(api, "test-latency-window")
    try:
        workers.open_latency_window(reader, record, 0)
        opened = record.get("latency")
        _traffic(local_cluster.admin_client(), "window")
        workers.open_latency_window(reader, record, 0)  # a retried task keeps the first window
        assert record.get("latency") == opened
        request = parse_request({"target_version": KUBERNETES_NEW, "latency_policy": "enforce"})
        _, figures = workers.latency_check(reader, record.get("latency"), request)
        by_signal = {s["signal"]: s for s in figures["signals"]}
        # Both request kinds this test made were seen (summed over both apiservers).
        assert {"apiserver read-list", "apiserver mutating"} <= set(by_signal)
        for signal in by_signal.values():
            assert signal["batch_ms"] > 0 and signal["baseline_ms"] > 0
            assert signal["ratio"] == pytest.approx(
                max(signal["batch_ms"], 25.0) / max(signal["baseline_ms"], 25.0), rel=0.02
            )
        # The baseline is taken once per run: a later batch compares against the same one.
        workers.open_latency_window(reader, record, 1)
        assert record.get("latency")["baseline"] == opened["baseline"]
        assert record.get("latency")["window_batch"] == 1
    finally:
        # The orchestrator may not delete run records: the operator (admin) cleans up.
        client.CoreV1Api(local_cluster.admin_client()).delete_namespaced_config_map(record.name, NAMESPACE)


def test_kubeadm_reader_reads_apiserver_latency_through_the_api(local_cluster: LocalCluster) -> None:
    apiservers, schedulers = KubeadmControlPlaneReader(local_cluster.orchestrator_client()).latency_metrics()
    assert len(apiservers) == 1  # no static pods here: one instance expected, the one the LB picked
    (key, text) = next(iter(apiservers.items()))
    assert key.startswith("started-")
    assert f"{APISERVER_HISTOGRAM}_bucket" in text
    assert schedulers == {}
