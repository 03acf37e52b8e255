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

    def execute(self, context: Any) -> None:
        nodes = list(self.nodes or [])
        if not nodes:
            return
        self.defer(
            trigger=NodesReadyTrigger(nodes, self.version, float(self.node_startup_timeout)),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> list[str]:
        if event["status"] != "ready":
            raise AirflowException(
                f"nodes not Ready at {self.version} after {float(self.node_startup_timeout):.0f}s: "
                f"{', '.join(event['waiting'])}"
            )
        self.log.info("nodes Ready at %s: %s", self.version, ", ".join(event["nodes"]))
        return list(event["nodes"])
