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

# The source document's range: a cluster at 1.31 with etcd 3.5 upgraded hop by hop to 1.34
# (crossing the 1.32 flowcontrol removal, moving etcd 3.5 -> 3.6 with 1.34). Exact versions:
# the Go module proxy serves these tags although it does not list them. Built on demand
# (`make binaries-range`), never by `make binaries`, to keep CI's cold build short.
RANGE_KUBERNETES = ("1.31.14", "1.32.13", "1.33.13", "1.34.4")
RANGE_ETCD = ("3.5.21", "3.5.32", "3.6.4")

# Releases outside the range that the kit builds and starts on demand: 1.35 (the minor between
# the range and the default pair), 1.30 (the release before the range), and 1.25 -> 1.26, the
# start of the source document's range (1.25 is the oldest tried with Go 1.26: it builds
# unchanged; its kube-apiserver lacks one flag the kit now passes only from 1.27).
OTHER_KUBERNETES = ("1.35.4", "1.30.14", "1.26.15", "1.25.16")

# Every version the kit can build; the first entry of each is the default cluster's.
KUBERNETES_VERSIONS = (KUBERNETES_OLD, KUBERNETES_NEW, *RANGE_KUBERNETES, *OTHER_KUBERNETES)
ETCD_VERSIONS = (ETCD_OLD, ETCD_NEW, *RANGE_ETCD)

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


def range_releases() -> list[Release]:
    """The multi-release range (oldest first): what `make binaries-range` builds."""
    return [etcd_release(v) for v in RANGE_ETCD] + [kubernetes_release(v) for v in RANGE_KUBERNETES]


def default_releases() -> list[Release]:
    """Everything the local cluster and its upgrade need, in the order to build it."""
    return [
        kwok_release(),
        etcd_release(ETCD_OLD),
        kubernetes_release(KUBERNETES_OLD),
        etcd_release(ETCD_NEW),
        kubernetes_release(KUBERNETES_NEW),
    ]
