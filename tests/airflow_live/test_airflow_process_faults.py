"""Airflow's own processes failing under a real run (`make test-airflow`, heavy).

``k8s_worker_upgrade`` runs under a real scheduler, dag-processor, triggerer and api-server
(LocalExecutor), triggered over the REST API as a user would, on a local cluster whose
kubelets are one minor behind. While it runs:

1. the **scheduler** is killed (with its executor's processes) and started again while the
   run waits in the triggerer for a node;
2. the **task process** upgrading a node is killed mid-drain (the node cordoned, one of its
   pods terminating and awaited): Airflow retries the task and the retry resumes from what
   the cluster shows;
3. the **triggerer** is killed and started again while a node's Ready wait is deferred to
   it: the new triggerer takes the trigger over and the task resumes.

The test plays the kubelet's part where kwok would hide the window: every worker holds a bare
pod with a finalizer (its deletion waits until the test removes it) and is labelled to stay
NotReady after its upgrade until the test reports it Ready. Afterwards: the run succeeded,
every kubelet is at the target and uncordoned, no PDB was ever violated, the killed task
took exactly one retry, and the run record tells the same story.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from kubernetes import client

from slipway.kube import nodes as kube_nodes
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from slipway.runrecord import RunRecord
from slipway.upgraders.nodes import NOT_READY, SIMULATE_LABEL
from slipway.validation.invariants import CordonWatcher, PdbWatcher
from tests.airflow_live.airflow_procs import TERMINAL, Airflow, running_airflow
from tests.conftest import TEST_BASE_PORT, running_cluster
from tests.dags.dagrun import remove_never_evictable_samples, verdict

pytestmark = pytest.mark.cluster

DAG_ID = "k8s_worker_upgrade"
PORT_OFFSET = 1700
API_PORT = TEST_BASE_PORT + PORT_OFFSET + 90
WORKERS = 3
HOLD = "slipway.test/hold"
NODE_TASK = "upgrade_node"
CONF = {
    "target_version": KUBERNETES_NEW,
    "batch_policy": "fixed",
    "max_unavailable_percent": 10,  # one node per batch
    "soak_seconds": 1,
    "approval": "never",
    "blocked_drain_policy": "quarantine",
    "force_bare_pods": True,
    "delete_emptydir_data": True,
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_cluster(
        "afaults", PORT_OFFSET, WORKERS, kubernetes_version=KUBERNETES_NEW, kubelet_version=KUBERNETES_OLD
    ) as local:
        remove_never_evictable_samples(local)
        yield local


def _workers(core: client.CoreV1Api) -> list[client.V1Node]:
    return [n for n in core.list_node().items if not kube_nodes.is_control_plane(n)]


def assert_converged(
    core: client.CoreV1Api, record: dict[str, Any], watcher: PdbWatcher, cordons: CordonWatcher, workers: int
) -> None:
    """The run converged despite the faults: every kubelet at the target, nothing cordoned,
    no PDB ever violated, never more than one node cordoned at once (one per batch, also
    across restarts and retries); and the record tells the same story: one passed batch per
    worker, each node upgraded once."""
    for node in _workers(core):
        assert kube_nodes.kubelet_version(node) == KUBERNETES_NEW, node.metadata.name
        assert not kube_nodes.is_cordoned(node), node.metadata.name
    assert watcher.violations == [], watcher.violations
    assert cordons.most == 1
    batches = record["batches"]
    assert sorted(n for b in batches for n in b["nodes"]) == sorted(n.metadata.name for n in _workers(core))
    assert all(b["state"] == "passed" for b in batches), batches
    upgraded = [e for e in record["events"] if e["kind"] == "node-upgraded"]
    assert len({e.get("node") for e in upgraded}) == workers


def _hold_every_worker(core: client.CoreV1Api) -> None:
    """A bare pod with a finalizer on each worker: the drain awaits its deletion until the
    test lets it go."""
    for node in _workers(core):
        name = node.metadata.name
        core.create_namespaced_pod(
            "default",
            {
                "metadata": {"name": f"held-{name}", "finalizers": [HOLD]},
                "spec": {
                    "nodeName": name,
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        )


def _release_pod(core: client.CoreV1Api, node: str) -> None:
    """Let the drain finish, and make the node's kubelet slow to come back after its upgrade
    (kwok stops heartbeating a node so labelled; the upgrade leaves it NotReady)."""
    core.patch_node(node, {"metadata": {"labels": {SIMULATE_LABEL: NOT_READY}}})
    core.patch_namespaced_pod(f"held-{node}", "default", {"metadata": {"finalizers": None}})


def _report_ready(core: client.CoreV1Api, node: str) -> None:
    """What the kubelet does once it is back: Ready, now (kwok resumes its heartbeats)."""
    core.patch_node(node, {"metadata": {"labels": {SIMULATE_LABEL: None}}})
    now = datetime.now(UTC).isoformat()
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    core.patch_node_status(node, {"status": {"conditions": [ready]}})


def _terminating(core: client.CoreV1Api, node: str) -> bool:
    pod = core.read_namespaced_pod(f"held-{node}", "default")
    return pod.metadata.deletion_timestamp is not None


def _node_tasks(airflow: Airflow, run_id: str) -> list[dict[str, Any]]:
    return [ti for ti in airflow.task_instances(DAG_ID, run_id) if ti["task_id"].endswith(f".{NODE_TASK}")]


class Kubelet:
    """Plays each worker's remaining part, one step at a time, and fires the faults at the
    first node where their window is open."""

    def __init__(self, airflow: Airflow, run_id: str, core: client.CoreV1Api) -> None:
        self.airflow, self.run_id, self.core = airflow, run_id, core
        self.released: set[str] = set()
        self.readied: set[str] = set()
        self.scheduler_restarted_for: str | None = None
        self.killed: dict[str, Any] | None = None  # the task killed mid-drain
        self.triggerer_restarted_for: str | None = None
        self.started = time.monotonic()
        self.said: list[str] = []

    def say(self, what: str) -> None:
        line = f"{time.monotonic() - self.started:7.1f}s  {what}"
        self.said.append(line)
        print(line, flush=True)

    def step(self) -> bool:
        """One look; True once the run ended."""
        if self.airflow.run_state(DAG_ID, self.run_id) in TERMINAL:
            return True
        tasks = _node_tasks(self.airflow, self.run_id)
        running = [ti for ti in tasks if ti["state"] == "running"]
        deferred = [ti for ti in tasks if ti["state"] == "deferred"]
        for node in _workers(self.core):
            name = node.metadata.name
            if name not in self.released and kube_nodes.is_cordoned(node) and _terminating(self.core, name):
                if self.killed is None:
                    self.killed = self._kill_task_process(running)  # None: not seen running yet
                    if self.killed:
                        self.say(f"{name} cordoned, its pod awaited: task process {self.killed} SIGKILLed")
                elif self._retried():  # the pod goes once the retry awaits it
                    _release_pod(self.core, name)
                    self.released.add(name)
                    self.say(f"{name}: the drain's pod let go")
            elif name in self.released and name not in self.readied and deferred and not running:
                if kube_nodes.kubelet_version(node) != KUBERNETES_NEW:
                    continue
                if self.scheduler_restarted_for is None:
                    # 1. The scheduler dies while the run waits in the triggerer; a new one takes over.
                    self.airflow.kill("scheduler")
                    self.airflow.start("scheduler")
                    self.scheduler_restarted_for = name
                    self.say(f"{name} waits in the triggerer: scheduler SIGKILLed and started again")
                elif self.triggerer_restarted_for is None and name != self.scheduler_restarted_for:
                    # 3. The triggerer dies while it holds a node's Ready wait; a new one takes over.
                    self.airflow.kill("triggerer")
                    self.airflow.start("triggerer")
                    self.triggerer_restarted_for = name
                    self.say(f"{name} waits in the triggerer: triggerer SIGKILLed and started again")
                _report_ready(self.core, name)
                self.readied.add(name)
                self.say(f"{name}: kubelet reports Ready")
        return False

    def _kill_task_process(self, running: list[dict[str, Any]]) -> dict[str, Any] | None:
        """2. SIGKILL the process of the node task that is draining (Airflow's recorded pid)."""
        for ti in running:
            pid = ti.get("pid")
            if pid and psutil.pid_exists(pid):
                psutil.Process(pid).send_signal(signal.SIGKILL)
                return {"task_id": ti["task_id"], "map_index": ti["map_index"], "pid": pid}
        return None

    def _retried(self) -> bool:
        assert self.killed is not None
        tries = self.airflow.tries(DAG_ID, self.run_id, self.killed["task_id"], self.killed["map_index"])
        return any(t["try_number"] >= 2 and t["state"] in ("running", "deferred", "success") for t in tries)


def test_scheduler_task_process_and_triggerer_killed_mid_run_and_the_upgrade_completes(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    admin = cluster.admin_client()
    core = client.CoreV1Api(admin)
    _hold_every_worker(core)
    with (
        PdbWatcher(admin) as watcher,
        CordonWatcher(admin) as cordons,
        running_airflow(cluster, tmp_path / "airflow", API_PORT, DAG_ID) as airflow,
    ):
        run_id = airflow.trigger(DAG_ID, CONF)
        kubelet = Kubelet(airflow, run_id, core)
        wait_until(f"run {run_id} ended", kubelet.step, 1800, interval=0.5)
        kubelet.say(f"run {run_id} ended")
        state = airflow.run_state(DAG_ID, run_id)
        tasks = _node_tasks(airflow, run_id)
    record = RunRecord(cluster.orchestrator_client(), run_id).load()
    assert state == "success", (state, record.get("events"))
    assert verdict(record) == "upgraded"
    # Every fault fired where it was meant to.
    assert kubelet.scheduler_restarted_for is not None, "the run never waited in the triggerer"
    assert kubelet.killed is not None, "no node task was caught mid-drain"
    assert kubelet.triggerer_restarted_for is not None, "no Ready wait was deferred to the triggerer"
    # The killed task took exactly one retry; nothing else needed one.
    killed = next(
        t
        for t in tasks
        if (t["task_id"], t["map_index"]) == (kubelet.killed["task_id"], kubelet.killed["map_index"])
    )
    assert killed["try_number"] == 2, killed
    assert all(t["try_number"] <= 1 for t in tasks if t is not killed), tasks  # 0: a slot never used
    assert_converged(core, record, watcher, cordons, WORKERS)
