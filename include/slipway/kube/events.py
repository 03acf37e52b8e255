"""Kubernetes Events on what Slipway changes, so ``kubectl describe`` tells the story.

Node events live in the ``default`` namespace (where the kubelet writes its own) and name the
node as their ``regarding`` object; ``kubectl describe node`` lists them next to the
kubelet's. A run's milestones are Events on its run record (``kubectl describe configmap
slipway-run-<id> -n slipway-system``). They are a view for the engineer, not the record (the
run record is): writing one is best effort and never fails a step.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Literal

from kubernetes import client

NAMESPACE = "default"
CONTROLLER = "slipway.dev/upgrader"
# The Events API caps a note at 1 kB.
NOTE_LIMIT = 1024

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
# Timeline kinds that mean something went wrong or was undone: Warning Events.
_WARNING_KIND = re.compile(
    r"fail|rolled-back|switched-back|refus|reject|quarantin|restore|incident|slow|timed-out"
)


def node_event(
    api: client.ApiClient,
    node: str,
    reason: str,
    note: str,
    *,
    action: str,
    run_id: str,
    kind: EventType = "Normal",
) -> bool:
    """Write one ``events.k8s.io/v1`` Event about ``node``; False (logged) when it could not."""
    try:
        uid = client.CoreV1Api(api).read_node(node).metadata.uid
    except Exception as err:  # a view, never a reason to fail the step it describes
        log.warning("node %s: event %s not written: %s", node, reason, type(err).__name__)
        return False
    regarding = client.V1ObjectReference(api_version="v1", kind="Node", name=node, uid=uid)
    return object_event(api, NAMESPACE, regarding, reason, note, action=action, run_id=run_id, kind=kind)


def object_event(
    api: client.ApiClient,
    namespace: str,
    regarding: client.V1ObjectReference,
    reason: str,
    note: str,
    *,
    action: str,
    run_id: str,
    kind: EventType = "Normal",
) -> bool:
    """Write one ``events.k8s.io/v1`` Event about ``regarding`` in ``namespace`` (the object's
    own, for a namespaced object); False (logged) when it could not."""
    try:
        body = client.EventsV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{regarding.name[:200]}.slipway-"),
            event_time=datetime.now(UTC),
            reporting_controller=CONTROLLER,
            reporting_instance=run_id[:128],
            action=action,
            reason=reason,
            note=note[:NOTE_LIMIT],
            type=kind,
            regarding=regarding,
        )
        client.EventsV1Api(api).create_namespaced_event(namespace, body)
    except Exception as err:  # a view, never a reason to fail the step it describes
        log.warning(
            "%s %s: event %s not written: %s", regarding.kind, regarding.name, reason, type(err).__name__
        )
        return False
    return True


def timeline_reason(kind: str) -> tuple[str, EventType]:
    """A timeline kind as an Event reason and type: ``batch-rolled-back`` ->
    (``SlipwayBatchRolledBack``, ``Warning``)."""
    reason = "Slipway" + "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", kind) if part)
    return reason[:128], "Warning" if _WARNING_KIND.search(kind) else "Normal"
