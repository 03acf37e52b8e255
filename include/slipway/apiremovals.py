"""API versions that stop being served between Kubernetes 1.25 and 1.37 (and later).

Removals up to 1.32 follow the official Deprecated API Migration Guide. Everything
else, and the deprecation releases, comes from the ``prerelease-lifecycle-gen`` tags
in ``k8s.io/api`` v0.36.3 and v0.37.2: the apiserver stops serving a version once it
reaches the tagged ``removed`` release. Versions introduced as beta after 1.24, and all
alphas, are off by default (KEP-3136), so their removal only breaks clusters that
turned them on with ``--runtime-config``; the ``note`` says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from slipway.versions import Version, minor_key

_OPT_IN = "off by default; breaks only clusters that enabled it with --runtime-config"


@dataclass(frozen=True)
class ApiRemoval:
    """One ``apiVersion``/``kind`` pair and the releases that deprecate and remove it."""

    api_version: str
    kind: str
    deprecated_in: str
    removed_in: str
    replacement: str
    note: str = ""

    def removed_after(self, current: Version) -> bool:
        """Whether the removal lands in a minor newer than ``current``."""
        return minor_key(self.removed_in) > minor_key(current)

    def removed_by(self, target: Version) -> bool:
        """Whether ``target`` no longer serves this API."""
        return minor_key(self.removed_in) <= minor_key(target)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _kinds(
    api_version: str, kinds: str, deprecated_in: str, removed_in: str, replacement: str, *, note: str = ""
) -> list[ApiRemoval]:
    return [ApiRemoval(api_version, k, deprecated_in, removed_in, replacement, note) for k in kinds.split()]


_FLOWCONTROL = "FlowSchema PriorityLevelConfiguration"
_DRA = "DeviceClass ResourceClaim ResourceClaimTemplate ResourceSlice"
_VAP = "ValidatingAdmissionPolicy ValidatingAdmissionPolicyBinding"
_MAP = "MutatingAdmissionPolicy MutatingAdmissionPolicyBinding"

# fmt: off
API_REMOVALS: tuple[ApiRemoval, ...] = tuple([
    *_kinds("batch/v1beta1", "CronJob", "1.21", "1.25", "batch/v1"),
    *_kinds("discovery.k8s.io/v1beta1", "EndpointSlice", "1.21", "1.25", "discovery.k8s.io/v1",
            note="topology is replaced by per-endpoint nodeName and zone"),
    *_kinds("events.k8s.io/v1beta1", "Event", "1.22", "1.25", "events.k8s.io/v1"),
    *_kinds("autoscaling/v2beta1", "HorizontalPodAutoscaler", "1.22", "1.25", "autoscaling/v2"),
    *_kinds("policy/v1beta1", "PodDisruptionBudget", "1.21", "1.25", "policy/v1",
            note="an empty spec.selector selects every pod in the namespace in policy/v1"),
    *_kinds("policy/v1beta1", "PodSecurityPolicy", "1.21", "1.25", "",
            note="no replacement API: migrate to Pod Security Admission or a policy webhook"),
    *_kinds("policy/v1beta1", "Eviction", "1.22", "1.25", "policy/v1"),
    *_kinds("node.k8s.io/v1beta1", "RuntimeClass", "1.22", "1.25", "node.k8s.io/v1"),
    *_kinds("flowcontrol.apiserver.k8s.io/v1beta1", _FLOWCONTROL, "1.23", "1.26",
            "flowcontrol.apiserver.k8s.io/v1beta3", note="use flowcontrol.apiserver.k8s.io/v1 from 1.29"),
    *_kinds("autoscaling/v2beta2", "HorizontalPodAutoscaler", "1.23", "1.26", "autoscaling/v2"),
    *_kinds("storage.k8s.io/v1beta1", "CSIStorageCapacity", "1.24", "1.27", "storage.k8s.io/v1"),
    *_kinds("flowcontrol.apiserver.k8s.io/v1beta2", _FLOWCONTROL, "1.26", "1.29",
            "flowcontrol.apiserver.k8s.io/v1", note="v1 exists from 1.29; v1beta3 bridges 1.26-1.28"),
    *_kinds("flowcontrol.apiserver.k8s.io/v1beta3", _FLOWCONTROL, "1.29", "1.32",
            "flowcontrol.apiserver.k8s.io/v1"),
    *_kinds("admissionregistration.k8s.io/v1alpha1", _VAP, "1.29", "1.32",
            "admissionregistration.k8s.io/v1", note=_OPT_IN),
    *_kinds("authentication.k8s.io/v1alpha1", "SelfSubjectReview", "1.29", "1.32",
            "authentication.k8s.io/v1", note=_OPT_IN),
    *_kinds("authentication.k8s.io/v1beta1", "SelfSubjectReview", "1.30", "1.33",
            "authentication.k8s.io/v1"),
    *_kinds("admissionregistration.k8s.io/v1beta1", _VAP, "1.31", "1.34",
            "admissionregistration.k8s.io/v1", note=_OPT_IN),
    *_kinds("apidiscovery.k8s.io/v2beta1", "APIGroupDiscovery", "1.32", "1.35", "apidiscovery.k8s.io/v2",
            note="discovery response format: clients older than 1.30 fall back to unaggregated discovery"),
    *_kinds("storage.k8s.io/v1alpha1", "VolumeAttributesClass", "1.32", "1.35",
            "storage.k8s.io/v1", note=_OPT_IN),
    *_kinds("networking.k8s.io/v1beta1", "IPAddress ServiceCIDR", "1.34", "1.37",
            "networking.k8s.io/v1", note=_OPT_IN),
    *_kinds("storage.k8s.io/v1beta1", "VolumeAttributesClass", "1.34", "1.37",
            "storage.k8s.io/v1", note=_OPT_IN),
    *_kinds("certificates.k8s.io/v1alpha1", "ClusterTrustBundle", "1.34", "1.37",
            "certificates.k8s.io/v1beta1", note=_OPT_IN),
    # Deprecated by 1.37 and scheduled for removal after it.
    *_kinds("admissionregistration.k8s.io/v1alpha1", _MAP, "1.35", "1.38",
            "admissionregistration.k8s.io/v1", note=_OPT_IN),
    *_kinds("coordination.k8s.io/v1alpha2", "LeaseCandidate", "1.35", "1.38",
            "coordination.k8s.io/v1beta1", note=_OPT_IN),
    *_kinds("resource.k8s.io/v1beta1", _DRA, "1.35", "1.38", "resource.k8s.io/v1", note=_OPT_IN),
    *_kinds("coordination.k8s.io/v1beta1", "LeaseCandidate", "1.36", "1.39", "", note=_OPT_IN),
    *_kinds("resource.k8s.io/v1beta2", _DRA, "1.36", "1.39", "resource.k8s.io/v1", note=_OPT_IN),
    *_kinds("resource.k8s.io/v1alpha3", "DeviceTaintRule", "1.36", "1.39",
            "resource.k8s.io/v1", note=_OPT_IN),
    *_kinds("admissionregistration.k8s.io/v1beta1", _MAP, "1.37", "1.40",
            "admissionregistration.k8s.io/v1", note=_OPT_IN),
    *_kinds("certificates.k8s.io/v1beta1", "ClusterTrustBundle PodCertificateRequest", "1.37", "1.40",
            "certificates.k8s.io/v1", note=_OPT_IN),
    *_kinds("storagemigration.k8s.io/v1beta1", "StorageVersionMigration", "1.37", "1.40",
            "storagemigration.k8s.io/v1", note=_OPT_IN),
])
# fmt: on


def removals_between(current: Version, target: Version) -> list[ApiRemoval]:
    """APIs removed in a minor newer than ``current`` and no newer than ``target``."""
    return [r for r in API_REMOVALS if r.removed_after(current) and r.removed_by(target)]


def find_removed(api_version: str, kind: str, current: Version, target: Version) -> ApiRemoval | None:
    """The removal that breaks ``api_version``/``kind`` on the way from ``current`` to ``target``."""
    wanted = (api_version.strip(), kind.strip())
    return next((r for r in removals_between(current, target) if (r.api_version, r.kind) == wanted), None)


def deprecated_in_target(target: Version) -> list[ApiRemoval]:
    """APIs that ``target`` still serves but has deprecated: migrate before the next hops."""
    key = minor_key(target)
    return [r for r in API_REMOVALS if minor_key(r.deprecated_in) <= key < minor_key(r.removed_in)]
