"""Node upgraders: what "upgrade this node to version V" means on each platform.

- :class:`LocalInPlaceUpgrader` plays the kubelet's part on the local cluster: the
  kwok node comes back reporting the new kubelet version.
- :class:`~slipway.upgraders.surge.LocalSurgeUpgrader` and
  :class:`~slipway.upgraders.surge.LocalBlueGreenUpgrader` upgrade the way cloud node pools
  do: a twin node joins at the new version before the old one is drained (``surge.py``).
- :class:`KubeadmNodeUpgrader` runs ``kubeadm upgrade node`` and the kubelet package
  upgrade on a real node through a privileged pod (see ``upgraders/kubeadm.py``).

Local upgraders act for the kubelet or the cloud, so they may hold admin credentials;
Slipway's own steps (cordon, drain, checks) always use the orchestrator identity.
Every method is idempotent: the node's reported kubelet version is the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client

from slipway.kube.nodes import kubelet_version

SIMULATE_LABEL = "slipway.dev/simulate"
NOT_READY = "not-ready"  # the kubelet fails to come back after its upgrade
REPLACES = "slipway.dev/replaces"
RETIRE = "slipway.dev/retire"
NOT_FOUND = 404


@dataclass(frozen=True)
class NodeStepResult:
    node: str
    action: str  # "upgraded", "already-at-version", "replaced", "rolled-back", "retired"
    version: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"node": self.node, "action": self.action, "version": self.version, "detail": self.detail}


class NodeUpgrader(Protocol):
    """One small interface; the DAG calls it the same way on every platform."""

    name: str

    def prepare_batch(self, nodes: list[str], version: str) -> list[str]:
        """Before cordon: add surge capacity if the strategy uses it; returns the nodes it added."""

    def upgrade_node(self, node: str, version: str) -> NodeStepResult:
        """After drain: move one node to ``version``."""

    def nodes_to_wait_for(self, nodes: list[str]) -> list[str]:
        """Which nodes must be Ready at the new version before the batch is validated."""

    def finalize_batch(self, nodes: list[str]) -> list[str]:
        """After validation passed: retire what the strategy replaced."""

    def rollback_node(self, node: str, version: str) -> NodeStepResult:
        """Return one node to ``version`` (or undo its surge replacement)."""


def _v(version: str) -> str:
    return version if version.startswith("v") else f"v{version}"


class LocalInPlaceUpgrader:
    """Bumps the kubelet version kwok reports, as a package upgrade + kubelet restart would."""

    name = "in-place"

    def __init__(self, admin_api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(admin_api)

    def prepare_batch(self, nodes: list[str], version: str) -> list[str]:
        return []

    def nodes_to_wait_for(self, nodes: list[str]) -> list[str]:
        return list(nodes)

    def finalize_batch(self, nodes: list[str]) -> list[str]:
        return []

    def upgrade_node(self, node: str, version: str) -> NodeStepResult:
        return self._set_version(node, version, "upgraded")

    def rollback_node(self, node: str, version: str) -> NodeStepResult:
        # The old kubelet package comes back and starts: whatever broke the new one is gone.
        labels = self.core.read_node(node).metadata.labels or {}
        if SIMULATE_LABEL in labels:
            self.core.patch_node(node, {"metadata": {"labels": {SIMULATE_LABEL: None}}})
        return self._set_version(node, version, "rolled-back")

    def _set_version(self, node: str, version: str, action: str) -> NodeStepResult:
        current = self.core.read_node(node)
        broken = (current.metadata.labels or {}).get(SIMULATE_LABEL) == NOT_READY
        if kubelet_version(current) == version.removeprefix("v") and not broken:
            return NodeStepResult(node, "already-at-version", _v(version))
        status: dict[str, Any] = {"nodeInfo": {"kubeletVersion": _v(version)}}
        if broken:
            # kwok leaves nodes with this label alone, so the node stays NotReady: the
            # kubelet that never came back after its upgrade.
            status["conditions"] = [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "KubeletNotReady",
                    "message": "kubelet did not come back after the upgrade (simulated)",
                }
            ]
        self.core.patch_node_status(node, {"status": status})
        return NodeStepResult(
            node, action, _v(version), "simulated kubelet restart" if not broken else "left NotReady"
        )


class KubeadmNodeUpgrader:
    """``kubeadm upgrade node`` plus the kubelet/kubectl package upgrade, run on the node by a
    privileged pod (see :func:`slipway.upgraders.kubeadm.kubeadm_upgrade_pod`).

    The node operator runs the pod itself and defers while it runs (:meth:`upgrade_pod`, then
    :meth:`result_of`); :meth:`upgrade_node` and :meth:`rollback_node` wait through ``run_pod``.
    """

    name = "kubeadm"

    def __init__(self, api: client.ApiClient, run_pod: Any, image: str, *, run_id: str = "") -> None:
        """:param run_id: the run whose pods these are (their names and labels say so)."""
        self.core = client.CoreV1Api(api)
        self.run_pod = run_pod
        self.image = image
        self.run_id = run_id

    def prepare_batch(self, nodes: list[str], version: str) -> list[str]:
        return []

    def nodes_to_wait_for(self, nodes: list[str]) -> list[str]:
        return list(nodes)

    def finalize_batch(self, nodes: list[str]) -> list[str]:
        return []

    def upgrade_node(self, node: str, version: str) -> NodeStepResult:
        return self._run(node, version, downgrade=False)

    def rollback_node(self, node: str, version: str) -> NodeStepResult:
        return self._run(node, version, downgrade=True)

    def upgrade_pod(self, node: str, version: str, *, downgrade: bool = False) -> dict[str, Any] | None:
        """The pod that moves ``node`` to ``version``, or None when its kubelet is there already."""
        from slipway.upgraders.kubeadm import kubeadm_upgrade_pod

        if kubelet_version(self.core.read_node(node)) == version.removeprefix("v"):
            return None
        return kubeadm_upgrade_pod(
            node, version.removeprefix("v"), "node", self.image, run_id=self.run_id, downgrade=downgrade
        )

    @staticmethod
    def result_of(
        node: str, version: str, pod: str, phase: str, said: str, *, downgrade: bool = False
    ) -> NodeStepResult:
        """The step's result from how its pod ended.

        :raises RuntimeError: the pod did not succeed, naming it and what it said.
        """
        if phase != "Succeeded":
            raise RuntimeError(
                f"kubeadm upgrade of node {node} to {_v(version)}: pod {pod} ended {phase}: {said[-800:]}"
            )
        return NodeStepResult(node, "rolled-back" if downgrade else "upgraded", _v(version), f"pod {pod}")

    def _run(self, node: str, version: str, *, downgrade: bool) -> NodeStepResult:
        pod = self.upgrade_pod(node, version, downgrade=downgrade)
        if pod is None:
            return NodeStepResult(node, "already-at-version", _v(version))
        outcome = self.run_pod(pod)
        name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        return self.result_of(node, version, name, outcome.phase, outcome.log_tail, downgrade=downgrade)
