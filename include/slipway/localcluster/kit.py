"""Which official releases make up the local cluster kit.

Two adjacent Kubernetes minors and two adjacent etcd minors, so the local cluster
can be upgraded for real. Only versions listed here can be built: an unknown one is
refused before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass

KUBERNETES_OLD = "1.36.3"
KUBERNETES_NEW = "1.37.2"
ETCD_OLD = "3.6.16"
ETCD_NEW = "3.7.3"
KWOK = "0.8.0"

KUBERNETES_VERSIONS = (KUBERNETES_OLD, KUBERNETES_NEW)
ETCD_VERSIONS = (ETCD_OLD, ETCD_NEW)

KUBE_CONTROL_PLANE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
ETCD_BINARIES = ("etcd", "etcdctl", "etcdutl")


@dataclass(frozen=True)
class Release:
    """One buildable release of one product (kubernetes, etcd or kwok)."""

    product: str
    version: str
    binaries: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.product}-v{self.version}"


def kubernetes_release(version: str, *, with_kubectl: bool = True) -> Release:
    extra = ("kubectl",) if with_kubectl else ()
    return Release("kubernetes", version, KUBE_CONTROL_PLANE_BINARIES + extra)


def etcd_release(version: str) -> Release:
    return Release("etcd", version, ETCD_BINARIES)


def kwok_release(version: str = KWOK) -> Release:
    return Release("kwok", version, ("kwok",))


def default_releases() -> list[Release]:
    """Everything the local cluster and its upgrade need, in the order to build it."""
    return [
        kwok_release(),
        etcd_release(ETCD_OLD),
        kubernetes_release(KUBERNETES_OLD),
        etcd_release(ETCD_NEW),
        kubernetes_release(KUBERNETES_NEW),
    ]
