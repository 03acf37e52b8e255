"""Kubernetes API clients from a kubeconfig file (the Airflow adapters use KubernetesHook instead)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

FIELD_MANAGER = "slipway"


def api_client(kubeconfig: Path | str, *, timeout_retries: int = 3) -> client.ApiClient:
    """One ApiClient per caller; it pools connections, so reuse it across calls."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.retries = timeout_retries
    return client.ApiClient(configuration=cfg)


def apply_manifest(api: client.ApiClient, documents: list[dict[str, Any]]) -> list[str]:
    """Server-side apply every document; running it twice changes nothing."""
    dyn = DynamicClient(api)
    applied = []
    for doc in documents:
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        meta = doc["metadata"]
        resource.server_side_apply(
            body=doc,
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        applied.append(f"{doc['kind']}/{meta.get('namespace', '')}/{meta['name']}".replace("//", "/"))
    return applied


def load_manifest(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
