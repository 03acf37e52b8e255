"""Multi-hop upgrade (and rollback) paths that respect the version-skew policy.

The control plane moves one minor at a time, each hop to the newest known patch of
that minor (the last hop to the requested target). Before each control-plane hop etcd
moves to the version that minor ships with, and kubelets that the hop would leave
outside the skew policy catch up first. A final kubelet hop takes every node to the
target. Order inside a control-plane hop follows the seed: kube-apiserver, then
kube-controller-manager, then kube-scheduler.

Rules (official *Version Skew Policy*, https://kubernetes.io/releases/version-skew-policy/):
kube-apiserver never skips a minor; kubelets stay within three minors of it (two for a
kubelet older than 1.25) and catch up to the newest patch of the control plane's minor;
controller-manager and scheduler more than one minor behind make the cluster unplannable
(moving them up would take kube-apiserver backwards). etcd moves one minor at a time.
Every plan is replayed against these rules before it is returned; a plan that cannot be
made is refused with :class:`PlanRefused`, which names the field, the rule and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from slipway.apiremovals import ApiRemoval, removals_between
from slipway.versions import (
    CONTROL_PLANE_MAX_MINORS_BEHIND,
    RELEASES,
    Version,
    apiserver_upgrade_violations,
    is_known,
    kubelet_max_minors_behind,
    latest_patch,
    minor_gap,
    newest_release,
    release_for,
    skew_violations,
)

HopKind = Literal["etcd", "control-plane", "kubelet"]
Risk = Literal["none", "low", "medium", "high"]
Testing = Literal["none", "smoke", "full-regression"]

_RISK_ORDER: tuple[Risk, ...] = ("none", "low", "medium", "high")
_CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# etcd's upgrade guide for 3.5 -> 3.6 (etcd.io/docs/v3.6/upgrades/upgrade_3_6, checklist
# "Update 3.5"): every member must run 3.5.32 or later first (raised from 3.5.26 in August
# 2026, etcd-io/website#1203: 3.5.32 brings the v2store checks the guide walks through).
_ETCD_MINOR_UPGRADE_FLOOR = {"3.5": Version(3, 5, 32)}

RefusalRule = Literal[
    "bad-input",  # a field is missing or malformed
    "unknown-target",  # the target is not a known release
    "downgrade",  # the target is older than something running and no rollback was asked for
    "apiserver-skew",  # HA kube-apiservers more than one minor apart
    "control-plane-skew",  # controller-manager/scheduler outside the policy
    "etcd-path",  # etcd cannot reach the version the target needs one minor at a time
    "plan-invariant",  # the plan would break the skew policy (a planner bug: never run it)
]


class PlanRefused(ValueError):
    """No safe plan exists; ``field`` and ``reason`` say why, ``rule`` says which rule refused.

    A ``ValueError`` so existing callers keep working; :meth:`to_dict` is the JSON a task
    returns so the DAG can turn it into a ``refuse`` decision with the reason in the report.
    """

    def __init__(self, field: str, reason: str, rule: RefusalRule = "bad-input") -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.rule: RefusalRule = rule

    def to_dict(self) -> dict[str, str]:
        return {"decision": "refuse", "field": self.field, "rule": self.rule, "reason": str(self)}


@dataclass(frozen=True)
class ClusterVersions:
    """What the cluster runs now: every control-plane instance, every kubelet, and etcd."""

    apiservers: list[Version]
    controller_managers: list[Version]
    schedulers: list[Version]
    kubelets: dict[str, Version]
    etcd: Version

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterVersions:
        """Build from JSON-shaped data (version strings), e.g. an inventory task's XCom.

        :raises PlanRefused: naming the missing or malformed field.
        """
        try:
            return cls(
                apiservers=[_parse(f"apiservers[{i}]", v) for i, v in enumerate(data["apiservers"])],
                controller_managers=[
                    _parse(f"controller_managers[{i}]", v) for i, v in enumerate(data["controller_managers"])
                ],
                schedulers=[_parse(f"schedulers[{i}]", v) for i, v in enumerate(data["schedulers"])],
                kubelets={node: _parse(f"kubelets[{node}]", v) for node, v in data["kubelets"].items()},
                etcd=_parse("etcd", data["etcd"]),
            )
        except KeyError as missing:
            raise PlanRefused("cluster versions", f"missing field {missing}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiservers": [str(v) for v in self.apiservers],
            "controller_managers": [str(v) for v in self.controller_managers],
            "schedulers": [str(v) for v in self.schedulers],
            "kubelets": {node: str(v) for node, v in sorted(self.kubelets.items())},
            "etcd": str(self.etcd),
        }

    @property
    def control_plane(self) -> list[Version]:
        return [*self.apiservers, *self.controller_managers, *self.schedulers]


@dataclass(frozen=True)
class Hop:
    """One step of the plan: a component kind moving from one version to another."""

    kind: HopKind
    from_version: Version
    to_version: Version
    risk: Risk
    testing: Testing
    reason: str
    nodes: tuple[str, ...] = ()
    api_removals: tuple[ApiRemoval, ...] = ()

    @property
    def components(self) -> tuple[str, ...]:
        """The binaries this hop replaces, in the order they must be replaced."""
        return {"etcd": ("etcd",), "control-plane": _CONTROL_PLANE, "kubelet": ("kubelet",)}[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "from": str(self.from_version),
            "to": str(self.to_version),
            "components": list(self.components),
            "nodes": list(self.nodes),
            "risk": self.risk,
            "testing": self.testing,
            "reason": self.reason,
            "api_removals": [r.to_dict() for r in self.api_removals],
        }


@dataclass(frozen=True)
class UpgradePath:
    """The ordered hops from the cluster's versions to the target, with a summary."""

    current: ClusterVersions
    target: Version
    direction: Literal["upgrade", "downgrade", "none"]
    hops: list[Hop] = field(default_factory=list)
    minors_crossed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def risk(self) -> Risk:
        """The riskiest hop, and "high" whenever the control plane crosses more than one minor."""
        floor: Risk = "high" if self.minors_crossed > 1 else "none"
        return _max_risk(floor, *(hop.risk for hop in self.hops))

    @property
    def testing(self) -> Testing:
        """Seed §1.2: smoke tests for one minor or a patch, full regression for larger jumps."""
        if not self.hops:
            return "none"
        if self.minors_crossed > 1 or any(hop.testing == "full-regression" for hop in self.hops):
            return "full-regression"
        return "smoke"

    def to_dict(self) -> dict[str, Any]:
        return {
            "current": self.current.to_dict(),
            "target": str(self.target),
            "direction": self.direction,
            "minors_crossed": self.minors_crossed,
            "risk": self.risk,
            "testing": self.testing,
            "hops": [{"step": i, **hop.to_dict()} for i, hop in enumerate(self.hops, start=1)],
            "notes": list(self.notes),
        }


