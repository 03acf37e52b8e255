"""Unit tests for the removed/deprecated API table and its lookups."""

from __future__ import annotations

import json

import pytest

from slipway.apiremovals import API_REMOVALS, ApiRemoval, deprecated_in_target, find_removed, removals_between
from slipway.versions import Version, minor_key


def v(text: str) -> Version:
    return Version.parse(text)


def pairs(removals: list[ApiRemoval]) -> set[tuple[str, str]]:
    return {(r.api_version, r.kind) for r in removals}


class TestTable:
    def test_entries_are_consistent(self) -> None:
        for removal in API_REMOVALS:
            assert minor_key(removal.deprecated_in) < minor_key(removal.removed_in), removal
            assert minor_key(removal.removed_in) >= (1, 25), removal
            assert removal.replacement != removal.api_version, removal

    def test_no_duplicate_api_version_kind(self) -> None:
        keys = [(r.api_version, r.kind) for r in API_REMOVALS]
        assert len(keys) == len(set(keys))

    def test_json_shaped(self) -> None:
        removal = API_REMOVALS[0]
        assert json.loads(json.dumps(removal.to_dict()))["api_version"] == removal.api_version


class TestRemovalsBetween:
    def test_1_25_removals(self) -> None:
        found = pairs(removals_between(v("1.24.17"), v("1.25.16")))
        assert ("policy/v1beta1", "PodDisruptionBudget") in found
        assert ("policy/v1beta1", "PodSecurityPolicy") in found
        assert ("batch/v1beta1", "CronJob") in found
        assert ("autoscaling/v2beta2", "HorizontalPodAutoscaler") not in found

    def test_exactly_the_1_26_removals(self) -> None:
        assert pairs(removals_between(v("1.25.16"), v("1.26.0"))) == {
            ("flowcontrol.apiserver.k8s.io/v1beta1", "FlowSchema"),
            ("flowcontrol.apiserver.k8s.io/v1beta1", "PriorityLevelConfiguration"),
            ("autoscaling/v2beta2", "HorizontalPodAutoscaler"),
        }

    def test_current_minor_excluded_target_minor_included(self) -> None:
        assert removals_between(v("1.25.0"), v("1.25.16")) == []
        assert ("storage.k8s.io/v1beta1", "CSIStorageCapacity") in pairs(
            removals_between(v("1.26.3"), v("1.27.0"))
        )

    def test_range_spanning_several_minors(self) -> None:
        found = pairs(removals_between(v("1.28.3"), v("1.32.13")))
        assert ("flowcontrol.apiserver.k8s.io/v1beta2", "FlowSchema") in found
        assert ("flowcontrol.apiserver.k8s.io/v1beta3", "FlowSchema") in found
        assert ("flowcontrol.apiserver.k8s.io/v1beta1", "FlowSchema") not in found
        assert ("authentication.k8s.io/v1beta1", "SelfSubjectReview") not in found

    def test_exactly_the_1_37_removals(self) -> None:
        assert pairs(removals_between(v("1.36.3"), v("1.37.2"))) == {
            ("networking.k8s.io/v1beta1", "IPAddress"),
            ("networking.k8s.io/v1beta1", "ServiceCIDR"),
            ("storage.k8s.io/v1beta1", "VolumeAttributesClass"),
            ("certificates.k8s.io/v1alpha1", "ClusterTrustBundle"),
        }

    def test_results_are_in_removal_order(self) -> None:
        found = removals_between(v("1.24.0"), v("1.37.2"))
        assert [minor_key(r.removed_in) for r in found] == sorted(minor_key(r.removed_in) for r in found)


class TestFindRemoved:
    def test_finds_the_removal_with_its_replacement(self) -> None:
        removal = find_removed("policy/v1beta1", "PodDisruptionBudget", v("1.24.17"), v("1.25.16"))
        assert removal is not None
        assert (removal.removed_in, removal.replacement) == ("1.25", "policy/v1")
        assert "empty spec.selector" in removal.note

    @pytest.mark.parametrize(
        ("api_version", "kind", "current", "target"),
        [
            ("policy/v1", "PodDisruptionBudget", "1.24.0", "1.37.2"),
            ("policy/v1beta1", "PodDisruptionBudget", "1.25.0", "1.32.0"),
            ("policy/v1beta1", "poddisruptionbudget", "1.24.0", "1.25.0"),
            ("flowcontrol.apiserver.k8s.io/v1beta3", "FlowSchema", "1.29.0", "1.31.14"),
        ],
    )
    def test_none_outside_the_window_or_for_other_kinds(
        self, api_version: str, kind: str, current: str, target: str
    ) -> None:
        assert find_removed(api_version, kind, v(current), v(target)) is None

    def test_tolerates_whitespace(self) -> None:
        assert find_removed(" batch/v1beta1 ", "CronJob\n", v("1.24.0"), v("1.25.0")) is not None


class TestDeprecatedInTarget:
    def test_still_served_but_deprecated(self) -> None:
        found = pairs(deprecated_in_target(v("1.37.2")))
        assert ("admissionregistration.k8s.io/v1beta1", "MutatingAdmissionPolicy") in found
        assert ("resource.k8s.io/v1beta1", "ResourceClaim") in found
        assert ("networking.k8s.io/v1beta1", "ServiceCIDR") not in found, "removed in 1.37, not deprecated"

    def test_earlier_target(self) -> None:
        found = pairs(deprecated_in_target(v("1.28.15")))
        assert ("flowcontrol.apiserver.k8s.io/v1beta2", "FlowSchema") in found
        assert ("flowcontrol.apiserver.k8s.io/v1beta3", "FlowSchema") not in found
