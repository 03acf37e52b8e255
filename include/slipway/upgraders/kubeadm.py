"""kubeadm upgrades on real clusters: the runbook's exact commands, run on the node by a pod.

The commands follow the kubeadm upgrade guide: point apt at the pkgs.k8s.io repository
of the target minor, install the pinned kubeadm (``1.x.y-1.1``), then
``kubeadm upgrade plan`` + ``kubeadm upgrade apply v1.x.y --yes`` on the first
control-plane node or ``kubeadm upgrade node`` on every other node (control plane and
workers alike), then the pinned kubelet and kubectl and a kubelet restart.

They run on the node itself through a privileged pod (hostPID, hostNetwork,
``nsenter`` into PID 1's namespaces) pinned by ``nodeName``. The pod is a plain
manifest: the Airflow adapter (``slipway.airflow.pods``) starts it with the cncf-kubernetes
provider's ``PodManager`` and waits on its ``KubernetesPodTrigger`` (deferred, for worker
nodes) or its ``PodManager`` (in the task, for control-plane nodes); this module imports
nothing from Airflow. Draining the node is the caller's step, before the pod.

Least privilege: the pods live in ``slipway-kubeadm``, the one namespace Pod Security
lets run privileged pods, and are started, read and deleted by the opt-in
``slipway-kubeadm-upgrader`` ServiceAccount (manifests/kubeadm-upgrader-rbac.yaml), never
by the orchestrator. Their image must be pinned by digest (a tag can be moved under a
root-on-every-node pod); each run's pods carry its own name, so a later run never adopts
an earlier run's finished pod, and a finished pod is deleted once its log tail is kept.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from kubernetes import client

from slipway.inventory import image_version
from slipway.upgraders.controlplane import (
    PAST_TENSE,
    Action,
    ComponentRef,
    StepFailed,
    StepRefused,
    StepResult,
    move_component,
)
from slipway.versions import Version, minor_gap

Phase = Literal["apply", "node"]

DEFAULT_NAMESPACE = "slipway-kubeadm"
APT_REVISION = "1.1"  # pkgs.k8s.io names kubeadm 1.37.2 "1.37.2-1.1"
APT_KEYRING = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
APT_SOURCE = "/etc/apt/sources.list.d/kubernetes.list"
# KubernetesPodOperator merges a pod template's container named "base" with its own.
CONTAINER_NAME = "base"
# Explicit limits (seconds): kubeadm apply pulls images and waits for each static pod.
POD_DEADLINE_SECONDS = 1800
VERSION_SETTLE_SECONDS = 300
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
CONTROL_PLANE_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
LABEL_PREFIX = "slipway.dev"
MAX_NAME = 63
RUN_DIGEST_CHARS = 8
DIGEST_PINNED = re.compile(r"^[a-z0-9][a-z0-9._:/-]*@sha256:[0-9a-f]{64}$")


def check_image(image: str) -> str:
    """The kubeadm pods' image, refused unless pinned by digest (``name@sha256:<64 hex>``).

    :raises ValueError: naming the field and why.
    """
    if not DIGEST_PINNED.fullmatch(image or ""):
        raise ValueError(
            f"kubeadm_image: {image!r} must be pinned by digest (name@sha256:<64 hex digits>): "
            "the pod is root on the node, and a tag can be moved"
        )
    return image


def run_digest(run_id: str) -> str:
    """A short, label-safe stand-in for a run id (run ids may be long or hold ``:`` and ``+``)."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:RUN_DIGEST_CHARS]


def pkgs_repo(version: str) -> str:
    """The pkgs.k8s.io Debian repository of ``version``'s minor (one repository per minor)."""
    return f"https://pkgs.k8s.io/core:/stable:/v{Version.parse(version).minor_line}/deb/"


def apt_version(version: str) -> str:
    """The pinned package version apt installs: ``1.37.2`` -> ``1.37.2-1.1``."""
    return f"{Version.parse(version)}-{APT_REVISION}"


