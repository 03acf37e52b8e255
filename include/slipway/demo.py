"""``make demo``: the local HA cluster at the older release, Airflow standalone, and the
upgrade DAG triggered through Airflow's REST API, followed in the terminal.

A second run starts from a clean cluster: the previous demo's Airflow and cluster are
stopped and purged first. ``--down`` only stops them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from slipway.airflow_env import REPO, airflow_env
from slipway.localcluster.cluster import ClusterError, LocalCluster
from slipway.localcluster.config import ClusterConfig, default_state_root
from slipway.localcluster.health import NotHealthy, wait_until
from slipway.localcluster.kit import KUBERNETES_NEW
from slipway.localcluster.workloads import install_samples

DEMO_DIR = REPO / ".state" / "demo"
AIRFLOW_HOME = DEMO_DIR / "airflow-home"
REPORTS_DIR = REPO / "reports"
API_PORT = 28080
DAG_ID = "k8s_cluster_upgrade"
TERMINAL_STATES = {"success", "failed"}


def _api(method: str, path: str, token: str | None = None, body: Any = None) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{API_PORT}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


# The api-server serves at most [api] maximum_page_limit items per page (100 by default) and
# silently caps a larger ``limit``: a 100-node run has more task instances than that.
PAGE = 100


def every_page(get: Callable[[str], Any], path: str, key: str) -> list[Any]:
    """Every item of a paged REST collection: ``get(path-with-paging)`` per page until
    ``total_entries`` are read (``path`` may carry its own query)."""
    items: list[Any] = []
    joiner = "&" if "?" in path else "?"
    while True:
        page = get(f"{path}{joiner}limit={PAGE}&offset={len(items)}")
        items += page[key]
        if not page[key] or len(items) >= int(page.get("total_entries", len(items))):
            return items


def task_instances(token: str, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Every task instance of the run, all pages."""
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
    return every_page(lambda p: _api("GET", p, token), path, "task_instances")


def _stop_airflow() -> None:
    pidfile = DEMO_DIR / "airflow.pid"
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    # standalone's scheduler, api-server, dag-processor and triggerer (and their task
    # processes) do not all share its process group: stop the whole tree.
    try:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=60)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    pidfile.unlink(missing_ok=True)


def _cluster() -> LocalCluster:
    return LocalCluster(ClusterConfig(name="slipway", state_root=default_state_root()))


