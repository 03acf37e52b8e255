"""Deferrable sensors: the wait lives in the triggerer, the verdict in the task."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException

from slipway.airflow.triggers import NodesReadyTrigger

# A kubelet that is not back 10 minutes after its upgrade is not coming back by itself.
NODE_STARTUP_TIMEOUT_SECONDS = 600.0


class NodesReadySensor(BaseSensorOperator):
    """Wait until the batch's nodes are Ready and report the target kubelet version.

    :param nodes: node names (templated; usually an XCom of the batch selection).
    :param version: the kubelet version they must report, e.g. ``v1.37.2``.
    :param node_startup_timeout: seconds before the wait fails and names the nodes.
    """

    template_fields = ("nodes", "version", "node_startup_timeout")

    def __init__(
        self,
        *,
        nodes: Any,
        version: Any,
        node_startup_timeout: float = NODE_STARTUP_TIMEOUT_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.nodes = nodes
        self.version = version
        self.node_startup_timeout = node_startup_timeout

    def execute(self, context: Any) -> list[str] | None:
        nodes = list(self.nodes or [])
        if not nodes:
            return None
        # Look once before deferring: a node already back needs no trip through the triggerer
        # (which costs a worker start, and on Airflow 3.3 a fast resume can race the scheduler's
        # stale defer-exit event and fail the try: apache/airflow#72716).
        if self._all_ready(nodes):
            self.log.info("nodes already Ready at %s: %s", self.version, ", ".join(nodes))
            return nodes
        self.defer(
            trigger=NodesReadyTrigger(nodes, self.version, float(self.node_startup_timeout)),
            method_name="execute_complete",
        )

    def _all_ready(self, nodes: list[str]) -> bool:
        from kubernetes import client

        from slipway.airflow.runtime import orchestrator_api
        from slipway.airflow.triggers import ready_at

        wanted = set(nodes)
        found = [
            n for n in client.CoreV1Api(orchestrator_api()).list_node().items if n.metadata.name in wanted
        ]
        return len(found) == len(wanted) and all(ready_at(n, str(self.version)) for n in found)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> list[str]:
        if event["status"] != "ready":
            raise AirflowException(
                f"nodes not Ready at {self.version} after {float(self.node_startup_timeout):.0f}s: "
                f"{', '.join(event['waiting'])}"
            )
        self.log.info("nodes Ready at %s: %s", self.version, ", ".join(event["nodes"]))
        return list(event["nodes"])