def _install(packages: tuple[str, ...], version: str, downgrade: bool) -> list[str]:
    pinned = [f"{p}={apt_version(version)}" for p in packages]
    flags = ["--allow-downgrades"] if downgrade else []
    return [
        shlex.join(["apt-mark", "unhold", *packages]),
        shlex.join(["apt-get", "install", "-y", "-q", *flags, *pinned]),
        shlex.join(["apt-mark", "hold", *packages]),
    ]


def kubeadm_commands(version: str, phase: Phase, *, downgrade: bool = False) -> list[str]:
    """The shell commands, in order, that move one node to ``version``.

    :param phase: ``apply`` on the first control-plane node, ``node`` on every other node.
    :param downgrade: a rollback: apt may install older packages and ``kubeadm upgrade
        apply`` is forced past its no-downgrade policy (no ``plan``: it only plans upgrades).
    :raises ValueError: naming the version or phase when either is malformed.
    """
    if phase not in ("apply", "node"):
        raise ValueError(f"phase: {phase!r} must be 'apply' (first control-plane node) or 'node'")
    target = f"v{Version.parse(version)}"
    repo = pkgs_repo(version)
    source = f"deb [signed-by={APT_KEYRING}] {repo} /"
    if phase == "apply":
        kubeadm = [] if downgrade else [f"kubeadm upgrade plan {target}"]
        kubeadm.append(f"kubeadm upgrade apply {target} --yes" + (" --force" if downgrade else ""))
    else:
        kubeadm = ["kubeadm upgrade node"]
    return [
        "install -d -m 0755 /etc/apt/keyrings",
        f"curl -fsSL {repo}Release.key | gpg --dearmor --yes -o {APT_KEYRING}",
        f"echo {shlex.quote(source)} > {APT_SOURCE}",
        "apt-get update -q",
        *_install(("kubeadm",), version, downgrade),
        # Go no further with a kubeadm other than the target: it decides what gets deployed.
        f'test "$(kubeadm version -o short)" = {target}',
        *kubeadm,
        *_install(("kubelet", "kubectl"), version, downgrade),
        "systemctl daemon-reload",
        "systemctl restart kubelet",
    ]


def kubeadm_script(version: str, phase: Phase, *, downgrade: bool = False) -> str:
    """The commands as one bash script that stops at the first failure and echoes each step."""
    lines = ["set -euxo pipefail", "export DEBIAN_FRONTEND=noninteractive"]
    return "\n".join(lines + kubeadm_commands(version, phase, downgrade=downgrade)) + "\n"


def pod_name(node_name: str, version: str, phase: Phase, run_id: str = "", *, downgrade: bool = False) -> str:
    """A DNS-1123 name unique to the run and stable within it: a retried task finds the pod
    its first try made, and a later run never finds (and adopts) this run's finished pod."""
    action = "rollback" if downgrade else phase
    run = run_digest(run_id)
    base = f"slipway-kubeadm-{action}-{node_name}-v{Version.parse(version)}".lower()
    base = re.sub(r"[^a-z0-9-]+", "-", base).strip("-")
    if len(base) + 1 + len(run) <= MAX_NAME:
        return f"{base}-{run}"
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{base[: MAX_NAME - 2 - len(digest) - len(run)].rstrip('-')}-{digest}-{run}"


