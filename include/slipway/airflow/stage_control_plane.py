"""The control-plane stage (§2.2): proven etcd backup, then etcd → kube-apiserver →
kube-controller-manager → kube-scheduler one instance at a time, with an API probe
measuring downtime across all of it, and a rollback branch after verification.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from airflow.sdk import TriggerRule, setup, task, teardown
from airflow.sdk.exceptions import AirflowFailException

from slipway import probe_process
from slipway.airflow import runbooks
from slipway.airflow.runtime import orchestrator_api, platform, record
from slipway.airflow.stage_common import declare_incident
from slipway.airflow.stage_prepare import artefacts_dir
from slipway.etcd import EtcdError, back_up_and_prove, defragment
from slipway.upgraders.controlplane import ControlPlaneTarget
from slipway.upgraders.controlplane import rollback_control_plane as restore_previous_versions

GROUP = "control_plane"
# Upgrade order of component kinds; kubeadm upgrades whole control-plane nodes instead.
KINDS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "control-plane-node")
# A game-day switch: this ConfigMap in slipway-system makes verification fail on purpose,
# so teams can rehearse the control-plane rollback on a staging cluster.
CHAOS_CONFIGMAP = "slipway-chaos"
CHAOS_KEY = "fail-control-plane-verification"


def targets(plan: dict[str, Any]) -> tuple[ControlPlaneTarget, ControlPlaneTarget]:
    """(target, previous) of this run's control-plane hop, from the plan summary."""
    hops = plan.get("hops", [])
    cp = [h for h in hops if h["kind"] == "control-plane"]
    etcd = [h for h in hops if h["kind"] == "etcd"]
    current = plan["current"]
    previous_etcd = etcd[0]["from"] if etcd else plan.get("etcd", "")
    target_k8s = cp[0]["to"] if cp else current
    target_etcd = etcd[0]["to"] if etcd else previous_etcd
    return ControlPlaneTarget(target_k8s, target_etcd), ControlPlaneTarget(current, previous_etcd)


