"""The §3.2 risk matrix, computed for one cluster and plan, and the gate it drives.

Four risks, as in the seed: compatibility and data loss (technical), downtime and resource
constraints (business). Each risk is fed by named preflight checks; a failed check raises its
probability (a blocker by 2, a warning by 1) and can raise its impact to what that check's
failure would cost. The plan itself (path, minors crossed, drain options, batch share) sets
the starting probability. The gate then decides: refuse, ask a human, or proceed.

Check names are the contract with ``slipway.checks``: a check counts for a risk when its
name is listed in :data:`RISK_SOURCES` or starts with a listed name and ``/``
(``removed-apis/flowcontrol``), so one family may report per-object results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from slipway.models import CheckResult, Decision, RiskAssessment, RiskItem, RiskLevel, UpgradeRequest

PathRisk = Literal["low", "high"]


@dataclass(frozen=True)
class _Plan:
    """The inputs that set a risk's starting probability, bundled for the per-risk rules."""

    path_risk: PathRisk
    minors_crossed: int
    node_count: int
    request: UpgradeRequest


@dataclass(frozen=True)
class _Risk:
    category: Literal["technical", "business"]
    name: str
    # Impact (1-5) when the named check fails; the risk's impact is the worst failed one.
    sources: dict[str, int]
    # Impact with no failed check: the seed's rating for the risk itself.
    base_impact: int
    base_probability: Callable[[_Plan], tuple[int, list[str]]]
    mitigations: tuple[str, ...]


def _compatibility_base(plan: _Plan) -> tuple[int, list[str]]:
    if plan.minors_crossed == 0:
        return 1, ["patch upgrade"]
    base = 2 if plan.path_risk == "low" else 3
    notes = [f"{plan.path_risk}-risk path across {plan.minors_crossed} minor(s)"]
    if plan.minors_crossed > 2:
        # Every hop beyond two adds removed APIs and gates nobody tested together.
        base += 1
        notes.append("more than two minors")
    return base, notes


def _data_loss_base(plan: _Plan) -> tuple[int, list[str]]:
    if plan.request.delete_emptydir_data:
        return 2, ["drain deletes emptyDir data"]
    return 1, []


def _downtime_base(plan: _Plan) -> tuple[int, list[str]]:
    base, notes = 1, []
    if plan.request.force_bare_pods:
        base += 1
        notes.append("drain deletes bare pods, which nothing recreates")
    if plan.request.max_unavailable_percent > 25:
        base += 1
        notes.append(f"max unavailable {plan.request.max_unavailable_percent:g}%")
    return base, notes


def _resource_base(plan: _Plan) -> tuple[int, list[str]]:
    if plan.request.strategy != "in-place":
        # Surge and blue-green add nodes before removing any, so capacity never dips.
        return 1, []
    share = max(plan.request.max_unavailable_percent / 100, 1 / max(plan.node_count, 1))
    if share >= 0.5:
        return 3, [f"a batch takes {share:.0%} of the nodes out"]
    if share >= 0.25:
        return 2, [f"a batch takes {share:.0%} of the nodes out"]
    return 1, []


RISKS: tuple[_Risk, ...] = (
    _Risk(
        category="technical",
        name="compatibility",
        sources={"upgrade-path": 4, "removed-apis": 5, "version-skew": 4, "feature-gates": 3},
        base_impact=3,
        base_probability=_compatibility_base,
        mitigations=(
            "Rehearse the same path on a staging cluster first.",
            "Follow the version-compatibility matrix: one minor per hop, latest patch each.",
            "Roll out gradually (canary pool first) with the rollback path prepared.",
        ),
    ),
    _Risk(
        category="technical",
        name="data_loss",
        sources={"etcd-backup": 5, "stateful-workloads": 4, "emptydir-data": 3},
        base_impact=4,
        base_probability=_data_loss_base,
        mitigations=(
            "Take an etcd snapshot and prove it with a restore drill before the first destructive step.",
            "Snapshot persistent volumes of stateful workloads and verify their checksums.",
            "Keep the disaster-recovery runbook and point-in-time restore at hand.",
        ),
    ),
    _Risk(
        category="business",
        name="downtime",
        sources={"pod-disruption-budgets": 4, "critical-workloads": 4, "single-replicas": 3},
        base_impact=3,
        base_probability=_downtime_base,
        mitigations=(
            "Run inside the maintenance window and tell the owning teams beforehand.",
            "Scale single-replica workloads up, or accept and announce their short outage.",
            "Keep the blocked-drain policy at 'wait' or 'quarantine' for critical workloads.",
        ),
    ),
    _Risk(
        category="business",
        name="resource_constraints",
        sources={"capacity": 4},
        base_impact=3,
        base_probability=_resource_base,
        mitigations=(
            "Confirm the remaining nodes can absorb a drained batch (capacity check).",
            "Lower the batch size or use surge so capacity never dips.",
            "Move the window away from CPU/memory peaks, or extend the timeline.",
        ),
    ),
)

