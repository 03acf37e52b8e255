"""``k8s_fleet_upgrade`` under a real Airflow scheduler (`make test-fleet`, heavy).

Three local clusters (control plane and kubelets at the older release, two workers each), each
behind its own two Airflow connections, in a two-stage fleet: the canary stage (one cluster),
a soak, then the production stage (two clusters, ``max_concurrency`` 1). Airflow runs as
separate processes (api-server, scheduler with LocalExecutor, dag-processor, triggerer), and the
fleet run is triggered over the REST API, so the ``k8s_cluster_upgrade`` runs it starts really
execute, each on the cluster its own connections name.

1. an approval gate before the canary stage, rejected over the REST API, stops the fleet with
   the verdict ``rejected``: no child run, nothing touched;
   and a paused ``k8s_cluster_upgrade`` refuses the fleet at its start (its runs would stay
   queued forever): no child run, nothing touched;
2. a forced canary failure (the request's health check answers 500, so the canary's first
   worker batch fails) halts the wave: no child run for production, its nodes untouched;
3. the whole fleet, stage by stage: every cluster at the target, the canary finished (and
   soaked) before production started, and a watcher of the REST API saw at most one
   production cluster in flight.

Figures printed (``FIGURE`` lines): the fleet's wall time against the sum of its child runs
(each child's own wall time too), the most child runs the watcher saw in flight at once, and
the time from the canary child's failure to the fleet run's halt.

Each cluster has two workers, and the Airflow under test gets ``SLIPWAY_MAX_BATCHES`` 2 (a
deployment sizes it to its largest cluster): the child DAG has two batch slots, not eight, so
the scheduler and every task process parse a DAG a third the size.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import ETCD_NEW, KUBERNETES_NEW, KUBERNETES_OLD
from tests.airflow_live.airflow_procs import TERMINAL, Airflow, running_airflow
from tests.conftest import running_cluster
from tests.dags.dagrun import remove_never_evictable_samples
from tests.fleet_live.fleet_procs import (
    CHILD_DAG,
    FLEET_DAG,
    InFlightWatcher,
    answer,
    children,
    fleet_connections,
    hitl_detail,
    node_marks,
    run,
    run_records,
    task_log,
    when,
    worker_kubelets,
    write_fleet,
)
from tests.localhttp import QuietHandler, serving

# Each test waits on whole k8s_cluster_upgrade runs under a real scheduler: far beyond the
# suite's 15-minute default on a loaded 2-core machine.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(5400)]

# Another session of this module may run beside this one on other ports (SLIPWAY_TEST_BASE_PORT
# moves the clusters): the api-server port and how many production clusters are settings too.
API_PORT = int(os.environ.get("SLIPWAY_FLEET_API_PORT", "26500"))  # and +1, +2 for the log servers
PRODUCTION = int(os.environ.get("SLIPWAY_FLEET_PRODUCTION", "2"))
SOAK = 10  # between the canary stage and production
REQUEST = {
    "target_version": KUBERNETES_NEW,
    "approval": "never",
    "soak_seconds": 1,
    "force_bare_pods": True,
    "delete_emptydir_data": True,
}
WORKERS = 2  # per cluster
RUN_TIMEOUT = 3600


@dataclass
class Fleet:
    airflow: Airflow
    canary: LocalCluster
    production: tuple[LocalCluster, ...]
    gitops: Path
    reports: Path

    @property
    def clusters(self) -> tuple[LocalCluster, ...]:
        return (self.canary, *self.production)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    home = tmp_path_factory.mktemp("fleet-live")
    with contextlib.ExitStack() as stack:
        canary = stack.enter_context(running_cluster("fl-canary", 100, WORKERS))
        production = tuple(
            stack.enter_context(running_cluster(f"fl-prod-{chr(ord('a') + i)}", 200 + 100 * i, WORKERS))
            for i in range(PRODUCTION)
        )
        clusters = (canary, *production)
        for cluster in clusters:
            remove_never_evictable_samples(cluster)  # no quarantined node: every kubelet can move
        gitops, airflow_home = home / "gitops", home / "airflow"
        env = fleet_connections(clusters, airflow_home, airflow_home / "reports")
        env["SLIPWAY_GITOPS_DIR"] = str(gitops)
        env["SLIPWAY_MAX_BATCHES"] = str(WORKERS)  # batch slots: at most one node per batch
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():  # running_airflow passes the environment on
                patch.setenv(key, value)
            # The default connections point at the canary; every child run names its own.
            with running_airflow(canary, airflow_home, API_PORT, FLEET_DAG) as airflow:
                wait_until(f"DAG {CHILD_DAG} parsed", lambda: airflow.dag_loaded(CHILD_DAG), 600, interval=2)
                # DAGs start paused here; a deployment running fleets unpauses the child DAG.
                airflow.api("PATCH", f"/api/v2/dags/{CHILD_DAG}", {"is_paused": False})
                yield Fleet(airflow, canary, production, gitops, airflow_home / "reports")


def run_fleet(fleet: Fleet, file: str) -> str:
    run_id = fleet.airflow.trigger(FLEET_DAG, {"fleet_file": file})
    print(f"fleet run {run_id} ({file})", flush=True)
    return run_id


def ended(fleet: Fleet, run_id: str) -> bool:
    try:
        return fleet.airflow.run_state(FLEET_DAG, run_id) in TERMINAL
    except (urllib.error.URLError, OSError):
        return False  # a loaded api-server may miss one answer (30 s): ask again


def wait_ended(fleet: Fleet, run_id: str) -> str:
    wait_until(f"fleet run {run_id} ended", lambda: ended(fleet, run_id), RUN_TIMEOUT, interval=2)
    return fleet.airflow.run_state(FLEET_DAG, run_id)


def fleet_report(fleet: Fleet, run_id: str) -> dict[str, Any]:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in run_id)
    (found,) = [p for p in fleet.reports.rglob("fleet-report.json") if p.parent.name == safe]
    return dict(json.loads(found.read_text()))


def task_states(fleet: Fleet, run_id: str) -> dict[tuple[str, int], str | None]:
    tasks = fleet.airflow.task_instances(FLEET_DAG, run_id)
    return {(t["task_id"], t["map_index"]): t["state"] for t in tasks}


def test_a_rejected_gate_before_the_canary_stops_the_fleet_with_nothing_touched(fleet: Fleet) -> None:
    before = {c.cfg.name: (node_marks(c), run_records(c)) for c in fleet.clusters}
    write_fleet(
        fleet.gitops,
        "gate.yaml",
        REQUEST,
        fleet.canary,
        fleet.production,
        max_concurrency=1,
        soak_seconds=SOAK,
        canary_before=[{"kind": "approval"}],
    )
    run_id = run_fleet(fleet, "gate.yaml")
    wait_until(
        "the gate asks",
        lambda: hitl_detail(fleet.airflow, run_id, "approve_gate", 0) is not None,
        900,
        interval=2,
    )
    answer(fleet.airflow, run_id, "approve_gate", 0, "Reject")
    state = wait_ended(fleet, run_id)
    report = fleet_report(fleet, run_id)
    states = task_states(fleet, run_id)

    assert state == "failed"
    assert report["verdict"] == "rejected", report["decision"]
    assert report["decision"]["failed"] == "canary/before/0"
    assert states[("approve_gate", 0)] == "failed"
    assert [states[("upgrade_cluster", i)] for i in range(len(fleet.clusters))] == ["skipped"] * len(
        fleet.clusters
    )
    assert children(fleet.airflow, run_id) == {}
    assert {c.cfg.name: (node_marks(c), run_records(c)) for c in fleet.clusters} == before


def test_a_paused_child_dag_refuses_the_fleet_at_its_start_with_nothing_touched(fleet: Fleet) -> None:
    before = {c.cfg.name: (node_marks(c), run_records(c)) for c in fleet.clusters}
    write_fleet(
        fleet.gitops,
        "paused.yaml",
        REQUEST,
        fleet.canary,
        fleet.production,
        max_concurrency=1,
        soak_seconds=SOAK,
    )
    fleet.airflow.api("PATCH", f"/api/v2/dags/{CHILD_DAG}", {"is_paused": True})
    try:
        run_id = run_fleet(fleet, "paused.yaml")
        state = wait_ended(fleet, run_id)
    finally:
        fleet.airflow.api("PATCH", f"/api/v2/dags/{CHILD_DAG}", {"is_paused": False})
    states = task_states(fleet, run_id)

    assert state == "failed"
    assert states[("validate_fleet", -1)] == "failed"
    assert f"{CHILD_DAG} is paused" in task_log(fleet.airflow, run_id, "validate_fleet")
    assert children(fleet.airflow, run_id) == {}
    assert {c.cfg.name: (node_marks(c), run_records(c)) for c in fleet.clusters} == before


class BrokenApp(QuietHandler):
    """The application's health endpoint, broken: the canary's first worker batch fails."""

    def do_GET(self) -> None:
        self.send_response(HTTPStatus.INTERNAL_SERVER_ERROR)
        self.end_headers()


def test_a_failed_canary_halts_the_production_stage_with_nothing_touched_there(fleet: Fleet) -> None:
    canary = fleet.canary.cfg.name
    production = {c.cfg.name: c for c in fleet.production}
    before = {name: (node_marks(c), run_records(c)) for name, c in production.items()}
    assert all(worker_kubelets(c) == {KUBERNETES_OLD} for c in fleet.production)
    with serving(BrokenApp) as url:
        request = REQUEST | {"health_checks": [{"kind": "http", "url": f"{url}/healthz"}]}
        write_fleet(
            fleet.gitops,
            "broken.yaml",
            request,
            fleet.canary,
            fleet.production,
            max_concurrency=1,
            soak_seconds=SOAK,
        )
        run_id = run_fleet(fleet, "broken.yaml")
        with InFlightWatcher(fleet.airflow, run_id) as watcher:
            state = wait_ended(fleet, run_id)
    runs = children(fleet.airflow, run_id)
    report = fleet_report(fleet, run_id)
    states = task_states(fleet, run_id)
    fleet_run = run(fleet.airflow, FLEET_DAG, run_id)

    assert state == "failed"
    assert list(runs) == [canary], runs  # production never got a run
    assert runs[canary]["state"] == "failed"
    assert report["decision"]["failed"] == canary, report["decision"]
    assert report["verdict"] in ("failed", "rolled-back"), report["verdict"]
    rows = {r["cluster"]: r for r in report["clusters"]}
    assert rows[canary]["outcome"] == report["verdict"]
    assert [rows[name]["verdict"] for name in production] == ["not-started"] * len(production)
    assert sorted(report["decision"]["untouched"]) == sorted(production)
    assert states[("upgrade_cluster", 0)] == "failed"
    assert [states[("upgrade_cluster", i + 1)] for i in range(len(production))] == ["skipped"] * len(
        production
    )
    assert watcher.seen == [(canary,)], watcher.seen
    # It failed where the broken health check is asked: every control-plane step passed (none
    # rolled back), then the first worker batch's validation failed and that batch rolled back.
    canary_tasks = fleet.airflow.task_instances(CHILD_DAG, runs[canary]["dag_run_id"])
    child_states = {t["task_id"]: t["state"] for t in canary_tasks if t["map_index"] in (-1, None)}
    assert child_states["control_plane.upgrade_kube_scheduler"] == "success", child_states
    assert child_states["control_plane.rollback_control_plane"] == "skipped", child_states
    assert child_states["workers.batch_0.validate_batch"] == "failed", child_states
    assert child_states["workers.batch_0.rollback_batch"] == "success", child_states
    # Production: not a kubelet moved, no cordon, no slipway annotation, no run record.
    assert {name: (node_marks(c), run_records(c)) for name, c in production.items()} == before

    failed_at, halted_at = when(runs[canary]["end_date"]), when(fleet_run["end_date"])
    started_at = when(runs[canary]["start_date"])
    assert failed_at is not None and halted_at is not None and started_at is not None
    print(
        f"FIGURE canary failure -> fleet halt: {(halted_at - failed_at).total_seconds():.1f} s "
        f"(canary run {runs[canary]['state']} at {failed_at:%H:%M:%S}, "
        f"fleet run ended {halted_at:%H:%M:%S}); "
        f"the canary's run took {(failed_at - started_at).total_seconds():.0f} s; "
        f"most child runs in flight at once: {watcher.most} ({watcher.polls} polls)",
        flush=True,
    )


def test_the_fleet_upgrades_every_cluster_stage_by_stage_within_max_concurrency(fleet: Fleet) -> None:
    canary = fleet.canary.cfg.name
    production = [c.cfg.name for c in fleet.production]
    write_fleet(
        fleet.gitops,
        "fleet.yaml",
        REQUEST,
        fleet.canary,
        fleet.production,
        max_concurrency=1,
        soak_seconds=SOAK,
    )
    run_id = run_fleet(fleet, "fleet.yaml")
    with InFlightWatcher(fleet.airflow, run_id) as watcher:
        state = wait_ended(fleet, run_id)
    runs = children(fleet.airflow, run_id)
    report = fleet_report(fleet, run_id)
    fleet_run = run(fleet.airflow, FLEET_DAG, run_id)

    assert state == "success", report["decision"]
    assert report["verdict"] == "upgraded"
    assert sorted(runs) == sorted([canary, *production])
    assert all(r["state"] == "success" for r in runs.values()), runs
    for cluster in fleet.clusters:
        versions = cluster.versions()
        for name in ("kube-apiserver-0", "kube-apiserver-1", "kube-controller-manager", "kube-scheduler"):
            assert versions[name] == KUBERNETES_NEW, (cluster.cfg.name, name, versions)
        assert all(versions[f"etcd-{i}"] == ETCD_NEW for i in range(cluster.cfg.etcd_members)), versions
        assert worker_kubelets(cluster) == {KUBERNETES_NEW}, cluster.cfg.name
        assert not any(cordoned for _, cordoned, _ in node_marks(cluster).values()), cluster.cfg.name

    # Stage by stage: the canary's run ended, and the fleet soaked, before production's was created.
    canary_end = when(runs[canary]["end_date"])
    assert canary_end is not None
    for name in production:
        created, started = when(runs[name]["queued_at"]), when(runs[name]["start_date"])
        assert created is not None and started is not None
        assert canary_end + timedelta(seconds=SOAK) <= created <= started, (name, runs[name], runs[canary])
    # max_concurrency 1: never two child runs in flight (the watcher), nor overlapping dates.
    assert watcher.polls > 0 and watcher.errors == [], watcher.errors
    assert watcher.most == 1, watcher.seen
    assert [s for s in watcher.seen if len(s) > 1] == []
    spans = sorted((r["queued_at"], r["end_date"]) for r in runs.values())
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert when(end) is not None and when(start) is not None, spans
        assert when(end) <= when(start), spans  # type: ignore[operator]

    fleet_start, fleet_end = when(fleet_run["start_date"]), when(fleet_run["end_date"])
    assert fleet_start is not None and fleet_end is not None
    durations = {}
    for name, r in runs.items():
        start, end = when(r["start_date"]), when(r["end_date"])
        assert start is not None and end is not None
        durations[name] = (end - start).total_seconds()
    wall, total = (fleet_end - fleet_start).total_seconds(), sum(durations.values())
    print(
        f"FIGURE fleet wall time {wall:.0f} s vs sum of the {len(durations)} cluster runs {total:.0f} s "
        f"({wall / total:.2f}x); per cluster: "
        + ", ".join(f"{n} {s:.0f} s" for n, s in sorted(durations.items()))
        + f"; most child runs in flight at once: {watcher.most} ({watcher.polls} polls)",
        flush=True,
    )