@contextlib.contextmanager
def _kubeconfig_for_probe() -> Iterator[Path]:
    """The orchestrator kubeconfig as a file the probe process reads when it starts: the
    connection's own file, or a 0600 copy in a private 0700 folder that is removed as soon
    as the probe has started (it read the file by then), also when the start fails."""
    from slipway.airflow.runtime import kube_connection_extra

    extra = kube_connection_extra()
    if extra.get("kube_config_path"):
        yield Path(str(extra["kube_config_path"])).expanduser()
        return
    content = extra.get("kube_config")
    if not content:
        raise AirflowFailException("kubernetes_default has neither kube_config_path nor kube_config")
    folder = Path(tempfile.mkdtemp(prefix="slipway-probe-"))
    try:
        path = folder / "kubeconfig"
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(content if isinstance(content, str) else json.dumps(content))
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@task(doc_md=runbooks.BACKUP_ETCD, retries=1, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
@holds_cluster_lease
def backup_etcd() -> dict[str, Any]:
    proof = back_up_and_prove(
        platform().etcd(), artefacts_dir() / "etcd-before-control-plane.db", overwrite=True
    )
    data = proof.to_dict()
    rec = record()
    rec.update(backup=data)
    if not data.get("restore_ok"):
        rec.event("backup-failed", f"etcd backup not proven: {data.get('problem')}")
        raise AirflowFailException(
            f"etcd backup not proven, refusing to touch the control plane: {data.get('problem')}"
        )
    rec.event(
        "backup-proven",
        f"etcd snapshot {data['path']} restored in a drill: revision {data['revision']}, {data['keys']} keys",
    )
    return {"path": str(data["path"]), "revision": data["revision"]}


@task(doc_md=runbooks.DEFRAGMENT_ETCD, retries=1)
@holds_cluster_lease
def defragment_etcd() -> list[dict[str, Any]]:
    """§2.2: reclaim etcd's free pages before the upgrade, one member at a time, leader last."""
    try:
        done = defragment(platform().etcd())
    except EtcdError as err:
        raise AirflowFailException(f"etcd defragmentation stopped, control plane untouched: {err}") from err
    results = [r.to_dict() for r in done]
    rec = record()
    rec.update(control_plane=rec.get("control_plane", {}) | {"defragmentation": results})
    reclaimed = sum(r.reclaimed for r in done)
    order = ", ".join(r.member for r in done)
    rec.event(
        "etcd-defragmented", f"etcd defragmented member by member ({order}): {reclaimed} bytes reclaimed"
    )
    return results


def probe_tasks() -> tuple[Any, Any]:
    """The probe's setup/teardown pair. Built per DAG parse: Airflow's setup/teardown
    decorators mark the decorated object, so a module-level one cannot serve two parses."""

    @setup
    @task(doc_md=runbooks.START_PROBE)
    def start_api_probe() -> int:
        with _kubeconfig_for_probe() as kubeconfig:
            return probe_process.start(kubeconfig, artefacts_dir() / "probe")

    @teardown
    @task(doc_md=runbooks.STOP_PROBE)
    def stop_api_probe() -> dict[str, Any]:
        figures = probe_process.summary(probe_process.stop(artefacts_dir() / "probe"))
        rec = record()
        control_plane = rec.get("control_plane", {})
        rec.update(control_plane=control_plane | {"probe": figures})
        rec.event(
            "probe",
            f"API probe: {figures['requests']} requests, {figures['failures']} failed, "
            f"p99 {figures['p99_ms']:.1f} ms vs baseline {figures['baseline_p99_ms']:.1f} ms",
        )
        return figures

    return start_api_probe(), stop_api_probe()


def upgrade_kind(kind: str) -> Any:
    @task(task_id=f"upgrade_{kind.replace('-', '_')}", doc_md=runbooks.UPGRADE_COMPONENT, retries=1)
    @holds_cluster_lease
    def upgrade(plan: dict[str, Any]) -> list[dict[str, Any]]:
        target, previous = targets(plan)
        upgrader = platform().control_plane_upgrader()
        rec = record()
        done = []
        for ref in [r for r in upgrader.components() if r.kind == kind]:
            result = upgrader.upgrade(ref, target.version_for(ref))
            step = {
                "from": result.from_version or "",
                "to": result.to_version,
                "seconds": result.duration_seconds,
                "action": "upgraded" if result.changed else "already at target",
            }
            control_plane = rec.get("control_plane", {})
            steps = control_plane.get("steps", {}) | {ref.name: step}
            rec.update(control_plane=control_plane | {"steps": steps, "previous": previous.__dict__})
            rec.event("component-upgraded", f"{ref.name}: {result.message}", component=ref.name)
            done.append(step | {"component": ref.name})
        return done

    return upgrade


def _chaos_requested() -> bool:
    from kubernetes import client

    try:
        cm = client.CoreV1Api(orchestrator_api()).read_namespaced_config_map(
            CHAOS_CONFIGMAP, "slipway-system"
        )
    except client.exceptions.ApiException as err:
        if err.status == 404:
            return False
        raise
    return (cm.data or {}).get(CHAOS_KEY) == "true"


@task.branch(doc_md=runbooks.VERIFY_CONTROL_PLANE)
def verify_control_plane(plan: dict[str, Any], next_task: str) -> str:
    target, _ = targets(plan)
    upgrader = platform().control_plane_upgrader()
    problems = []
    for ref in upgrader.components():
        version = upgrader.current_version(ref)
        if version != target.version_for(ref):
            problems.append(f"{ref.name} runs {version}, expected {target.version_for(ref)}")
        if not upgrader.verify(ref):
            problems.append(f"{ref.name} is not healthy")
    consistency = getattr(upgrader, "etcd_hashes_agree", None)
    if consistency is not None and not problems:
        try:
            consistency()
        except Exception as err:  # any failure to prove consistency is a verification failure
            problems.append(f"etcd data consistency not proven: {err}")
    if _chaos_requested():
        problems.append(f"fault injected by ConfigMap slipway-system/{CHAOS_CONFIGMAP} ({CHAOS_KEY})")
    rec = record()
    rec.update(control_plane=rec.get("control_plane", {}) | {"verification": problems})
    if problems:
        rec.event("control-plane-verification-failed", "; ".join(problems))
        return f"{GROUP}.rollback_control_plane"
    rec.event(
        "control-plane-verified", f"every component at {target.kubernetes} (etcd {target.etcd}), healthy"
    )
    return next_task


@task(doc_md=runbooks.ROLLBACK_CONTROL_PLANE, retries=1)
@holds_cluster_lease
def rollback_control_plane(plan: dict[str, Any], backup: dict[str, Any]) -> list[str]:
    _, previous = targets(plan)
    rec = record()
    verification = rec.get("control_plane", {}).get("verification", [])
    declare_incident("SEV1", "control-plane verification failed: " + "; ".join(verification[:2]))
    upgrader = platform().control_plane_upgrader()
    results = [f"{r.component}: {r.message}" for r in restore_previous_versions(upgrader, previous)]
    restore = getattr(upgrader, "restore_etcd", None)
    if restore is not None and any("consistency" in p for p in verification):
        restored = restore(Path(backup["path"]))
        rec.event("etcd-restored", f"etcd restored from the proven snapshot: {restored}")
    rec.event("control-plane-rolled-back", "; ".join(results))
    return results


@task(doc_md=runbooks.FINAL_VERDICT)
def control_plane_failed() -> None:
    raise AirflowFailException("control-plane verification failed; the control plane was rolled back")
