"""Run the kubeadm upgrade pods through the cncf-kubernetes provider's client and wait for them."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from slipway.localcluster.health import NotHealthy, wait_until
from slipway.upgraders.kubeadm import PodOutcome

POD_TIMEOUT_SECONDS = 1800.0
DONE_PHASES = ("Succeeded", "Failed")


class ProviderPodRunner:
    """A :class:`~slipway.upgraders.kubeadm.PodRunner` on the ``slipway_kubeadm`` connection's
    client: the opt-in kubeadm-upgrader identity, which may manage pods only in ``slipway-kubeadm``."""

    def __init__(self, api: client.ApiClient, timeout: float = POD_TIMEOUT_SECONDS) -> None:
        self.core = client.CoreV1Api(api)
        self.timeout = timeout

    def __call__(self, pod: dict[str, Any]) -> PodOutcome:
        meta = pod["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        try:
            self.core.create_namespaced_pod(namespace, pod)
        except client.exceptions.ApiException as err:
            if err.status != 409:  # already started by an earlier try of this task: wait for it
                raise

        def done() -> bool:
            return self.core.read_namespaced_pod(name, namespace).status.phase in DONE_PHASES

        try:
            wait_until(f"pod {namespace}/{name}", done, self.timeout, interval=5.0)
        except NotHealthy:
            return PodOutcome("Timeout", f"pod {namespace}/{name} did not finish in {self.timeout:.0f}s")
        phase = self.core.read_namespaced_pod(name, namespace).status.phase
        log = self.core.read_namespaced_pod_log(name, namespace, tail_lines=40)
        return PodOutcome(phase, log)
