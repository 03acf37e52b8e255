"""Node operations: cordon, uncordon, quarantine and the per-node progress record.

The cluster is the source of truth for progress: who cordoned a node and which step of
which run it reached are annotations on the Node itself, so a retried or resumed task
reads them back instead of trusting memory or XCom.

Every write is a strategic-merge patch carrying the ``resourceVersion`` it was decided
on, so two writers racing on one node cannot silently overwrite each other: the loser
gets a 409, re-reads and decides again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
# One definition of a node's role and pool for the preflight, batching and the run: the
# labels (or taints) kubeadm and the managed platforms set, Slipway's own pool label first.
CONTROL_PLANE_LABELS = (CONTROL_PLANE_LABEL, "node-role.kubernetes.io/master")
POOL_LABELS = (
    "slipway.dev/node-pool",
    "eks.amazonaws.com/nodegroup",
    "cloud.google.com/gke-nodepool",
    "kubernetes.azure.com/agentpool",
    "agentpool",
)
DEFAULT_POOL = "default"
CONTROL_PLANE_POOL = "control-plane"
CORDONED_BY = "slipway.dev/cordoned-by"
CORDONED_AT = "slipway.dev/cordoned-at"
STEP = "slipway.dev/step"
STEP_RUN = "slipway.dev/run"
STEP_AT = "slipway.dev/step-at"
QUARANTINED = "slipway.dev/quarantined"
QUARANTINE_REASON = "slipway.dev/quarantine-reason"
# Recorded in CORDONED_BY when a node was already cordoned before Slipway looked at it
# (an operator, kured, an autoscaler): Slipway must never undo that cordon on its own.
EXTERNAL_CORDON = "external"

CONFLICT = 409
# Optimistic-concurrency retries: each one re-reads the node, so a handful always suffices
# unless something rewrites the node continuously, which is itself worth an error.
MAX_CONFLICT_RETRIES = 5

Patch = dict[str, Any]


class NodeConflict(RuntimeError):
    """A node kept changing under a patch; the message names the node and the operation."""


@dataclass(frozen=True)
class NodeStep:
    """The step of a run a node last reached, as recorded on the node."""

    run_id: str
    step: str
    at: str


# ---- pure views of a V1Node ------------------------------------------------------------------


def node_ready(node: client.V1Node) -> bool:
    """True when the node's ``Ready`` condition is ``True`` (the kubelet heartbeats)."""
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def kubelet_version(node: client.V1Node) -> str:
    """The kubelet version the node reports, without the leading ``v`` (``1.36.3``)."""
    info = node.status.node_info if node.status else None
    version: str = info.kubelet_version if info else ""
    return version.removeprefix("v")


def is_cordoned(node: client.V1Node) -> bool:
    return bool(node.spec and node.spec.unschedulable)


def cordon_owner(node: client.V1Node) -> str | None:
    """Who Slipway recorded as the cordon's owner: a run id, ``external``, or None."""
    return _annotations(node).get(CORDONED_BY)


def is_quarantined(node: client.V1Node) -> bool:
    return (node.metadata.labels or {}).get(QUARANTINED) == "true"


def step_of(node: client.V1Node) -> NodeStep | None:
    annotations = _annotations(node)
    if STEP not in annotations:
        return None
    return NodeStep(annotations.get(STEP_RUN, ""), annotations[STEP], annotations.get(STEP_AT, ""))


# ---- reads -------------------------------------------------------------------------------------


def is_control_plane(node: client.V1Node) -> bool:
    """A control-plane node by its role label or its control-plane taint (older kubeadm
    clusters carry only ``master``; some managed platforms only the taint)."""
    labels = node.metadata.labels or {}
    if any(label in labels for label in CONTROL_PLANE_LABELS):
        return True
    taints = (node.spec.taints if node.spec else None) or []
    return any(t.key in CONTROL_PLANE_LABELS for t in taints)


def node_pool(node: client.V1Node) -> str:
    labels = node.metadata.labels or {}
    for label in POOL_LABELS:
        if labels.get(label):
            return str(labels[label])
    return CONTROL_PLANE_POOL if is_control_plane(node) else DEFAULT_POOL


def list_workers(api: client.ApiClient) -> list[client.V1Node]:
    """Every node that is not a control-plane node (:func:`is_control_plane`), by name."""
    nodes = client.CoreV1Api(api).list_node().items
    return sorted((n for n in nodes if not is_control_plane(n)), key=lambda n: n.metadata.name)


def get_step(api: client.ApiClient, node: str) -> NodeStep | None:
    """The step recorded on ``node`` (by whichever run wrote it last), or None."""
    return step_of(client.CoreV1Api(api).read_node(node))


# ---- writes ------------------------------------------------------------------------------------


