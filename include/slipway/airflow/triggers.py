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


class VeleroPhaseTrigger(BaseTrigger):
    """Fires when a Velero object (``plural``: backups or restores) on one side of a migration has
    one of ``phases`` as its ``status.phase``, or when ``timeout`` passes.

    The cluster is reached as :class:`NodesReadyTrigger` reaches its own: through the Airflow
    connection ``conn_id`` (``slipway_migration``), read in the triggerer; its ``<side>_kubeconfig``
    (and context) is loaded into the asyncio client. ``carry`` (small JSON) comes back in the
    event for the task to resume with. An API error while polling is retried until the timeout
    (an apiserver restart must not fail a long backup); the last one is in a timeout event.
    """

    def __init__(
        self,
        side: str,
        plural: str,
        name: str,
        phases: list[str],
        timeout: float,
        poll_interval: float = 1.0,
        conn_id: str = "slipway_migration",
        started: float | None = None,
        carry: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.side = side
        self.plural = plural
        self.name = name
        self.phases = list(phases)
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.conn_id = conn_id
        self.started = started if started is not None else time.time()
        self.carry = dict(carry or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "side": self.side,
                "plural": self.plural,
                "name": self.name,
                "phases": self.phases,
                "timeout": self.timeout,
                "poll_interval": self.poll_interval,
                "conn_id": self.conn_id,
                "started": self.started,
                "carry": self.carry,
            },
        )

    async def _api_config(self) -> Any:
        from airflow.providers.common.compat.connection import get_async_connection
        from kubernetes_asyncio import client as async_client
        from kubernetes_asyncio import config as async_config

        from slipway.migration.connection import parse_connection

        conn = await get_async_connection(self.conn_id)
        found = parse_connection(conn.extra_dejson, login=conn.login, password=conn.password)
        ref = found.source if self.side == "source" else found.target
        cfg = async_client.Configuration()
        await async_config.load_kube_config(
            config_file=str(ref.kubeconfig), context=ref.context, client_configuration=cfg
        )
        return cfg

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import aiohttp
        from kubernetes_asyncio import client as async_client
        from kubernetes_asyncio.client.exceptions import ApiException

        from slipway.migration.velero import GROUP, NAMESPACE, VERSION

        phase, error = "absent", ""
        async with async_client.ApiClient(await self._api_config()) as api:
            custom = async_client.CustomObjectsApi(api)
            while True:
                try:
                    obj = await custom.get_namespaced_custom_object(
                        GROUP, VERSION, NAMESPACE, self.plural, self.name
                    )
                    phase = str((obj.get("status") or {}).get("phase") or "New")
                    error = ""
                except ApiException as err:
                    if err.status != 404:
                        error = f"{err.status} {err.reason}"
                    phase = "absent" if err.status == 404 else phase
                except (TimeoutError, OSError, aiohttp.ClientError) as err:  # the apiserver away a moment
                    error = f"{type(err).__name__}: {err}"
                if phase in self.phases:
                    yield TriggerEvent({"status": "done", "phase": phase, "carry": self.carry})
                    return
                waited = time.time() - self.started
                if waited > self.timeout:
                    yield TriggerEvent(
                        {
                            "status": "timeout",
                            "phase": phase,
                            "seconds": round(waited, 1),
                            "error": error,
                            "carry": self.carry,
                        }
                    )
                    return
                await asyncio.sleep(self.poll_interval)