def kubeadm_upgrade_pod(
    node_name: str,
    version: str,
    phase: Phase,
    image: str,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    run_id: str = "",
    downgrade: bool = False,
    deadline_seconds: int = POD_DEADLINE_SECONDS,
) -> dict[str, Any]:
    """The privileged pod that runs :func:`kubeadm_script` on ``node_name``'s host.

    :param image: any image with ``nsenter`` (util-linux), pinned by digest; every other
        tool is the host's.
    :param run_id: the run the pod belongs to (its name and labels say so); pass the Airflow
        run id: left empty, every run's pod for a node and version has the same name.
    :param deadline_seconds: ``activeDeadlineSeconds``: the pod fails instead of hanging.
    :raises ValueError: an image not pinned by digest, a malformed version or phase.
    """
    check_image(image)
    script = kubeadm_script(version, phase, downgrade=downgrade)
    labels = {
        "app.kubernetes.io/name": "slipway-kubeadm",
        "app.kubernetes.io/managed-by": "slipway",
        f"{LABEL_PREFIX}/run": run_digest(run_id),
        f"{LABEL_PREFIX}/phase": phase,
        f"{LABEL_PREFIX}/target-version": str(Version.parse(version)),
    }
    # Node names and run ids may exceed a label value's 63 characters: annotations hold them.
    annotations = {f"{LABEL_PREFIX}/node": node_name, f"{LABEL_PREFIX}/run-id": run_id}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(node_name, version, phase, run_id, downgrade=downgrade),
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            # nodeName bypasses the scheduler: the pod runs on a cordoned or drained node too.
            "nodeName": node_name,
            "hostPID": True,
            "hostNetwork": True,
            "restartPolicy": "Never",
            "activeDeadlineSeconds": deadline_seconds,
            "automountServiceAccountToken": False,
            "priorityClassName": "system-node-critical",
            "terminationGracePeriodSeconds": 30,
            "tolerations": [
                {"key": CONTROL_PLANE_LABEL, "operator": "Exists", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
                # The kubelet restart makes the node briefly NotReady; never evict the pod for it.
                {"operator": "Exists", "effect": "NoExecute"},
            ],
            "containers": [
                {
                    "name": CONTAINER_NAME,
                    "image": image,
                    "command": [
                        "nsenter",
                        "--target=1",
                        "--mount",
                        "--uts",
                        "--ipc",
                        "--net",
                        "--pid",
                        "--",
                        "/bin/bash",
                        "-c",
                        script,
                    ],
                    "securityContext": {"privileged": True},
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                }
            ],
        },
    }


@dataclass(frozen=True)
class PodOutcome:
    """How a kubeadm pod ended: ``Succeeded`` or ``Failed``, with the end of its log."""

    phase: str
    log_tail: str = ""


class PodRunner(Protocol):
    """Starts a pod manifest and waits until it ends (the Airflow adapter uses PodManager),
    as the kubeadm upgrader's ServiceAccount. A pod of the same name already there is this
    run's earlier try: wait for it rather than start another."""

    def __call__(self, pod: dict[str, Any]) -> PodOutcome: ...


class PodDeleter(Protocol):
    """Deletes a finished pod (name, namespace), as the kubeadm upgrader's ServiceAccount;
    a pod already gone is fine."""

    def __call__(self, name: str, namespace: str) -> None: ...


