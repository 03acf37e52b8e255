"""The worker phase THROUGH AIRFLOW (scheduler, dag-processor, triggerer, api-server; the run
triggered over the REST API) against a kubectl script on the same cluster, same batches.

- **airflow**: ``k8s_worker_upgrade`` run by ``airflow standalone`` with the project's
  connections, 1-node batches (10 % max unavailable of pools of at most 19 nodes),
  ``soak_seconds=1``. Every task instance is read back over the REST API.
- **script**: the batches the Airflow run actually made, replayed by ``kubectl drain`` →
  the local platform's kubelet upgrade (the kwok node reports the new kubelet) →
  ``kubectl wait Ready`` → ``kubectl uncordon`` (``bench_workers.run_script``), after every
  worker was put back at the old kubelet.

Prints the wall times, the ratio airflow/script and where Airflow's time goes: per batch,
per task (scheduling latency queued → start and previous end → next start, run time,
process start + DAG parse before the task's code, deferred time). A benchmark, not a test.

    python bench/bench_airflow.py [--nodes 30] [--base-port 29000] [--api-port 29880]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client

import bench_workers  # same folder: its load, reset and kubectl script are this bench's baseline
from slipway import demo
from slipway.airflow_env import airflow_env
from slipway.kube import nodes as kube_nodes
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.config import ClusterConfig
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from slipway.localcluster.workloads import install_samples
from slipway.runrecord import RunRecord

DAG_ID = "k8s_worker_upgrade"
RUN_TIMEOUT = 4 * 3600.0
BATCH_TASK = re.compile(r"^workers\.batch_(\d+)\.(\w+)$")


def point_demo_at(home: Path, api_port: int) -> None:
    """demo.py's helpers read module constants; aim them at this bench's folder and port
    (the demo's own Airflow on 28080 and its folder are left alone)."""
    demo.DEMO_DIR = home
    demo.AIRFLOW_HOME = home / "airflow-home"
    demo.API_PORT = api_port


def start_cluster(args: argparse.Namespace) -> LocalCluster:
    """Control plane at the new release, kubelets one behind: the worker-only DAG's job."""
    cfg = ClusterConfig(
        name="bench-airflow",
        base_port=args.base_port,
        nodes=args.nodes,
        state_root=Path(tempfile.mkdtemp(prefix="slipway-bench-airflow-")),
        kubernetes_version=KUBERNETES_NEW,
        kubelet_version=KUBERNETES_OLD,
    )
    cluster = LocalCluster(cfg)
    cluster.down(purge=True)
    cluster.up()
    install_samples(cluster.admin_client())
    # Single-replica and zero-budget samples would block (or quarantine) both tools alike; drop them.
    apps, policy = client.AppsV1Api(cluster.admin_client()), client.PolicyV1Api(cluster.admin_client())
    for name in ("payments-api", "ledger"):
        apps.delete_namespaced_deployment(name, "shop")
        policy.delete_namespaced_pod_disruption_budget(name, "shop")
    bench_workers.add_load(cluster, args.nodes)
    return cluster


def start_airflow(cluster: LocalCluster, home: Path, api_port: int, slots: int) -> str:
    """``airflow standalone`` with the project's connections; returns an API token."""
    os.environ["SLIPWAY_MAX_BATCHES"] = str(slots)  # airflow_env passes it on to the DAG files
    env = airflow_env(
        demo.AIRFLOW_HOME,
        cluster,
        reports_dir=home / "reports",
        api_port=api_port,
    )
    # Log servers on ports of this bench's own, not the defaults another Airflow may hold.
    env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(api_port + 1)
    env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(api_port + 2)
    demo._start_airflow(env)
    wait_until("airflow api-server", demo._api_up, 600, interval=2)
    token = demo._token()
    wait_until(f"DAG {DAG_ID} parsed", lambda: _dag_loaded(token), 600, interval=2)
    wait_until("the execution API", lambda: demo.execution_api_up(api_port), 600, interval=2)
    return token


def _dag_loaded(token: str) -> bool:
    try:
        demo._api("GET", f"/api/v2/dags/{DAG_ID}", token)
        return True
    except urllib.error.HTTPError:
        return False


def run_through_airflow(token: str) -> tuple[str, str, float]:
    """Trigger the worker DAG over the REST API and wait for it; (run id, state, wall seconds)."""
    conf = {
        "target_version": KUBERNETES_NEW,
        "max_unavailable_percent": 10,
        "soak_seconds": 1,
        "approval": "never",
        "blocked_drain_policy": "quarantine",
        "force_bare_pods": True,
        "delete_emptydir_data": True,
    }
    demo._api("PATCH", f"/api/v2/dags/{DAG_ID}", token, {"is_paused": False})
    started = time.monotonic()
    run = demo._api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", token, {"logical_date": None, "conf": conf})
    run_id = str(run["dag_run_id"])
    print(f"triggered {DAG_ID} run {run_id} with {json.dumps(conf)}", flush=True)
    state = ""
    done = 0

    def finished() -> bool:
        nonlocal state, done
        try:
            state = demo._api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", token)["state"]
            tis = task_instances(token, run_id)
        except (OSError, urllib.error.URLError) as err:
            # A loaded machine's api-server may miss the 30 s timeout: ask again later.
            print(f"  api-server did not answer ({err}); asking again", flush=True)
            return False
        validated = sum(
            1 for ti in tis if ti["task_id"].endswith(".validate_batch") and ti["state"] == "success"
        )
        if validated != done:
            done = validated
            print(f"  {time.monotonic() - started:7.1f}s  {done} batches validated", flush=True)
        return state in demo.TERMINAL_STATES

    wait_until(f"run {run_id} finished", finished, RUN_TIMEOUT, interval=5)
    return run_id, state, time.monotonic() - started


def task_instances(token: str, run_id: str) -> list[dict[str, Any]]:
    return demo.task_instances(token, DAG_ID, run_id)


def _t(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass
class Ti:
    task_id: str
    map_index: int
    state: str
    queued: datetime | None
    start: datetime | None
    end: datetime | None
    duration: float | None
    tries: int

    @property
    def batch(self) -> int | None:
        m = BATCH_TASK.match(self.task_id)
        return int(m.group(1)) if m else None

    @property
    def step(self) -> str:
        m = BATCH_TASK.match(self.task_id)
        return m.group(2) if m else self.task_id


def parse_tis(raw: Iterable[dict[str, Any]]) -> list[Ti]:
    return [
        Ti(
            task_id=ti["task_id"],
            map_index=ti["map_index"],
            state=ti["state"] or "none",
            queued=_t(ti.get("queued_when")),
            start=_t(ti.get("start_date")),
            end=_t(ti.get("end_date")),
            duration=ti.get("duration"),
            tries=int(ti.get("try_number") or 0),
        )
        for ti in raw
    ]


def _secs(a: datetime | None, b: datetime | None) -> float | None:
    return (b - a).total_seconds() if a and b else None


def _med(values: Iterable[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    return f"median {statistics.median(vals):.1f}s (min {min(vals):.1f}, max {max(vals):.1f}, n={len(vals)})"


def log_figures(home: Path, run_id: str, ti: Ti) -> dict[str, float]:
    """From a task's log files (every attempt and resume): the DAG file parse the task
    process did (``dag_file_parse_ms``), its whole pre-execute phase (bundle, parse, the
    task's start over the execution API), its post-execute phase (XCom push, state report)
    and the seconds between a deferral and the resume, when there was one."""
    folder = (
        home / "airflow-home" / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={ti.task_id}"
    )
    if ti.map_index >= 0:
        folder = folder / f"map_index={ti.map_index}"
    out: dict[str, float] = {}
    for path in sorted(folder.glob("attempt=*.log")):
        opened: tuple[str, datetime] | None = None
        code_from: datetime | None = None
        deferred_at: datetime | None = None
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
                when, event = datetime.fromisoformat(entry["timestamp"]), str(entry.get("event", ""))
            except (ValueError, KeyError, TypeError):
                continue
            if "dag_file_parse_ms" in entry:
                out["parse"] = out.get("parse", 0.0) + float(entry["dag_file_parse_ms"]) / 1000
            if event.startswith("::group::"):
                if event == "::group::Post Execute" and code_from and "first_line" not in out:
                    out["first_line"] = (when - code_from).total_seconds()
                opened = (event.removeprefix("::group::"), when)
            elif event == "::endgroup::" and opened:
                key = {"Pre Execute": "pre_execute", "Post Execute": "post_execute"}.get(opened[0])
                if key:
                    out[key] = out.get(key, 0.0) + (when - opened[1]).total_seconds()
                code_from = when if key == "pre_execute" else None
                opened = None
            elif code_from and "first_line" not in out:
                # The task code's first own log line: for a node task, its pre-drain check.
                out["first_line"] = (when - code_from).total_seconds()
            elif "defer" in event.lower() and deferred_at is None:
                deferred_at = when
            elif deferred_at and ("resum" in event.lower() or "trigger" in event.lower()):
                out["deferred"] = out.get("deferred", 0.0) + (when - deferred_at).total_seconds()
                deferred_at = None
    return out


def analyse(tis: list[Ti], home: Path, run_id: str, wall: float | None) -> dict[str, Any]:
    # A task the scheduler skipped (trigger rule) gets a start date but never ran a process.
    ran = [t for t in tis if t.start is not None and (t.state != "skipped" or (t.duration or 0) > 0)]
    batches = sorted({t.batch for t in ran if t.batch is not None and t.step == "upgrade_node"})
    by = {(t.batch, t.step): [u for u in ran if u.batch == t.batch and u.step == t.step] for t in ran}
    spans, periods, gaps, queued_to_start = [], [], [], []
    # The first batch waits on the tasks before the worker phase (the cluster lease).
    opened = by[(batches[0], "select_batch")][0].start if batches else None
    before = [t.end for t in ran if t.batch is None and t.end and opened and t.end <= opened]
    prev_end: datetime | None = max(before, default=None)
    for k in batches:
        select, nodes, validate = (
            by[(k, "select_batch")],
            by[(k, "upgrade_node")],
            by.get((k, "validate_batch"), []),
        )
        if not validate:
            continue
        v_end = validate[0].end
        spans.append(_secs(select[0].start, v_end))
        periods.append(_secs(prev_end or select[0].start, v_end))
        gaps.append(_secs(prev_end, select[0].start))
        gaps.extend(_secs(select[0].end, n.start) for n in nodes)
        gaps.append(_secs(max((n.end for n in nodes if n.end), default=None), validate[0].start))
        prev_end = v_end
    queued_to_start = [_secs(t.queued, t.start) for t in ran]
    first = min((t.start for t in ran if t.start), default=None)
    last = max((t.end for t in ran if t.end), default=None)
    worker_tis = [t for t in ran if t.batch is not None]
    phase = _secs(
        min((t.start for t in worker_tis if t.start), default=None),
        max((t.end for t in worker_tis if t.end), default=None),
    )
    logs = {(t.task_id, t.map_index): log_figures(home, run_id, t) for t in ran}
    return {
        "wall": wall,
        "first_start_to_last_end": _secs(first, last),
        "worker_phase": phase,
        "batches": len(spans),
        "spans": spans,
        "periods": periods,
        "gaps": gaps,
        "queued_to_start": queued_to_start,
        "durations": {
            step: [t.duration for t in ran if t.step == step] for step in sorted({t.step for t in ran})
        },
        "starts": len(ran) + sum(max(0, t.tries - 1) for t in ran),
        "task_instances": len(tis),
        "skipped": sum(1 for t in tis if t.state == "skipped"),
        "parse": [v.get("parse") for v in logs.values()],
        "pre_execute": [v.get("pre_execute") for v in logs.values()],
        "post_execute": [v.get("post_execute") for v in logs.values()],
        "deferred": [v.get("deferred") for v in logs.values() if "deferred" in v],
        "node_first_line": [
            v.get("first_line") for (task, _), v in logs.items() if task.endswith(".upgrade_node")
        ],
        "run_time_total": sum(t.duration or 0 for t in ran),
        "chain": _where_it_goes(worker_tis, logs, gaps),
    }


def _where_it_goes(
    worker_tis: list[Ti], logs: dict[tuple[str, int], dict[str, float]], gaps: list[float | None]
) -> dict[str, float]:
    """The batch chain's time split: waiting between tasks, then inside the tasks (parse, the
    rest of pre/post-execute, deferred, the task's own code). Exact for 1-node batches,
    whose tasks run one after another; summed over parallel node tasks otherwise."""
    out = {"between tasks (scheduling)": sum(g for g in gaps if g is not None)}
    parse = pre_post = deferred = code = 0.0
    for t in worker_tis:
        fig = logs.get((t.task_id, t.map_index), {})
        run = t.duration or 0.0
        parse += fig.get("parse", 0.0)
        pre_post += fig.get("pre_execute", 0.0) + fig.get("post_execute", 0.0) - fig.get("parse", 0.0)
        deferred += fig.get("deferred", 0.0)
        code += run - fig.get("pre_execute", 0.0) - fig.get("post_execute", 0.0) - fig.get("deferred", 0.0)
    out["DAG parse in task processes"] = parse
    out["rest of pre/post-execute"] = pre_post
    out["deferred (triggerer)"] = deferred
    out["task code"] = code
    return out


def airflow_batches(cluster: LocalCluster, run_id: str) -> list[list[str]]:
    """The batches the Airflow run made, from its run record (the cluster is the source of truth)."""
    data = RunRecord(cluster.orchestrator_client(), run_id).load()
    return [list(b["nodes"]) for b in data.get("batches", []) if b.get("nodes")]


def reset_workers(cluster: LocalCluster) -> None:
    """Every worker back at the old kubelet, uncordoned and Ready, the load whole again."""
    bench_workers.reset(cluster)

    def settled() -> bool:
        workers = kube_nodes.list_workers(cluster.admin_client())
        return all(
            kube_nodes.kubelet_version(n) == KUBERNETES_OLD and kube_nodes.node_ready(n) for n in workers
        )

    wait_until("workers back at the old kubelet", settled, 300, interval=1)
    apps = client.AppsV1Api(cluster.admin_client())

    def load_whole() -> bool:
        d = apps.read_namespaced_deployment("bench-load", "default")
        return bool((d.status.available_replicas or 0) == d.spec.replicas)

    wait_until("bench load available", load_whole, 600, interval=1)


def run_script(cluster: LocalCluster, plan: list[list[str]]) -> tuple[dict[str, float], list[float]]:
    """bench_workers' kubectl script, one batch at a time so each batch is timed too."""
    total: dict[str, float] = {}
    per_batch = []
    for batch in plan:
        spent = bench_workers.run_script(cluster, [batch])
        per_batch.append(spent["total"])
        for key, value in spent.items():
            total[key] = total.get(key, 0.0) + value
    return total, per_batch


def report(
    figures: dict[str, Any], script: dict[str, float] | None, per_batch: list[float], plan: list[list[str]]
) -> None:
    f = figures
    print("== through Airflow (k8s_worker_upgrade, airflow standalone, REST-triggered)")
    if f["wall"] is not None:
        print(f"wall time (trigger -> run finished): {f['wall']:.1f}s")
    print(f"first task start -> last task end:   {f['first_start_to_last_end']:.1f}s")
    print(
        f"worker phase (first batch task start -> last end): {f['worker_phase']:.1f}s, {f['batches']} batches"
    )
    print(f"per batch, select start -> validate end: {_med(f['spans'])}")
    print(f"per batch, previous validate end -> this validate end: {_med(f['periods'])}")
    print(f"scheduling latency, queued -> start (all tasks): {_med(f['queued_to_start'])}")
    print(f"scheduling latency, previous task end -> next start (batch chain): {_med(f['gaps'])}")
    print(f"DAG file parse in each task process (task logs): {_med(f['parse'])}")
    print(f"pre-execute (bundle + parse + start report, task logs): {_med(f['pre_execute'])}")
    print(f"post-execute (XCom push + state report, task logs): {_med(f['post_execute'])}")
    if f["deferred"]:
        print(f"time deferred waiting for Ready (from task logs): {_med(f['deferred'])}")
    print(
        "upgrade_node, code start -> its first log line (imports, clients, lease, pre-drain check): "
        f"{_med(f['node_first_line'])}"
    )
    for step, durations in f["durations"].items():
        print(f"task run time {step:32s} {_med(durations)}")
    print(f"task run time, all tasks summed: {f['run_time_total']:.1f}s")
    print(
        f"task starts: {f['starts']} (task instances {f['task_instances']}, "
        f"skipped {f['skipped']}; retries counted, deferral resumes not)"
    )
    total = sum(f["chain"].values()) or 1.0
    print("where the batch chain's time goes:")
    for what, seconds in f["chain"].items():
        print(f"  {what:30s} {seconds:8.1f}s  {100 * seconds / total:5.1f} %")
    if script is None:
        return
    print("== kubectl script (same cluster, same batches, workers reset to the old kubelet)")
    print(
        f"script: {script['total']:.1f}s for {len(plan)} batches, "
        f"per batch {_med(per_batch)}; "
        + ", ".join(f"{k} {v:.1f}s" for k, v in script.items() if k != "total")
    )
    print(
        f"ratio airflow/script: worker phase {f['worker_phase'] / script['total']:.1f}x, "
        f"whole run {f['wall'] / script['total']:.1f}x"
    )
    if f["periods"] and per_batch:
        ratio = statistics.median(v for v in f["periods"] if v is not None) / statistics.median(per_batch)
        print(f"ratio per batch (median airflow period / median script batch): {ratio:.1f}x")


def reanalyse(home: Path) -> int:
    """The figures again from a finished bench's folder (task instances, task logs, results)."""
    raw = json.loads((home / "task_instances.json").read_text())
    result_file = home / "result.json"
    saved = json.loads(result_file.read_text()) if result_file.exists() else {}
    run_id = saved.get("run_id") or raw[0]["dag_run_id"]
    figures = analyse(parse_tis(raw), home, run_id, saved.get("wall"))
    report(figures, saved.get("script"), saved.get("script_per_batch", []), saved.get("batches", []))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--base-port", type=int, default=29000)
    parser.add_argument("--api-port", type=int, default=29880)
    parser.add_argument("--keep", action="store_true", help="leave the cluster and Airflow running")
    parser.add_argument(
        "--reanalyse", type=Path, metavar="HOME", help="print the figures of an earlier run's folder again"
    )
    args = parser.parse_args(argv)
    if args.reanalyse:
        return reanalyse(args.reanalyse)
    home = Path(tempfile.mkdtemp(prefix="slipway-bench-airflow-home-"))
    point_demo_at(home, args.api_port)
    cluster: LocalCluster | None = None
    try:
        t = time.monotonic()
        cluster = start_cluster(args)
        plan = bench_workers.batches(cluster)
        print(
            f"{args.nodes} workers up ({time.monotonic() - t:.0f}s); Slipway plans {len(plan)} batches "
            f"of up to {max(len(b) for b in plan)} nodes",
            flush=True,
        )
        t = time.monotonic()
        # One slot more than the plan: the spare slot finds nothing to do and ends the phase.
        token = start_airflow(cluster, home, args.api_port, len(plan) + 1)
        print(
            f"airflow standalone up, {DAG_ID} parsed ({time.monotonic() - t:.0f}s); home {home}", flush=True
        )
        run_id, state, wall = run_through_airflow(token)
        print(f"run {run_id}: {state} in {wall:.1f}s", flush=True)
        if state != "success":
            # A failed run's timings say nothing about the overhead: name what failed and stop.
            for ti in task_instances(token, run_id):
                if ti["state"] == "failed":
                    print(f"failed task: {ti['task_id']} (try {ti['try_number']})")
            print(f"see {home / 'airflow.log'} and {demo.AIRFLOW_HOME / 'logs'}; no comparison printed")
            return 1
        tis = parse_tis(task_instances(token, run_id))
        figures = analyse(tis, home, run_id, wall)
        done = airflow_batches(cluster, run_id)
        (home / "task_instances.json").write_text(
            json.dumps(task_instances(token, run_id), indent=1, default=str)
        )
        reset_workers(cluster)
        script, per_batch = run_script(cluster, done or plan)
        saved = {
            "run_id": run_id,
            "state": state,
            "wall": wall,
            "script": script,
            "script_per_batch": per_batch,
        }
        (home / "result.json").write_text(json.dumps(saved | {"batches": done or plan}, indent=1))
        report(figures, script, per_batch, done or plan)
        print(
            f"task instances saved in {home / 'task_instances.json'}; Airflow logs in {home / 'airflow.log'}"
        )
    finally:
        if not args.keep:
            demo._stop_airflow()
            if cluster is not None:
                cluster.down(purge=True)
                shutil.rmtree(cluster.cfg.state_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
