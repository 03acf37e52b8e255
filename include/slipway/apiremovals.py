"""Every API version Kubernetes stopped serving from 1.16 on, and the ones scheduled after 1.37.

Each entry is one ``apiVersion``/``kind`` pair: the release that removes it, the release that
deprecated it and the group version that replaces it. Sources:

* the official *Deprecated API Migration Guide*
  (https://kubernetes.io/docs/reference/using-api/deprecation-guide/), which lists the
  removals of 1.16, 1.22, 1.25, 1.26, 1.27, 1.29 and 1.32 (its newest section); entries
  from it carry ``in_guide=True``;
* the ``prerelease-lifecycle-gen`` tags in ``k8s.io/api`` v0.36.3 and v0.37.2 for everything
  after 1.32 and for the deprecation releases: the apiserver stops serving a version once it
  reaches the tagged ``removed`` release.

Versions introduced as beta after 1.24, and all alphas, are off by default (KEP-3136), so
their removal only breaks clusters that turned them on with ``--runtime-config``; the
``note`` says so. Whether an API is *served* never says whether anything *uses* it: the
preflight check (``slipway.checks.apis``) decides from stored objects, requests and audit.
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
    in_guide: bool = False

    @property
    def group(self) -> str:
        """``apps`` for ``apps/v1beta2``; ``""`` for the core group."""
        return group_of(self.api_version)

    @property
    def home_group(self) -> str:
        """The group whose served version reads these objects today (the replacement's, else its own)."""
        return group_of(self.replacement) if self.replacement else self.group

    def removed_after(self, current: Version) -> bool:
        """Whether the removal lands in a minor newer than ``current``."""
        return minor_key(self.removed_in) > minor_key(current)

    def removed_by(self, target: Version) -> bool:
        """Whether ``target`` no longer serves this API."""
        return minor_key(self.removed_in) <= minor_key(target)

    def to_dict(self) -> dict[str, str | bool]:
        return asdict(self)


def group_of(api_version: str) -> str:
    """The API group of ``apps/v1`` (``apps``) or ``v1`` (the core group, ``""``)."""
    return api_version.strip().rpartition("/")[0]


def _kinds(
    api_version: str,
    kinds: str,
    deprecated_in: str,
    removed_in: str,
    replacement: str,
    *,
    note: str = "",
    guide: bool = False,
) -> list[ApiRemoval]:
    return [
        ApiRemoval(api_version, k, deprecated_in, removed_in, replacement, note, guide) for k in kinds.split()
    ]


def _guide(
    api_version: str, kinds: str, deprecated_in: str, removed_in: str, replacement: str, *, note: str = ""
) -> list[ApiRemoval]:
    """Entries listed in the Deprecated API Migration Guide."""
    return _kinds(api_version, kinds, deprecated_in, removed_in, replacement, note=note, guide=True)


_FLOWCONTROL = "FlowSchema PriorityLevelConfiguration"
_DRA = "DeviceClass ResourceClaim ResourceClaimTemplate ResourceSlice"
_VAP = "ValidatingAdmissionPolicy ValidatingAdmissionPolicyBinding"
_MAP = "MutatingAdmissionPolicy MutatingAdmissionPolicyBinding"
_WEBHOOKS = "MutatingWebhookConfiguration ValidatingWebhookConfiguration"
_ACCESS_REVIEWS = "LocalSubjectAccessReview SelfSubjectAccessReview SubjectAccessReview"

# fmt: off
API_REMOVALS: tuple[ApiRemoval, ...] = tuple([
    # 1.16 (guide): the pre-apps/v1 workload APIs and extensions/v1beta1.
    *_guide("extensions/v1beta1", "NetworkPolicy", "1.9", "1.16", "networking.k8s.io/v1"),
    *_guide("extensions/v1beta1", "PodSecurityPolicy", "1.11", "1.16", "policy/v1beta1",
            note="policy/v1beta1 PodSecurityPolicy is itself removed in 1.25"),
    *_guide("extensions/v1beta1", "DaemonSet Deployment ReplicaSet", "1.8", "1.16", "apps/v1"),
    *_guide("apps/v1beta1", "Deployment StatefulSet ReplicaSet", "1.8", "1.16", "apps/v1"),
    *_guide("apps/v1beta2", "DaemonSet Deployment StatefulSet ReplicaSet", "1.9", "1.16", "apps/v1"),
    # 1.22 (guide).
    *_guide("admissionregistration.k8s.io/v1beta1", _WEBHOOKS, "1.16", "1.22",
            "admissionregistration.k8s.io/v1"),
    *_guide("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition", "1.16", "1.22",
            "apiextensions.k8s.io/v1"),
    *_guide("apiregistration.k8s.io/v1beta1", "APIService", "1.19", "1.22", "apiregistration.k8s.io/v1"),
    *_guide("authentication.k8s.io/v1beta1", "TokenReview", "1.19", "1.22", "authentication.k8s.io/v1"),
    *_guide("authorization.k8s.io/v1beta1", _ACCESS_REVIEWS, "1.19", "1.22", "authorization.k8s.io/v1"),
    *_guide("certificates.k8s.io/v1beta1", "CertificateSigningRequest", "1.19", "1.22",
            "certificates.k8s.io/v1"),
    *_guide("coordination.k8s.io/v1beta1", "Lease", "1.19", "1.22", "coordination.k8s.io/v1"),
    *_guide("extensions/v1beta1", "Ingress", "1.14", "1.22", "networking.k8s.io/v1"),
    *_guide("networking.k8s.io/v1beta1", "Ingress IngressClass", "1.19", "1.22", "networking.k8s.io/v1"),
    *_guide("rbac.authorization.k8s.io/v1beta1", "ClusterRole ClusterRoleBinding Role RoleBinding",
            "1.17", "1.22", "rbac.authorization.k8s.io/v1"),
    *_guide("scheduling.k8s.io/v1beta1", "PriorityClass", "1.14", "1.22", "scheduling.k8s.io/v1"),
    *_guide("storage.k8s.io/v1beta1", "CSINode", "1.17", "1.22", "storage.k8s.io/v1"),
    *_guide("storage.k8s.io/v1beta1", "CSIDriver StorageClass VolumeAttachment", "1.19", "1.22",
            "storage.k8s.io/v1"),
    # 1.25 onwards.
    *_guide("batch/v1beta1", "CronJob", "1.21", "1.25", "batch/v1"),
    *_guide("discovery.k8s.io/v1beta1", "EndpointSlice", "1.21", "1.25", "discovery.k8s.io/v1",
            note="topology is replaced by per-endpoint nodeName and zone"),
    *_guide("events.k8s.io/v1beta1", "Event", "1.22", "1.25", "events.k8s.io/v1"),
    *_guide("autoscaling/v2beta1", "HorizontalPodAutoscaler", "1.22", "1.25", "autoscaling/v2"),
    *_guide("policy/v1beta1", "PodDisruptionBudget", "1.21", "1.25", "policy/v1",
            note="an empty spec.selector selects every pod in the namespace in policy/v1"),
    *_guide("policy/v1beta1", "PodSecurityPolicy", "1.21", "1.25", "",
            note="no replacement API: migrate to Pod Security Admission or a policy webhook"),
    *_kinds("policy/v1beta1", "Eviction", "1.22", "1.25", "policy/v1"),
    *_guide("node.k8s.io/v1beta1", "RuntimeClass", "1.22", "1.25", "node.k8s.io/v1"),
    *_guide("flowcontrol.apiserver.k8s.io/v1beta1", _FLOWCONTROL, "1.23", "1.26",
            "flowcontrol.apiserver.k8s.io/v1beta3", note="use flowcontrol.apiserver.k8s.io/v1 from 1.29"),
    *_guide("autoscaling/v2beta2", "HorizontalPodAutoscaler", "1.23", "1.26", "autoscaling/v2"),
    *_guide("storage.k8s.io/v1beta1", "CSIStorageCapacity", "1.24", "1.27", "storage.k8s.io/v1"),
    *_guide("flowcontrol.apiserver.k8s.io/v1beta2", _FLOWCONTROL, "1.26", "1.29",
            "flowcontrol.apiserver.k8s.io/v1", note="v1 exists from 1.29; v1beta3 bridges 1.26-1.28"),
    *_guide("flowcontrol.apiserver.k8s.io/v1beta3", _FLOWCONTROL, "1.29", "1.32",
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
    """APIs removed in a minor newer than ``current`` and no newer than ``target``: what a path crosses."""
    return [r for r in API_REMOVALS if r.removed_after(current) and r.removed_by(target)]


def removals_by_release(current: Version, target: Version) -> dict[str, list[ApiRemoval]]:
    """:func:`removals_between` grouped by the release that removes them, oldest release first."""
    grouped: dict[str, list[ApiRemoval]] = {}
    for removal in sorted(removals_between(current, target), key=lambda r: minor_key(r.removed_in)):
        grouped.setdefault(removal.removed_in, []).append(removal)
    return grouped


def removal_of(api_version: str, kind: str) -> ApiRemoval | None:
    """The removal of ``api_version``/``kind`` at whatever release, or None when it is not removed."""
    wanted = (api_version.strip(), kind.strip())
    return next((r for r in API_REMOVALS if (r.api_version, r.kind) == wanted), None)


def removed_group_versions(target: Version) -> dict[str, list[ApiRemoval]]:
    """Group version -> removals of its kinds that ``target`` no longer serves."""
    grouped: dict[str, list[ApiRemoval]] = {}
    for removal in API_REMOVALS:
        if removal.removed_by(target):
            grouped.setdefault(removal.api_version, []).append(removal)
    return grouped


def find_removed(api_version: str, kind: str, current: Version, target: Version) -> ApiRemoval | None:
    """The removal that breaks ``api_version``/``kind`` on the way from ``current`` to ``target``."""
    wanted = (api_version.strip(), kind.strip())
    return next((r for r in removals_between(current, target) if (r.api_version, r.kind) == wanted), None)


def deprecated_in_target(target: Version) -> list[ApiRemoval]:
    """APIs that ``target`` still serves but has deprecated: migrate before the next hops."""
    key = minor_key(target)
    return [r for r in API_REMOVALS if minor_key(r.deprecated_in) <= key < minor_key(r.removed_in)]
