"""Unit tests for the §3.2 risk matrix and the approval gate."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.models import CheckResult, RiskAssessment, RiskItem, Severity, UpgradeRequest, parse_request
from slipway.risk import RISK_SOURCES, assess, level_for


def request(**overrides: Any) -> UpgradeRequest:
    """A valid request for 1.37.2 with ``overrides`` applied."""
    return parse_request({"target_version": "1.37.2", **overrides})


def check(name: str, severity: Severity = "ok", mitigation: str = "") -> CheckResult:
    """A check that passed when ``severity`` is ok or info, failed otherwise."""
    return CheckResult(
        name=name,
        severity=severity,
        passed=severity == "ok",
        summary=f"{name} said {severity}",
        mitigation=mitigation,
    )


def clean_checks() -> list[CheckResult]:
    """Every check the matrix knows, all passing."""
    return [check(name) for names in RISK_SOURCES.values() for name in names]


def item(assessment: RiskAssessment, name: str) -> RiskItem:
    """The risk item called ``name``."""
    return next(entry for entry in assessment.items if entry.name == name)


def run(
    checks: list[CheckResult], path: str = "low", minors: int = 1, nodes: int = 20, **conf: Any
) -> RiskAssessment:
    """Assess with defaults for everything the test does not care about."""
    return assess(checks, path, minors, nodes, request(**conf))  # type: ignore[arg-type]


class TestMatrix:
    def test_clean_one_minor_upgrade_is_low_or_medium_everywhere(self) -> None:
        assessment = run(clean_checks())
        assert [entry.name for entry in assessment.items] == [
            "compatibility",
            "data_loss",
            "downtime",
            "resource_constraints",
        ]
        assert [entry.category for entry in assessment.items] == [
            "technical",
            "technical",
            "business",
            "business",
        ]
        assert all(entry.level in ("low", "medium") for entry in assessment.items)
        assert all(entry.score == entry.probability * entry.impact for entry in assessment.items)
        assert all(entry.mitigations for entry in assessment.items)

    def test_warning_raises_probability_and_impact_and_names_the_check(self) -> None:
        before = item(run(clean_checks()), "compatibility")
        after = item(
            run([*clean_checks(), check("removed-apis/flowcontrol", "warning", "Migrate FlowSchema.")]),
            "compatibility",
        )
        assert after.probability == before.probability + 1
        assert after.impact == 5 > before.impact
        assert "removed-apis/flowcontrol" in after.evidence
        assert after.mitigations[0] == "Migrate FlowSchema."

    def test_blocker_counts_double(self) -> None:
        warned = item(run([check("capacity", "warning")]), "resource_constraints")
        blocked = item(run([check("capacity", "blocker")]), "resource_constraints")
        assert blocked.probability == warned.probability + 1

    def test_probability_is_capped_at_five(self) -> None:
        checks = [check(f"pod-disruption-budgets/pdb-{n}", "blocker") for n in range(5)]
        assert item(run(checks), "downtime").probability == 5

    def test_info_findings_do_not_raise_risk(self) -> None:
        info = CheckResult(name="single-replicas", severity="info", passed=False, summary="one found")
        assert item(run([info]), "downtime") == item(run([]), "downtime")

    def test_plan_drives_probability(self) -> None:
        patch = item(run([], minors=0), "compatibility")
        hop = item(run([], path="low", minors=1), "compatibility")
        far = item(run([], path="high", minors=3), "compatibility")
        assert patch.probability < hop.probability < far.probability
        assert any("high-risk path" in note for note in far.evidence)
        assert item(run([], delete_emptydir_data=True), "data_loss").probability == 2
        assert item(run([], force_bare_pods=True), "downtime").probability == 2
        # Two nodes in place: a batch takes half the capacity; surge never dips.
        assert item(run([], nodes=2), "resource_constraints").probability == 3
        assert (
            item(run([], nodes=2, strategy="surge", max_surge_percent=50), "resource_constraints").probability
            == 1
        )

    @pytest.mark.parametrize(
        ("score", "level"),
        [(1, "low"), (4, "low"), (5, "medium"), (9, "medium"), (10, "high"), (16, "critical")],
    )
    def test_levels(self, score: int, level: str) -> None:
        assert level_for(score) == level

    def test_bad_inputs_refused(self) -> None:
        with pytest.raises(ValueError, match="path_risk"):
            run([], path="medium")
        with pytest.raises(ValueError, match="minors_crossed"):
            run([], minors=-1)


class TestDecision:
    def test_clean_single_minor_proceeds(self) -> None:
        assessment = run(clean_checks())
        assert assessment.decision == "proceed"
        assert assessment.reasons

    def test_blocker_refuses_and_is_named(self) -> None:
        assessment = run([*clean_checks(), check("etcd-backup", "blocker")])
        assert assessment.decision == "refuse"
        assert assessment.reasons[0] == "blocker etcd-backup: etcd-backup said blocker"

    def test_approval_never_cannot_override_refuse(self) -> None:
        assert run([check("capacity", "blocker")], approval="never").decision == "refuse"

    def test_unmapped_blocker_still_refuses(self) -> None:
        assessment = run([check("dns-resolution", "blocker")])
        assert assessment.decision == "refuse"
        assert "failed checks outside the risk matrix: dns-resolution" in assessment.reasons

    def test_high_risk_item_needs_approval(self) -> None:
        assessment = run([check("removed-apis", "warning")])
        assert item(assessment, "compatibility").level == "high"
        assert assessment.decision == "approval"
        assert any(reason.startswith("compatibility risk is high") for reason in assessment.reasons)

    def test_more_than_one_minor_needs_approval(self) -> None:
        assessment = run(clean_checks(), path="high", minors=2)
        assert assessment.decision == "approval"
        assert "the upgrade crosses 2 minor versions" in assessment.reasons

    def test_approval_always_asks_even_when_clean(self) -> None:
        assessment = run(clean_checks(), approval="always")
        assert assessment.decision == "approval"
        assert "approval=always" in assessment.reasons[0]

    def test_approval_never_on_a_clean_run_gives_the_plain_reason(self) -> None:
        assessment = run(clean_checks(), approval="never")
        assert (assessment.decision, assessment.reasons) == (
            "proceed",
            ["no blockers, every risk low or medium, at most one minor crossed"],
        )

    def test_approval_never_skips_approval_but_says_why(self) -> None:
        assessment = run(clean_checks(), minors=2, approval="never")
        assert assessment.decision == "proceed"
        assert assessment.reasons[0].startswith("approval=never")

    def test_assessment_is_deterministic_and_json(self) -> None:
        checks = [check("capacity", "warning"), check("single-replicas", "warning")]
        first, second = run(checks), run(checks)
        assert first == second
        assert RiskAssessment.model_validate(first.model_dump(mode="json")) == first
        assert first.highest_level == "medium"
