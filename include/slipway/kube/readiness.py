"""Is the cluster healthy again after a node came back: nodes Ready, workloads available,
nothing stuck unscheduled.

Every check here is a single look (or a pure function of an object) so that a deferrable
Airflow trigger can call it on its own schedule; :func:`wait_node_ready` is the one
blocking helper, for code that may block, and it watches rather than sleeps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from slipway.kube.nodes import node_ready

__all__ = [
    "check_nodes_ready",
    "node_ready",
    "pending_pods",
    "wait_node_ready",
    "wait_workloads_available",
    "workloads_available",
]

GONE = 410  # the watch's resourceVersion is too old: list again and watch from there
# A watch request must outlive its server-side timeout a little, or the client cuts it first.
WATCH_CLIENT_SLACK_SECONDS = 5.0
MIN_WATCH_SECONDS = 1


def check_nodes_ready(api: client.ApiClient, names: Iterable[str]) -> dict[str, bool]:
    """One look at every named node: name -> Ready. A node that does not exist is not Ready."""
    wanted = set(names)
    ready = dict.fromkeys(wanted, False)
    for node in client.CoreV1Api(api).list_node().items:
        if node.metadata.name in wanted:
            ready[node.metadata.name] = node_ready(node)
    return ready


def wait_node_ready(api: client.ApiClient, node: str, timeout: float) -> bool:
    """Block until ``node`` is Ready (True) or ``timeout`` seconds pass (False)."""
    core = client.CoreV1Api(api)
    selector = f"metadata.name={node}"
    deadline = time.monotonic() + timeout
    while True:
        listed = core.list_node(field_selector=selector)
        if any(node_ready(n) for n in listed.items):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        watcher = watch.Watch()
        try:
            for event in watcher.stream(
                core.list_node,
                field_selector=selector,
                resource_version=listed.metadata.resource_version,
                timeout_seconds=max(MIN_WATCH_SECONDS, math.ceil(remaining)),
                _request_timeout=remaining + WATCH_CLIENT_SLACK_SECONDS,
            ):
                if event["type"] in ("ADDED", "MODIFIED") and node_ready(event["object"]):
                    watcher.stop()
                    return True
        except ApiException as err:
            if err.status != GONE:
                raise


def workloads_available(api: client.ApiClient, namespaces: Iterable[str] | None = None) -> list[str]:
    """Deployments, StatefulSets and DaemonSets below their desired availability, named
    with their counts (``deployment shop/web: 5/6 available``); empty when all are whole."""
    apps = client.AppsV1Api(api)
    if namespaces is None:
        deployments = apps.list_deployment_for_all_namespaces().items
        statefulsets = apps.list_stateful_set_for_all_namespaces().items
        daemonsets = apps.list_daemon_set_for_all_namespaces().items
    else:
        deployments, statefulsets, daemonsets = [], [], []
        for ns in namespaces:
            deployments += apps.list_namespaced_deployment(ns).items
            statefulsets += apps.list_namespaced_stateful_set(ns).items
            daemonsets += apps.list_namespaced_daemon_set(ns).items
    short = []
    for kind, objects, counts in (
        ("deployment", deployments, lambda o: (o.status.available_replicas, _replicas(o))),
        ("statefulset", statefulsets, lambda o: (o.status.available_replicas, _replicas(o))),
        ("daemonset", daemonsets, lambda o: (o.status.number_available, o.status.desired_number_scheduled)),
    ):
        for obj in objects:
            available, desired = counts(obj)
            if (available or 0) < (desired or 0):
                short.append(
                    f"{kind} {obj.metadata.namespace}/{obj.metadata.name}: "
                    f"{available or 0}/{desired} available"
                )
    return sorted(short)


def wait_workloads_available(api: client.ApiClient, timeout: float) -> list[str]:
    """Re-read the workloads until none is below its desired availability or ``timeout``
    seconds pass; the ones still short (empty when all are whole). Controllers need a moment
    after nodes go away: a DaemonSet still counts a just-deleted node's pod."""
    deadline = time.monotonic() + timeout
    short = workloads_available(api)
    while short and time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.1, deadline - time.monotonic())))  # re-observe, not a fixed wait
        short = workloads_available(api)
    return short


def pending_pods(api: client.ApiClient) -> list[str]:
    """Pods no node has been found for, with the scheduler's reason
    (``shop/web-x: Unschedulable: 0/15 nodes are available: ...``)."""
    pods = (
        client.CoreV1Api(api)
        .list_pod_for_all_namespaces(field_selector="status.phase=Pending,spec.nodeName=")
        .items
    )
    found = []
    for pod in pods:
        if pod.metadata.deletion_timestamp:
            continue
        scheduled = next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)
        if scheduled is not None and scheduled.status == "False":
            why = f"{scheduled.reason}: {scheduled.message}" if scheduled.message else str(scheduled.reason)
        else:
            why = "not yet considered by the scheduler"
        found.append(f"{pod.metadata.namespace}/{pod.metadata.name}: {why}")
    return sorted(found)


def _replicas(obj: client.V1Deployment | client.V1StatefulSet) -> int:
    # spec.replicas is defaulted to 1 by the apiserver; None only on objects built by hand.
    replicas: int | None = obj.spec.replicas
    return 1 if replicas is None else replicas
