"""Kubernetes Events on the nodes Slipway changes, so ``kubectl describe node`` tells the story.

Node events live in the ``default`` namespace (where the kubelet writes its own) and name the
node as their ``regarding`` object; ``kubectl describe node`` lists them next to the
kubelet's. They are a view for the engineer at the node, not the record (the run record is):
writing one is best effort and never fails a step.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

from kubernetes import client

NAMESPACE = "default"
CONTROLLER = "slipway.dev/upgrader"
# The Events API caps a note at 1 kB.
NOTE_LIMIT = 1024

log = logging.getLogger(__name__)


def node_event(
    api: client.ApiClient,
    node: str,
    reason: str,
    note: str,
    *,
    action: str,
    run_id: str,
    kind: Literal["Normal", "Warning"] = "Normal",
) -> bool:
    """Write one ``events.k8s.io/v1`` Event about ``node``; False (logged) when it could not."""
    try:
        uid = client.CoreV1Api(api).read_node(node).metadata.uid
        body = client.EventsV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{node[:200]}.slipway-"),
            event_time=datetime.now(UTC),
            reporting_controller=CONTROLLER,
            reporting_instance=run_id[:128],
            action=action,
            reason=reason,
            note=note[:NOTE_LIMIT],
            type=kind,
            regarding=client.V1ObjectReference(api_version="v1", kind="Node", name=node, uid=uid),
        )
        client.EventsV1Api(api).create_namespaced_event(NAMESPACE, body)
    except Exception as err:  # a view, never a reason to fail the step it describes
        log.warning("node %s: event %s not written: %s", node, reason, type(err).__name__)
        return False
    return True
