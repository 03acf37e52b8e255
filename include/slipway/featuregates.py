"""Feature gates and command-line flags that break or warn on the way to a target release.

Every core component (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet)
registers the same feature-gate set, so a removed gate stops whichever component sets
it, and a gate locked to its default refuses the opposite value. Flags are per component.

The gate table was derived from the feature specs in the ``k8s.io/kubernetes``,
``k8s.io/apiserver``, ``k8s.io/apiextensions-apiserver``, ``k8s.io/controller-manager``
and ``k8s.io/component-base`` sources of v1.29.6, 1.30.14, 1.31.14, 1.32.13, 1.33.13,
1.34.4, 1.35.4, 1.36.3 and 1.37.2: ``removed`` is the first minor that no longer knows
the gate. Lock and deprecation releases come from the versioned specs; gates removed by
1.32 predate those, so their "1.29" means "1.29 or earlier". Flag changes come from the
CHANGELOG of each minor and the flag registrations in the same sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

from slipway.versions import Version, minor_key

COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
Severity = Literal["blocker", "warning"]


@dataclass(frozen=True)
class FeatureGate:
    """A gate that was locked, deprecated or removed; ``default`` is its final value."""

    name: str
    stage: str
    default: bool
    locked_in: str | None
    deprecated_in: str | None
    removed_in: str | None


@dataclass(frozen=True)
class FlagChange:
    """A deprecated or removed flag of one component.

    With ``allowed_values`` the flag stays, but from ``removed_in`` on only those values start.
    """

    component: str
    flag: str
    deprecated_in: str | None
    removed_in: str | None
    mitigation: str
    allowed_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateFinding:
    """One problem a component's gates or flags will cause on the target release."""

    severity: Severity
    component: str
    kind: Literal["feature-gate", "flag"]
    name: str
    release: str
    message: str
    mitigation: str
    in_upgrade_window: bool

    def to_dict(self) -> dict[str, str | bool]:
        return asdict(self)