def plan_upgrade(
    cluster: ClusterVersions, target: Version | str, *, allow_downgrade: bool = False
) -> UpgradePath:
    """Plan every hop from ``cluster`` to ``target``.

    :param target: a known release, as a :class:`Version` or text such as ``"v1.37.2"``.
    :param allow_downgrade: plan a rollback when ``target`` is older than the cluster.
    :raises PlanRefused: naming the field, the rule and the reason when no safe plan exists.
    """
    target = target if isinstance(target, Version) else _parse("target", target)
    _check_target(target)
    _check_cluster(cluster)
    newest_component = max([*cluster.control_plane, *cluster.kubelets.values()])
    if newest_component > target and not allow_downgrade:
        raise PlanRefused(
            "target",
            f"{target} is older than {_who_runs(cluster, newest_component)} ({newest_component}); "
            "pass allow_downgrade=True to plan a rollback",
            "downgrade",
        )
    if newest_component > target:
        path = _plan(cluster, target, "downgrade")
    else:
        path = _plan(cluster, target, "upgrade")
        if not path.hops:
            return UpgradePath(cluster, target, "none", notes=["every component already runs the target"])
    verify_path(path)
    return path


def _parse(field_name: str, text: str) -> Version:
    try:
        return Version.parse(text)
    except ValueError as error:
        raise PlanRefused(field_name, str(error)) from None


def _check_target(target: Version) -> None:
    newest = newest_release()
    if target > newest:
        raise PlanRefused(
            "target", f"{target} is newer than the newest known release {newest}", "unknown-target"
        )
    if target.minor_line not in RELEASES:
        raise PlanRefused(
            "target", f"{target} is outside the release table ({', '.join(RELEASES)})", "unknown-target"
        )
    if not is_known(target):
        patches = release_for(target).patches
        raise PlanRefused(
            "target",
            f"{target} is not a released patch (known: {patches[0]} to {patches[-1]})",
            "unknown-target",
        )


