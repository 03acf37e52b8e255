"""The cluster at one moment: every node from the API, and every control-plane instance's version.

Nodes look the same everywhere; control-plane components do not (static pods under kubeadm,
processes on the local cluster, hidden on managed platforms). So their versions, health and
flags come from a :class:`ControlPlaneReader` chosen per platform, and
:func:`collect_inventory` takes the versions as plain data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from http.client import HTTPException
from typing import TYPE_CHECKING, Protocol

from kubernetes import client

from slipway.kube.nodes import (
    CONTROL_PLANE_LABELS,
    CONTROL_PLANE_POOL,
    DEFAULT_POOL,
    POOL_LABELS,
    is_control_plane,
    is_cordoned,
    kubelet_version,
    node_pool,
    node_ready,
)
from slipway.models import ClusterInventory, NodeInfo, Resources, Taint, parse_cpu, parse_memory
from slipway.versions import Version

if TYPE_CHECKING:
    from slipway.localcluster.cluster import LocalCluster

__all__ = [
    "CONTROL_PLANE_LABELS",
    "CONTROL_PLANE_POOL",
    "DEFAULT_POOL",
    "POOL_LABELS",
    "is_control_plane",
    "node_pool",
]

COMPONENT_KINDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
# Used when no reader could name the apiserver instances: the one behind the API endpoint.
VIA_API_ENDPOINT = "(via API endpoint)"
HEALTHY = "ok"

# kind → instance → value (a version, "ok"/a reason, or argv).
ComponentVersions = dict[str, dict[str, str]]
ComponentHealth = dict[str, dict[str, str]]
ComponentFlags = dict[str, dict[str, list[str]]]
# (apiserver instance → /metrics text, scheduler instance → /metrics text)
LatencyTexts = tuple[dict[str, str], dict[str, str]]


class ControlPlaneReader(Protocol):
    """What a platform can tell about its control plane, per component kind and instance."""

    def versions(self) -> ComponentVersions:
        """Kind (``kube-apiserver``, ``kube-controller-manager``, ``kube-scheduler``, ``etcd``)
        → instance → the version it runs now."""
        ...

    def health(self) -> ComponentHealth:
        """Kind → instance → :data:`HEALTHY` or the reason it is not."""
        ...

    def flags(self) -> ComponentFlags:
        """Kind → instance → its command-line flags (for the feature-gate check)."""
        ...

    def latency_metrics(self) -> LatencyTexts:
        """``/metrics`` of every apiserver and scheduler instance that answers, by instance."""
        ...

    def apiserver_urls(self) -> dict[str, str]:
        """Apiserver instance → its own URL, bypassing the load balancer (the API probe asks
        each one directly); empty when the platform cannot tell."""
        ...


# ---- nodes (pure) -----------------------------------------------------------------------------


def node_info(node: client.V1Node) -> NodeInfo:
    """A V1Node as the inventory records it."""
    allocatable = (node.status.allocatable if node.status else None) or {}
    taints = (node.spec.taints if node.spec else None) or []
    return NodeInfo(
        name=node.metadata.name,
        pool=node_pool(node),
        kubelet_version=kubelet_version(node),
        ready=node_ready(node),
        unschedulable=is_cordoned(node),
        control_plane=is_control_plane(node),
        allocatable=Resources(
            cpu_millis=parse_cpu(allocatable.get("cpu", "0")),
            memory_bytes=parse_memory(allocatable.get("memory", "0")),
            pods=int(allocatable.get("pods", "0")),
        ),
        labels=dict(node.metadata.labels or {}),
        taints=[Taint(key=t.key, value=t.value or "", effect=t.effect) for t in taints],
    )


def _normalised(version: str) -> str:
    try:
        return str(Version.parse(version))
    except ValueError:
        return version


def collect_inventory(
    api: client.ApiClient, control_plane_versions: Mapping[str, Mapping[str, str]]
) -> ClusterInventory:
    """Every node from the API plus the control-plane versions a :class:`ControlPlaneReader` gave.

    :param control_plane_versions: kind → instance → version; with no ``kube-apiserver`` entry
        the version the API endpoint reports is used, recorded as :data:`VIA_API_ENDPOINT`.
    """
    nodes = client.CoreV1Api(api).list_node().items

    def kind(name: str) -> dict[str, str]:
        return {
            instance: _normalised(v) for instance, v in sorted(control_plane_versions.get(name, {}).items())
        }

    apiservers = kind("kube-apiserver")
    if not apiservers:
        apiservers = {VIA_API_ENDPOINT: _normalised(client.VersionApi(api).get_code().git_version)}
    return ClusterInventory(
        apiserver_versions=apiservers,
        controller_manager_versions=kind("kube-controller-manager"),
        scheduler_versions=kind("kube-scheduler"),
        etcd_versions=kind("etcd"),
        nodes=sorted((node_info(n) for n in nodes), key=lambda n: n.name),
        collected_at=datetime.now(UTC),
    )


# ---- Prometheus text (pure) ---------------------------------------------------------------------

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\d+)?$"
)
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric ``name`` in Prometheus text format, as ``(labels, value)``."""
    samples = []
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if match is None or match["name"] != name:
            continue
        labels = {
            key: re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], value)
            for key, value in _LABEL.findall(match["labels"] or "")
        }
        try:
            samples.append((labels, float(match["value"])))
        except ValueError:
            continue
    return samples