# fmt: off
_GATE_TABLE = """
# name                                         stage      default locked  deprec. removed
AdmissionWebhookMatchConditions                ga         true   1.30    -       1.33
AggregatedDiscoveryEndpoint                    ga         true   1.30    -       1.33
AggregatedDiscoveryRemoveBetaType              deprecated true   1.35    1.33    -
AllowDNSOnlyNodeCSR                            deprecated false  -       1.31    -
AllowInsecureKubeletCertificateSigningRequests deprecated false  -       1.31    -
AllowOverwriteTerminationGracePeriodSeconds    deprecated false  1.35    1.32    -
AllowServiceLBStatusOnNonLB                    deprecated false  1.32    1.29    1.35
AnonymousAuthConfigurableEndpoints             ga         true   1.34    -       1.37
AnyVolumeDataSource                            ga         true   1.33    -       1.37
APIListChunking                                ga         true   1.29    -       1.33
APIPriorityAndFairness                         ga         true   1.29    -       1.31
APISelfSubjectReview                           ga         true   1.29    -       1.30
APIServerTracing                               ga         true   1.34    -       1.37
AppArmor                                       ga         true   1.31    -       1.33
AppArmorFields                                 ga         true   1.31    -       1.33
AuthorizeNodeWithSelectors                     ga         true   1.34    -       1.37
AuthorizeWithSelectors                         ga         true   1.34    -       1.37
BtreeWatchCache                                ga         true   1.33    -       1.37
ChangeContainerStatusOnKubeletRestart          deprecated false  -       1.35    -
CloudDualStackNodeIPs                          ga         true   1.30    -       1.32
ConsistentHTTPGetHandlers                      ga         true   1.30    -       1.31
ConsistentListFromCache                        ga         true   1.34    -       1.37
CPUManager                                     ga         true   1.26    -       1.33
CPUManagerPolicyOptions                        ga         true   1.33    -       -
CRDValidationRatcheting                        ga         true   1.33    -       -
CronJobsScheduledAnnotation                    ga         true   1.32    -       1.35
CSIMigrationAzureFile                          ga         true   1.29    -       1.30
CSIMigrationPortworx                           ga         true   1.33    -       1.36
CSIMigrationRBD                                deprecated false  -       1.29    1.31
CSINodeExpandSecret                            ga         true   1.29    -       1.31
CSIServiceAccountTokenSecrets                  ga         true   1.36    -       -
CustomResourceFieldSelectors                   ga         true   1.32    -       -
CustomResourceValidationExpressions            ga         true   1.29    -       1.31
DeclarativeValidation                          ga         true   1.36    -       -
DeclarativeValidationTakeover                  deprecated false  1.37    1.36    -
DefaultHostNetworkHostPortsInPodTemplates      deprecated false  -       1.29    1.31
DevicePluginCDIDevices                         ga         true   1.31    -       1.34
DisableAllocatorDualWrite                      ga         true   1.35    -       -
DisableCloudProviders                          ga         true   1.31    -       1.33
DisableCPUQuotaWithExclusiveCPUs               deprecated true   1.37    1.36    -
DisableKubeletCloudCredentialProviders         ga         true   1.31    -       1.33
DisableNodeKubeProxyVersion                    deprecated true   1.36    1.31    -
DRAAdminAccess                                 ga         true   1.36    -       -
DRAControlPlaneController                      alpha      false  -       -       1.32
DRAExtendedResource                            ga         true   1.37    -       -
DRAPrioritizedList                             ga         true   1.37    -       -
DRAResourceClaimDeviceStatus                   ga         true   1.37    -       -
DynamicResourceAllocation                      ga         true   1.35    -       -
EfficientWatchResumption                       ga         true   1.24    -       1.33
ElasticIndexedJob                              ga         true   1.31    -       1.34
ExecProbeTimeout                               ga         true   1.35    -       -
ExpandedDNSConfig                              ga         true   1.29    -       1.30
ExperimentalHostUserNamespaceDefaulting        deprecated false  1.29    1.29    1.30
ExternalServiceAccountTokenSigner              ga         true   1.36    -       -
GangScheduling                                 alpha      false  -       -       1.37
GitRepoVolumeDriver                            deprecated false  1.36    1.33    -
HonorPVReclaimPolicy                           ga         true   1.33    -       1.36
HostnameOverride                               ga         true   1.37    -       -
HPAConfigurableTolerance                       ga         true   1.37    -       -
HPAContainerMetrics                            ga         true   1.30    -       1.32
ImageMaximumGCAge                              ga         true   1.35    -       -
ImageVolume                                    ga         true   1.36    -       -
InPlacePodVerticalScaling                      ga         true   1.35    -       -
InPlacePodVerticalScalingAllocatedStatus       deprecated false  -       1.33    1.36
InPlacePodVerticalScalingInitContainers        ga         true   1.37    -       -
InTreePluginAWSUnregister                      alpha      false  -       -       1.31
InTreePluginAzureDiskUnregister                alpha      false  -       -       1.31
InTreePluginAzureFileUnregister                alpha      false  -       -       1.31
InTreePluginGCEUnregister                      alpha      false  -       -       1.31
InTreePluginOpenStackUnregister                alpha      false  -       -       1.31
InTreePluginPortworxUnregister                 alpha      false  -       -       1.36
InTreePluginRBDUnregister                      deprecated false  -       1.29    1.31
InTreePluginvSphereUnregister                  alpha      false  -       -       1.31
IPTablesOwnershipCleanup                       ga         true   1.29    -       1.30
JobBackoffLimitPerIndex                        ga         true   1.33    -       1.37
JobManagedBy                                   ga         true   1.35    -       -
JobPodFailurePolicy                            ga         true   1.31    -       1.33
JobPodReplacementPolicy                        ga         true   1.34    -       1.37
JobReadyPods                                   ga         true   1.29    -       1.31
JobSuccessPolicy                               ga         true   1.33    -       1.37
KMSv1                                          deprecated false  -       1.28    -
KMSv2                                          ga         true   1.29    -       1.32
KMSv2KDF                                       ga         true   1.29    -       1.32
KubeletCgroupDriverFromCRI                     ga         true   1.34    -       -
KubeletFineGrainedAuthz                        ga         true   1.36    -       -
KubeletPodResources                            ga         true   1.29    -       1.30
KubeletPodResourcesDynamicResources            ga         true   1.36    -       -
KubeletPodResourcesGet                         ga         true   1.36    -       -
KubeletPodResourcesGetAllocatable              ga         true   1.29    -       1.30
KubeletPodResourcesListUseActivePods           deprecated true   -       1.34    -
KubeletPSI                                     ga         true   1.36    -       -
KubeletRegistrationGetOnExistsOnly             deprecated false  -       1.32    -
KubeletTracing                                 ga         true   1.34    -       -
KubeProxyDrainingTerminatingNodes              ga         true   1.31    -       1.33
KubeProxyIPVS                                  deprecated true   -       1.37    -
LegacyServiceAccountTokenCleanUp               ga         true   1.30    -       1.32
LegacyServiceAccountTokenTracking              ga         true   1.29    -       1.30
LegacySidecarContainers                        deprecated false  -       1.33    1.34
LoadBalancerIPMode                             ga         true   1.32    -       1.35
LogarithmicScaleDown                           ga         true   1.31    -       1.37
MatchLabelKeysInPodAffinity                    ga         true   1.33    -       -
MemoryManager                                  ga         true   1.32    -       1.36
MinDomainsInPodTopologySpread                  ga         true   1.30    -       1.32
MinimizeIPTablesRestore                        ga         true   1.29    -       1.30
MultiCIDRServiceAllocator                      ga         true   1.34    -       -
MutableCSINodeAllocatableCount                 ga         true   1.36    -       -
NewVolumeManagerReconstruction                 ga         true   1.30    -       1.32
NFTablesProxyMode                              ga         true   1.33    -       -
NodeDeclaredFeatures                           ga         true   1.37    -       -
NodeInclusionPolicyInPodTopologySpread         ga         true   1.33    -       -
NodeLogQuery                                   ga         true   1.36    -       -
NodeOutOfServiceVolumeDetach                   ga         true   1.29    -       1.32
NodeSwap                                       ga         true   1.34    -       -
OrderedNamespaceDeletion                       ga         true   1.34    -       1.37
PDBUnhealthyPodEvictionPolicy                  ga         true   1.31    -       1.33
PersistentVolumeLastPhaseTransitionTime        ga         true   1.31    -       1.33
PLEGOnDemandRelist                             ga         true   1.37    -       -
PodDisruptionConditions                        ga         true   1.31    -       1.34
PodHostIPs                                     ga         true   1.30    -       1.32
PodIndexLabel                                  ga         true   1.32    -       1.35
PodLifecycleSleepAction                        ga         true   1.34    -       1.37
PodLifecycleSleepActionAllowZero               ga         true   1.34    -       1.37
PodObservedGenerationTracking                  ga         true   1.35    -       -
PodReadyToStartContainersCondition             ga         true   1.37    -       -
PodSchedulingReadiness                         ga         true   1.30    -       -
PreferSameTrafficDistribution                  ga         true   1.35    -       -
PreventStaticPodAPIReferences                  beta       true   -       -       1.37
ProbeHostPodSecurityStandards                  ga         true   1.34    -       1.35
ProcMountType                                  ga         true   1.36    -       -
ProxyTerminatingEndpoints                      ga         true   1.29    -       1.30
ReadWriteOncePod                               ga         true   1.29    -       1.31
RecoverVolumeExpansionFailure                  ga         true   1.34    -       -
RecursiveReadOnlyMounts                        ga         true   1.33    -       -
RelaxedDNSSearchValidation                     ga         true   1.34    -       1.37
RelaxedEnvironmentVariableValidation           ga         true   1.34    -       -
RelaxedServiceNameValidation                   ga         true   1.37    -       -
RemainingItemCount                             ga         true   1.29    -       1.33
RemoveSelfLink                                 ga         true   1.29    -       1.30
ResilientWatchCacheInitialization              ga         true   1.34    -       1.37
RetryGenerateName                              ga         true   1.32    -       1.37
SchedulerQueueingHints                         ga         true   1.34    -       1.37
SecurityContextDeny                            alpha      false  -       -       1.30
SELinuxChangePolicy                            ga         true   1.36    -       -
SELinuxMountReadWriteOncePod                   ga         true   1.36    -       -
SeparateCacheWatchRPC                          deprecated false  1.36    1.33    -
SeparateTaintEvictionController                ga         true   1.34    -       -
ServerSideApply                                ga         true   1.29    -       1.32
ServerSideFieldValidation                      ga         true   1.29    -       1.32
ServiceAccountTokenJTI                         ga         true   1.32    -       -
ServiceAccountTokenNodeBinding                 ga         true   1.33    -       -
ServiceAccountTokenNodeBindingValidation       ga         true   1.32    -       -
ServiceAccountTokenPodNodeInfo                 ga         true   1.32    -       -
ServiceCIDRStatusFieldWiping                   deprecated true   -       1.36    -
ServiceNodePortStaticSubrange                  ga         true   1.29    -       1.31
ServiceTrafficDistribution                     ga         true   1.33    -       1.36
SidecarContainers                              ga         true   1.33    -       1.37
SizeMemoryBackedVolumes                        ga         true   1.32    -       1.35
SkipReadOnlyValidationGCE                      deprecated true   -       1.29    1.31
StableLoadBalancerNodeSet                      ga         true   1.30    -       1.32
StatefulSetAutoDeletePVC                       ga         true   1.32    -       1.35
StatefulSetStartOrdinal                        ga         true   1.31    -       1.34
StorageNamespaceIndex                          deprecated true   -       1.33    -
StreamingCollectionEncodingToJSON              ga         true   1.34    -       1.37
StreamingCollectionEncodingToProtobuf          ga         true   1.34    -       1.37
StrictCostEnforcementForVAP                    ga         true   1.32    -       1.35
StrictCostEnforcementForWebhooks               ga         true   1.32    -       1.35
StructuredAuthenticationConfiguration          ga         true   1.34    -       1.37
StructuredAuthorizationConfiguration           ga         true   1.32    -       1.36
SupplementalGroupsPolicy                       ga         true   1.35    -       -
SystemdWatchdog                                ga         true   1.35    -       -
TopologyAwareHints                             ga         true   1.33    -       1.36
TopologyManagerPolicyOptions                   ga         true   1.32    -       -
UserNamespacesPodSecurityStandards             alpha      false  -       -       1.35
UserNamespacesSupport                          ga         true   1.36    -       -
ValidatingAdmissionPolicy                      ga         true   1.30    -       1.32
VolumeAttributesClass                          ga         true   1.36    -       -
VolumeCapacityPriority                         alpha      false  -       -       1.33
WatchBookmark                                  ga         true   1.17    -       1.33
WatchCacheInitializationPostStartHook          ga         true   1.37    -       -
WatchFromStorageWithoutResourceVersion         deprecated false  1.33    1.33    1.36
WindowsHostNetwork                             deprecated false  -       1.33    -
WinDSR                                         ga         true   1.34    -       -
WinOverlay                                     ga         true   1.34    -       -
WorkloadAwarePreemption                        alpha      false  -       -       1.37
ZeroLimitedNominalConcurrencyShares            ga         true   1.30    -       1.32
"""
# fmt: on