def cordon(api: client.ApiClient, node: str, run_id: str) -> bool:
    """Mark ``node`` unschedulable on behalf of ``run_id``; True when this call cordoned it.

    Idempotent. A node that is already cordoned is left as it is; if nobody recorded the
    cordon, it is recorded as ``external`` so that :func:`uncordon` will not undo it.
    """

    def decide(current: client.V1Node) -> tuple[Patch | None, bool]:
        if not is_cordoned(current):
            return {"spec": {"unschedulable": True}, "metadata": {"annotations": _owner(run_id)}}, True
        if cordon_owner(current) is None:
            log.info("node %s was already cordoned by someone else; recording it as external", node)
            return {"metadata": {"annotations": _owner(EXTERNAL_CORDON)}}, False
        return None, False

    return _patch_guarded(api, node, "cordon", decide)


def uncordon(api: client.ApiClient, node: str, run_id: str, *, force: bool = False) -> bool:
    """Make ``node`` schedulable again if ``run_id`` cordoned it; True when this call did.

    A cordon recorded as external or by another run, and a quarantined node, stay cordoned
    unless ``force``; a forced uncordon also lifts the quarantine. Stale Slipway
    annotations on a schedulable node are cleared.
    """

    def decide(current: client.V1Node) -> tuple[Patch | None, bool]:
        owner = cordon_owner(current)
        if not is_cordoned(current):
            stale = owner is not None or is_quarantined(current)
            return (_clear_cordon_record() if stale else None), False
        if not force:
            if is_quarantined(current):
                log.warning(
                    "node %s is quarantined (%s): left cordoned",
                    node,
                    _annotations(current).get(QUARANTINE_REASON, "no reason recorded"),
                )
                return None, False
            if owner != run_id:
                log.info(
                    "node %s was cordoned by %s, not run %s: left cordoned",
                    node,
                    owner or "someone else",
                    run_id,
                )
                return None, False
        return {"spec": {"unschedulable": False}} | _clear_cordon_record(), True

    return _patch_guarded(api, node, "uncordon", decide)


def set_step(api: client.ApiClient, node: str, run_id: str, step: str) -> None:
    """Record on the node that ``run_id`` reached ``step`` there."""
    annotations = {STEP: step, STEP_RUN: run_id, STEP_AT: _now()}
    client.CoreV1Api(api).patch_node(node, {"metadata": {"annotations": annotations}})


def quarantine(api: client.ApiClient, node: str, reason: str) -> bool:
    """Label ``node`` ``slipway.dev/quarantined=true`` with ``reason`` and keep it cordoned.

    True when this call changed the node. :func:`uncordon` refuses a quarantined node
    unless forced, so a node that failed its upgrade cannot rejoin by accident.
    """

    def decide(current: client.V1Node) -> tuple[Patch | None, bool]:
        recorded = _annotations(current).get(QUARANTINE_REASON)
        if is_quarantined(current) and is_cordoned(current) and recorded == reason:
            return None, False
        patch: Patch = {
            "spec": {"unschedulable": True},
            "metadata": {"labels": {QUARANTINED: "true"}, "annotations": {QUARANTINE_REASON: reason}},
        }
        if not is_cordoned(current):
            patch["metadata"]["annotations"] |= _owner(EXTERNAL_CORDON)
        return patch, True

    return _patch_guarded(api, node, "quarantine", decide)


# ---- internals ---------------------------------------------------------------------------------


def _annotations(node: client.V1Node) -> dict[str, str]:
    return dict(node.metadata.annotations or {})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_since(stamp: str) -> float | None:
    """Seconds from one of Slipway's node timestamps to now; None when it cannot be read."""
    try:
        then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return (datetime.now(UTC) - then).total_seconds()


def _owner(owner: str) -> dict[str, str]:
    return {CORDONED_BY: owner, CORDONED_AT: _now()}


def _clear_cordon_record() -> Patch:
    # A strategic-merge patch deletes a map key whose value is null.
    return {
        "metadata": {
            "labels": {QUARANTINED: None},
            "annotations": {CORDONED_BY: None, CORDONED_AT: None, QUARANTINE_REASON: None},
        }
    }


def _patch_guarded(
    api: client.ApiClient,
    node: str,
    operation: str,
    decide: Callable[[client.V1Node], tuple[Patch | None, bool]],
) -> bool:
    """Read the node, let ``decide`` pick a patch, apply it only if the node did not change."""
    core = client.CoreV1Api(api)
    for _ in range(MAX_CONFLICT_RETRIES):
        current = core.read_node(node)
        patch, changed = decide(current)
        if patch is None:
            return changed
        patch.setdefault("metadata", {})["resourceVersion"] = current.metadata.resource_version
        try:
            core.patch_node(node, patch)
        except ApiException as err:
            if err.status == CONFLICT:
                continue
            raise
        return changed
    raise NodeConflict(
        f"{operation} of node {node} gave up: the node changed under {MAX_CONFLICT_RETRIES} attempts in a row"
    )