def build_version(metrics_text: str) -> str | None:
    """The ``git_version`` of a component's ``kubernetes_build_info`` metric."""
    samples = metric_samples(metrics_text, "kubernetes_build_info")
    return _normalised(samples[0][0]["git_version"]) if samples and "git_version" in samples[0][0] else None


# ---- kubeadm: static pods (pure parts) ---------------------------------------------------------

_TAG = re.compile(r":(?P<tag>[^:/@]+)(?:@sha256:[0-9a-f]+)?$")


def image_version(image: str) -> str | None:
    """The version in an image tag: ``registry.k8s.io/kube-apiserver:v1.36.3`` → ``1.36.3``,
    ``registry.k8s.io/etcd:3.6.4-0`` → ``3.6.4``; None for an untagged or non-version tag."""
    match = _TAG.search(image)
    if match is None:
        return None
    try:
        return str(Version.parse(match["tag"]))
    except ValueError:
        return None


def _component(pod: client.V1Pod) -> str | None:
    component = (pod.metadata.labels or {}).get("component")
    return component if component in COMPONENT_KINDS else None


def _instance(pod: client.V1Pod) -> str:
    # A static pod per control-plane node: the node names the instance as operators know it.
    return str(pod.spec.node_name or pod.metadata.name)


def static_pod_versions(pods: Iterable[client.V1Pod]) -> ComponentVersions:
    """Kind → node → version from kubeadm's static pods (label ``component``, first container's image)."""
    found: ComponentVersions = {}
    for pod in pods:
        kind = _component(pod)
        containers = (pod.spec.containers or []) if pod.spec else []
        if kind is None or not containers:
            continue
        version = image_version(containers[0].image or "")
        if version is not None:
            found.setdefault(kind, {})[_instance(pod)] = version
    return found


def static_pod_health(pods: Iterable[client.V1Pod]) -> ComponentHealth:
    """Kind → node → ``ok`` or why not, from the static pods' Ready condition (the kubelet
    runs each component's own /healthz or /livez probe)."""
    found: ComponentHealth = {}
    for pod in pods:
        kind = _component(pod)
        if kind is None:
            continue
        conditions = (pod.status.conditions if pod.status else None) or []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        found.setdefault(kind, {})[_instance(pod)] = HEALTHY if ready else _not_ready_reason(pod)
    return found