def _parse_gate_table(text: str) -> dict[str, FeatureGate]:
    gates: dict[str, FeatureGate] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, stage, default, locked, deprecated, removed = line.split()
        gates[name] = FeatureGate(
            name, stage, default == "true", *(None if v == "-" else v for v in (locked, deprecated, removed))
        )
    return gates


FEATURE_GATES: dict[str, FeatureGate] = _parse_gate_table(_GATE_TABLE)

_NO_OP = "Delete the flag; it has done nothing for several releases."
_CLOUD = "Delete the flag and run the cloud provider's external cloud-controller-manager."
_CADVISOR = "Delete the flag; the kubelet's embedded cAdvisor keeps only --housekeeping-interval."
_CONFIG_FILE = "Move the setting into the component's --config file."
_EVICTION = "Use --eviction-hard or --eviction-soft instead."


def _flags(
    component: str, names: str, deprecated_in: str | None, removed_in: str | None, mitigation: str
) -> list[FlagChange]:
    return [FlagChange(component, name, deprecated_in, removed_in, mitigation) for name in names.split()]


# deprecated_in "1.30" means deprecated in 1.30 or earlier: the oldest release checked.
# fmt: off
FLAG_CHANGES: tuple[FlagChange, ...] = tuple([
    *_flags("kube-apiserver", "cloud-provider-gce-lb-src-cidrs", "1.30", "1.31",
            "Delete the flag; it went away with the in-tree GCE cloud provider."),
    *_flags("kube-apiserver", "cloud-provider cloud-config", "1.30", "1.33",
            "Delete the flag; the apiserver no longer talks to clouds, the cloud-controller-manager does."),
    *_flags("kube-apiserver", "kubelet-port kubelet-read-only-port apiserver-count default-watch-cache-size",
            "1.30", None, _NO_OP),
    *_flags("kube-apiserver", "audit-webhook-batch-initial-backoff", "1.30", None,
            "Use --audit-webhook-initial-backoff instead."),
    *_flags("kube-controller-manager", "cloud-provider-gce-lb-src-cidrs", "1.30", "1.31",
            "Delete the flag; it went away with the in-tree GCE cloud provider."),
    *_flags("kube-controller-manager", "volume-host-cidr-denylist volume-host-allow-local-loopback",
            "1.30", "1.31", "Delete the flag; it only served in-tree volume plugins that are gone."),
    *_flags("kube-controller-manager", "horizontal-pod-autoscaler-upscale-delay "
            "horizontal-pod-autoscaler-downscale-delay", "1.30", "1.31",
            "Delete the flag (a no-op since 1.12); tune scaling with the HPA's spec.behavior."),
    *_flags("kube-controller-manager", "concurrent-service-syncs", None, "1.37",
            "Delete the flag; it has been a no-op since the service controller left in 1.31."),
    FlagChange("kube-controller-manager", "cloud-provider", None, "1.32", _CLOUD,
               allowed_values=("external", "")),
    *_flags("kube-scheduler", "profiling contention-profiling kubeconfig kube-api-content-type kube-api-qps "
            "kube-api-burst pod-max-in-unschedulable-pods-duration", "1.30", None, _CONFIG_FILE),
    *_flags("kubelet", "keep-terminated-pod-volumes iptables-masquerade-bit iptables-drop-bit",
            "1.30", "1.31", _NO_OP),
    *_flags("kubelet", "runonce", None, "1.32",
            "Delete the flag and runOnce from the kubelet config; run-once mode is gone."),
    *_flags("kubelet", "cloud-config", "1.30", "1.34", _CLOUD),
    *_flags("kubelet", "register-schedulable", "1.30", "1.34",
            "Use --register-with-taints=node.kubernetes.io/unschedulable:NoSchedule instead."),
    *_flags("kubelet", "pod-infra-container-image", "1.30", "1.35",
            "Delete the flag; set the sandbox (pause) image in the container runtime's configuration."),
    *_flags("kubelet", "application-metrics-count-limit boot-id-file container-hints containerd "
            "containerd-namespace enable-load-reader event-storage-age-limit event-storage-event-limit "
            "global-housekeeping-interval log-cadvisor-usage machine-id-file storage-driver-user "
            "storage-driver-password storage-driver-host storage-driver-db storage-driver-table "
            "storage-driver-secure storage-driver-buffer-duration", None, "1.37", _CADVISOR),
    *_flags("kubelet", "minimum-container-ttl-duration maximum-dead-containers-per-container "
            "maximum-dead-containers", "1.30", None, _EVICTION),
    *_flags("kubelet", "experimental-mounter-path experimental-allocatable-ignore-eviction", "1.30", None,
            "Delete the flag; it is scheduled for removal."),
])
# fmt: on