def _start_airflow(env: dict[str, str]) -> subprocess.Popen[bytes]:
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    log = (DEMO_DIR / "airflow.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "standalone"],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (DEMO_DIR / "airflow.pid").write_text(str(proc.pid))
    return proc


def _password() -> str:
    data = json.loads((AIRFLOW_HOME / "simple_auth_manager_passwords.json.generated").read_text())
    return str(data["admin"])


def _token() -> str:
    req = urllib.request.Request(
        f"http://127.0.0.1:{API_PORT}/auth/token",
        method="POST",
        data=json.dumps({"username": "admin", "password": _password()}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.loads(resp.read())["access_token"])


def _api_up() -> bool:
    try:
        _api("GET", "/api/v2/monitor/health")
        return (AIRFLOW_HOME / "simple_auth_manager_passwords.json.generated").exists()
    except (urllib.error.URLError, OSError, ValueError):
        return False


def execution_api_up(api_port: int, timeout: float = 120.0) -> bool:
    """The api-server builds its execution API on first use, and while it does (15 to 60 s on
    a loaded 2-core machine) it answers nothing else: the first task process's call would time
    out and the task fail before it starts. Asked once before anything runs, it is warm."""
    try:
        url = f"http://127.0.0.1:{api_port}/execution/health"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _dag_loaded(token: str) -> bool:
    try:
        _api("GET", f"/api/v2/dags/{DAG_ID}", token)
        return True
    except urllib.error.HTTPError:
        return False


def follow(token: str, run_id: str) -> str:
    """Print each task's state change until the run ends; return the run's final state."""
    seen: dict[str, str] = {}
    while True:
        run = _api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", token)
        for ti in task_instances(token, DAG_ID, run_id):
            key = ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
            if ti["state"] and seen.get(key) != ti["state"]:
                seen[key] = ti["state"]
                print(f"  {time.strftime('%H:%M:%S')} {key:60s} {ti['state']}", flush=True)
        if run["state"] in TERMINAL_STATES:
            return str(run["state"])
        time.sleep(3)  # polling an external REST API for the human watching; not a test wait


def summary(report: dict[str, Any]) -> str:
    """The lines an operator reads first: verdict, time per phase, the API probe's figures."""
    from slipway.reports.run import phase_timings

    lines = [f"verdict: {report.get('verdict')}"]
    lines += [f"  {phase:14s} {seconds:7.0f}s" for phase, seconds in phase_timings(report.get("events", []))]
    probe = report.get("control_plane", {}).get("probe")
    if probe:
        lines.append(
            f"API probe: {probe['requests']} requests, {probe['failures']} failed, "
            f"p99 {probe['p99_ms']:.1f} ms vs baseline {probe['baseline_p99_ms']:.1f} ms "
            f"({probe['p99_ratio']:.2f}x)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Slipway demo")
    parser.add_argument("--down", action="store_true", help="stop the demo's Airflow and cluster")
    parser.add_argument("--no-trigger", action="store_true", help="start everything, trigger nothing")
    args = parser.parse_args(argv)
    _stop_airflow()
    # A fresh metadata database too: runs left from an earlier demo must not resume
    # against the new cluster.
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)
    cluster = _cluster()
    cluster.down(purge=True)
    if args.down:
        print("demo stopped")
        return 0
    started = time.monotonic()
    try:
        cluster.up()
        install_samples(cluster.admin_client())
    except (ClusterError, NotHealthy) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"local cluster up at {cluster.cfg.server_url} ({time.monotonic() - started:.0f}s)", flush=True)
    env = airflow_env(
        AIRFLOW_HOME,
        cluster,
        reports_dir=REPORTS_DIR,
        api_port=API_PORT,
    )
    _start_airflow(env)
    try:
        wait_until("airflow api-server", _api_up, 300, interval=2)
        token = _token()
        wait_until(f"DAG {DAG_ID} parsed", lambda: _dag_loaded(token), 300, interval=2)
        wait_until("the execution API", lambda: execution_api_up(API_PORT), 600, interval=2)
    except NotHealthy as err:
        print(f"error: {err}; see {DEMO_DIR / 'airflow.log'}", file=sys.stderr)
        return 1
    ui = f"http://127.0.0.1:{API_PORT}"
    print(f"Airflow UI: {ui}  (login admin / {_password()})", flush=True)
    if args.no_trigger:
        return 0
    # Two nodes per pool at a time (50 % of a 4-node pool) keeps the demo to six batches;
    # PDBs that never allow an eviction quarantine their nodes instead of stalling the run.
    conf = {
        "target_version": KUBERNETES_NEW,
        "blocked_drain_policy": "quarantine",
        "approval": "never",
        "max_unavailable_percent": 50,
        "soak_seconds": 10,
        "force_bare_pods": True,
        "delete_emptydir_data": True,
    }
    # Every DAG starts paused (scheduled ones change clusters on their own): unpause only this one.
    _api("PATCH", f"/api/v2/dags/{DAG_ID}", token, {"is_paused": False})
    run = _api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", token, {"logical_date": None, "conf": conf})
    print(f"triggered {DAG_ID} run {run['dag_run_id']} with {json.dumps(conf)}", flush=True)
    state = follow(token, run["dag_run_id"])
    reports = sorted(REPORTS_DIR.glob("**/upgrade-report.md"), key=lambda p: p.stat().st_mtime)
    print(f"run finished: {state} in {time.monotonic() - started:.0f}s")
    if reports:
        print(f"report: {reports[-1]}")
        print(summary(json.loads(reports[-1].with_suffix(".json").read_text())))
    print(f"Airflow UI: {ui}   stop everything with: make demo-down")
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
