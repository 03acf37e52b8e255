"""One task per node: every step of a node's upgrade, resumable from the step recorded on the node.

pre-drain check → cordon → drain → upgrade → wait Ready (deferred to the triggerer, no worker
slot held) → uncordon → post-checks. On kubeadm the upgrade is a pod on the node: the task starts
it, records it (step ``upgrading``, the pod in ``slipway.dev/kubeadm-pod``) and defers on the
cncf-kubernetes provider's pod trigger; on resume it keeps the pod's end and deletes the pod.
Each step records itself on the node (``slipway.dev/step`` with this run's id), so a cleared or
retried task skips what this run already did there and goes on from the recorded step: the
cluster, not the task, holds the progress. One task instead of seven per node is what keeps the
graph small and the batch fast (every task costs a process start and a DAG parse, and a
scheduling round trip).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from slipway.airflow import runbooks

# The steps recorded on a node, in order; a task resumes after the last one this run reached.
# "upgrading": this run's kubeadm pod is running on the node (kubeadm platform only).
STEPS = ("cordoned", "drained", "upgrading", "upgraded", "done")
# The kubeadm pod (namespace/name) a node's "upgrading" step waits for.
KUBEADM_POD = "slipway.dev/kubeadm-pod"


def _v(version: str) -> str:
    return version if version.startswith("v") else f"v{version}"


def reached_step(node: Any, run_id: str) -> str | None:
    """The last step ``run_id`` recorded on ``node`` (a V1Node), or None (nothing yet, or
    another run's step)."""
    from slipway.kube import nodes as kube_nodes

    step = kube_nodes.step_of(node)
    if step is None or step.run_id != run_id or step.step not in STEPS:
        return None
    return step.step


def still_to_do(reached: str | None) -> tuple[str, ...]:
    """The steps left after ``reached`` (all of them when nothing was recorded)."""
    return STEPS if reached is None else STEPS[STEPS.index(reached) + 1 :]


def adopt_cordon_of_earlier_run(node: str) -> None:
    """A run that died mid-batch left its cordon: the run resuming the work takes it over,
    so its own uncordon undoes it. An operator's (external) cordon is never adopted, nor the
    cordon of a run that still holds the cluster lease (it is still working on the node)."""
    from kubernetes import client

    from slipway import lease
    from slipway.airflow.runtime import current_run_id, orchestrator_api, record
    from slipway.kube import nodes as kube_nodes

    api = orchestrator_api()
    core = client.CoreV1Api(api)
    current = core.read_node(node)
    owner = kube_nodes.cordon_owner(current)
    if not kube_nodes.is_cordoned(current) or owner in (None, kube_nodes.EXTERNAL_CORDON, current_run_id()):
        return
    if lease.cordoned_by_other_live_run(api, [current], current_run_id()):
        raise AirflowFailException(f"node {node} is cordoned by run {owner}, which holds the cluster lease")
    # Guarded by the resourceVersion read above: a 409 means the node changed; the retry decides again.
    annotations = {kube_nodes.CORDONED_BY: current_run_id()}
    core.patch_node(
        node, {"metadata": {"annotations": annotations, "resourceVersion": current.metadata.resource_version}}
    )
    record().event("cordon-adopted", f"node {node}: cordon of run {owner} taken over", node=node)


class UpgradeNodeOperator(BaseOperator):
    """Upgrade one worker node (mapped over the batch's nodes).

    :param node: the node's name (templated; the batch selection's XCom when mapped).
    :param request: the validated request as its JSON dict.
    """

    template_fields = ("node", "request")
    ui_color = "#d7ecff"

    def __init__(self, *, node: Any, request: Any, **kwargs: Any) -> None:
        kwargs.setdefault("doc_md", runbooks.UPGRADE_ONE_NODE)
        super().__init__(**kwargs)
        self.node = node
        self.request = request

    # ---- the steps before the wait -----------------------------------------------------------

    def execute(self, context: Any) -> dict[str, Any]:
        from kubernetes import client

        from slipway.airflow.runtime import current_run_id, orchestrator_api, request_from
        from slipway.airflow.stage_lease import keep_cluster_lease
        from slipway.kube import nodes as kube_nodes

        node, req = str(self.node), request_from(self.request)
        with keep_cluster_lease():
            current = client.CoreV1Api(orchestrator_api()).read_node(node)
            reached = reached_step(current, current_run_id())
            todo = still_to_do(reached)
            if reached:
                self.log.info(
                    "node %s: this run reached '%s' here before; going on from there", node, reached
                )
            if not todo:
                return {"node": node, "step": "done"}
            if kube_nodes.is_quarantined(current):
                self.log.info("node %s is quarantined: left alone for a human", node)
                return {"node": node, "quarantined": True}
            if reached is None:
                quarantined = self._pre_drain_check(node, req)
                if quarantined:
                    return quarantined
                self._cordon(node)
            if "drained" in todo:
                quarantined = self._drain(node, req)
                if quarantined:
                    return quarantined
            waiting_for: list[str] = []
            pod = self._start_kubeadm_pod(node, req, current, reached) if "upgraded" in todo else None
            if pod is None:
                waiting_for = self._upgrade(node, req, "upgraded" in todo)
        if pod is not None:
            self._defer_on_pod(node, pod)
        return self._wait_ready(node, req, waiting_for)

    def _wait_ready(self, node: str, req: Any, waiting_for: list[str]) -> dict[str, Any]:
        if self._ready(waiting_for, _v(str(req.target))):
            return self._finish(node)
        from slipway.airflow.runtime import run_connections
        from slipway.airflow.triggers import NodesReadyTrigger

        self.log.info("node %s: waiting (deferred) until %s Ready at %s", node, waiting_for, req.target)
        self.defer(
            trigger=NodesReadyTrigger(
                waiting_for,
                _v(str(req.target)),
                float(req.node_ready_timeout_seconds),
                conn_id=run_connections()[0],  # the run's cluster, also in the triggerer
            ),
            method_name="resume_after_ready",
        )
        raise AssertionError("unreachable: defer() raises")  # pragma: no cover

    def _pre_drain_check(self, node: str, req: Any) -> dict[str, Any] | None:
        from slipway import workers
        from slipway.airflow.runtime import orchestrator_api, record
        from slipway.kube import nodes as kube_nodes
        from slipway.kube.drain import plan_drain
        from slipway.kube.pdb import blocking_pdbs

        api = orchestrator_api()
        plan = plan_drain(api, node, workers.drain_options(req))
        if plan.refuse:
            raise AirflowFailException("; ".join(s.message for s in plan.refuse))
        # Only a PDB that can never allow a disruption is worth acting on before the drain;
        # a transient block (replacement pods still starting) is what the drain's retries are for.
        permanent = {e["pdb"] for e in blocking_pdbs(api) if e["permanent"]}
        stuck = [b for b in plan.blocked if b.pdb in permanent]
        if not stuck:
            self.log.info("node %s: pre-drain check passed (%d pods to evict)", node, len(plan.evict))
            return None
        blockers = "; ".join(str(b) for b in stuck)
        if req.blocked_drain_policy == "quarantine":
            kube_nodes.quarantine(api, node, f"drain blocked: {blockers}")
            record().event("quarantined", f"node {node} quarantined (left cordoned): {blockers}", node=node)
            node_step_event(
                node, "SlipwayQuarantined", f"left cordoned: drain blocked: {blockers}", "Quarantine"
            )
            return {"node": node, "quarantined": True, "blockers": blockers}
        if req.blocked_drain_policy == "rollback":
            node_step_event(node, "SlipwayDrainBlocked", f"drain would be blocked: {blockers}", "Drain")
            raise AirflowFailException(f"drain of {node} would be blocked: {blockers}")
        return None

    def _cordon(self, node: str) -> None:
        from slipway.airflow.runtime import current_run_id, orchestrator_api
        from slipway.kube import nodes as kube_nodes

        api = orchestrator_api()
        adopt_cordon_of_earlier_run(node)
        changed = kube_nodes.cordon(api, node, current_run_id())
        kube_nodes.set_step(api, node, current_run_id(), "cordoned")
        self.log.info("node %s: %s", node, "cordoned" if changed else "already cordoned")
        if changed:
            node_step_event(node, "SlipwayCordoned", "cordoned for its upgrade", "Cordon")

    def _drain(self, node: str, req: Any) -> dict[str, Any] | None:
        from slipway import workers
        from slipway.airflow.runtime import current_run_id, orchestrator_api, record
        from slipway.kube import nodes as kube_nodes
        from slipway.kube.drain import DrainBlocked, DrainRefused, drain_node

        api = orchestrator_api()
        options = workers.drain_options(req)
        node_step_event(node, "SlipwayDrainStarted", _drain_note(options), "Drain")
        try:
            result = drain_node(api, node, options, run_id=current_run_id())
        except DrainRefused as err:
            raise AirflowFailException(str(err)) from err
        except DrainBlocked as err:
            if req.blocked_drain_policy == "quarantine":
                kube_nodes.quarantine(api, node, str(err))
                record().event("quarantined", f"node {node} quarantined (left cordoned): {err}", node=node)
                node_step_event(node, "SlipwayQuarantined", f"left cordoned: {err}", "Quarantine")
                return {"node": node, "quarantined": True, "blockers": [b.to_dict() for b in err.blockers]}
            node_step_event(node, "SlipwayDrainBlocked", str(err), "Drain")
            raise AirflowFailException(str(err)) from err
        kube_nodes.set_step(api, node, current_run_id(), "drained")
        self.log.info("node %s: drained (%s)", node, result.to_dict())
        node_step_event(node, "SlipwayDrained", f"drained: {len(result.evicted)} pod(s) evicted", "Drain")
        return None

    def _upgrade(self, node: str, req: Any, needed: bool) -> list[str]:
        """Upgrade the node (unless this run already did); the nodes whose readiness proves it."""
        from slipway.airflow.runtime import current_run_id, orchestrator_api, platform, record
        from slipway.kube import nodes as kube_nodes

        upgrader = platform().node_upgrader(req.strategy)
        if needed:
            result = upgrader.upgrade_node(node, str(req.target))
            kube_nodes.set_step(orchestrator_api(), node, current_run_id(), "upgraded")
            record().event("node-upgraded", f"node {node}: {result.action} {result.version}", node=node)
            node_step_event(node, "SlipwayUpgraded", f"{result.action} {result.version}", "Upgrade")
            self.log.info("node %s: %s %s", node, result.action, result.version)
        return list(upgrader.nodes_to_wait_for([node]))

    # ---- kubeadm: the upgrade pod, waited for in the triggerer -------------------------------

    def _start_kubeadm_pod(self, node: str, req: Any, current: Any, reached: str | None) -> Any:
        """On kubeadm, this run's upgrade pod for ``node`` (a PodRef), started unless it runs
        already; None on other platforms, or when the node is at the target already."""
        from kubernetes import client

        from slipway.airflow.pods import KubeadmPods, PodRef
        from slipway.airflow.runtime import current_run_id, orchestrator_api, platform, platform_settings
        from slipway.kube import nodes as kube_nodes
        from slipway.upgraders.nodes import KubeadmNodeUpgrader

        if platform_settings().platform != "kubeadm":
            return None
        upgrader = platform().node_upgrader(req.strategy)
        if not isinstance(upgrader, KubeadmNodeUpgrader):
            return None
        run_id = current_run_id()
        pods = KubeadmPods(run_id)
        recorded = (current.metadata.annotations or {}).get(KUBEADM_POD)
        if reached == "upgrading" and recorded:
            ref = PodRef.parse(recorded)
            if pods.exists(ref):
                self.log.info("node %s: waiting again for this run's kubeadm pod %s", node, ref)
                return ref
        manifest = upgrader.upgrade_pod(node, str(req.target))
        if manifest is None:
            return None
        ref = pods.start(manifest)
        api = orchestrator_api()
        # The pod first, then the step: an "upgrading" step always names its pod.
        client.CoreV1Api(api).patch_node(node, {"metadata": {"annotations": {KUBEADM_POD: str(ref)}}})
        kube_nodes.set_step(api, node, run_id, "upgrading")
        node_step_event(node, "SlipwayKubeadmStarted", f"kubeadm upgrade pod {ref} started", "Upgrade")
        self.log.info("node %s: kubeadm upgrade pod %s started", node, ref)
        return ref

    def _defer_on_pod(self, node: str, ref: Any) -> None:
        from slipway.airflow.pods import KubeadmPods
        from slipway.airflow.runtime import current_run_id

        self.log.info("node %s: waiting (deferred) for kubeadm pod %s to end", node, ref)
        self.defer(trigger=KubeadmPods(current_run_id()).trigger(ref), method_name="resume_after_pod")

    def resume_after_pod(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """The kubeadm pod has ended (or the trigger gave up on it): keep its end, delete it,
        record the step, then wait for the node Ready at the target as after any upgrade."""
        from slipway.airflow.pods import KubeadmPods, PodRef
        from slipway.airflow.runtime import current_run_id, orchestrator_api, platform, record, request_from
        from slipway.airflow.stage_lease import keep_cluster_lease
        from slipway.kube import nodes as kube_nodes
        from slipway.upgraders.nodes import KubeadmNodeUpgrader

        node, req = str(self.node), request_from(self.request)
        ref = PodRef(str(event["name"]), str(event["namespace"]))
        with keep_cluster_lease():
            outcome = KubeadmPods(current_run_id()).finish(ref, gave_up=event.get("status") == "timeout")
            if outcome.phase == "Running" and event.get("status") in ("success", "failed"):
                # Its container ended a moment before the kubelet moved the pod's phase on.
                self._defer_on_pod(node, ref)
            if outcome.phase in ("Running", "Pending") and event.get("status") != "timeout":
                # The trigger stopped on an error while kubeadm still runs: never killed here;
                # the task's retry finds the step "upgrading" and waits for the same pod again.
                raise AirflowException(
                    f"node {node}: the wait for kubeadm pod {ref} stopped ({event.get('message', '')}) "
                    f"while the pod is {outcome.phase}; a retry waits for it again"
                )
            said = outcome.log_tail or str(event.get("message", ""))
            try:
                result = KubeadmNodeUpgrader.result_of(node, str(req.target), str(ref), outcome.phase, said)
            except RuntimeError as err:
                node_step_event(node, "SlipwayKubeadmFailed", str(err)[:1000], "Upgrade")
                raise AirflowException(str(err)) from err
            kube_nodes.set_step(orchestrator_api(), node, current_run_id(), "upgraded")
            record().event("node-upgraded", f"node {node}: {result.action} {result.version}", node=node)
            node_step_event(node, "SlipwayUpgraded", f"{result.action} {result.version} ({ref})", "Upgrade")
            self.log.info("node %s: %s %s by pod %s", node, result.action, result.version, ref)
            waiting_for = list(platform().node_upgrader(req.strategy).nodes_to_wait_for([node]))
        return self._wait_ready(node, req, waiting_for)

    def _ready(self, nodes: list[str], version: str) -> bool:
        # Look once before deferring: a node already back needs no trip through the triggerer
        # (and on Airflow 3.3 a fast resume can race the scheduler's stale defer-exit event).
        from kubernetes import client

        from slipway.airflow.runtime import orchestrator_api
        from slipway.airflow.triggers import ready_at

        if not nodes:
            return True
        wanted = set(nodes)
        found = [
            n for n in client.CoreV1Api(orchestrator_api()).list_node().items if n.metadata.name in wanted
        ]
        return len(found) == len(wanted) and all(ready_at(n, version) for n in found)

    # ---- after the wait ------------------------------------------------------------------------

    def resume_after_ready(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        from slipway.airflow.runtime import request_from

        if event["status"] != "ready":
            req = request_from(self.request)
            raise AirflowException(
                f"node {self.node}: {', '.join(event['waiting'])} not Ready at {req.target} after "
                f"{float(req.node_ready_timeout_seconds):.0f}s"
            )
        from slipway.airflow.stage_lease import keep_cluster_lease

        with keep_cluster_lease():
            return self._finish(str(self.node))

    def _finish(self, node: str) -> dict[str, Any]:
        """Uncordon (unless the node is replaced or quarantined), then the post-checks."""
        from kubernetes import client

        from slipway import workers
        from slipway.airflow.runtime import current_run_id, orchestrator_api, platform, record, request_from
        from slipway.kube import nodes as kube_nodes
        from slipway.platform import TWIN_STRATEGIES

        req = request_from(self.request)
        api = orchestrator_api()
        current = client.CoreV1Api(api).read_node(node)
        if kube_nodes.is_quarantined(current):
            return {"node": node, "quarantined": True}
        # A replaced (blue) node stays cordoned until retired.
        if req.strategy not in TWIN_STRATEGIES:
            since = (current.metadata.annotations or {}).get(kube_nodes.CORDONED_AT)
            if kube_nodes.uncordon(api, node, current_run_id()):
                out = kube_nodes.seconds_since(since) if since else None
                took = f" after {out:.0f}s out of service" if out is not None else ""
                record().event(
                    "node-uncordoned", f"node {node} back in service{took}", node=node, seconds=out
                )
                node_step_event(node, "SlipwayUncordoned", f"back in service{took}", "Uncordon")
                self.log.info("node %s: uncordoned%s", node, took)
        serving = platform().node_upgrader(req.strategy).nodes_to_wait_for([node]) or [node]
        problems = workers.node_problems(api, serving, str(req.target))
        if problems:
            raise AirflowFailException("; ".join(problems))
        kube_nodes.set_step(api, node, current_run_id(), "done")
        self.log.info("node %s: done", node)
        return {"node": node, "step": "done"}


# What the engineer must look at: the node did not end its step in service.
WARNINGS = ("SlipwayQuarantined", "SlipwayRolledBack", "SlipwayDrainBlocked", "SlipwayKubeadmFailed")


def node_step_event(node: str, reason: str, note: str, action: str) -> None:
    """What this run did to the node, where ``kubectl describe node`` shows it (best effort)."""
    from slipway.airflow.runtime import current_run_id, orchestrator_api
    from slipway.kube.events import node_event

    api, run_id = orchestrator_api(), current_run_id()
    if reason in WARNINGS:
        node_event(api, node, reason, note, action=action, run_id=run_id, kind="Warning")
    else:
        node_event(api, node, reason, note, action=action, run_id=run_id)


def _drain_note(options: Any) -> str:
    """The drain's terms, as ``kubectl drain``'s flags would say them."""
    grace = "each pod's own" if options.grace_period_seconds < 0 else f"{options.grace_period_seconds}s"
    return f"draining through the Eviction API: grace period {grace}, timeout {options.timeout_seconds:g}s"