def check_gates(
    component: str, gates: Mapping[str, bool], flags: list[str], current: Version, target: Version
) -> list[GateFinding]:
    """Everything in ``gates`` and ``flags`` that ``component`` rejects or warns about at ``target``.

    Blockers come first: the component will not start on ``target`` until they are fixed.
    Gates missing from :data:`FEATURE_GATES` are alpha, beta or unlocked GA gates that the
    target still accepts (or names Slipway does not know), so they produce no finding.

    :param gates: the component's feature gates (see :func:`parse_feature_gates`).
    :param flags: command-line flags as written, e.g. ``["--cloud-config=/etc/cloud.conf"]``.
    :raises ValueError: when ``component`` is not one of :data:`COMPONENTS`.
    """
    if component not in COMPONENTS:
        raise ValueError(f"component: {component!r} is not one of {', '.join(COMPONENTS)}")
    where = f"{component} {target}"
    findings: list[GateFinding] = []
    for name, value in sorted(gates.items()):
        gate = FEATURE_GATES.get(name)
        verdict = _judge_gate(gate, value, where, target) if gate else None
        if verdict:
            findings.append(_finding(component, "feature-gate", name, current, verdict))
    for flag in flags:
        flag_name, _, flag_value = flag.lstrip("-").partition("=")
        for change in FLAG_CHANGES:
            if (change.component, change.flag) == (component, flag_name):
                verdict = _judge_flag(change, flag_value, where, target)
                if verdict:
                    findings.append(_finding(component, "flag", f"--{flag_name}", current, verdict))
    return sorted(findings, key=lambda f: (f.severity != "blocker", f.name))


