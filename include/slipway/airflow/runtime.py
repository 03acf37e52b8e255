"""What a running task needs: clients from Airflow Connections and the run's identity.

Credentials come only from the ``kubernetes_default`` connection (through the
cncf-kubernetes provider's KubernetesHook) and the ``slipway_platform`` connection.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from kubernetes import client

from slipway.airflow_env import KUBE_CONN_ID, PLATFORM_CONN_ID
from slipway.models import UpgradeRequest, parse_request
from slipway.platform import Platform, parse_settings
from slipway.runrecord import RunRecord


def orchestrator_api() -> client.ApiClient:
    """One client per connection setting, built by the provider's hook from the connection."""
    from airflow.sdk import BaseHook

    extra = BaseHook.get_connection(KUBE_CONN_ID).extra
    return _client_for(extra or "")


@cache
def _client_for(connection_extra: str) -> client.ApiClient:
    # Keyed by the connection's settings: a long-lived process (dag.test, a test session)
    # that sees the connection change must not keep talking to the old cluster.
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    return KubernetesHook(conn_id=KUBE_CONN_ID).get_conn()


def platform() -> Platform:
    from airflow.sdk import BaseHook

    from slipway.airflow.pods import ProviderPodRunner

    extra = BaseHook.get_connection(PLATFORM_CONN_ID).extra_dejson
    api = orchestrator_api()
    return Platform(parse_settings(extra), api, run_pod=ProviderPodRunner(api))


def current_run_id() -> str:
    from airflow.sdk import get_current_context

    return str(get_current_context()["run_id"])


def record() -> RunRecord:
    return RunRecord(orchestrator_api(), current_run_id())


def request_from(xcom: dict[str, Any]) -> UpgradeRequest:
    """The validated request passed between tasks as a small JSON dict."""
    return parse_request(xcom)
