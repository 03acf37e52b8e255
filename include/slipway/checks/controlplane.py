"""Control-plane component health (§2.2): each instance on its own, not only the load balancer."""

from __future__ import annotations

from collections.abc import Mapping

from slipway.checks.result import finding, names
from slipway.inventory import COMPONENT_KINDS, HEALTHY, ControlPlaneReader
from slipway.models import CheckResult

# etcd has its own, deeper check (etcd-health); this one is about the Kubernetes components.
KINDS = tuple(kind for kind in COMPONENT_KINDS if kind != "etcd")


def judge_control_plane(health: Mapping[str, Mapping[str, str]]) -> CheckResult:
    """Blocker naming every unhealthy instance, or a missing component kind."""
    sick = [
        f"{kind} {instance}: {verdict}"
        for kind in KINDS
        for instance, verdict in sorted(health.get(kind, {}).items())
        if verdict != HEALTHY
    ]
    missing = [kind for kind in KINDS if not health.get(kind)]
    evidence = {kind: dict(sorted(health.get(kind, {}).items())) for kind in KINDS}
    if sick or missing:
        problems = sick + [f"no {kind} instance found" for kind in missing]
        return finding(
            "control-plane-health",
            "blocker",
            f"{len(problems)} control-plane problem(s): {names(problems, 3)}",
            evidence,
            "Bring every instance back to healthy first: an upgrade starting from a degraded control plane "
            "has no healthy instance to fall back on.",
        )
    count = sum(len(health[kind]) for kind in KINDS)
    return finding("control-plane-health", "ok", f"all {count} control-plane instances healthy", evidence)


def check_control_plane_health(reader: ControlPlaneReader) -> CheckResult:
    """``control-plane-health``: kube-apiserver /readyz, controller-manager and scheduler /healthz."""
    return judge_control_plane(reader.health())