@dataclass(frozen=True)
class _Verdict:
    severity: Severity
    release: str
    message: str
    mitigation: str


def _finding(
    component: str, kind: Literal["feature-gate", "flag"], name: str, current: Version, verdict: _Verdict
) -> GateFinding:
    new = minor_key(verdict.release) > minor_key(current)
    return GateFinding(
        verdict.severity, component, kind, name, verdict.release, verdict.message, verdict.mitigation, new
    )


def _reached(release: str | None, target: Version) -> str | None:
    """``release`` when ``target`` is at or past it, else None."""
    return release if release is not None and minor_key(release) <= minor_key(target) else None


def _judge_gate(gate: FeatureGate, value: bool, where: str, target: Version) -> _Verdict | None:
    setting = f"{gate.name}={str(value).lower()}"
    locked_to = str(gate.default).lower()
    if removed := _reached(gate.removed_in, target):
        effect = {"ga": "the feature is always on", "deprecated": "its old behaviour is gone"}
        return _Verdict(
            "blocker",
            removed,
            f"feature gate {gate.name} was removed in {removed}; {where} refuses {setting}",
            f"Delete {gate.name} from --feature-gates; {effect.get(gate.stage, 'the feature was dropped')}.",
        )
    if locked := _reached(gate.locked_in, target):
        if value != gate.default:
            return _Verdict(
                "blocker",
                locked,
                f"feature gate {gate.name} is locked to {locked_to} since {locked}; "
                f"{where} refuses {setting}",
                f"Remove {setting}; make sure workloads cope with the feature locked to {locked_to}.",
            )
        later = f" and is removed in {gate.removed_in}" if gate.removed_in else ""
        return _Verdict(
            "warning",
            locked,
            f"feature gate {gate.name} is locked to {locked_to} since {locked}{later}",
            f"Delete {gate.name} from --feature-gates now so a later upgrade does not fail on it.",
        )
    if deprecated := _reached(gate.deprecated_in, target):
        advice = (
            f"Stop relying on {setting} before the gate is locked and removed."
            if value != gate.default
            else f"Delete {gate.name} from --feature-gates; it only repeats the default."
        )
        return _Verdict(
            "warning",
            deprecated,
            f"feature gate {gate.name} is deprecated since {deprecated} (default {locked_to})",
            advice,
        )
    return None