def _not_ready_reason(pod: client.V1Pod) -> str:
    for status in (pod.status.container_statuses if pod.status else None) or []:
        waiting = status.state.waiting if status.state else None
        if waiting is not None:
            return f"container {status.name} waiting: {waiting.reason or 'unknown reason'}"
        if not status.ready:
            return f"container {status.name} not ready (restarts {status.restart_count})"
    phase = pod.status.phase if pod.status else "Unknown"
    return f"pod {pod.metadata.namespace}/{pod.metadata.name} not ready (phase {phase})"


# kubeadm writes each apiserver's own address on its static pod (kubeadm's constants.go).
ADVERTISE_ANNOTATION = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"


def static_pod_apiserver_urls(pods: Iterable[client.V1Pod]) -> dict[str, str]:
    """Node → ``https://<advertise address>:<port>`` from kubeadm's apiserver static pods."""
    found: dict[str, str] = {}
    for pod in pods:
        endpoint = (pod.metadata.annotations or {}).get(ADVERTISE_ANNOTATION)
        if _component(pod) == "kube-apiserver" and endpoint:
            found[_instance(pod)] = f"https://{endpoint}"
    return found


def static_pod_flags(pods: Iterable[client.V1Pod]) -> ComponentFlags:
    """Kind → node → the component's flags (command after the binary, then args)."""
    found: ComponentFlags = {}
    for pod in pods:
        kind = _component(pod)
        containers = (pod.spec.containers or []) if pod.spec else []
        if kind is None or not containers:
            continue
        argv = [*(containers[0].command or [])[1:], *(containers[0].args or [])]
        found.setdefault(kind, {})[_instance(pod)] = [a for a in argv if a.startswith("--")]
    return found


class KubeadmControlPlaneReader:
    """A kubeadm cluster's control plane, read from its static pods in ``kube-system``."""

    SELECTOR = "tier=control-plane"

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def _pods(self) -> list[client.V1Pod]:
        return list(
            client.CoreV1Api(self.api).list_namespaced_pod("kube-system", label_selector=self.SELECTOR).items
        )

    def versions(self) -> ComponentVersions:
        return static_pod_versions(self._pods())

    def health(self) -> ComponentHealth:
        return static_pod_health(self._pods())

    def flags(self) -> ComponentFlags:
        return static_pod_flags(self._pods())

    def apiserver_urls(self) -> dict[str, str]:
        return static_pod_apiserver_urls(self._pods())

    def latency_metrics(self) -> LatencyTexts:
        """Apiservers through the API endpoint, told apart by their process start time.

        The load balancer picks the instance, so reads are repeated until every static pod's
        instance has answered (or the tries run out). The scheduler's ``/metrics`` needs
        credentials the API's pod proxy does not pass on, so it is not read here.
        """
        wanted = max(1, len(static_pod_versions(self._pods()).get("kube-apiserver", {})))
        found: dict[str, str] = {}
        for _ in range(4 * wanted):
            text = read_api_metrics(self.api)
            starts = [v for _, v in metric_samples(text, "process_start_time_seconds")]
            found[f"started-{starts[0]:.0f}" if starts else VIA_API_ENDPOINT] = text
            if len(found) >= wanted:
                break
        return found, {}


# ---- the local cluster: ask every process directly --------------------------------------------


