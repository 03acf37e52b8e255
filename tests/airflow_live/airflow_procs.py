"""Airflow as a deployment runs it: the api-server, scheduler, dag-processor and triggerer as
separate processes (LocalExecutor, one metadata database), each of which a test may kill and
start again, and the REST API a user triggers runs with."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from slipway import demo
from slipway.airflow_env import airflow_env
from slipway.demo import every_page
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until

AIRFLOW = Path(sys.executable).parent / "airflow"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
TERMINAL = ("success", "failed")


@dataclass
class Airflow:
    """One Airflow installation in ``home`` whose components run as processes of their own."""

    home: Path
    env: dict[str, str]
    api_port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    token: str = ""
    request_timeout: float = 30.0  # seconds per REST call; a loaded machine may need more

    # ---- processes -------------------------------------------------------------------------
    def start(self, component: str) -> subprocess.Popen[bytes]:
        log = (self.home / f"{component}.log").open("ab")
        proc = subprocess.Popen(
            [str(AIRFLOW), component],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: killing it takes its children too
        )
        self.procs[component] = proc
        return proc

    def wait_ready(self, dag_id: str) -> None:
        """Until the api-server answers, ``dag_id`` is parsed and the execution API is warm
        (built on first use, it answers nothing else meanwhile), logged in for REST calls."""
        wait_until("airflow api-server", self.api_up, 600, interval=2)
        self.login()
        wait_until(f"DAG {dag_id} parsed", lambda: self.dag_loaded(dag_id), 600, interval=2)
        wait_until("the execution API", self.execution_api_up, 600, interval=2)

    def kill(self, component: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill ``component`` and every process of its group (a crash, not a clean stop)."""
        proc = self.procs.pop(component)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=120)

    def start_process(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` as process ``name`` with an environment and working folder of its own
        (a Celery worker on its own host, say), logging to ``cwd/<name>.log``."""
        cwd.mkdir(parents=True, exist_ok=True)
        log = (cwd / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def crash(self, name: str) -> list[int]:
        """SIGKILL ``name`` as its host dying would: its group and every process it started,
        also those in groups of their own (Airflow puts each task process in its own group).
        Returns the pids killed."""
        proc = self.procs.pop(name)
        try:
            tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
        except psutil.NoSuchProcess:
            tree = [proc.pid]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=120)
        return tree

    def stop_all(self) -> None:
        """SIGTERM every component's group, give each a minute, then SIGKILL the group: a
        process that ignores SIGTERM, and a task process its leader left behind, end too."""
        procs, self.procs = dict(self.procs), {}
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=120)

    # ---- REST API ----------------------------------------------------------------------------
    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=self.request_timeout) as resp:
            return json.loads(resp.read() or b"null")

    def login(self) -> None:
        passwords = self.home / "simple_auth_manager_passwords.json.generated"
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/auth/token",
            method="POST",
            data=json.dumps(
                {"username": "admin", "password": json.loads(passwords.read_text())["admin"]}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            self.token = str(json.loads(resp.read())["access_token"])

    def api_up(self) -> bool:
        try:
            self.api("GET", "/api/v2/monitor/health")
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return (self.home / "simple_auth_manager_passwords.json.generated").exists()

    def execution_api_up(self) -> bool:
        return demo.execution_api_up(self.api_port, max(self.request_timeout, 120))

    def dag_loaded(self, dag_id: str) -> bool:
        try:
            self.api("GET", f"/api/v2/dags/{dag_id}")
        except urllib.error.HTTPError:
            return False
        return True

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return every_page(lambda p: self.api("GET", p), path, "task_instances")

    def task_instances_in(self, dag_id: str, run_id: str, states: tuple[str, ...]) -> list[dict[str, Any]]:
        """The run's task instances in ``states`` only (a cheap poll on a big DAG)."""
        query = "&".join(f"state={s}" for s in states)
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?{query}"
        return every_page(lambda p: self.api("GET", p), path, "task_instances")

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/tries"
        return list(self.api("GET", path)["task_instances"])


@contextlib.contextmanager
def running_airflow(cluster: LocalCluster, home: Path, api_port: int, dag_id: str) -> Iterator[Airflow]:
    """Every component started against a fresh metadata database, ``dag_id`` parsed; all
    stopped afterwards, also when the test fails."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**process_env(cluster, home, api_port), "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, check=True, capture_output=True)
    airflow = Airflow(home, env, api_port)
    try:
        for component in COMPONENTS:
            airflow.start(component)
        airflow.wait_ready(dag_id)
        yield airflow
    finally:
        airflow.stop_all()


def process_env(cluster: LocalCluster, home: Path, api_port: int) -> dict[str, str]:
    """The environment every component shares (all but the executor and its database)."""
    return {
        **os.environ,
        **airflow_env(
            home,
            cluster,
            reports_dir=home / "reports",
            api_port=api_port,
        ),
        "PATH": f"{AIRFLOW.parent}:{os.environ['PATH']}",
        # Separate processes must share the secrets standalone would share in memory: the
        # execution API's token signing key and the api-server's session key.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(api_port + 1),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(api_port + 2),
    }