def _judge_flag(change: FlagChange, value: str, where: str, target: Version) -> _Verdict | None:
    name = f"--{change.flag}"
    removed = _reached(change.removed_in, target)
    if change.allowed_values:
        if not removed or value in change.allowed_values:
            return None
        accepted = " or ".join(repr(v) for v in change.allowed_values)
        return _Verdict(
            "blocker", removed, f"{name}={value}: {where} accepts only {accepted}", change.mitigation
        )
    if removed:
        return _Verdict(
            "blocker",
            removed,
            f"flag {name} was removed in {removed}; {where} refuses to start with it",
            change.mitigation,
        )
    if deprecated := _reached(change.deprecated_in, target):
        later = f" and is removed in {change.removed_in}" if change.removed_in else ""
        return _Verdict("warning", deprecated, f"flag {name} is deprecated{later}", change.mitigation)
    return None


_BOOLS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}


def parse_feature_gates(text: str) -> dict[str, bool]:
    """Parse a ``--feature-gates`` value such as ``"A=true,B=false"``.

    Accepts the spellings Go's ``strconv.ParseBool`` accepts, as the components do.

    :raises ValueError: naming the first item that is not ``NAME=BOOL``.
    """
    gates: dict[str, bool] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = (part.strip() for part in item.partition("="))
        # ParseBool takes true, True and TRUE but not tRUE.
        spelled = value in (value.lower(), value.upper(), value.title())
        parsed = _BOOLS.get(value.lower()) if spelled else None
        if not sep or not name or parsed is None:
            raise ValueError(f"feature gate {item!r}: expected NAME=true or NAME=false")
        gates[name] = parsed
    return gates