def _check_cluster(cluster: ClusterVersions) -> None:
    if not cluster.apiservers:
        raise PlanRefused("apiservers", "at least one kube-apiserver version is required")
    if not cluster.kubelets:
        raise PlanRefused("kubelets", "at least one node is required")
    oldest, newest = min(cluster.apiservers), max(cluster.apiservers)
    if (spread := minor_gap(oldest, newest)) > 1:
        raise PlanRefused(
            "apiservers",
            f"{oldest} and {newest} are {spread} minors apart; "
            "the cluster is outside the skew policy and must be repaired by hand",
            "apiserver-skew",
        )
    for name, versions in (
        ("controller_managers", cluster.controller_managers),
        ("schedulers", cluster.schedulers),
    ):
        ahead = [v for v in versions if v.minor_line != newest.minor_line and v > newest]
        if ahead:
            raise PlanRefused(
                name,
                f"{max(ahead)} is newer than every kube-apiserver (newest {newest}); "
                "the control plane was upgraded out of order and must be repaired by hand",
                "control-plane-skew",
            )
        behind = [v for v in versions if minor_gap(v, oldest) > CONTROL_PLANE_MAX_MINORS_BEHIND]
        if behind:
            lag = min(behind)
            raise PlanRefused(
                name,
                f"{lag} is {minor_gap(lag, oldest)} minors older than kube-apiserver {oldest}; "
                f"the version-skew policy allows {CONTROL_PLANE_MAX_MINORS_BEHIND}, and an upgrade "
                "must never move kube-apiserver backwards to meet it: "
                f"bring it to {oldest.minor_line} by hand, then plan again",
                "control-plane-skew",
            )


def _who_runs(cluster: ClusterVersions, version: Version) -> str:
    if version in cluster.control_plane:
        return "the control plane"
    return "kubelet on " + ", ".join(sorted(n for n, v in cluster.kubelets.items() if v == version))


def _control_plane_steps(cluster: ClusterVersions, target: Version, downgrade: bool) -> list[Version]:
    """Versions the control plane passes through: one per minor, newest patch, ending at target."""
    start = max(cluster.control_plane) if downgrade else min(cluster.control_plane)
    stride = -1 if downgrade else 1
    between = range(start.minor + stride, target.minor, stride)
    steps = [latest_patch(f"{target.major}.{minor}") for minor in between]
    if any(v != target for v in cluster.control_plane):
        steps.append(target)
    return steps


def _newest_patch_of(version: Version) -> Version:
    """The newest known patch of ``version``'s minor (``version`` itself outside the table)."""
    try:
        return max(version, latest_patch(version.minor_line))
    except ValueError:
        return version


def _plan(
    cluster: ClusterVersions, target: Version, direction: Literal["upgrade", "downgrade"]
) -> UpgradePath:
    downgrade = direction == "downgrade"
    hops: list[Hop] = []
    etcd = cluster.etcd
    kubelets = dict(cluster.kubelets)
    start = control_plane = max(cluster.control_plane) if downgrade else min(cluster.control_plane)
    # An upgrade whose control plane already runs the target may still owe etcd a hop.
    steps = _control_plane_steps(cluster, target, downgrade) or [target]
    for step in steps:
        needed = Version.parse(release_for(step).etcd)
        if not downgrade and etcd < needed:
            hops += _etcd_hops(etcd, needed, step)
            etcd = needed
        catch_up = _kubelets_to_move_before(kubelets, step, downgrade)
        if catch_up:
            # Upgrades lift lagging kubelets to the newest patch of the control plane's current
            # minor (never a stale patch); rollbacks lower kubelets first, because a kubelet must
            # never be newer than kube-apiserver.
            to = step if downgrade else _newest_patch_of(control_plane)
            hops.append(
                _kubelet_hop(kubelets, catch_up, to, f"keep kubelets within skew before control plane {step}")
            )
            kubelets.update(dict.fromkeys(catch_up, to))
        if any(v != step for v in cluster.control_plane):
            hops.append(_control_plane_hop(control_plane, step, downgrade))
        control_plane = step
    behind = sorted(node for node, version in kubelets.items() if version != target)
    if behind:
        hops.append(_kubelet_hop(kubelets, behind, target, f"take every node to {target}"))
    notes = []
    if downgrade:
        notes.append(
            "etcd is not downgraded by a rollback plan: restore an etcd snapshot if its data must go back"
        )
    return UpgradePath(cluster, target, direction, hops, abs(minor_gap(start, target)), notes)


