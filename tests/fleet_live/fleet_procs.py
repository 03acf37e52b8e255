"""What the live fleet tests need beyond ``tests.airflow_live.airflow_procs``: a fleet of local
clusters as connections and a fleet file, the child runs read over the REST API, a watcher of
how many child runs are in flight, and a snapshot of what a cluster's nodes show."""

from __future__ import annotations

import json
import threading
import urllib.error
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from slipway.kube import nodes as kube_nodes
from slipway.localcluster.cluster import LocalCluster
from slipway.runrecord import NAMESPACE
from tests.airflow_live.airflow_procs import Airflow
from tests.dags.dagrun import named_connections

FLEET_DAG, CHILD_DAG = "k8s_fleet_upgrade", "k8s_cluster_upgrade"
IN_FLIGHT = ("queued", "running")


def conn_suffix(cluster: LocalCluster) -> str:
    return cluster.cfg.name.replace("-", "_")


def fleet_connections(clusters: Sequence[LocalCluster], home: Path, reports: Path) -> dict[str, str]:
    """Every cluster's two connections under ids of its own (``k8s_<name>``,
    ``slipway_platform_<name>``), as ``AIRFLOW_CONN_*`` variables."""
    env: dict[str, str] = {}
    for cluster in clusters:
        env |= named_connections(cluster, home, reports, conn_suffix(cluster))
    return env


def write_fleet(
    gitops: Path,
    file: str,
    request: dict[str, Any],
    canary: LocalCluster,
    production: Sequence[LocalCluster],
    *,
    max_concurrency: int,
    soak_seconds: int,
    canary_before: Sequence[dict[str, Any]] = (),
) -> None:
    """A two-stage fleet file: the canary stage (one cluster, behind ``canary_before`` gates),
    a soak, the production stage."""
    members = [(canary, "staging", True), *((c, "production", False) for c in production)]
    fleet = {
        "name": file.removesuffix(".yaml"),
        "request": request,
        "clusters": [
            {
                "name": c.cfg.name,
                "connection": f"k8s_{conn_suffix(c)}",
                "platform_connection": f"slipway_platform_{conn_suffix(c)}",
                "labels": {"environment": env, "region": "eu", "canary": is_canary},
            }
            for c, env, is_canary in members
        ],
        "strategy": {
            "stages": [
                {
                    "name": "canary",
                    "groups": [{"name": "canaries", "selector": {"canary": True}}],
                    "max_concurrency": 1,
                    "soak_seconds": soak_seconds,
                    "before": list(canary_before),
                },
                {
                    "name": "production",
                    "groups": [{"name": "prod", "selector": {"environment": "production"}}],
                    "max_concurrency": max_concurrency,
                },
            ]
        },
    }
    gitops.mkdir(parents=True, exist_ok=True)
    (gitops / file).write_text(yaml.safe_dump(fleet))


# ---- the REST API --------------------------------------------------------------------------


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def run(airflow: Airflow, dag_id: str, run_id: str) -> dict[str, Any]:
    return dict(airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))


def children(airflow: Airflow, fleet_run_id: str) -> dict[str, dict[str, Any]]:
    """The fleet run's child runs by cluster name (their run id is ``fleet__<run>__<cluster>``)."""
    out = airflow.api("GET", f"/api/v2/dags/{CHILD_DAG}/dagRuns?limit=100")
    prefix = f"fleet__{fleet_run_id}__"
    return {
        r["dag_run_id"].removeprefix(prefix): r for r in out["dag_runs"] if r["dag_run_id"].startswith(prefix)
    }


def task_log(airflow: Airflow, fleet_run_id: str, task_id: str) -> str:
    """Every attempt's log of one task of the fleet run, as the task processes wrote it."""
    folder = airflow.home / "logs" / f"dag_id={FLEET_DAG}" / f"run_id={fleet_run_id}" / f"task_id={task_id}"
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*.log")))


def hitl_detail(airflow: Airflow, fleet_run_id: str, task_id: str, map_index: int) -> dict[str, Any] | None:
    path = f"/api/v2/dags/{FLEET_DAG}/dagRuns/{fleet_run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"
    try:
        return dict(airflow.api("GET", path))
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None  # the gate has not asked yet
        raise


def answer(airflow: Airflow, fleet_run_id: str, task_id: str, map_index: int, option: str) -> None:
    path = f"/api/v2/dags/{FLEET_DAG}/dagRuns/{fleet_run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"
    airflow.api("PATCH", path, {"chosen_options": [option]})


@dataclass
class InFlightWatcher:
    """Polls the REST API for the fleet run's child runs that are queued or running, and keeps
    the most ever seen at once (a thread; what a human would see in the grid)."""

    airflow: Airflow
    fleet_run_id: str
    most: int = 0
    seen: list[tuple[str, ...]] = field(default_factory=list)
    polls: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> InFlightWatcher:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(1):
            try:
                found = children(self.airflow, self.fleet_run_id)
            except (urllib.error.URLError, OSError, ValueError) as err:
                self.errors.append(str(err))
                continue
            flying = tuple(sorted(name for name, r in found.items() if r["state"] in IN_FLIGHT))
            self.polls += 1
            self.most = max(self.most, len(flying))
            if flying and (not self.seen or self.seen[-1] != flying):
                self.seen.append(flying)


# ---- the clusters ----------------------------------------------------------------------------


def node_marks(cluster: LocalCluster) -> dict[str, tuple[str, bool, str]]:
    """Per node: kubelet version, cordoned, and every ``slipway.dev/`` annotation (what a run
    leaves on a node it touched)."""
    out: dict[str, tuple[str, bool, str]] = {}
    for node in client.CoreV1Api(cluster.admin_client()).list_node().items:
        ours = {k: v for k, v in (node.metadata.annotations or {}).items() if k.startswith("slipway.dev/")}
        out[node.metadata.name] = (
            kube_nodes.kubelet_version(node),
            kube_nodes.is_cordoned(node),
            json.dumps(ours, sort_keys=True),
        )
    return out


def worker_kubelets(cluster: LocalCluster) -> set[str]:
    return {kube_nodes.kubelet_version(n) for n in kube_nodes.list_workers(cluster.admin_client())}


def run_records(cluster: LocalCluster) -> list[str]:
    """The run records kept in the cluster (one ConfigMap per run that touched it)."""
    try:
        maps = client.CoreV1Api(cluster.admin_client()).list_namespaced_config_map(NAMESPACE).items
    except client.ApiException as err:
        if err.status == 404:
            return []  # no run ever wrote here
        raise
    return sorted(m.metadata.name for m in maps if m.metadata.name.startswith("slipway-run-"))
