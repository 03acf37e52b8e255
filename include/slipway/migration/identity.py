"""A kubeconfig for the migrator ServiceAccount (``manifests/migrator-rbac.yaml``), from a
short-lived token the cluster issues (TokenRequest API): what an operator puts in the
``slipway_migration`` connection instead of an admin kubeconfig."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import yaml
from kubernetes import client

from slipway.kube.client import apply_manifest, load_manifest

MANIFEST = Path(str(resources.files("slipway") / "manifests" / "migrator-rbac.yaml"))
NAMESPACE = "slipway-migration"
SERVICE_ACCOUNT = "slipway-migrator"
USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"


def install(admin: client.ApiClient) -> list[str]:
    """Apply the migrator manifest (idempotent: server-side apply)."""
    return apply_manifest(admin, load_manifest(MANIFEST))


def write_kubeconfig(
    admin: client.ApiClient, path: Path, *, name: str, expiration_seconds: int = 3600
) -> Path:
    """Issue a token for the migrator and write a kubeconfig (mode 0600) that uses it."""
    return service_account_kubeconfig(
        admin,
        path,
        name=name,
        namespace=NAMESPACE,
        service_account=SERVICE_ACCOUNT,
        seconds=expiration_seconds,
    )


def service_account_kubeconfig(
    admin: client.ApiClient, path: Path, *, name: str, namespace: str, service_account: str, seconds: int
) -> Path:
    """A kubeconfig (mode 0600) for ``namespace/service_account`` from a token the cluster
    issues (TokenRequest API). The server and CA come from ``admin``'s configuration: the same
    cluster, another identity."""
    body = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    issued = client.CoreV1Api(admin).create_namespaced_service_account_token(service_account, namespace, body)
    cfg = admin.configuration
    cluster: dict[str, str] = {"server": cfg.host}
    if cfg.ssl_ca_cert:
        cluster["certificate-authority"] = str(cfg.ssl_ca_cert)
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": service_account, "user": {"token": issued.status.token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": service_account}}],
        "current-context": name,
    }
    write_private(path, yaml.safe_dump(kubeconfig, sort_keys=False))
    return path


def write_private(path: Path, text: str) -> None:
    """``text`` in a file only its owner may read (it holds a credential)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
