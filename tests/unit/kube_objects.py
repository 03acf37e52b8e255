"""Plain Kubernetes API objects for pure-logic tests (no cluster involved)."""

from __future__ import annotations

from kubernetes import client


def system_info(kubelet_version: str) -> client.V1NodeSystemInfo:
    """A node's systemInfo: the client model requires every field, only the kubelet matters here."""
    return client.V1NodeSystemInfo(
        kubelet_version=kubelet_version,
        architecture="amd64",
        boot_id="",
        container_runtime_version="",
        kernel_version="",
        kube_proxy_version="",
        machine_id="",
        operating_system="linux",
        os_image="",
        system_uuid="",
    )
