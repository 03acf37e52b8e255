"""Version skew now, and the upgrade path to the target (§1.2, §6 "enforce the path")."""

from __future__ import annotations

from slipway.checks.result import finding, listed
from slipway.models import CheckResult, ClusterInventory
from slipway.planner import ClusterVersions, UpgradePath, plan_upgrade
from slipway.versions import Version, skew_violations


def _versions(values: dict[str, str]) -> list[Version]:
    return [Version.parse(v) for v in values.values()]


def cluster_versions(inventory: ClusterInventory) -> ClusterVersions:
    """The planner's view of an inventory: every instance, every kubelet, the oldest etcd.

    :raises ValueError: naming the component when a version cannot be parsed or etcd is unknown.
    """
    if not inventory.etcd_versions:
        raise ValueError("etcd: the inventory has no etcd versions; the control-plane reader found no member")
    return ClusterVersions(
        apiservers=_versions(inventory.apiserver_versions),
        controller_managers=_versions(inventory.controller_manager_versions),
        schedulers=_versions(inventory.scheduler_versions),
        kubelets={n.name: n.kubelet for n in inventory.nodes},
        etcd=min(_versions(inventory.etcd_versions)),
    )


def check_version_skew(inventory: ClusterInventory) -> CheckResult:
    """``version-skew``: the cluster as it runs now against the version-skew policy."""
    try:
        violations = skew_violations(
            _versions(inventory.apiserver_versions),
            _versions(inventory.controller_manager_versions),
            _versions(inventory.scheduler_versions),
            {n.name: n.kubelet for n in inventory.nodes},
        )
    except ValueError as err:
        return finding(
            "version-skew",
            "blocker",
            f"cannot judge version skew: {err}",
            {},
            "Fix the component that reports no or a malformed version.",
        )
    evidence = {
        "apiservers": inventory.apiserver_versions,
        "controller_managers": inventory.controller_manager_versions,
        "schedulers": inventory.scheduler_versions,
        "kubelets": _kubelet_counts({n.name: n.kubelet_version for n in inventory.nodes}),
        "violations": listed(violations),
    }
    if violations:
        return finding(
            "version-skew",
            "blocker",
            f"{len(violations)} version-skew violation(s) before the upgrade even starts: {violations[0]}",
            evidence,
            "Bring the lagging components within the skew policy first (an upgrade on top of a violation "
            "widens it).",
        )
    return finding("version-skew", "ok", "every component is within the version-skew policy", evidence)


def _kubelet_counts(kubelets: dict[str, str]) -> dict[str, int]:
    """Kubelet version → nodes: evidence stays small on a 1,000-node cluster."""
    counts: dict[str, int] = {}
    for version in kubelets.values():
        counts[version] = counts.get(version, 0) + 1
    return dict(sorted(counts.items()))


def judge_path(path: UpgradePath) -> CheckResult:
    """Info describing the hops (their risk feeds the risk matrix through ``path_risk``)."""
    evidence = path.to_dict()
    evidence["current"]["kubelets"] = _kubelet_counts(evidence["current"]["kubelets"])
    for hop in evidence["hops"]:
        hop["nodes"] = len(hop["nodes"])
    if path.direction == "none":
        return finding("upgrade-path", "ok", f"every component already runs {path.target}", evidence)
    hops = "; ".join(f"{h.kind} {h.from_version}->{h.to_version}" for h in path.hops)
    return finding(
        "upgrade-path",
        "info",
        f"{len(path.hops)} hop(s) to {path.target} across {path.minors_crossed} minor(s), {path.risk} risk, "
        f"{path.testing} testing: {hops}",
        evidence,
    )


def check_upgrade_path(
    inventory: ClusterInventory, target: Version, *, allow_downgrade: bool = False
) -> CheckResult:
    """``upgrade-path``: a safe multi-hop path exists (blocker with the planner's reason if not)."""
    try:
        path = plan_upgrade(cluster_versions(inventory), target, allow_downgrade=allow_downgrade)
    except ValueError as err:
        return finding(
            "upgrade-path",
            "blocker",
            f"no safe path to {target}: {err}",
            {"target": str(target)},
            "Repair the reported component by hand, or choose a target the planner accepts.",
        )
    return judge_path(path)
