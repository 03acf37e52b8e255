"""Airflow distributed for real, without Docker (`make test-distributed`, heavy).

PostgreSQL (metadata database, Celery result backend) and Redis (Celery broker) from Debian's
packages, each private to the test; Airflow with the CeleryExecutor as separate processes:
api-server, scheduler, dag-processor, triggerer, and two ``airflow celery worker`` processes,
each with its own AIRFLOW_HOME, working folder, Celery hostname and reported hostname. The
workers share nothing on local disk but the DAGs folder and the reports folder
(``SLIPWAY_REPORTS_DIR``; on this one host, a plain folder both can reach).

``k8s_worker_upgrade`` is triggered over the REST API on a local cluster whose kubelets are
one minor behind. The test plays the kubelet's part as ``tests/airflow_live`` does (a held pod
per node keeps its drain open; the node stays NotReady after its upgrade until the test reports
it Ready). When a node task is mid-drain, the Celery worker running it is SIGKILLed with every
process it started, as if its host died: Airflow notices the task's missing heartbeats, the
retry runs on the other worker and resumes from what the cluster shows, and the run converges.
The task instances' ``hostname`` fields prove every worker ran tasks. A third worker, ``worker-a``,
serves only the queue of the tasks that must run near the cluster (``SLIPWAY_CLUSTER_QUEUE``):
the API probe starts there, and its teardown, on another host, stops it through the cluster.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from slipway.airflow import routing
from slipway.kube import nodes as kube_nodes
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from slipway.runrecord import RunRecord
from slipway.validation.invariants import CordonWatcher, PdbWatcher
from tests.airflow_live.airflow_procs import AIRFLOW, TERMINAL, Airflow, process_env
from tests.airflow_live.test_airflow_process_faults import (
    CONF,
    DAG_ID,
    NODE_TASK,
    _hold_every_worker,
    _release_pod,
    _report_ready,
    _terminating,
    _workers,
    assert_converged,
)
from tests.conftest import REPO, TEST_BASE_PORT, running_cluster
from tests.dags.dagrun import remove_never_evictable_samples, verdict
from tests.distributed import hostname
from tests.distributed.services import postgres, redis_server

# The run alone took 524 s on a 2-core machine shared with other suites: more than the 900 s default
# once startup and shutdown are added under heavier load.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(3600)]

PORT_OFFSET = 1800
API_PORT = TEST_BASE_PORT + PORT_OFFSET + 90
POSTGRES_PORT = TEST_BASE_PORT + PORT_OFFSET + 85  # kwok has +80
REDIS_PORT = TEST_BASE_PORT + PORT_OFFSET + 86
NODES = 3
# name -> its log server port
CELERY_WORKERS = {"worker-a": API_PORT + 3, "worker-b": API_PORT + 4, "worker-c": API_PORT + 5}
# The tasks that must run near the cluster go to this queue (SLIPWAY_CLUSTER_QUEUE), which only
# worker-a serves, as a worker deployed next to the cluster would; worker-b and worker-c serve
# the default queue, and either takes over when the other dies.
NEAR_QUEUE = "near-cluster"
QUEUES = {"worker-a": NEAR_QUEUE, "worker-b": "default", "worker-c": "default"}
DEFAULT_WORKERS = {name for name, queues in QUEUES.items() if queues == "default"}
CONTROL = ("scheduler", "dag-processor", "triggerer")
# How soon a task whose worker vanished is noticed: the scheduler fails a running task whose
# heartbeat is older than this ([scheduler] task_instance_heartbeat_timeout, 300 s by default),
# looking every few seconds (task_instance_heartbeat_timeout_detection_interval, 10 s); the
# task's supervisor heartbeats every [workers] min_heartbeat_interval (5 s).
HEARTBEAT_TIMEOUT = 60
CELERY_ENV = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # Acknowledge a Celery message only once its task ended (the default, said on purpose): a
    # worker killed mid-task leaves it unacknowledged rather than silently lost.
    "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
    # An unacknowledged message goes back to the queue after this long. It must outlast the
    # longest task (a node's upgrade may take up to its 2 h execution_timeout), else Redis
    # hands a running task to a second worker; the retry after a crash comes from the
    # heartbeat timeout above, not from this.
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "7200",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
    # Task processes call the api-server's execution API (5 s timeout by default): on a loaded
    # 2-core machine that is too short, and a task whose calls time out fails before it starts.
    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
    # The DAG files do not change during the test: parsing them every 5 s only steals the CPU.
    "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "600",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
    "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_cluster(
        "celery", PORT_OFFSET, NODES, kubernetes_version=KUBERNETES_NEW, kubelet_version=KUBERNETES_OLD
    ) as local:
        remove_never_evictable_samples(local)
        yield local


@contextlib.contextmanager
def celery_airflow(cluster: LocalCluster, root: Path) -> Iterator[Airflow]:
    """Postgres, Redis, the four Airflow components and three Celery workers, every process with
    a home of its own; all stopped afterwards, also when the test fails."""
    with postgres(POSTGRES_PORT) as database, redis_server(REDIS_PORT) as broker:
        api_home = root / "api-server"
        shared = {
            **process_env(cluster, api_home, API_PORT),
            **CELERY_ENV,
            "SLIPWAY_REPORTS_DIR": str(root / "reports"),
            routing.ENV: NEAR_QUEUE,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{database}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{database}",
            "AIRFLOW__CELERY__BROKER_URL": broker,
        }
        subprocess_run([str(AIRFLOW), "db", "migrate"], shared, api_home)
        airflow = Airflow(api_home, shared, API_PORT, request_timeout=120)
        try:
            airflow.start("api-server")
            for component in CONTROL:
                home = root / component
                airflow.start_process(
                    component, [str(AIRFLOW), component], {**shared, "AIRFLOW_HOME": str(home)}, home
                )
            for name, log_port in CELERY_WORKERS.items():
                start_worker(airflow, root, name, log_port)
            airflow.wait_ready(DAG_ID)
            yield airflow
        finally:
            for name in CELERY_WORKERS:  # a warm shutdown would wait for their tasks
                if name in airflow.procs:
                    airflow.crash(name)
            airflow.stop_all()


def subprocess_run(argv: list[str], env: dict[str, str], cwd: Path) -> None:
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(argv, check=False, env=env, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def start_worker(airflow: Airflow, root: Path, name: str, log_port: int) -> None:
    """One Celery worker as on a host of its own: its own AIRFLOW_HOME (task logs, config),
    working folder, log server port and the hostname its task instances report."""
    home = root / name
    env = {
        **airflow.env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{hostname.__name__}.{hostname.worker_hostname.__name__}",
        hostname.VARIABLE: name,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    argv = [
        *(str(AIRFLOW), "celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "2"),
        *("--queues", QUEUES[name]),
    ]
    airflow.start_process(name, argv, env, home)


class Kubelet:
    """Plays each node's remaining part, one look at a time, and crashes the Celery worker of
    the first node task caught mid-drain."""

    def __init__(self, airflow: Airflow, run_id: str, core: client.CoreV1Api) -> None:
        self.airflow, self.run_id, self.core = airflow, run_id, core
        self.released: set[str] = set()
        self.readied: set[str] = set()
        self.killed: dict[str, Any] | None = None  # the node task whose worker died
        self.casualties: list[tuple[str, int]] = []  # every task running on that worker then
        self.killed_at: datetime | None = None
        self.started = time.monotonic()

    def say(self, what: str) -> None:
        print(f"{time.monotonic() - self.started:7.1f}s  {what}", flush=True)

    def step(self) -> bool:
        """One look; True once the run ended."""
        if self.airflow.run_state(DAG_ID, self.run_id) in TERMINAL:
            return True
        tasks = [
            ti
            for ti in self.airflow.task_instances_in(DAG_ID, self.run_id, ("running", "deferred"))
            if ti["task_id"].endswith(f".{NODE_TASK}")
        ]
        running = [ti for ti in tasks if ti["state"] == "running"]
        deferred = [ti for ti in tasks if ti["state"] == "deferred"]
        for node in _workers(self.core):
            name = node.metadata.name
            if name not in self.released and kube_nodes.is_cordoned(node) and _terminating(self.core, name):
                if self.killed is None:
                    self._crash_worker_of(running)  # not yet seen running on a worker: next look
                elif self._retried():  # the pod goes once the retry awaits it
                    _release_pod(self.core, name)
                    self.released.add(name)
                    self.say(f"{name}: the drain's pod let go")
            elif name in self.released and name not in self.readied and deferred and not running:
                if kube_nodes.kubelet_version(node) != KUBERNETES_NEW:
                    continue
                _report_ready(self.core, name)
                self.readied.add(name)
                self.say(f"{name}: kubelet reports Ready")
        return False

    def _crash_worker_of(self, running: list[dict[str, Any]]) -> None:
        for ti in running:
            worker = ti.get("hostname")
            if worker not in DEFAULT_WORKERS:
                continue
            every = self.airflow.task_instances(DAG_ID, self.run_id)
            self.casualties = [
                (t["task_id"], t["map_index"])
                for t in every
                if t["state"] == "running" and t["hostname"] == worker
            ]
            pids = self.airflow.crash(worker)
            self.killed_at = datetime.now(UTC)
            self.killed = {"task_id": ti["task_id"], "map_index": ti["map_index"], "worker": worker}
            self.say(
                f"{ti['task_id']}[{ti['map_index']}] mid-drain on {worker}: "
                f"worker SIGKILLed ({len(pids)} processes, the task process among them)"
            )
            return

    def _retried(self) -> bool:
        assert self.killed is not None
        return any(
            t["try_number"] >= 2 and t["state"] in ("running", "deferred", "success") for t in self._tries()
        )

    def _tries(self) -> list[dict[str, Any]]:
        assert self.killed is not None
        return self.airflow.tries(DAG_ID, self.run_id, self.killed["task_id"], self.killed["map_index"])


def _at(stamp: str | None) -> datetime:
    assert stamp, "no timestamp"
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_two_celery_workers_share_the_run_and_a_worker_killed_mid_drain_is_taken_over(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    admin = cluster.admin_client()
    core = client.CoreV1Api(admin)
    _hold_every_worker(core)
    with (
        PdbWatcher(admin) as watcher,
        CordonWatcher(admin) as cordons,
        celery_airflow(cluster, tmp_path) as airflow,
    ):
        began = time.monotonic()
        run_id = airflow.trigger(DAG_ID, CONF)
        kubelet = Kubelet(airflow, run_id, core)
        wait_until(f"run {run_id} ended", kubelet.step, 2400, interval=2)
        wall = time.monotonic() - began
        kubelet.say(f"run {run_id} ended")
        state = airflow.run_state(DAG_ID, run_id)
        every = airflow.task_instances(DAG_ID, run_id)
        tries = kubelet._tries() if kubelet.killed else []
    record = RunRecord(cluster.orchestrator_client(), run_id).load()
    assert state == "success", (state, record.get("events"))
    assert verdict(record) == "upgraded"

    # Every try that ran names its worker: each task instance's last try, and the killed
    # task's first one (its last ran elsewhere).
    ran = [t["hostname"] for t in every if t["hostname"]] + [
        t["hostname"] for t in tries if t["try_number"] == 1
    ]
    per_worker = Counter(ran)
    print(f"run wall time {wall:.0f} s; task tries per worker: {dict(per_worker)}")
    assert set(per_worker) <= set(CELERY_WORKERS), per_worker

    # The killed task: its first try on the crashed worker, its retry on the other one.
    assert kubelet.killed is not None, "no node task was caught mid-drain"
    crashed = kubelet.killed["worker"]
    (survivor,) = DEFAULT_WORKERS - {crashed}
    by_try = {t["try_number"]: t for t in tries}
    assert by_try[1]["hostname"] == crashed, by_try[1]
    assert by_try[1]["state"] in ("failed", "up_for_retry"), by_try[1]
    assert by_try[2]["hostname"] == survivor and by_try[2]["state"] == "success", by_try[2]
    assert max(by_try) == 2, tries
    # Every worker executed tasks.
    assert per_worker[crashed] > 0 and per_worker[survivor] > 0 and per_worker["worker-a"] > 0, per_worker
    # The near-cluster tasks went to their queue and so to worker-a, the rest elsewhere: the
    # probe's teardown, on another host, met the probe through the cluster.
    last = {t["task_id"]: t for t in every}
    near = [t for t in every if t["task_id"].rsplit(".", 1)[-1] in routing.NEAR_CLUSTER_TASKS]
    assert [t["task_id"] for t in near] == ["start_api_probe"], near
    assert near[0]["queue"] == NEAR_QUEUE and near[0]["hostname"] == "worker-a", near[0]
    assert all(t["queue"] == "default" for t in every if t not in near), every
    stopped = last["stop_api_probe"]
    assert stopped["state"] == "success" and stopped["hostname"] in DEFAULT_WORKERS, stopped
    print(f"API probe started on {near[0]['hostname']}, stopped from {stopped['hostname']}")
    assert record["probe"]["paths"]["reused"]["requests"] > 0
    assert kubelet.killed_at is not None
    noticed = (_at(by_try[1]["end_date"]) - kubelet.killed_at).total_seconds()
    picked_up = (_at(by_try[2]["start_date"]) - kubelet.killed_at).total_seconds()
    print(
        f"killed {kubelet.killed['task_id']}[{kubelet.killed['map_index']}] on {crashed}: "
        f"first try failed {noticed:.0f} s after the kill (heartbeat timeout {HEARTBEAT_TIMEOUT} s), "
        f"retry started on {survivor} {picked_up:.0f} s after it"
    )
    # Only what ran on the dead worker took a retry.
    casualties = set(kubelet.casualties)
    assert (kubelet.killed["task_id"], kubelet.killed["map_index"]) in casualties
    for t in every:
        if (t["task_id"], t["map_index"]) not in casualties:
            assert t["try_number"] <= 1, t  # 0: a slot never used

    assert_converged(core, record, watcher, cordons, NODES)
