"""The kubeadm upgrade pods through the cncf-kubernetes provider's pod machinery.

Everything here acts as the ``slipway_kubeadm`` connection: the opt-in kubeadm-upgrader
ServiceAccount (manifests/kubeadm-upgrader-rbac.yaml), which may manage pods only in
``slipway-kubeadm``. A pod's life, in three calls:

- :meth:`KubeadmPods.start` creates it with the provider's ``PodManager``; a 409 for the same
  run-unique name is an earlier try of this task, whose pod is waited for instead of a second one
  (a pod of that name that belongs to another run is refused, never adopted).
- :meth:`KubeadmPods.trigger` is the provider's ``KubernetesPodTrigger`` on that pod, so the task
  defers and no worker slot is held while kubeadm runs.
- :meth:`KubeadmPods.finish`, on resume, reads how the pod ended (phase, what the kubelet and the
  container said, the last log lines when the kubelet serves them) and deletes the pod, whatever
  its end; a pod deleted already is fine.

:class:`ProviderPodRunner` is the same three calls without the deferral, for the callers that
still wait in the task (the control-plane stage): the wait is the provider's
``PodManager.await_pod_completion``, and the pod is deleted once its outcome is kept.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slipway.airflow_env import KUBEADM_CONN_ID
from slipway.upgraders.kubeadm import CONTAINER_NAME, PodOutcome

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger
    from kubernetes import client

RUN_ID_ANNOTATION = "slipway.dev/run-id"
LOG_LINES = 40
# The kubelet serves logs; one that does not (or a node gone) must not hold the task up.
LOG_REQUEST_TIMEOUT = (5.0, 20.0)
POLL_SECONDS = 10.0
# Pulling the image may take a while on a real node; the pod's activeDeadlineSeconds bounds the rest.
STARTUP_TIMEOUT_SECONDS = 600
NOT_FOUND, CONFLICT = 404, 409
DONE_PHASES = ("Succeeded", "Failed")


class PodOfAnotherRun(RuntimeError):
    """A pod with this run's name exists but another run made it: it is not adopted."""


@dataclass(frozen=True)
class PodRef:
    name: str
    namespace: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> PodRef:
        namespace, _, name = text.partition("/")
        if not namespace or not name:
            raise ValueError(f"kubeadm pod: {text!r} is not namespace/name")
        return cls(name, namespace)


