"""What the API probe names apart, and how the report says it: plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubernetes import client

from slipway.inventory import ADVERTISE_ANNOTATION, static_pod_apiserver_urls
from slipway.probe_process import (
    SERIES_POINTS,
    STALE_SECONDS,
    PathSamples,
    ProbeState,
    control_plane_end,
    latency_series,
    load_samples,
    save_samples,
    state_name,
    summary,
    whole_run,
)
from slipway.reports.run import probe_sentence, whole_run_probe_sentence
from slipway.validation.probe import (
    ApiProbe,
    Disruption,
    ProbeEvent,
    Sample,
    Verb,
    dropped_by_etcd,
    window_figures,
)

AT = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)
DROPPED = (
    'HTTP 500 Internal Server Error: {"message":"rpc error: code = Unknown desc = raft proposal dropped"}'
)
LEADER_CHANGED = 'HTTP 500 Internal Server Error: {"message":"etcdserver: leader changed","code":500}'


def _event(verb: Verb, error: str) -> ProbeEvent:
    return ProbeEvent(at=AT, phase="upgrade", verb=verb, error=error)


def test_only_what_etcd_answers_while_its_leader_moves_is_named_apart() -> None:
    events = [
        _event("create", DROPPED),
        _event("delete", DROPPED),
        _event("list", LEADER_CHANGED),  # a linearizable read cut short by the change
        _event("create", "HTTP 500 Internal Server Error: etcdserver: request timed out"),
        _event("list", "ReadTimeoutError: read timed out"),
        _event("get", "HTTP 403 Forbidden: raft proposal"),
    ]
    assert dropped_by_etcd(events) == 3
    assert dropped_by_etcd([]) == 0


def test_the_report_counts_every_failure_and_names_the_dropped_writes() -> None:
    probe = {"requests": 900, "failures": 3, "dropped_by_etcd": 2, "p99_ms": 40.0, "baseline_p99_ms": 20.0}
    text = probe_sentence(probe, bold=True)
    assert "900 requests, **3 failed (2 of them refused by etcd, unapplied, while its leader moved)**" in text
    clean = probe_sentence(probe | {"failures": 0, "dropped_by_etcd": 0})
    assert "0 failed, p99 40.0 ms" in clean and "dropped" not in clean


def test_the_report_gives_disruption_seconds_per_path_when_both_were_measured() -> None:
    probe = {
        "requests": 900,
        "failures": 1,
        "p99_ms": 40.0,
        "baseline_p99_ms": 20.0,
        "disruption_seconds": 0.05,
        "new_connections": {"requests": 200, "failures": 2, "disruption_seconds": 1.25},
    }
    text = probe_sentence(probe)
    assert "1 failed, p99 40.0 ms" in text and "disrupted 0.1 s" in text
    assert "On new connections: 200 requests, 2 failed, disrupted 1.2 s" in text


def test_disruption_runs_from_the_first_failure_to_the_next_success() -> None:
    seen = Disruption()
    seen.succeeded(1.0)  # no failure yet: nothing counted
    seen.failed(2.0)
    seen.failed(2.5)  # the same run of failures
    seen.succeeded(3.0)
    seen.failed(10.0)
    assert seen.seconds(end=10.5) == 1.5  # a run still failing at the end counts up to the end
    seen.succeeded(11.0)
    assert seen.seconds(end=20.0) == 2.0


# ---- windows of the run: the control-plane phase and the whole run from the same samples ------

T0 = 1_800_000_000.0
ETCD_DROP = "HTTP 500 Internal Server Error: etcdserver: leader changed"


def _samples() -> PathSamples:
    """20 s at 2 requests/s: two failures at 5.0-5.5 s (control plane), one at 15 s (workers)."""
    requests: list[Sample] = []
    failures = []
    for i in range(40):
        at = T0 + i * 0.5
        failed = at in (T0 + 5.0, T0 + 5.5, T0 + 15.0)
        requests.append((at, None if failed else 0.010 + i / 1000))
        if failed:
            when = datetime.fromtimestamp(at, UTC).isoformat()
            error = ETCD_DROP if at < T0 + 10 else "ConnectionRefusedError"
            failures.append({"at": when, "phase": "upgrade", "verb": "get", "error": error})
    return PathSamples(requests, failures, [])


def test_window_figures_count_only_the_requests_inside_the_window() -> None:
    rows = _samples().requests
    whole = window_figures(rows)
    assert (whole.requests, whole.failures) == (40, 3)
    # 5.0 → 6.0 (the next success) and 15.0 → 15.5
    assert whole.disruption_seconds == 1.5
    first = window_figures(rows, None, T0 + 10)
    assert (first.requests, first.failures, first.disruption_seconds) == (20, 2, 1.0)
    later = window_figures(rows, T0 + 10, None)
    assert (later.requests, later.failures, later.disruption_seconds) == (20, 1, 0.5)
    # A failure run still open at the window's end counts up to that end.
    assert window_figures(rows, None, T0 + 5.25).disruption_seconds == 0.25
    assert window_figures([], None, None) == window_figures([], T0, T0 + 1)


def test_summary_gives_the_control_plane_window_and_whole_run_gives_every_path() -> None:
    saved = {
        "reused": _samples(),
        "new": PathSamples([(T0 + 1, 0.02)], [], []),
        "direct/kube-apiserver-0": _samples(),
    }
    report = {"baseline_p99_seconds": 0.010}
    cp = summary(report, saved, (None, T0 + 10))
    assert (cp["requests"], cp["failures"], cp["dropped_by_etcd"]) == (20, 2, 2)
    assert [s["error"] for s in cp["failure_samples"]] == [ETCD_DROP, ETCD_DROP]
    assert cp["new_connections"]["requests"] == 1
    assert cp["baseline_p99_ms"] == 10.0
    whole = whole_run(saved)
    assert set(whole["paths"]) == {"reused", "new"}
    assert whole["paths"]["reused"]["failures"] == 3
    assert whole["paths"]["reused"]["dropped_by_etcd"] == 2
    assert set(whole["direct"]) == {"kube-apiserver-0"}
    sentence = whole_run_probe_sentence(whole)
    assert "reused connections 40 requests, 3 failed, disrupted 1.5 s" in sentence
    assert "kube-apiserver-0 1.5 s (3 of 40 requests failed)" in sentence


def test_the_latency_series_keeps_at_most_its_points_and_shows_the_failures() -> None:
    rows: list[Sample] = [(T0 + i, None if i == 500 else 0.01) for i in range(3600)]
    series = latency_series(rows)
    assert 100 <= len(series) <= SERIES_POINTS + 1
    assert sum(p["failures"] for p in series) == 1
    assert all(p["p99_ms"] == 10.0 for p in series)
    assert latency_series([]) == []


def test_kubeadm_apiserver_pods_name_each_apiservers_own_url() -> None:
    def pod(component: str, node: str, endpoint: str | None) -> client.V1Pod:
        annotations = {ADVERTISE_ANNOTATION: endpoint} if endpoint else {}
        return client.V1Pod(
            metadata=client.V1ObjectMeta(
                name=f"{component}-{node}", labels={"component": component}, annotations=annotations
            ),
            spec=client.V1PodSpec(node_name=node, containers=[client.V1Container(name=component)]),
        )

    pods = [
        pod("kube-apiserver", "cp-1", "10.0.0.11:6443"),
        pod("kube-apiserver", "cp-2", "[fd00::12]:6443"),
        pod("kube-apiserver", "cp-3", None),  # not written by kubeadm: not probed directly
        pod("etcd", "cp-1", "10.0.0.11:2379"),
    ]
    assert static_pod_apiserver_urls(pods) == {
        "cp-1": "https://10.0.0.11:6443",
        "cp-2": "https://[fd00::12]:6443",
    }


def test_what_the_probe_process_saves_it_loads_back(tmp_path: Path) -> None:
    probe = ApiProbe(client.Configuration())  # never started: no request, nothing to connect to
    probe._samples += [(T0, 0.01), (T0 + 1, None)]
    save_samples(tmp_path, {"reused": probe, "direct/kube-apiserver-0": probe})
    loaded = load_samples(tmp_path)
    assert set(loaded) == {"reused", "direct/kube-apiserver-0"}
    assert loaded["reused"] == PathSamples([(T0, 0.01), (T0 + 1, None)], [], [])


def test_the_probe_ends_with_its_run_not_with_a_lapsed_lease() -> None:
    """Released or taken by another run: stop. Lapsed while its run waits deferred (an approval
    renews nothing): keep measuring, up to the grace; past it the run is taken for dead."""
    from datetime import UTC, datetime, timedelta

    from slipway.lease import LeaseState
    from slipway.probe_process import ORPHAN_GRACE_SECONDS, orphaned

    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    me = "k8s_cluster_upgrade/manual__a"

    def held(holder: str | None, renewed_ago: float) -> LeaseState:
        return LeaseState(holder, 120, now - timedelta(seconds=renewed_ago), now, 0, "1")

    assert orphaned(held(me, 5), me, now) is None
    assert orphaned(held(me, 120 + ORPHAN_GRACE_SECONDS - 1), me, now) is None  # lapsed, within grace
    assert "not renewed" in str(orphaned(held(me, 120 + ORPHAN_GRACE_SECONDS + 1), me, now))
    assert "released" in str(orphaned(held(None, 5), me, now))
    assert "released" in str(orphaned(None, me, now))
    other = orphaned(held("k8s_worker_upgrade/scheduled__b", 5), me, now)
    assert other == "the cluster lease is held by k8s_worker_upgrade/scheduled__b: its run is over"


def test_a_probe_state_is_fresh_only_while_its_heartbeat_is_recent() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    cm = client.V1ConfigMap(
        data={
            "phase": "ready",
            "host": "worker-a",
            "pid": "42",
            "heartbeat": (now - timedelta(seconds=30)).isoformat(),
        }
    )
    state = ProbeState.from_configmap(cm)
    assert state.fresh(now) and not state.stop_requested and state.result is None
    assert not state.fresh(now + timedelta(seconds=STALE_SECONDS))
    assert "pid 42 on worker-a" in state.where()
    assert not ProbeState.from_configmap(client.V1ConfigMap(data={"phase": "starting"})).fresh(now)


def test_each_run_has_its_own_state_configmap_name() -> None:
    a, b = state_name("k8s_cluster_upgrade/manual__a"), state_name("k8s_worker_upgrade/manual__a")
    assert a != b and a == state_name("k8s_cluster_upgrade/manual__a")
    assert len(a) <= 63 and a.startswith("slipway-probe-state-")


def test_the_control_plane_window_ends_at_its_first_ending_event() -> None:
    events = [
        {"at": "2026-12-03T12:00:00+00:00", "kind": "backup-proven"},
        {"at": "2026-12-03T12:05:00+00:00", "kind": "control-plane-verified"},
        {"at": "2026-12-03T12:09:00+00:00", "kind": "control-plane-rolled-back"},
    ]
    assert control_plane_end(events) == datetime(2026, 12, 3, 12, 5, 1, tzinfo=UTC).timestamp()
    assert control_plane_end(events[:1]) is None