class KubeadmControlPlaneUpgrader:
    """:class:`~slipway.upgraders.controlplane.ControlPlaneUpgrader` for kubeadm clusters.

    kubeadm upgrades a control-plane node as a whole (its stacked etcd member and static
    pods), so each component is a ``control-plane-node``: the first runs ``kubeadm
    upgrade apply``, the others ``kubeadm upgrade node``. A node's version is the lowest
    of its static pods' image tags and its kubelet, so a half-done node is not "done".
    """

    def __init__(
        self,
        core: client.CoreV1Api,
        run_pod: PodRunner,
        image: str,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        run_id: str = "",
        delete_pod: PodDeleter | None = None,
        settle_seconds: float = VERSION_SETTLE_SECONDS,
    ) -> None:
        """:param core: reads nodes and static pods (``CoreV1Api(KubernetesHook().api_client)`` in Airflow).
        :param run_pod: starts a kubeadm pod and waits for its end.
        :param image: image of the kubeadm pods (needs only ``nsenter``), pinned by digest.
        :param run_id: the run whose pods these are.
        :param delete_pod: removes a finished pod once its outcome is kept (None: leave it).
        :param settle_seconds: how long a node may take to report the new version after its pod.
        :raises ValueError: an image not pinned by digest (before anything runs).
        """
        self._core = core
        self._run_pod = run_pod
        self._delete_pod = delete_pod
        self.image = check_image(image)
        self.namespace = namespace
        self.run_id = run_id
        self.settle_seconds = settle_seconds

    def components(self) -> list[ComponentRef]:
        nodes = self._core.list_node(label_selector=CONTROL_PLANE_LABEL).items
        names = sorted(n.metadata.name for n in nodes)
        return [ComponentRef(kind="control-plane-node", name=name, node=name) for name in names]

    def phase_for(self, ref: ComponentRef) -> Phase:
        """``apply`` for the first control-plane node in :meth:`components`, ``node`` for the rest."""
        refs = self.components()
        return "apply" if refs and ref.name == refs[0].name else "node"

    def current_version(self, ref: ComponentRef) -> str | None:
        versions = self._node_versions(ref.node or ref.name)
        return str(min(versions.values())) if versions else None

    def upgrade(self, ref: ComponentRef, version: str) -> StepResult:
        return self._move(ref, version, "upgrade")

    def rollback(self, ref: ComponentRef, version: str) -> StepResult:
        return self._move(ref, version, "rollback")

    def verify(self, ref: ComponentRef) -> bool:
        node = ref.node or ref.name
        nodes = self._core.list_node(field_selector=f"metadata.name={node}").items
        if not nodes:
            return False
        ready = any(c.type == "Ready" and c.status == "True" for c in nodes[0].status.conditions or [])
        pods = self._static_pods(node)
        return (
            ready
            and all(
                any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) for p in pods
            )
            and len(pods) >= len(CONTROL_PLANE_COMPONENTS)
        )

    def _move(self, ref: ComponentRef, version: str, action: Action) -> StepResult:
        node = ref.node or ref.name
        pod_name: list[str] = []

        def run_kubeadm(current: str | None) -> tuple[str, dict[str, Any]]:
            if current is not None and abs(minor_gap(Version.parse(current), Version.parse(version))) > 1:
                raise StepRefused(
                    f"refusing to {action} node {node} from {current} to {version}: "
                    "kubeadm moves one minor at a time"
                )
            phase = self.phase_for(ref)
            pod = kubeadm_upgrade_pod(
                node,
                version,
                phase,
                self.image,
                self.namespace,
                run_id=self.run_id,
                downgrade=action == "rollback",
            )
            outcome = self._run_pod(pod)
            name = f"{self.namespace}/{pod['metadata']['name']}"
            pod_name.append(name)
            if self._delete_pod is not None:  # its phase and log tail are in the outcome
                self._delete_pod(pod["metadata"]["name"], self.namespace)
            if outcome.phase != "Succeeded":
                raise StepFailed(
                    f"kubeadm {phase} on node {node} to {version} failed (pod {name} {outcome.phase}): "
                    f"{outcome.log_tail[-500:]}"
                )
            return f"node {node} {PAST_TENSE[action]} to {version} by pod {name}", {"pod": name}

        return move_component(
            ref,
            version,
            action,
            subject=f"node {node}",
            read_version=lambda: self.current_version(ref),
            change=run_kubeadm,
            settle_seconds=self.settle_seconds,
            interval=5.0,
            not_reached=lambda: (
                f"node {node} reports {self._node_versions(node)} after pod {pod_name[-1]} succeeded; "
                f"expected {version} everywhere"
            ),
        )

    def _static_pods(self, node: str) -> list[client.V1Pod]:
        pods = self._core.list_namespaced_pod("kube-system", field_selector=f"spec.nodeName={node}").items
        return [p for p in pods if (p.metadata.labels or {}).get("component") in CONTROL_PLANE_COMPONENTS]

    def _node_versions(self, node: str) -> dict[str, Version]:
        """Version of each control-plane static pod (image tag) and of the kubelet on ``node``."""
        found: dict[str, Version] = {}
        for pod in self._static_pods(node):
            tagged = image_version(pod.spec.containers[0].image)
            if tagged is not None:  # a digest-only image says nothing about its version
                found[pod.metadata.labels["component"]] = Version.parse(tagged)
        nodes = self._core.list_node(field_selector=f"metadata.name={node}").items
        if nodes:
            found["kubelet"] = Version.parse(nodes[0].status.node_info.kubelet_version)
        return found
