"""The kubeadm upgrade pod of a node, against the real apiserver: started by the opt-in
kubeadm-upgrader ServiceAccount (a token of its own behind the ``slipway_kubeadm`` connection),
waited for by the cncf-kubernetes provider's pod trigger (run here to its event, as the
triggerer would), then read and deleted. kwok plays the kubelet: its kubeadm Stages end the
pod Succeeded after a few seconds, or Failed when the pod is annotated slipway.dev/simulate=failed.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger
from airflow.sdk.exceptions import AirflowException, TaskDeferred
from airflow.sdk.execution_time.context import set_current_context
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway import lease
from slipway.airflow.node_operator import KUBEADM_POD, UpgradeNodeOperator
from slipway.airflow.pods import KubeadmPods, PodOfAnotherRun, PodRef
from slipway.airflow.triggers import NodesReadyTrigger
from slipway.airflow_env import KUBEADM_CONN_ID
from slipway.kube import nodes as kube_nodes
from slipway.kube.client import apply_manifest, load_manifest
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_NEW
from slipway.runrecord import RunRecord
from slipway.upgraders.kubeadm import kubeadm_upgrade_pod, run_digest

pytestmark = pytest.mark.cluster

MANIFEST = Path(str(resources.files("slipway") / "manifests" / "kubeadm-upgrader-rbac.yaml"))
NAMESPACE = "slipway-kubeadm"
SERVICE_ACCOUNT = "slipway-kubeadm-upgrader"
IMAGE = "registry.example/nsenter@sha256:" + "0" * 64
KUBE_CONN = "k8s_kubeadm_pods_test"
PLATFORM_CONN = "slipway_platform_kubeadm_pods_test"
DAG_ID = "k8s_worker_upgrade"
FORBIDDEN, NOT_FOUND = 403, 404


def _namespace_settled(core: client.CoreV1Api) -> bool:
    """Absent or Active: not still terminating from an earlier test's clean-up."""
    try:
        return core.read_namespace(NAMESPACE).status.phase == "Active"
    except ApiException as err:
        return err.status == NOT_FOUND