def verify_path(path: UpgradePath) -> None:
    """Replay ``path`` hop by hop and refuse it if any state on the way breaks the skew policy.

    Guards the rules themselves, not a particular plan shape: kube-apiserver never skips a
    minor nor goes backwards in an upgrade, etcd never skips a minor, no hop adds a skew
    violation, and none is left after a control-plane hop or at the end (a cluster that starts
    outside the policy is repaired before its control plane moves).
    """
    cluster = path.current
    apiservers, cms = list(cluster.apiservers), list(cluster.controller_managers)
    schedulers, kubelets, etcd = list(cluster.schedulers), dict(cluster.kubelets), cluster.etcd
    upgrade = path.direction == "upgrade"
    before = set(skew_violations(apiservers, cms, schedulers, kubelets))
    for step, hop in enumerate(path.hops, start=1):
        problems: list[str] = []
        if hop.kind == "etcd":
            if minor_gap(etcd, hop.to_version) > 1 or hop.to_version < etcd:
                problems.append(f"etcd {etcd} -> {hop.to_version} skips a minor or goes backwards")
            etcd = hop.to_version
        elif hop.kind == "control-plane":
            if upgrade:
                problems += apiserver_upgrade_violations(
                    apiservers, cms, schedulers, kubelets, hop.to_version
                )
                lowered = [v for v in [*apiservers, *cms, *schedulers] if v > hop.to_version]
                if lowered:
                    problems.append(f"the hop to {hop.to_version} would move {max(lowered)} backwards")
            elif abs(minor_gap(hop.to_version, min(apiservers))) > 1:
                problems.append(f"kube-apiserver {min(apiservers)} -> {hop.to_version} skips a minor")
            apiservers = [hop.to_version] * len(apiservers)
            cms = [hop.to_version] * len(cms)
            schedulers = [hop.to_version] * len(schedulers)
        else:
            kubelets.update(dict.fromkeys(hop.nodes, hop.to_version))
        now = skew_violations(apiservers, cms, schedulers, kubelets)
        must_be_clean = hop.kind == "control-plane" or step == len(path.hops)
        problems += now if must_be_clean else [v for v in now if v not in before]
        if problems:
            raise PlanRefused(
                "target",
                f"the plan to {path.target} breaks the version-skew policy at step {step} "
                f"({hop.kind} {hop.from_version} -> {hop.to_version}): {problems[0]}",
                "plan-invariant",
            )
        before = set(now)


def _kubelets_to_move_before(kubelets: Mapping[str, Version], step: Version, downgrade: bool) -> list[str]:
    """Nodes whose kubelet would break the skew policy once the control plane runs ``step``."""
    if downgrade:
        return sorted(node for node, v in kubelets.items() if minor_gap(step, v) > 0)
    return sorted(node for node, v in kubelets.items() if minor_gap(v, step) > kubelet_max_minors_behind(v))


def _etcd_hops(current: Version, needed: Version, for_step: Version) -> list[Hop]:
    """etcd upgrades one minor at a time; 3.5 must reach the guide's floor before 3.6."""
    hops: list[Hop] = []
    while current < needed:
        floor = _ETCD_MINOR_UPGRADE_FLOOR.get(current.minor_line)
        if current.minor_line != needed.minor_line and floor is not None and current < floor:
            to = floor
            reason = f"etcd {current.minor_line} must reach {floor} before moving to the next etcd minor"
        elif minor_gap(current, needed) > 1:
            next_minor = [v for v in _known_etcd() if minor_gap(current, v) == 1]
            if not next_minor:
                # Jumping straight to ``needed`` would skip an etcd minor, which etcd does not support.
                raise PlanRefused(
                    "etcd",
                    f"{current} cannot reach {needed} one minor at a time: Slipway knows no etcd "
                    f"{current.major}.{current.minor + 1} release; upgrade etcd to it by hand first",
                    "etcd-path",
                )
            to = max(next_minor)
            reason = f"etcd upgrades one minor at a time on the way to {needed}"
        else:
            to = needed
            reason = f"Kubernetes {for_step.minor_line} ships with etcd {needed}"
        hops.append(Hop("etcd", current, to, _hop_risk(current, to), _hop_testing(current, to), reason))
        current = to
    return hops


def _known_etcd() -> list[Version]:
    return [Version.parse(release.etcd) for release in RELEASES.values()]


def _control_plane_hop(current: Version, step: Version, downgrade: bool) -> Hop:
    removals = () if downgrade else tuple(removals_between(current, step))
    risk = _hop_risk(current, step)
    reason = f"control plane {current} -> {step}"
    if removals:
        risk = _max_risk(risk, "medium")
        reason += f"; stops serving {len(removals)} deprecated apiVersion/kind pair(s)"
    if downgrade and current.minor_line != step.minor_line:
        risk = "high"
        reason += "; minor downgrades are not supported upstream (storage versions may not be readable)"
    return Hop(
        "control-plane", current, step, risk, _hop_testing(current, step), reason, api_removals=removals
    )


def _kubelet_hop(kubelets: Mapping[str, Version], nodes: list[str], to: Version, reason: str) -> Hop:
    # The hop is as risky as its biggest jump, so measure from the node farthest away.
    farthest = max((kubelets[n] for n in nodes), key=lambda v: abs(minor_gap(v, to)))
    return Hop(
        "kubelet",
        farthest,
        to,
        _hop_risk(farthest, to),
        _hop_testing(farthest, to),
        reason,
        nodes=tuple(nodes),
    )


def _hop_risk(old: Version, new: Version) -> Risk:
    return "low" if abs(minor_gap(old, new)) <= 1 else "high"


def _hop_testing(old: Version, new: Version) -> Testing:
    return "smoke" if abs(minor_gap(old, new)) <= 1 else "full-regression"


def _max_risk(*risks: Risk) -> Risk:
    return max(risks, key=_RISK_ORDER.index)