class KubeadmPods:
    """Start, trigger on and finish kubeadm pods as the ``slipway_kubeadm`` connection."""

    def __init__(self, run_id: str, conn_id: str = KUBEADM_CONN_ID) -> None:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
        from airflow.providers.cncf.kubernetes.utils.pod_manager import PodManager

        self.run_id = run_id
        self.conn_id = conn_id
        self.hook = KubernetesHook(conn_id=conn_id)
        self.core: client.CoreV1Api = self.hook.core_v1_client
        self.manager = PodManager(kube_client=self.core)

    def start(self, pod: dict[str, Any]) -> PodRef:
        """Create ``pod`` (a manifest of :func:`~slipway.upgraders.kubeadm.kubeadm_upgrade_pod`);
        the same pod already there from an earlier try of this run is reused.

        :raises PodOfAnotherRun: a pod of that name made by another run.
        """
        from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
        from kubernetes.client.exceptions import ApiException

        ref = PodRef(pod["metadata"]["name"], pod["metadata"]["namespace"])
        try:
            # run_pod_async, not create_pod: the latter retries a 409, which here is an answer.
            self.manager.run_pod_async(PodGenerator.deserialize_model_dict(pod))
            return ref
        except ApiException as err:
            if err.status != CONFLICT:
                raise
        existing = self.core.read_namespaced_pod(ref.name, ref.namespace)
        owner = (existing.metadata.annotations or {}).get(RUN_ID_ANNOTATION)
        if owner != self.run_id:
            raise PodOfAnotherRun(
                f"pod {ref} exists but belongs to run {owner!r}, not {self.run_id!r}: "
                "left alone (delete it once that run is over)"
            )
        return ref

    def trigger(self, ref: PodRef) -> KubernetesPodTrigger:
        """The provider's trigger that waits in the triggerer until the pod has ended."""
        from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger

        return KubernetesPodTrigger(
            pod_name=ref.name,
            pod_namespace=ref.namespace,
            trigger_start_time=datetime.datetime.now(tz=datetime.UTC),
            base_container_name=CONTAINER_NAME,
            kubernetes_conn_id=self.conn_id,
            poll_interval=POLL_SECONDS,
            get_logs=False,  # read once, on resume: the trigger's log lines would go to the triggerer
            startup_timeout=STARTUP_TIMEOUT_SECONDS,
            schedule_timeout=STARTUP_TIMEOUT_SECONDS,
            # The task reads the end and deletes the pod. Never kill a running kubeadm (a
            # half-upgraded node) because a task was cleared: the next try waits for the same pod.
            on_finish_action="keep_pod",
            on_kill_action="keep_pod",
            # The identity may not read events; the pod's own status says what went wrong.
            log_events_on_startup=False,
        )

    def exists(self, ref: PodRef) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.read_namespaced_pod(ref.name, ref.namespace)
        except ApiException as err:
            if err.status != NOT_FOUND:
                raise
            return False
        return True

    def outcome(self, ref: PodRef) -> PodOutcome:
        """How the pod ended (``Gone`` when it no longer exists), read once."""
        from kubernetes.client.exceptions import ApiException

        try:
            pod = self.core.read_namespaced_pod(ref.name, ref.namespace)
        except ApiException as err:
            if err.status != NOT_FOUND:
                raise
            return PodOutcome("Gone", f"pod {ref} no longer exists")
        phase = str(pod.status.phase if pod.status else "Unknown")
        said = _status_words(pod)
        return PodOutcome(phase, "\n".join(x for x in (said, self._log_tail(ref)) if x))

    def _log_tail(self, ref: PodRef) -> str:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            text = self.core.read_namespaced_pod_log(
                ref.name,
                ref.namespace,
                container=CONTAINER_NAME,
                tail_lines=LOG_LINES,
                _request_timeout=LOG_REQUEST_TIMEOUT,
            )
        except ApiException as err:
            return f"logs unavailable: the kubelet did not serve them ({err.status} {err.reason})"
        except HTTPError as err:
            return f"logs unavailable: {type(err).__name__}"
        return f"last log lines:\n{text}" if text else "logs: empty"

    def delete(self, ref: PodRef) -> None:
        """Delete the pod through the provider's PodManager; a pod gone already is fine."""
        from kubernetes import client

        pod = client.V1Pod(metadata=client.V1ObjectMeta(name=ref.name, namespace=ref.namespace))
        self.manager.delete_pod(pod)

    def finish(self, ref: PodRef, *, gave_up: bool = False) -> PodOutcome:
        """The pod's outcome, and the pod deleted once it has ended (Succeeded or Failed).

        :param gave_up: the wait gave up on a pod that never started (the trigger's startup
            timeout): a ``Pending`` pod is deleted too. A ``Running`` pod is always left running
            (kubeadm is never killed halfway through a node), and so is a ``Pending`` one
            unless ``gave_up``: the caller waits for it again.
        """
        outcome = self.outcome(ref)
        if outcome.phase in DONE_PHASES or (gave_up and outcome.phase == "Pending"):
            self.delete(ref)
        return outcome

    def wait(self, ref: PodRef) -> None:
        """Wait in this process until the pod ends (the provider's PodManager polling)."""
        from kubernetes import client

        pod = client.V1Pod(metadata=client.V1ObjectMeta(name=ref.name, namespace=ref.namespace))
        self.manager.await_pod_completion(pod, container_name=CONTAINER_NAME)


def _status_words(pod: Any) -> str:
    """What the kubelet said about the pod and its container (reason, message, exit code)."""
    status = pod.status
    words = [f"phase {status.phase}"]
    if status.reason or status.message:
        words.append(f"{status.reason or ''}: {status.message or ''}".strip(": "))
    for c in status.container_statuses or []:
        done = c.state.terminated if c.state else None
        if done is not None:
            said = f"container {c.name} exited {done.exit_code}"
            told = ": ".join(x for x in (done.reason, done.message) if x)
            words.append(f"{said} ({told})" if told else said)
    return "; ".join(words)


def check_finished(outcome: PodOutcome, ref: PodRef, what: str) -> None:
    """Raise unless the pod Succeeded, naming the pod and what it said."""
    if outcome.phase != "Succeeded":
        raise RuntimeError(f"{what} failed: pod {ref} ended {outcome.phase}: {outcome.log_tail[-800:]}")


class ProviderPodRunner:
    """A :class:`~slipway.upgraders.kubeadm.PodRunner` that waits in the task: create (or reuse
    this run's), the provider's PodManager wait, the outcome kept, the pod deleted."""

    def __init__(self, pods: KubeadmPods) -> None:
        self.pods = pods

    def __call__(self, pod: dict[str, Any]) -> PodOutcome:
        ref = self.pods.start(pod)
        # The pod's activeDeadlineSeconds ends the wait. A task killed meanwhile leaves the pod
        # running: the retry finds it by its run-unique name and waits for it again.
        self.pods.wait(ref)
        return self.pods.finish(ref)