@pytest.fixture
def kubeadm_conn(
    local_cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The opt-in manifest applied and ``slipway_kubeadm`` a kubeconfig holding a token of the
    kubeadm-upgrader ServiceAccount (what an operator gives the connection); also the run's
    cluster and a kubeadm platform connection for the node operator."""
    admin = local_cluster.admin_client()
    core = client.CoreV1Api(admin)
    wait_until("slipway-kubeadm namespace settled", lambda: _namespace_settled(core), 120)
    apply_manifest(admin, load_manifest(MANIFEST))
    token = core.create_namespaced_service_account_token(
        SERVICE_ACCOUNT, NAMESPACE, client.AuthenticationV1TokenRequest(spec={"expirationSeconds": 3600})
    ).status.token
    config = yaml.safe_load(local_cluster.orchestrator_kubeconfig.read_text())
    config["users"] = [{"name": SERVICE_ACCOUNT, "user": {"token": token}}]
    config["contexts"] = [
        {"name": SERVICE_ACCOUNT, "context": {"cluster": "slipway-local", "user": SERVICE_ACCOUNT}}
    ]
    config["current-context"] = SERVICE_ACCOUNT
    kubeconfig = tmp_path / "kubeadm-upgrader.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    conns = {
        KUBEADM_CONN_ID: {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}},
        KUBE_CONN: {
            "conn_type": "kubernetes",
            "extra": {"kube_config_path": str(local_cluster.orchestrator_kubeconfig)},
        },
        PLATFORM_CONN: {
            "conn_type": "generic",
            "extra": {"platform": "kubeadm", "cluster_name": local_cluster.cfg.name, "kubeadm_image": IMAGE},
        },
    }
    for conn_id, conn in conns.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    try:
        yield
    finally:
        core.delete_namespace(NAMESPACE)
        wait_until("slipway-kubeadm namespace gone", lambda: _namespace_settled(core), 120)


@pytest.fixture
def worker(local_cluster: LocalCluster) -> str:
    return str(kube_nodes.list_workers(local_cluster.admin_client())[0].metadata.name)


def _gone(admin: client.CoreV1Api, ref: PodRef) -> bool:
    try:
        admin.read_namespaced_pod(ref.name, ref.namespace)
    except ApiException as err:
        return err.status == NOT_FOUND
    return False


def _first_event(trigger: KubernetesPodTrigger) -> dict[str, Any]:
    """The trigger rebuilt from its serialized kwargs (all the triggerer keeps), run to its event
    against the apiserver; polled every second rather than every 10 s to keep the test short."""
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module), name)(**(kwargs | {"poll_interval": 1.0}))

    async def run() -> dict[str, Any]:
        events = rebuilt.run()
        event = await asyncio.wait_for(anext(events), timeout=180)
        await events.aclose()
        return dict(event.payload)

    return asyncio.run(run())


def test_pod_started_by_the_upgrader_identity_waited_for_by_the_provider_trigger_then_deleted(
    local_cluster: LocalCluster, kubeadm_conn: None, worker: str
) -> None:
    admin = client.CoreV1Api(local_cluster.admin_client())
    run_id = "manual__kubeadm-pods-succeeded"
    pods = KubeadmPods(run_id)
    with pytest.raises(ApiException) as refused:  # the connection really is the narrow identity
        pods.core.list_node()
    assert refused.value.status == FORBIDDEN
    manifest = kubeadm_upgrade_pod(worker, KUBERNETES_NEW, "node", IMAGE, run_id=run_id)
    ref = pods.start(manifest)
    assert ref == PodRef(manifest["metadata"]["name"], NAMESPACE)
    made = admin.read_namespaced_pod(ref.name, NAMESPACE)
    assert made.metadata.labels["slipway.dev/run"] == run_digest(run_id)

    trigger = pods.trigger(ref)
    assert isinstance(trigger, KubernetesPodTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["kubernetes_conn_id"] == KUBEADM_CONN_ID and kwargs["on_kill_action"] == "keep_pod"
    event = _first_event(trigger)
    assert (event["status"], event["name"], event["namespace"]) == ("success", ref.name, NAMESPACE)

    outcome = pods.finish(ref)
    assert outcome.phase == "Succeeded"
    assert "container base exited 0 (Completed)" in outcome.log_tail
    assert "logs unavailable" in outcome.log_tail  # kwok serves no container logs
    wait_until(f"pod {ref} deleted", lambda: _gone(admin, ref), 60)
    assert pods.finish(ref).phase == "Gone"  # a pod deleted already is fine


def test_a_retry_reuses_its_own_run_pod_and_refuses_another_runs(
    local_cluster: LocalCluster, kubeadm_conn: None, worker: str
) -> None:
    admin = client.CoreV1Api(local_cluster.admin_client())
    run_id = "manual__kubeadm-pods-retry"
    manifest = kubeadm_upgrade_pod(worker, KUBERNETES_NEW, "node", IMAGE, run_id=run_id)
    first = KubeadmPods(run_id).start(manifest)
    uid = admin.read_namespaced_pod(first.name, NAMESPACE).metadata.uid
    again = KubeadmPods(run_id).start(manifest)  # the task's next try, after its deferral
    assert again == first
    assert admin.read_namespaced_pod(first.name, NAMESPACE).metadata.uid == uid
    with pytest.raises(PodOfAnotherRun, match=f"pod {NAMESPACE}/{first.name} exists but belongs to run"):
        KubeadmPods("manual__another-run").start(manifest)
    mine = admin.list_namespaced_pod(NAMESPACE, label_selector=f"slipway.dev/run={run_digest(run_id)}").items
    assert [p.metadata.uid for p in mine] == [uid]
    KubeadmPods(run_id).delete(first)
    wait_until(f"pod {first} deleted", lambda: _gone(admin, first), 60)


# ---- the node operator's kubeadm step -----------------------------------------------------------


def _context(run_id: str) -> dict[str, Any]:
    return {
        "dag": SimpleNamespace(dag_id=DAG_ID),
        "run_id": run_id,
        "params": {"kubernetes_conn_id": KUBE_CONN, "platform_conn_id": PLATFORM_CONN},
    }


@pytest.fixture
def drained_worker(local_cluster: LocalCluster, worker: str) -> Iterator[tuple[str, str]]:
    """A worker this run reached "drained" on (the steps before the kubeadm pod are tested
    elsewhere); afterwards its step annotations, the run record and the lease are cleared."""
    run_id = f"manual__kubeadm-step-{worker}"
    orchestrator = local_cluster.orchestrator_client()
    kube_nodes.set_step(orchestrator, worker, run_id, "drained")
    try:
        yield worker, run_id
    finally:
        admin = local_cluster.admin_client()
        annotations = {
            k: None for k in (kube_nodes.STEP, kube_nodes.STEP_RUN, kube_nodes.STEP_AT, KUBEADM_POD)
        }
        client.CoreV1Api(admin).patch_node(worker, {"metadata": {"annotations": annotations}})
        lease.release(orchestrator, lease.holder_for(DAG_ID, run_id))
        try:
            client.CoreV1Api(admin).delete_namespaced_config_map(
                RunRecord(orchestrator, run_id).name, "slipway-system"
            )
        except ApiException as err:
            if err.status != NOT_FOUND:
                raise


def _operator(node: str) -> UpgradeNodeOperator:
    return UpgradeNodeOperator(
        task_id="upgrade_node", node=node, request={"target_version": KUBERNETES_NEW, "strategy": "in-place"}
    )


def test_node_operator_defers_on_its_kubeadm_pod_resumes_and_waits_for_the_node(
    local_cluster: LocalCluster, kubeadm_conn: None, drained_worker: tuple[str, str]
) -> None:
    node, run_id = drained_worker
    admin = client.CoreV1Api(local_cluster.admin_client())
    context = _context(run_id)
    with set_current_context(context):  # type: ignore[arg-type]
        with pytest.raises(TaskDeferred) as deferred:
            _operator(node).execute(context)
        trigger = deferred.value.trigger
        assert isinstance(trigger, KubernetesPodTrigger) and deferred.value.method_name == "resume_after_pod"
        ref = PodRef(trigger.pod_name, trigger.pod_namespace)
        current = admin.read_node(node)
        assert kube_nodes.step_of(current).step == "upgrading"  # type: ignore[union-attr]
        assert current.metadata.annotations[KUBEADM_POD] == str(ref)
        uid = admin.read_namespaced_pod(ref.name, NAMESPACE).metadata.uid

        # The task cleared (or its worker lost) while deferred: the next try waits for the same pod.
        with pytest.raises(TaskDeferred) as again:
            _operator(node).execute(context)
        assert (again.value.trigger.pod_name, again.value.method_name) == (ref.name, "resume_after_pod")
        assert [p.metadata.uid for p in admin.list_namespaced_pod(NAMESPACE).items] == [uid]

        event = _first_event(trigger)
        assert event["status"] == "success"
        # kwok's kubelet does not really move to the target: the node wait is deferred next.
        with pytest.raises(TaskDeferred) as ready_wait:
            _operator(node).resume_after_pod(context, event)
    assert isinstance(ready_wait.value.trigger, NodesReadyTrigger)
    assert ready_wait.value.trigger.nodes == [node]
    assert kube_nodes.step_of(admin.read_node(node)).step == "upgraded"  # type: ignore[union-attr]
    wait_until(f"pod {ref} deleted", lambda: _gone(admin, ref), 60)


def test_a_failed_kubeadm_pod_fails_the_step_naming_the_pod_and_what_it_said(
    local_cluster: LocalCluster, kubeadm_conn: None, drained_worker: tuple[str, str]
) -> None:
    node, run_id = drained_worker
    admin = client.CoreV1Api(local_cluster.admin_client())
    # The pod this run's task will start, made first and marked for kwok to fail: the task
    # finds it by its run-unique name and waits for it rather than starting another.
    manifest = kubeadm_upgrade_pod(node, KUBERNETES_NEW, "node", IMAGE, run_id=run_id)
    manifest["metadata"]["annotations"]["slipway.dev/simulate"] = "failed"
    ref = KubeadmPods(run_id).start(manifest)
    context = _context(run_id)
    with set_current_context(context):  # type: ignore[arg-type]
        with pytest.raises(TaskDeferred) as deferred:
            _operator(node).execute(context)
        assert deferred.value.trigger.pod_name == ref.name
        event = _first_event(deferred.value.trigger)
        assert event["status"] == "failed"
        with pytest.raises(AirflowException) as failed:
            _operator(node).resume_after_pod(context, event)
    message = str(failed.value)
    assert f"pod {ref} ended Failed" in message
    assert "exited 1 (Error: kubeadm upgrade node: simulated failure)" in message
    assert kube_nodes.step_of(admin.read_node(node)).step == "upgrading"  # a retry starts it again
    wait_until(f"pod {ref} deleted", lambda: _gone(admin, ref), 60)
