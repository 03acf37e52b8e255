"""Which kinds a migration reads and copies, and each object's normalised form and checksum.

The checksum is sha256 over the object as the user declared it: status and everything the
cluster assigns (uid, resourceVersion, managedFields, creationTimestamp, generation, owner
references, a Service's clusterIP and node ports, controller annotations) are dropped, so the
same object gives the same sum on both clusters and a changed byte of a Secret does not.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    copied: bool = True  # False: read for the assessment only (dependencies, blockers)
    workload: bool = False


# Copy order: what a pod template refers to exists on the target before the workload does.
NAMESPACE = Kind("v1", "Namespace")
KINDS = (
    Kind("v1", "ServiceAccount"),
    Kind("rbac.authorization.k8s.io/v1", "Role"),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding"),
    Kind("v1", "ConfigMap"),
    Kind("v1", "Secret"),
    Kind("v1", "Service"),
    Kind("policy/v1", "PodDisruptionBudget"),
    Kind("autoscaling/v2", "HorizontalPodAutoscaler"),
    Kind("networking.k8s.io/v1", "NetworkPolicy"),
    Kind("networking.k8s.io/v1", "Ingress"),
    Kind("apps/v1", "Deployment", workload=True),
    Kind("apps/v1", "StatefulSet", workload=True),
    # Read only: their data or their nodes decide whether they can move (not in this slice).
    Kind("v1", "PersistentVolumeClaim", copied=False),
    Kind("apps/v1", "DaemonSet", copied=False, workload=True),
    Kind("v1", "Pod", copied=False),
)
CONFIG_KINDS = tuple(k for k in KINDS if k.copied and not k.workload)
WORKLOAD_KINDS = tuple(k for k in KINDS if k.copied and k.workload)
# The definitions of the custom kinds the selection uses: copied (cluster-scoped) before any
# instance; the instances' kinds are found at run time (see slipway.migration.clusters.custom_kinds).
CRD = Kind("apiextensions.k8s.io/v1", "CustomResourceDefinition")


def copy_order(custom: tuple[Kind, ...] | list[Kind] = ()) -> list[str]:
    """Kinds in the order they are copied: namespaces, configuration, definitions, custom
    resources (their definitions served by then), workloads."""
    return [
        "Namespace",
        *(k.kind for k in CONFIG_KINDS),
        CRD.kind,
        *(k.kind for k in custom),
        *(k.kind for k in KINDS if k not in CONFIG_KINDS),
    ]


# Annotations a controller or client writes; never part of what the user declared.
DROPPED_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "kubernetes.io/service-account.uid",
)
KEPT_METADATA = ("name", "namespace", "labels", "annotations")


def key(obj: Obj) -> str:
    """``Kind/namespace/name`` (``Kind/name`` when cluster-scoped): how reports name an object."""
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{obj['kind']}/{namespace}/{meta['name']}" if namespace else f"{obj['kind']}/{meta['name']}"


def _prune(value: Any) -> Any:
    """Drop None values and empty maps (a client's rendering of unset fields), keep lists' order."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in pruned.items() if v != {}}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def generated(obj: Obj) -> str | None:
    """Why an object is the cluster's own and must not be copied (None when it is the user's)."""
    meta = obj["metadata"]
    kind = obj["kind"]
    if kind == "ConfigMap" and meta["name"] == "kube-root-ca.crt":
        return "published by the cluster in every namespace"
    if kind == "Secret" and obj.get("type") == "kubernetes.io/service-account-token":
        return "a token the source cluster signed; the target issues its own"
    if kind == "Service" and meta.get("namespace") == "default" and meta["name"] == "kubernetes":
        return "the cluster's own API Service"
    if kind == "Pod" and meta.get("ownerReferences"):
        return "created by its controller, which is moved instead"
    return None


def normalise(obj: Obj) -> Obj:
    """The object as the user declared it: what is applied to the target and what is summed."""
    source = _prune(copy.deepcopy(obj))
    meta = source.get("metadata", {})
    out: Obj = {"apiVersion": source["apiVersion"], "kind": source["kind"]}
    out["metadata"] = {k: meta[k] for k in KEPT_METADATA if k in meta}
    annotations = {k: v for k, v in meta.get("annotations", {}).items() if k not in DROPPED_ANNOTATIONS}
    if annotations:
        out["metadata"]["annotations"] = annotations
    else:
        out["metadata"].pop("annotations", None)
    for field, value in source.items():
        if field not in ("apiVersion", "kind", "metadata", "status"):
            out[field] = value
    if source["kind"] == "Service":
        _drop_assigned_service_fields(out.get("spec", {}))
    return out


def _drop_assigned_service_fields(spec: Obj) -> None:
    for field in ("clusterIP", "clusterIPs"):
        value = spec.get(field)
        # A headless Service declares clusterIP None; every other address is assigned by the cluster.
        if value not in ("None", ["None"]):
            spec.pop(field, None)
    spec.pop("healthCheckNodePort", None)
    for port in spec.get("ports", []):
        port.pop("nodePort", None)


def _sha256(normalised: Obj) -> str:
    canonical = json.dumps(normalised, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def checksum(obj: Obj) -> str:
    """sha256 of the normalised object, canonical JSON (sorted keys, no spaces)."""
    return _sha256(normalise(obj))


# Maps compared whole: a key the target has and the source lacks is a real difference here
# (an extra Secret key, label or selector term), never a default.
WHOLE_MAPS = frozenset(
    {"data", "stringData", "binaryData", "labels", "annotations", "matchLabels", "selector", "nodeSelector"}
)


def project(target: Any, shape: Any, path: str = "") -> tuple[Any, list[str]]:
    """``target`` restricted to the fields ``shape`` (the source's copy) has.

    A newer target defaults fields the source's release did not know (1.37 fills in a
    StatefulSet's ``rollingUpdate.maxUnavailable``); those are not something the migration
    failed to copy. Returns the projection and the paths it left out, for the report.
    """
    if isinstance(target, dict) and isinstance(shape, dict):
        if path.rsplit(".", 1)[-1] in WHOLE_MAPS:
            return target, []
        out, dropped = {}, []
        for k, v in target.items():
            if k in shape:
                out[k], more = project(v, shape[k], f"{path}.{k}")
                dropped += more
            else:
                dropped.append(f"{path}.{k}")
        return out, dropped
    if isinstance(target, list) and isinstance(shape, list) and len(target) == len(shape):
        out_list, dropped = [], []
        for i, (t, s) in enumerate(zip(target, shape, strict=True)):
            item, more = project(t, s, f"{path}[{i}]")
            out_list.append(item)
            dropped += more
        return out_list, dropped
    return target, []


@dataclass
class Sums:
    """Both sides' checksums of one set of objects, and the target-only defaults left out."""

    source: dict[str, str]
    target: dict[str, str]
    defaulted: dict[str, list[str]]


def pair_checksums(source: list[Obj], target: list[Obj]) -> Sums:
    """sha256 per object on each side; the target's copy is summed over the source's fields."""
    by_key = {key(o): normalise(o) for o in target}
    sums = Sums({}, {}, {})
    for obj in source:
        name, expected = key(obj), normalise(obj)
        sums.source[name] = _sha256(expected)
        if name in by_key:
            projected, dropped = project(by_key[name], expected)
            sums.target[name] = _sha256(projected)
            if dropped:
                sums.defaulted[name] = dropped
    return sums


def compare(source: dict[str, str], target: dict[str, str]) -> list[str]:
    """Mismatches between two ``key -> checksum`` maps, one readable line per object."""
    problems = []
    for name, expected in sorted(source.items()):
        got = target.get(name)
        if got is None:
            problems.append(f"{name}: missing on the target")
        elif got != expected:
            problems.append(f"{name}: sha256 {expected[:12]} on the source, {got[:12]} on the target")
    return problems
