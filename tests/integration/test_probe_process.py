"""The API probe's process and the two tasks that meet it through the cluster, not a disk.

``start`` and ``stop`` are what ``start_api_probe`` and ``stop_api_probe`` call; here they
run against the real local cluster under the orchestrator identity. Each test gives a
different working folder to each call, as two Celery workers would have: nothing but the
probe's state ConfigMap in ``slipway-probe`` joins them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from kubernetes import client

from slipway import lease, probe_process
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from tests.integration.test_lease import _delete_lease

pytestmark = pytest.mark.cluster

RUN = "k8s_cluster_upgrade/manual__probe-test"


@pytest.fixture
def api(local_cluster: LocalCluster) -> Iterator[client.ApiClient]:
    """The orchestrator's client, with no lease and no probe state of RUN before and after
    (the admin cleans up: the orchestrator may not delete a lease)."""
    admin = local_cluster.admin_client()
    _delete_lease(admin)
    probe_process.delete_state(admin, RUN)
    yield local_cluster.orchestrator_client()
    _delete_lease(admin)
    state = probe_process.read_state(admin, RUN)
    if state is not None and state.phase != "stopped" and psutil.pid_exists(state.pid):
        os.kill(state.pid, signal.SIGTERM)  # a failed test's probe: never left running
    probe_process.delete_state(admin, RUN)


def _start(
    cluster: LocalCluster, api: client.ApiClient, folder: Path, holder: str | None = None
) -> probe_process.ProbeState:
    return probe_process.start(
        api, cluster.orchestrator_kubeconfig, folder, RUN, max_seconds=600, holder=holder
    )


def _gone(pid: int) -> bool:
    """Exited: here the probe is this test process's child, left a zombie until reaped (in a
    task, its parent ends and init reaps it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_cleared_start_on_another_worker_reuses_the_probe_and_stop_runs_anywhere(
    local_cluster: LocalCluster, api: client.ApiClient, tmp_path: Path
) -> None:
    first = _start(local_cluster, api, tmp_path / "worker-a")
    assert first.phase == "ready" and psutil.pid_exists(first.pid)
    again = _start(local_cluster, api, tmp_path / "worker-b")  # a cleared start_api_probe elsewhere
    assert (again.host, again.pid) == (first.host, first.pid)
    assert not (tmp_path / "worker-b").exists(), "the second start launched a process of its own"

    figures = probe_process.stop(api, RUN)  # stop_api_probe: no folder, only the cluster
    wait_until("the probe process exited", lambda: _gone(first.pid), 60, interval=0.5)
    reused = figures["whole"]["paths"]["reused"]
    assert reused["requests"] > 0 and figures["report"]["requests"] > 0
    assert "stopped_by_itself" not in figures["report"]
    assert figures["control_plane"] is None  # no run record, so no control-plane window to cut
    assert (tmp_path / "worker-a" / "probe-samples.json").exists()  # forensics stay on its host
    assert probe_process.stop(api, RUN) == figures  # a cleared stop reads the same figures again


def test_the_probe_stops_by_itself_once_its_run_released_the_lease(
    local_cluster: LocalCluster, api: client.ApiClient, tmp_path: Path
) -> None:
    """A run that dies before its probe's teardown leaves no probe behind for long."""
    lease.acquire(api, RUN)
    state = _start(local_cluster, api, tmp_path / "probe", holder=RUN)
    lease.release(api, RUN)
    wait_until(
        "the probe ended by itself",
        lambda: (found := probe_process.read_state(api, RUN)) is not None and found.phase == "stopped",
        120,
        interval=0.5,
    )
    wait_until("the probe process exited", lambda: _gone(state.pid), 60, interval=0.5)
    ended = probe_process.stop(api, RUN)  # what the teardown does: the figures it left
    assert ended["report"]["stopped_by_itself"] == "the cluster lease was released: its run is over"
    assert ended["report"]["requests"] > 0


def test_a_probe_whose_host_died_is_named_and_a_new_start_replaces_it(
    local_cluster: LocalCluster, api: client.ApiClient, tmp_path: Path
) -> None:
    dead = _start(local_cluster, api, tmp_path / "worker-a")
    os.kill(dead.pid, signal.SIGKILL)  # as if its host went away
    with pytest.raises(RuntimeError) as refused:
        probe_process.stop(api, RUN, timeout=5)
    message = str(refused.value)
    assert f"pid {dead.pid} on {dead.host}" in message and "did not stop within 5s" in message

    fresh = _start(local_cluster, api, tmp_path / "worker-b")  # a cleared start_api_probe
    assert fresh.pid != dead.pid and fresh.phase == "ready"
    assert probe_process.stop(api, RUN)["report"]["requests"] > 0


def test_only_states_silent_for_a_week_are_pruned(local_cluster: LocalCluster, api: client.ApiClient) -> None:
    old, recent = "k8s_worker_upgrade/manual__long-ago", "k8s_worker_upgrade/manual__yesterday"
    now = datetime.now(UTC)
    admin = local_cluster.admin_client()
    try:
        for probe_id, age in ((old, timedelta(days=8)), (recent, timedelta(days=1))):
            stamp = (now - age).isoformat(timespec="seconds")
            probe_process.write_state(api, probe_id, phase="stopped", heartbeat=stamp, result="{}")
        assert probe_process.state_name(old) in probe_process.prune_states(api, now)
        assert probe_process.read_state(api, old) is None
        assert probe_process.read_state(api, recent) is not None
    finally:
        for probe_id in (old, recent):
            probe_process.delete_state(admin, probe_id)
