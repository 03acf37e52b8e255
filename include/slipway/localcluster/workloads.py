"""Install the sample workloads and wait until every one of them is available."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from kubernetes import client

from slipway.kube.client import apply_manifest, load_manifest
from slipway.localcluster.health import wait_until

SAMPLES = Path(str(resources.files("slipway") / "localcluster" / "workloads.yaml"))


def install_samples(api: client.ApiClient, timeout: float = 180) -> list[str]:
    docs = load_manifest(SAMPLES)
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    applied = apply_manifest(api, namespaces)
    core = client.CoreV1Api(api)
    # Pods are refused until the controller-manager has made the namespace's default account.
    for ns in namespaces:
        name = ns["metadata"]["name"]

        def has_default_account(namespace: str = name) -> bool:
            accounts = core.list_namespaced_service_account(namespace, field_selector="metadata.name=default")
            return bool(accounts.items)

        wait_until(f"default service account in {name}", has_default_account, 60)
    applied += apply_manifest(api, [d for d in docs if d["kind"] != "Namespace"])
    wait_until("sample workloads available", lambda: not unavailable_samples(api), timeout, interval=1.0)
    return applied


def unavailable_samples(api: client.ApiClient) -> list[str]:
    """Names of sample workloads that do not yet have all their replicas ready."""
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    waiting = []
    for d in apps.list_namespaced_deployment("shop").items:
        if (d.status.available_replicas or 0) < d.spec.replicas:
            waiting.append(f"deployment/{d.metadata.name}")
    for s in apps.list_namespaced_stateful_set("shop").items:
        if (s.status.ready_replicas or 0) < s.spec.replicas:
            waiting.append(f"statefulset/{s.metadata.name}")
    for ds in apps.list_namespaced_daemon_set("monitoring").items:
        wanted = ds.status.desired_number_scheduled or 0
        if wanted == 0 or (ds.status.number_ready or 0) < wanted:
            waiting.append(f"daemonset/{ds.metadata.name}")
    pod = core.read_namespaced_pod("debug-shell", "shop")
    if pod.status.phase != "Running":
        waiting.append("pod/debug-shell")
    return waiting
