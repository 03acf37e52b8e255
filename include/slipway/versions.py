"""Kubernetes release table (1.25 to the newest release) and the version-skew policy.

Release data comes from the Kubernetes release pages (``data/releases`` in
kubernetes/website, the sig-release schedules) and the Go module proxy's list of
``k8s.io/kubernetes`` tags. Where a minor still gets patches, its list ends at the
newest patch we could confirm; the comment on each row says which.

Skew rules follow the official *Version Skew Policy*
(https://kubernetes.io/releases/version-skew-policy/): HA kube-apiservers within one minor;
kubelet never newer than kube-apiserver and up to three minors older (two when the kubelet
is older than 1.25); kube-controller-manager and kube-scheduler never newer than
kube-apiserver and at most one minor older; kubectl within one minor either way. Its
"Supported component upgrade order" adds the prerequisites of a kube-apiserver upgrade
(:func:`apiserver_upgrade_violations`): never skip a minor, controller-manager and scheduler
already at the apiserver's minor, kubelets within reach of the new version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")

# How many minors a component may trail the oldest kube-apiserver (version-skew policy).
KUBELET_MAX_MINORS_BEHIND = 3
# "kubelet < 1.25 may only be up to two minor versions older than kube-apiserver".
LEGACY_KUBELET_MAX_MINORS_BEHIND = 2
LEGACY_KUBELET_BEFORE = (1, 25)
CONTROL_PLANE_MAX_MINORS_BEHIND = 1


@dataclass(frozen=True, order=True)
class Version:
    """A ``MAJOR.MINOR.PATCH`` version; build suffixes are dropped when parsing."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``1.36.3``, ``v1.36.3`` or ``v1.32.4-eks-abc`` (suffix dropped).

        :raises ValueError: naming the text when it is not ``MAJOR.MINOR.PATCH``.
        """
        match = _VERSION_RE.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"malformed version {text!r}: expected MAJOR.MINOR.PATCH such as 1.36.3")
        major, minor, patch = (int(part) for part in match.groups())
        return cls(major, minor, patch)

    @property
    def minor_line(self) -> str:
        """``1.36`` for ``1.36.3``."""
        return f"{self.major}.{self.minor}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class MinorRelease:
    """One Kubernetes minor: its patches, dates and the etcd version it ships with."""

    minor: str
    patches: tuple[str, ...]
    released: date
    end_of_life: date
    etcd: str


def minor_key(value: Version | str) -> tuple[int, int]:
    """``(1, 37)`` for ``Version(1, 37, 2)`` or ``"1.37"``, so minors compare as numbers."""
    if isinstance(value, Version):
        return value.major, value.minor
    major, _, minor = value.partition(".")
    return int(major), int(minor)


def minor_gap(older: Version, newer: Version) -> int:
    """How many minors ``newer`` is ahead of ``older`` (negative when it is behind).

    :raises ValueError: when the major versions differ; every Kubernetes release is 1.x.
    """
    if older.major != newer.major:
        raise ValueError(f"cannot compare minors of {older} and {newer}: major versions differ")
    return newer.minor - older.minor


def _release(minor: str, last_patch: int, released: date, end_of_life: date, etcd: str) -> MinorRelease:
    # Upstream never skips a patch number, so 0..last is the real list.
    return MinorRelease(
        minor, tuple(f"{minor}.{p}" for p in range(last_patch + 1)), released, end_of_life, etcd
    )


# etcd: the version kubeadm deploys with the minor's .0 release, except 1.35 (kubeadm
# v1.36.3 maps 1.34-1.36 to 3.6.8), 1.36 and 1.37 (the versions our local kit builds).
# End-of-life dates up to 1.31 are the actual ones (data/releases/eol.yaml); later ones
# are the planned dates, and 1.36/1.37 follow the usual ~14-month rule.
RELEASES: dict[str, MinorRelease] = {
    r.minor: r
    for r in (
        _release("1.25", 16, date(2022, 8, 23), date(2023, 10, 28), "3.5.4"),  # final patch
        _release("1.26", 15, date(2022, 12, 9), date(2024, 2, 28), "3.5.6"),  # final patch
        _release("1.27", 16, date(2023, 4, 11), date(2024, 7, 16), "3.5.7"),  # final patch
        _release("1.28", 15, date(2023, 8, 15), date(2024, 10, 22), "3.5.9"),  # final patch
        _release("1.29", 14, date(2023, 12, 13), date(2025, 2, 28), "3.5.10"),  # final patch
        _release("1.30", 14, date(2024, 4, 17), date(2025, 7, 15), "3.5.12"),  # final patch
        _release("1.31", 14, date(2024, 8, 13), date(2025, 11, 11), "3.5.15"),  # final patch
        _release("1.32", 13, date(2024, 12, 11), date(2026, 2, 28), "3.5.16"),  # final patch
        _release("1.33", 13, date(2025, 4, 23), date(2026, 6, 28), "3.5.21"),  # newest confirmed
        _release("1.34", 4, date(2025, 8, 27), date(2026, 10, 27), "3.6.4"),  # newest confirmed
        _release("1.35", 4, date(2025, 12, 17), date(2027, 2, 28), "3.6.8"),  # newest confirmed
        _release("1.36", 3, date(2026, 4, 22), date(2027, 6, 28), "3.6.16"),  # newest confirmed
        _release("1.37", 2, date(2026, 8, 26), date(2027, 10, 28), "3.7.3"),  # newest GA release
    )
}


def latest_patch(minor_line: str) -> Version:
    """The newest known patch of ``minor_line`` (``"1.36"`` -> 1.36.3).

    :raises ValueError: when the minor is not in :data:`RELEASES`.
    """
    release = RELEASES.get(minor_line)
    if release is None:
        known = f"{next(iter(RELEASES))}..{next(reversed(RELEASES))}"
        raise ValueError(f"unknown Kubernetes minor {minor_line!r}: Slipway knows {known}")
    return Version.parse(release.patches[-1])


def newest_release() -> Version:
    """The latest patch of the newest minor: the highest version a plan may target."""
    return latest_patch(next(reversed(RELEASES)))


def is_known(v: Version) -> bool:
    """Whether ``v`` is a released patch listed in :data:`RELEASES`."""
    release = RELEASES.get(v.minor_line)
    return release is not None and str(v) in release.patches


def release_for(v: Version) -> MinorRelease:
    """The minor release ``v`` belongs to.

    :raises ValueError: naming ``v`` when its minor is not in :data:`RELEASES`.
    """
    release = RELEASES.get(v.minor_line)
    if release is None:
        raise ValueError(f"Kubernetes {v} is outside the release table ({', '.join(RELEASES)})")
    return release


def skew_violations(
    apiservers: list[Version],
    controller_managers: list[Version],
    schedulers: list[Version],
    kubelets: Mapping[str, Version],
    kubectl: Version | None = None,
) -> list[str]:
    """Every way the given component versions break the version-skew policy.

    Returns human-readable violations; an empty list means the versions are supported.

    :raises ValueError: when no kube-apiserver version is given (nothing to measure against).
    """
    if not apiservers:
        raise ValueError("apiservers: at least one kube-apiserver version is required to check skew")
    oldest, newest = min(apiservers), max(apiservers)
    violations: list[str] = []
    spread = minor_gap(oldest, newest)
    if spread > 1:
        violations.append(
            f"kube-apiserver instances at {oldest} and {newest} are {spread} minors apart; "
            "HA kube-apiservers must be within 1 minor of each other"
        )
    for name, versions in (("kube-controller-manager", controller_managers), ("kube-scheduler", schedulers)):
        violations += _lagging(name, sorted(set(versions)), oldest, CONTROL_PLANE_MAX_MINORS_BEHIND)
    for node, version in sorted(kubelets.items()):
        limit = kubelet_max_minors_behind(version)
        why = " for a kubelet older than 1.25" if limit == LEGACY_KUBELET_MAX_MINORS_BEHIND else ""
        violations += _lagging(f"kubelet on node {node}", [version], oldest, limit, why)
    if kubectl is not None:
        for apiserver in sorted({oldest, newest}):
            if abs(minor_gap(apiserver, kubectl)) > 1:
                violations.append(
                    f"kubectl {kubectl} is more than 1 minor from kube-apiserver {apiserver}; "
                    "kubectl is supported within one minor (older or newer) of kube-apiserver"
                )
    return violations


def _lagging(
    component: str, versions: Iterable[Version], apiserver: Version, max_behind: int, why: str = ""
) -> list[str]:
    """Violations of "not newer than the oldest kube-apiserver, at most N minors older"."""
    found = []
    for version in versions:
        gap = minor_gap(version, apiserver)
        if gap < 0:
            found.append(
                f"{component} is {version}, newer than the oldest kube-apiserver {apiserver}; "
                f"{component.split(maxsplit=1)[0]} must not be newer than kube-apiserver"
            )
        elif gap > max_behind:
            found.append(
                f"{component} is {version}, {gap} minors older than kube-apiserver {apiserver}; "
                f"at most {max_behind} older is supported{why}"
            )
    return found


def kubelet_max_minors_behind(kubelet: Version) -> int:
    """How many minors this kubelet may trail kube-apiserver: 3, or 2 for a kubelet older than 1.25."""
    if minor_key(kubelet) < LEGACY_KUBELET_BEFORE:
        return LEGACY_KUBELET_MAX_MINORS_BEHIND
    return KUBELET_MAX_MINORS_BEHIND


def apiserver_upgrade_violations(
    apiservers: list[Version],
    controller_managers: list[Version],
    schedulers: list[Version],
    kubelets: Mapping[str, Version],
    to: Version,
) -> list[str]:
    """Why upgrading the kube-apiservers to ``to`` now would break the policy (empty: it may go ahead).

    The policy's prerequisites for moving kube-apiserver from 1.y to 1.(y+1): every instance at
    1.y or already at 1.(y+1) (no minor is skipped), kube-controller-manager and kube-scheduler
    at 1.y or newer (they may then trail by one), every kubelet within reach of 1.(y+1).

    :raises ValueError: when no kube-apiserver version is given.
    """
    if not apiservers:
        raise ValueError("apiservers: at least one kube-apiserver version is required to check an upgrade")
    found: list[str] = []
    oldest = min(apiservers)
    if minor_gap(oldest, to) > 1:
        found.append(
            f"kube-apiserver {oldest} -> {to} skips {minor_gap(oldest, to) - 1} minor(s); "
            "kube-apiserver must not skip minor versions when upgrading"
        )
    if minor_gap(oldest, to) < 0:
        found.append(f"kube-apiserver {oldest} -> {to} is a downgrade, not an upgrade")
    for name, versions in (("kube-controller-manager", controller_managers), ("kube-scheduler", schedulers)):
        for version in sorted(set(versions)):
            # Already one behind 1.y, they would be two behind 1.(y+1); a patch move leaves them be.
            if minor_gap(oldest, to) > 0 and minor_gap(version, oldest) > 0:
                found.append(
                    f"{name} is {version}; it must run {oldest.minor_line} before kube-apiserver moves "
                    f"to {to} (at most {CONTROL_PLANE_MAX_MINORS_BEHIND} minor older than kube-apiserver)"
                )
    for node, version in sorted(kubelets.items()):
        limit = kubelet_max_minors_behind(version)
        if minor_gap(version, to) > limit:
            found.append(
                f"kubelet on node {node} is {version}, {minor_gap(version, to)} minors older than {to}; "
                f"at most {limit} older is supported"
                + (" for a kubelet older than 1.25" if limit == LEGACY_KUBELET_MAX_MINORS_BEHIND else "")
            )
    return found
