"""Triggers run in the triggerer, so long waits hold no worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from slipway.airflow_env import KUBE_CONN_ID


def ready_at(node: Any, version: str) -> bool:
    """Ready and reporting ``version`` (works on the sync and the asyncio client's nodes)."""
    conditions = {c.type: c.status for c in (node.status.conditions or [])}
    return conditions.get("Ready") == "True" and node.status.node_info.kubelet_version == version


class NodesReadyTrigger(BaseTrigger):
    """Fires when every named node is Ready at ``version`` (or when ``timeout`` passes)."""

    def __init__(
        self,
        nodes: list[str],
        version: str,
        timeout: float,
        poll_interval: float = 2.0,
        conn_id: str = KUBE_CONN_ID,
        started: float | None = None,
    ) -> None:
        super().__init__()
        self.nodes = list(nodes)
        self.version = version
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.conn_id = conn_id
        self.started = started if started is not None else time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "nodes": self.nodes,
                "version": self.version,
                "timeout": self.timeout,
                "poll_interval": self.poll_interval,
                "conn_id": self.conn_id,
                "started": self.started,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
        from kubernetes_asyncio import client as async_client

        hook = AsyncKubernetesHook(conn_id=self.conn_id)
        waiting = list(self.nodes)
        async with hook.get_conn() as api:
            core = async_client.CoreV1Api(api)
            while True:
                states = {}
                for name in self.nodes:
                    states[name] = ready_at(await core.read_node(name), self.version)
                waiting = [n for n, ok in states.items() if not ok]
                if not waiting:
                    yield TriggerEvent({"status": "ready", "nodes": self.nodes})
                    return
                if time.time() - self.started > self.timeout:
                    yield TriggerEvent({"status": "timeout", "waiting": waiting})
                    return
                await asyncio.sleep(self.poll_interval)
