"""Unit tests for the removed/deprecated API table and its lookups.

The expected data below is written out by hand from the official *Deprecated API Migration
Guide* (https://kubernetes.io/docs/reference/using-api/deprecation-guide/, section "Removed
APIs by release": v1.32, v1.29, v1.27, v1.26, v1.25, v1.22, v1.16 — v1.32 is its newest
section), never copied from ``slipway.apiremovals``: a wrong table row fails here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from slipway.apiremovals import (
    API_REMOVALS,
    ApiRemoval,
    deprecated_in_target,
    find_removed,
    group_of,
    removal_of,
    removals_between,
    removals_by_release,
    removed_group_versions,
)
from slipway.checks.apis import (
    REQUEST_ONLY_KINDS,
    AppliedObject,
    Discovery,
    ServedResource,
    judge_audit,
    judge_manifests,
    judge_served,
    plan_scan,
    scanned_kinds,
)
from slipway.versions import Version, minor_key


def v(text: str) -> Version:
    return Version.parse(text)


def pairs(removals: list[ApiRemoval]) -> set[tuple[str, str]]:
    return {(r.api_version, r.kind) for r in removals}


# (removing release, removed group/version, kind, replacement group/version) — one row per kind,
# as the guide words it. PodSecurityPolicy policy/v1beta1 has no replacement API ("").
_FC = ("FlowSchema", "PriorityLevelConfiguration")
GUIDE: list[tuple[str, str, str, str]] = [
    # v1.32
    *[("1.32", "flowcontrol.apiserver.k8s.io/v1beta3", k, "flowcontrol.apiserver.k8s.io/v1") for k in _FC],
    # v1.29: "flowcontrol.apiserver.k8s.io/v1 (since 1.29) or v1beta3 (since 1.26)"; we advise v1.
    *[("1.29", "flowcontrol.apiserver.k8s.io/v1beta2", k, "flowcontrol.apiserver.k8s.io/v1") for k in _FC],
    # v1.27
    ("1.27", "storage.k8s.io/v1beta1", "CSIStorageCapacity", "storage.k8s.io/v1"),
    # v1.26: the guide names v1beta3, available since v1.26.
    *[
        ("1.26", "flowcontrol.apiserver.k8s.io/v1beta1", k, "flowcontrol.apiserver.k8s.io/v1beta3")
        for k in _FC
    ],
    ("1.26", "autoscaling/v2beta2", "HorizontalPodAutoscaler", "autoscaling/v2"),
    # v1.25
    ("1.25", "batch/v1beta1", "CronJob", "batch/v1"),
    ("1.25", "discovery.k8s.io/v1beta1", "EndpointSlice", "discovery.k8s.io/v1"),
    ("1.25", "events.k8s.io/v1beta1", "Event", "events.k8s.io/v1"),
    ("1.25", "autoscaling/v2beta1", "HorizontalPodAutoscaler", "autoscaling/v2"),
    ("1.25", "policy/v1beta1", "PodDisruptionBudget", "policy/v1"),
    ("1.25", "policy/v1beta1", "PodSecurityPolicy", ""),
    ("1.25", "node.k8s.io/v1beta1", "RuntimeClass", "node.k8s.io/v1"),
    # v1.22
    (
        "1.22",
        "admissionregistration.k8s.io/v1beta1",
        "MutatingWebhookConfiguration",
        "admissionregistration.k8s.io/v1",
    ),
    (
        "1.22",
        "admissionregistration.k8s.io/v1beta1",
        "ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io/v1",
    ),
    ("1.22", "apiextensions.k8s.io/v1beta1", "CustomResourceDefinition", "apiextensions.k8s.io/v1"),
    ("1.22", "apiregistration.k8s.io/v1beta1", "APIService", "apiregistration.k8s.io/v1"),
    ("1.22", "authentication.k8s.io/v1beta1", "TokenReview", "authentication.k8s.io/v1"),
    ("1.22", "authorization.k8s.io/v1beta1", "LocalSubjectAccessReview", "authorization.k8s.io/v1"),
    ("1.22", "authorization.k8s.io/v1beta1", "SelfSubjectAccessReview", "authorization.k8s.io/v1"),
    ("1.22", "authorization.k8s.io/v1beta1", "SubjectAccessReview", "authorization.k8s.io/v1"),
    ("1.22", "certificates.k8s.io/v1beta1", "CertificateSigningRequest", "certificates.k8s.io/v1"),
    ("1.22", "coordination.k8s.io/v1beta1", "Lease", "coordination.k8s.io/v1"),
    ("1.22", "extensions/v1beta1", "Ingress", "networking.k8s.io/v1"),
    ("1.22", "networking.k8s.io/v1beta1", "Ingress", "networking.k8s.io/v1"),
    ("1.22", "networking.k8s.io/v1beta1", "IngressClass", "networking.k8s.io/v1"),
    ("1.22", "rbac.authorization.k8s.io/v1beta1", "ClusterRole", "rbac.authorization.k8s.io/v1"),
    ("1.22", "rbac.authorization.k8s.io/v1beta1", "ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
    ("1.22", "rbac.authorization.k8s.io/v1beta1", "Role", "rbac.authorization.k8s.io/v1"),
    ("1.22", "rbac.authorization.k8s.io/v1beta1", "RoleBinding", "rbac.authorization.k8s.io/v1"),
    ("1.22", "scheduling.k8s.io/v1beta1", "PriorityClass", "scheduling.k8s.io/v1"),
    ("1.22", "storage.k8s.io/v1beta1", "CSIDriver", "storage.k8s.io/v1"),
    ("1.22", "storage.k8s.io/v1beta1", "CSINode", "storage.k8s.io/v1"),
    ("1.22", "storage.k8s.io/v1beta1", "StorageClass", "storage.k8s.io/v1"),
    ("1.22", "storage.k8s.io/v1beta1", "VolumeAttachment", "storage.k8s.io/v1"),
    # v1.16
    ("1.16", "extensions/v1beta1", "NetworkPolicy", "networking.k8s.io/v1"),
    ("1.16", "extensions/v1beta1", "PodSecurityPolicy", "policy/v1beta1"),
    ("1.16", "extensions/v1beta1", "DaemonSet", "apps/v1"),
    ("1.16", "apps/v1beta2", "DaemonSet", "apps/v1"),
    ("1.16", "extensions/v1beta1", "Deployment", "apps/v1"),
    ("1.16", "apps/v1beta1", "Deployment", "apps/v1"),
    ("1.16", "apps/v1beta2", "Deployment", "apps/v1"),
    ("1.16", "apps/v1beta1", "StatefulSet", "apps/v1"),
    ("1.16", "apps/v1beta2", "StatefulSet", "apps/v1"),
    ("1.16", "extensions/v1beta1", "ReplicaSet", "apps/v1"),
    ("1.16", "apps/v1beta1", "ReplicaSet", "apps/v1"),
    ("1.16", "apps/v1beta2", "ReplicaSet", "apps/v1"),
]


class TestDeprecationGuide:
    @pytest.mark.parametrize(("removed_in", "api_version", "kind", "replacement"), GUIDE)
    def test_every_guide_removal_is_in_the_table_with_its_replacement(
        self, removed_in: str, api_version: str, kind: str, replacement: str
    ) -> None:
        removal = removal_of(api_version, kind)
        assert removal is not None, f"{kind} {api_version} missing"
        assert (removal.removed_in, removal.replacement, removal.in_guide) == (removed_in, replacement, True)
        assert minor_key(removal.deprecated_in) < minor_key(removed_in)

    def test_the_table_marks_nothing_else_as_from_the_guide(self) -> None:
        guide = {(api_version, kind) for _, api_version, kind, _ in GUIDE}
        assert {(r.api_version, r.kind) for r in API_REMOVALS if r.in_guide} == guide

    def test_every_release_section_of_the_guide_is_covered(self) -> None:
        releases = {r.removed_in for r in API_REMOVALS if r.in_guide}
        assert releases == {"1.16", "1.22", "1.25", "1.26", "1.27", "1.29", "1.32"}

    def test_pod_security_policy_has_no_replacement_api(self) -> None:
        removal = removal_of("policy/v1beta1", "PodSecurityPolicy")
        assert removal is not None and removal.replacement == ""
        assert "Pod Security Admission" in removal.note

    def test_objects_are_read_through_the_replacement_group(self) -> None:
        ingress = removal_of("extensions/v1beta1", "Ingress")
        psp = removal_of("policy/v1beta1", "PodSecurityPolicy")
        assert ingress is not None and ingress.home_group == "networking.k8s.io"
        assert psp is not None and psp.home_group == "policy"
        assert (group_of("apps/v1"), group_of("v1")) == ("apps", "")


class TestPathQueries:
    def test_a_1_29_to_1_32_path_crosses_exactly_flowcontrol_v1beta3_and_the_opt_in_alphas(self) -> None:
        crossed = removals_by_release(v("1.29.14"), v("1.32.13"))
        assert list(crossed) == ["1.32"]
        guide = {(r.api_version, r.kind) for r in crossed["1.32"] if r.in_guide}
        assert guide == {
            ("flowcontrol.apiserver.k8s.io/v1beta3", "FlowSchema"),
            ("flowcontrol.apiserver.k8s.io/v1beta3", "PriorityLevelConfiguration"),
        }
        # Everything else removed in 1.32 was never on by default.
        assert all("off by default" in r.note for r in crossed["1.32"] if not r.in_guide)

    def test_a_1_24_to_1_29_path_crosses_1_25_1_26_1_27_and_1_29(self) -> None:
        crossed = removals_by_release(v("1.24.17"), v("1.29.14"))
        assert list(crossed) == ["1.25", "1.26", "1.27", "1.29"]
        assert ("events.k8s.io/v1beta1", "Event") in pairs(crossed["1.25"])
        assert ("storage.k8s.io/v1beta1", "CSIStorageCapacity") in pairs(crossed["1.27"])

    def test_a_path_inside_one_minor_crosses_nothing(self) -> None:
        assert removals_by_release(v("1.32.0"), v("1.32.13")) == {}

    def test_removed_group_versions_by_1_25_include_the_1_16_and_1_22_ones(self) -> None:
        gone = removed_group_versions(v("1.25.0"))
        assert {r.kind for r in gone["extensions/v1beta1"]} == {
            "NetworkPolicy",
            "PodSecurityPolicy",
            "DaemonSet",
            "Deployment",
            "ReplicaSet",
            "Ingress",
        }
        assert "flowcontrol.apiserver.k8s.io/v1beta3" not in gone
        assert "flowcontrol.apiserver.k8s.io/v1beta3" in removed_group_versions(v("1.32.0"))


class TestTable:
    def test_entries_are_consistent(self) -> None:
        for removal in API_REMOVALS:
            assert minor_key(removal.deprecated_in) < minor_key(removal.removed_in), removal
            assert minor_key(removal.removed_in) >= (1, 16), removal
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


# ---- the removed-API preflight check, on plain data ---------------------------------------------

V131, V132 = Version(1, 31, 14), Version(1, 32, 13)


def discovery(skipped: list[str] | None = None) -> Discovery:
    """Discovery of a stock 1.31 cluster, trimmed: flowcontrol v1 preferred, v1beta3 still served."""

    def res(gv: str, kind: str, plural: str, listable: bool = True) -> ServedResource:
        return ServedResource(gv, kind, plural, listable)

    fc = "flowcontrol.apiserver.k8s.io"
    return Discovery(
        versions={
            "": ["v1"],
            fc: [f"{fc}/v1", f"{fc}/v1beta3"],
            "authentication.k8s.io": ["authentication.k8s.io/v1"],
        },
        resources={
            "v1": {"ConfigMap": res("v1", "ConfigMap", "configmaps")},
            f"{fc}/v1": {
                "FlowSchema": res(f"{fc}/v1", "FlowSchema", "flowschemas"),
                "PriorityLevelConfiguration": res(
                    f"{fc}/v1", "PriorityLevelConfiguration", "prioritylevelconfigurations"
                ),
            },
            f"{fc}/v1beta3": {
                "FlowSchema": res(f"{fc}/v1beta3", "FlowSchema", "flowschemas"),
                "PriorityLevelConfiguration": res(
                    f"{fc}/v1beta3", "PriorityLevelConfiguration", "prioritylevelconfigurations"
                ),
            },
            "authentication.k8s.io/v1": {
                "TokenReview": res("authentication.k8s.io/v1", "TokenReview", "tokenreviews", listable=False)
            },
        },
        skipped=skipped or [],
    )


class TestScanCoverage:
    def test_every_guide_kind_is_scanned_in_the_group_that_serves_it_today(self) -> None:
        wanted = set(scanned_kinds())
        for _, api_version, kind, replacement in GUIDE:
            home = group_of(replacement or api_version)
            assert (home, kind) in wanted, f"{kind} ({home}) is not scanned"
        for kind in ("EndpointSlice", "Event", "CSIStorageCapacity", "PodSecurityPolicy", "FlowSchema"):
            assert kind in {k for _, k in wanted}

    def test_kinds_are_listed_at_the_preferred_served_version(self) -> None:
        plan = plan_scan(discovery(), [("flowcontrol.apiserver.k8s.io", "FlowSchema"), ("", "ConfigMap")])
        assert [k.path for k in plan.kinds] == [
            "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas",
            "/api/v1/configmaps",
        ]

    def test_every_kind_not_listed_is_named_with_why(self) -> None:
        wanted = [
            ("authentication.k8s.io", "TokenReview"),  # served, create-only
            ("policy", "Eviction"),  # a subresource
            ("discovery.k8s.io", "EndpointSlice"),  # group absent from this trimmed discovery
            ("apps", "Deployment"),
        ]
        plan = plan_scan(discovery(skipped=["apps/v1: HTTP 503 Service Unavailable"]), wanted)
        assert plan.kinds == []
        assert plan.request_only == ["TokenReview (authentication.k8s.io)", "Eviction (policy)"]
        assert plan.not_served == ["EndpointSlice (discovery.k8s.io)"]
        assert plan.skipped == ["Deployment (apps): discovery failed (apps/v1: HTTP 503 Service Unavailable)"]
        assert "Eviction" in REQUEST_ONLY_KINDS

    def test_skipped_kinds_are_reported_not_dropped_and_never_block(self) -> None:
        plan = plan_scan(
            discovery(skipped=["apps/v1: HTTP 503 Service Unavailable"]), [("apps", "Deployment")]
        )
        result = judge_manifests(
            [], V131, V132, ["/apis/events.k8s.io/v1/events: forbidden for this identity"], plan
        )
        assert (result.severity, result.passed) == ("info", True)
        assert isinstance(result.evidence, dict)
        assert result.evidence["skipped"] == [
            "Deployment (apps): discovery failed (apps/v1: HTTP 503 Service Unavailable)",
            "/apis/events.k8s.io/v1/events: forbidden for this identity",
        ]
        assert "could not read 2 kind(s)" in result.summary

    def test_a_stored_object_at_a_removed_version_still_blocks(self) -> None:
        legacy = AppliedObject("FlowSchema legacy", "flowcontrol.apiserver.k8s.io/v1beta3", "FlowSchema")
        result = judge_manifests([legacy], V131, V132, (), plan_scan(discovery(), scanned_kinds()))
        assert result.severity == "blocker"
        assert "FlowSchema legacy (flowcontrol.apiserver.k8s.io/v1beta3, removed in 1.32)" in result.summary

    def test_an_ingress_applied_as_extensions_v1beta1_is_caught_on_any_release(self) -> None:
        old = AppliedObject("Ingress shop/web", "extensions/v1beta1", "Ingress")
        result = judge_manifests([old], V131, V132)
        assert result.severity == "blocker"
        assert isinstance(result.evidence, dict)
        assert result.evidence["removed"][0]["status"] == "removed in 1.22, before the current 1.31"


class TestServedIsNotUsed:
    def test_served_by_default_removal_is_information_never_a_blocker(self) -> None:
        served = discovery().served_kinds()
        result = judge_served(served, V131, V132)
        assert (result.severity, result.passed) == ("info", True)
        assert "FlowSchema flowcontrol.apiserver.k8s.io/v1beta3 (removed in 1.32)" in result.summary

    def test_unreadable_group_versions_are_named(self) -> None:
        result = judge_served({"v1": {"ConfigMap"}}, V131, V132, ["metrics.k8s.io/v1beta1: HTTP 503 x"])
        assert result.severity == "info"
        assert "metrics.k8s.io/v1beta1: HTTP 503 x" in result.summary


def audit_event(
    audit_id: str, user: str, group: str, version: str, resource: str, removed: str | None
) -> dict[str, Any]:
    annotations = {"k8s.io/deprecated": "true"} | ({"k8s.io/removed-release": removed} if removed else {})
    return {
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "user": {"username": user},
        "objectRef": {"apiGroup": group, "apiVersion": version, "resource": resource},
        "annotations": annotations,
    }


class TestAudit:
    def test_callers_of_a_removed_api_are_named(self) -> None:
        events = [
            audit_event(
                "a",
                "system:serviceaccount:ops:tuner",
                "flowcontrol.apiserver.k8s.io",
                "v1beta3",
                "flowschemas",
                "1.32",
            ),
            audit_event(
                "a",
                "system:serviceaccount:ops:tuner",
                "flowcontrol.apiserver.k8s.io",
                "v1beta3",
                "flowschemas",
                "1.32",
            ),
            audit_event(
                "b",
                "system:serviceaccount:ops:tuner",
                "flowcontrol.apiserver.k8s.io",
                "v1beta3",
                "flowschemas",
                "1.32",
            ),
            {
                "auditID": "c",
                "user": {"username": "admin"},
                "objectRef": {"resource": "pods"},
                "annotations": {},
            },
        ]
        result = judge_audit(events, V132)
        assert result.severity == "blocker"
        caller = "system:serviceaccount:ops:tuner -> flowschemas.flowcontrol.apiserver.k8s.io/v1beta3"
        assert f"{caller} (removed in 1.32)" in result.summary
        assert isinstance(result.evidence, dict)
        assert result.evidence["removed"][0]["requests"] == 2, "one request logs several stages"

    def test_deprecated_but_still_served_informs(self) -> None:
        events = [audit_event("a", "ci", "flowcontrol.apiserver.k8s.io", "v1beta3", "flowschemas", "1.32")]
        assert judge_audit(events, V131).severity == "info"
        assert judge_audit([], V132).severity == "ok"