RISK_SOURCES: dict[str, tuple[str, ...]] = {risk.name: tuple(risk.sources) for risk in RISKS}


def level_for(score: int) -> RiskLevel:
    """Map a probability × impact score (1-25) to a level, in the usual 5×5 matrix bands."""
    if score >= 16:
        return "critical"
    if score >= 10:
        return "high"
    if score >= 5:
        return "medium"
    return "low"


def _source_of(check_name: str, sources: Iterable[str]) -> str | None:
    for source in sources:
        if check_name == source or check_name.startswith(f"{source}/"):
            return source
    return None


def _failed(check: CheckResult) -> bool:
    # Info findings are worth reading but are not a risk signal.
    return not check.passed and check.severity in ("blocker", "warning")


def _assess_one(risk: _Risk, checks: Sequence[CheckResult], plan: _Plan) -> RiskItem:
    probability, notes = risk.base_probability(plan)
    impact = risk.base_impact
    evidence: list[str] = []
    mitigations: list[str] = []
    for check in checks:
        source = _source_of(check.name, risk.sources)
        if source is None or not _failed(check):
            continue
        probability += 2 if check.severity == "blocker" else 1
        impact = max(impact, risk.sources[source])
        evidence.append(check.name)
        if check.mitigation and check.mitigation not in mitigations:
            mitigations.append(check.mitigation)
    probability = min(max(probability, 1), 5)
    score = probability * impact
    return RiskItem(
        category=risk.category,
        name=risk.name,
        probability=probability,
        impact=impact,
        score=score,
        level=level_for(score),
        evidence=evidence + [f"plan: {note}" for note in notes],
        mitigations=mitigations + [m for m in risk.mitigations if m not in mitigations],
    )


def assess(
    checks: Sequence[CheckResult],
    path_risk: PathRisk,
    minors_crossed: int,
    node_count: int,
    request: UpgradeRequest,
) -> RiskAssessment:
    """Score the risk matrix and decide whether the run may go ahead.

    :param checks: every preflight check result for this run.
    :param path_risk: the planner's rating of the version path, ``low`` or ``high``.
    :param minors_crossed: minor versions between the cluster and the target.
    :param node_count: worker nodes the run will touch.
    :param request: the validated upgrade request.
    :return: the items, the decision (``refuse`` on any failed blocker; ``approval`` on a high or
        critical risk, more than one minor, or ``approval=always``; else ``proceed``) and why.
    """
    if path_risk not in ("low", "high"):
        raise ValueError(f"path_risk must be 'low' or 'high', got {path_risk!r}")
    if minors_crossed < 0 or node_count < 0:
        raise ValueError(f"minors_crossed ({minors_crossed}) and node_count ({node_count}) must be >= 0")
    plan = _Plan(path_risk, minors_crossed, node_count, request)
    items = [_assess_one(risk, checks, plan) for risk in RISKS]

    blockers = [f"blocker {c.name}: {c.summary}" for c in checks if not c.passed and c.severity == "blocker"]
    concerns = [
        f"{item.name} risk is {item.level} (probability {item.probability} × impact {item.impact} "
        f"= {item.score})"
        for item in items
        if item.level in ("high", "critical")
    ]
    if minors_crossed > 1:
        concerns.append(f"the upgrade crosses {minors_crossed} minor versions")
    if request.approval == "always":
        concerns.append("the request asks for approval=always")

    decision: Decision
    if blockers:
        # No approval setting overrides a blocker: a human cannot approve a broken precondition.
        decision, reasons = "refuse", blockers + concerns
    elif concerns and request.approval == "never":
        decision = "proceed"
        reasons = [f"approval=never: proceeding without a human although {c}" for c in concerns]
    elif concerns:
        decision, reasons = "approval", concerns
    else:
        decision = "proceed"
        reasons = ["no blockers, every risk low or medium, at most one minor crossed"]

    known = [source for risk in RISKS for source in risk.sources]
    unmapped = [c.name for c in checks if _failed(c) and _source_of(c.name, known) is None]
    if unmapped:
        # Not silently dropped: the on-call engineer should still see them next to the verdict.
        reasons.append(f"failed checks outside the risk matrix: {', '.join(unmapped)}")

    return RiskAssessment(
        items=items, decision=decision, reasons=reasons, path_risk=path_risk, minors_crossed=minors_crossed
    )