class LocalControlPlaneReader:
    """The local cluster's processes, each asked on its own port (not through the load balancer),
    so a half-upgraded control plane shows every instance's own version."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        pki = cluster.cfg.pki_dir
        self._orchestrator = (pki / "orchestrator.crt", pki / "orchestrator.key")
        self._etcd_admin = (pki / "etcd-admin.crt", pki / "etcd-admin.key")

    def _endpoints(self) -> list[tuple[str, str, int]]:
        """``(kind, instance, port)`` of every component that serves HTTPS."""
        from slipway.localcluster import components

        cfg = self.cluster.cfg
        found = [
            ("kube-apiserver", components.apiserver_name(i), cfg.apiserver_port(i))
            for i in range(cfg.apiservers)
        ]
        found += [
            ("kube-controller-manager", "kube-controller-manager", cfg.controller_manager_port),
            ("kube-scheduler", "kube-scheduler", cfg.scheduler_port),
        ]
        found += [("etcd", components.etcd_name(i), cfg.etcd_client_port(i)) for i in range(cfg.etcd_members)]
        return found

    def apiserver_urls(self) -> dict[str, str]:
        return {
            instance: f"https://127.0.0.1:{port}"
            for kind, instance, port in self._endpoints()
            if kind == "kube-apiserver"
        }

    def _get(self, kind: str, port: int, path: str) -> tuple[int, str]:
        from slipway.localcluster.health import https_get

        pki = self.cluster.cfg.pki_dir
        if kind == "etcd":
            return https_get("127.0.0.1", port, path, ca=pki / "etcd-ca.crt", cert=self._etcd_admin)
        if kind == "kube-apiserver":
            return https_get("127.0.0.1", port, path, ca=pki / "ca.crt", cert=self._orchestrator)
        # kube-controller-manager and kube-scheduler serve a self-signed certificate generated at
        # start-up; there is no CA to check it against, and the port is loopback only.
        return https_get("127.0.0.1", port, path, cert=self._orchestrator)

    def versions(self) -> ComponentVersions:
        found: ComponentVersions = {}
        for kind, instance, port in self._endpoints():
            try:
                version = self._version(kind, port)
            except (OSError, HTTPException, ValueError, KeyError):
                continue  # a stopped instance has no version; health() names it
            if version:
                found.setdefault(kind, {})[instance] = version
        return found

    def _version(self, kind: str, port: int) -> str | None:
        if kind in ("kube-controller-manager", "kube-scheduler"):
            status, body = self._get(kind, port, "/metrics")
            return build_version(body) if status == 200 else None
        status, body = self._get(kind, port, "/version")
        if status != 200:
            return None
        data = json.loads(body)
        return _normalised(data["etcdserver"] if kind == "etcd" else data["gitVersion"])

    def health(self) -> ComponentHealth:
        paths = {"kube-apiserver": "/readyz", "etcd": "/health"}
        found: ComponentHealth = {}
        for kind, instance, port in self._endpoints():
            path = paths.get(kind, "/healthz")
            try:
                status, body = self._get(kind, port, path)
                verdict = HEALTHY if status == 200 else f"{path} returned {status}: {_first_line(body)}"
            except (OSError, HTTPException) as err:
                verdict = f"{path} unreachable on port {port}: {err}"
            found.setdefault(kind, {})[instance] = verdict
        return found

    def latency_metrics(self) -> LatencyTexts:
        texts: dict[str, dict[str, str]] = {"kube-apiserver": {}, "kube-scheduler": {}}
        for kind, instance, port in self._endpoints():
            if kind not in texts:
                continue
            try:
                status, body = self._get(kind, port, "/metrics")
            except (OSError, HTTPException):
                continue  # a stopped instance: health() names it
            if status == 200:
                texts[kind][instance] = body
        return texts["kube-apiserver"], texts["kube-scheduler"]

    def flags(self) -> ComponentFlags:
        found: ComponentFlags = {}
        for kind, instance, _ in self._endpoints():
            info = self.cluster.sup.info(instance)
            if info is not None:
                found.setdefault(kind, {})[instance] = [a for a in info.argv[1:] if a.startswith("--")]
        return found


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if "[-]" in line] or text.strip().splitlines() or [""]
    return lines[0][:200]


def read_api_metrics(api: client.ApiClient, path: str = "/metrics", timeout: float = 10.0) -> str:
    """The Prometheus text at ``path`` of whichever apiserver the API endpoint reaches."""
    response = api.call_api(
        path,
        "GET",
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
        _request_timeout=timeout,
    )
    return str(response.data.decode())
