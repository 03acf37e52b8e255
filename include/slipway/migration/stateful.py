"""Stateful workloads: sync, freeze, final sync, check, cut over (and the way back).

A Deployment or StatefulSet is *stateful* when its pods mount PersistentVolumeClaims (named
volumes or ``volumeClaimTemplates``). Its data moves folder to folder with rclone
(:mod:`slipway.migration.volumes`): each source claim must be bound to a local PersistentVolume
(``spec.local.path`` or ``hostPath``: a folder on the node's disk), and the target must offer an
*Available* PersistentVolume of the same StorageClass, size and access modes — the target's
storage, pre-provisioned by its admin (a ``kubernetes.io/no-provisioner`` StorageClass and local
PVs on the nodes that hold the disks). Slipway creates the target claim pre-bound to the PV it
chose (``spec.volumeName``), so the folder is known before anything stops.

The cluster is the source of truth for every step: the freeze is one patch that sets the source
to 0 replicas *and* records the replicas it had and when (annotations below), so a cleared task
finds a frozen source and carries on; the way back is one patch that restores the replicas and
removes the record. Nothing is deleted on either cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes.utils import parse_quantity

from slipway.migration import strategy as strategies
from slipway.migration import volumes
from slipway.migration.assess import Assessment, blockers_of, template_of
from slipway.migration.clusters import Side, apply, copyable, prove_copied, read_objects
from slipway.migration.errors import ChecksumMismatch, MigrationError, NotAvailable
from slipway.migration.objects import (
    KINDS,
    WORKLOAD_KINDS,
    Kind,
    Obj,
    Sums,
    compare,
    key,
    normalise,
    pair_checksums,
)

PREFIX = "migration.slipway.dev/"
REPLICAS = f"{PREFIX}replicas-before-freeze"  # on the source workload while it is frozen
FROZEN_AT = f"{PREFIX}frozen-at"  # when the source went to 0 (UTC, ISO 8601)
AVAILABLE_AT = f"{PREFIX}target-available-at"  # when its copy became available on the target
MARKS = (REPLICAS, FROZEN_AT, AVAILABLE_AT)

PVC = Kind("v1", "PersistentVolumeClaim")
PV = Kind("v1", "PersistentVolume")
POD = Kind("v1", "Pod")
STORAGE_CLASS = Kind("storage.k8s.io/v1", "StorageClass")
# A PV's spec fields that are not its volume source (csi, nfs, local, ...).
PV_FIELDS = frozenset({"capacity", "claimRef", "nodeAffinity", "mountOptions", "accessModes"})
# Written by the PV controller and the scheduler on the source; the target writes its own.
CLAIM_ANNOTATIONS = (
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.kubernetes.io/selected-node",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
)


class DataCheckFailed(RuntimeError):
    """``rclone check`` found files that differ between a source volume and its copy."""

    def __init__(self, failures: dict[str, volumes.CheckResult]) -> None:
        self.failures = failures
        super().__init__(
            "the copy is not proven: "
            + "; ".join(
                f"volume {name}: {len(r.differences)} difference(s): {r.describe()}"
                for name, r in sorted(failures.items())
            )
        )


# --- which workloads and claims (pure) --------------------------------------------------------------
def claim_names(workload: Obj, claims_in_namespace: Iterable[str]) -> list[str]:
    """The claims a workload's pods mount: named ones, and for a StatefulSet the existing
    ``<template>-<name>-<ordinal>`` claims of its ``volumeClaimTemplates``."""
    spec = template_of(workload).get("spec", {})
    names = {
        v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes") or []
        if "persistentVolumeClaim" in v
    }
    existing = list(claims_in_namespace)
    for claim in workload.get("spec", {}).get("volumeClaimTemplates") or []:
        prefix = f"{claim['metadata']['name']}-{workload['metadata']['name']}-"
        names |= {c for c in existing if c.startswith(prefix) and c[len(prefix) :].isdigit()}
    return sorted(names)


def is_stateful(workload: Obj) -> bool:
    spec = template_of(workload).get("spec", {})
    return any("persistentVolumeClaim" in v for v in spec.get("volumes") or []) or bool(
        workload.get("spec", {}).get("volumeClaimTemplates")
    )


def without_claims(workload: Obj) -> Obj:
    """The workload with its claims taken out: what :func:`blockers_of` judges once the data path
    carries the claims (hostPath, host ports and pinning still count)."""
    copied = {**workload, "spec": {**workload.get("spec", {})}}
    copied["spec"].pop("volumeClaimTemplates", None)
    if workload["kind"] != "Pod" and "template" in copied["spec"]:
        template = copied["spec"]["template"]
        pod = dict(template.get("spec", {}))
        pod["volumes"] = [v for v in pod.get("volumes") or [] if "persistentVolumeClaim" not in v]
        copied["spec"]["template"] = {**template, "spec": pod}
    return copied


def local_path(pv: Obj) -> str | None:
    """The folder a PersistentVolume's data lives in (local or hostPath volumes), else None."""
    spec = pv.get("spec", {})
    for source in ("local", "hostPath"):
        path = (spec.get(source) or {}).get("path")
        if path:
            return str(path)
    return None


def _size(obj: Obj, *path: str) -> Any:
    value: Any = obj
    for part in path:
        value = (value or {}).get(part)
    return parse_quantity(value) if value is not None else 0


def fits(claim: Obj, pv: Obj) -> bool:
    """Whether ``pv`` can hold ``claim``: free, same class and volume mode, big enough, the access
    modes asked for, and a folder rclone can write."""
    cspec, pspec = claim.get("spec", {}), pv.get("spec", {})
    ref = pspec.get("claimRef")
    meta = claim["metadata"]
    if ref and (ref.get("namespace"), ref.get("name")) != (meta["namespace"], meta["name"]):
        return False
    if not ref and (pv.get("status") or {}).get("phase") != "Available":
        return False
    return (
        (pspec.get("storageClassName") or "") == (cspec.get("storageClassName") or "")
        and (pspec.get("volumeMode") or "Filesystem") == (cspec.get("volumeMode") or "Filesystem")
        and _size(pv, "spec", "capacity", "storage")
        >= _size(claim, "spec", "resources", "requests", "storage")
        and set(cspec.get("accessModes") or []) <= set(pspec.get("accessModes") or [])
        and local_path(pv) is not None
    )


def choose(claim: Obj, pvs: Iterable[Obj], taken: set[str]) -> Obj | None:
    """The target PV for ``claim``: one the admin pre-bound to it, else the smallest that fits."""
    free = [p for p in pvs if p["metadata"]["name"] not in taken and fits(claim, p)]
    free.sort(
        key=lambda p: (
            not p["spec"].get("claimRef"),
            _size(p, "spec", "capacity", "storage"),
            p["metadata"]["name"],
        )
    )
    return free[0] if free else None


def target_claim(source_claim: Obj, pv_name: str) -> Obj:
    """The source claim as the target gets it: pre-bound to the chosen target PV."""
    body = normalise(source_claim)
    annotations = {
        k: v for k, v in body["metadata"].get("annotations", {}).items() if k not in CLAIM_ANNOTATIONS
    }
    body["metadata"]["annotations"] = annotations
    if not annotations:
        body["metadata"].pop("annotations")
    body["spec"] = {**body.get("spec", {}), "volumeName": pv_name}
    return body


def declared(workload: Obj) -> Obj:
    """The workload as the user declared it: a frozen source gets its replicas back and loses
    the freeze record, so it sums like its copy on the target."""
    annotations = dict(workload["metadata"].get("annotations") or {})
    if REPLICAS not in annotations:
        return workload
    replicas = int(annotations[REPLICAS])
    meta = {**workload["metadata"], "annotations": {k: v for k, v in annotations.items() if k not in MARKS}}
    return {**workload, "metadata": meta, "spec": {**workload["spec"], "replicas": replicas}}


# --- data shapes --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VolumePair:
    """One claim and the two folders its data moves between."""

    workload: str  # Kind/namespace/name
    namespace: str
    claim: str
    source_pv: str
    source_path: str
    target_pv: str
    target_path: str

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.claim}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Plan:
    """The stateful workloads of a selection and their volumes (paired when the target has room)."""

    workloads: dict[str, Obj] = field(default_factory=dict)  # key -> the source object
    volumes: list[VolumePair] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)  # workload key -> why it cannot move
    claims: dict[str, list[str]] = field(default_factory=dict)  # workload key -> the claims it mounts
    orphans: list[str] = field(default_factory=list)  # claims no workload of the selection mounts

    def of(self, workload: str) -> list[VolumePair]:
        return [v for v in self.volumes if v.workload == workload]


# --- reading both clusters ----------------------------------------------------------------------------
def _by_name(side: Side, kind: Kind) -> dict[str, Obj]:
    resource = side.resource(kind)
    if resource is None:
        return {}
    return {o["metadata"]["name"]: o for o in resource.get().to_dict().get("items") or []}


def plan(
    source: Side,
    target: Side,
    namespaces: list[str],
    *,
    bind: bool = False,
    timeout: float = 60,
    only: Collection[str] | None = None,
) -> Plan:
    """Pair every claim of every stateful workload in ``namespaces`` with a target PV.

    With ``bind`` the target claims are created (pre-bound, server-side apply) and awaited Bound;
    an existing target claim keeps the PV it has (the cluster decides, not a new choice).
    Without it nothing changes: what the assessment reports. ``only`` (workload keys) limits the
    plan to the workloads the run moves (a skipped one keeps its claims on the source alone).
    """
    result = Plan()
    objects = read_objects(source, namespaces, [*WORKLOAD_KINDS, PVC])
    claims = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects if o["kind"] == PVC.kind
    }
    target_claims = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in read_objects(target, namespaces, [PVC])
    }
    source_pvs, target_pvs = _by_name(source, PV), _by_name(target, PV)
    classes = set(_by_name(target, STORAGE_CLASS))
    taken = {c["spec"]["volumeName"] for c in target_claims.values() if c.get("spec", {}).get("volumeName")}
    used: set[tuple[str, str]] = set()
    for workload in (o for o in objects if o["kind"] != PVC.kind and is_stateful(o)):
        name, namespace = key(workload), workload["metadata"]["namespace"]
        if only is not None and name not in only:
            used.update(
                (namespace, c) for c in claim_names(workload, [n for ns, n in claims if ns == namespace])
            )
            continue
        result.workloads[name] = workload
        problems: list[str] = []
        in_namespace = [n for ns, n in claims if ns == namespace]
        result.claims[name] = claim_names(workload, in_namespace)
        for claim_name in result.claims[name]:
            used.add((namespace, claim_name))
            pair, why = pair_claim(
                name,
                claims.get((namespace, claim_name)),
                target_claims.get((namespace, claim_name)),
                source_pvs,
                target_pvs,
                classes,
                taken,
                claim_name,
            )
            if why:
                problems.append(why)
            elif pair:
                taken.add(pair.target_pv)
                result.volumes.append(pair)
        if problems:
            result.problems[name] = problems
    result.orphans = sorted(f"{ns}/{n}" for ns, n in claims if (ns, n) not in used)
    result.volumes.sort(key=lambda v: (v.workload, v.claim))
    if bind:
        if result.problems:
            raise MigrationError(
                [(name, "; ".join(why)) for name, why in sorted(result.problems.items())], "volume data path"
            )
        _bind(target, result, claims)
        _wait_bound(target, result.volumes, timeout)
    return result


def pair_claim(
    workload: str,
    claim: Obj | None,
    on_target: Obj | None,
    source_pvs: dict[str, Obj],
    target_pvs: dict[str, Obj],
    classes: set[str],
    taken: set[str],
    claim_name: str,
) -> tuple[VolumePair | None, str | None]:
    """One source claim and the target PV its copy goes to, or why it cannot move (pure)."""
    if claim is None:
        return None, f"claim {claim_name} does not exist on the source"
    bound = claim.get("spec", {}).get("volumeName")
    source_pv = source_pvs.get(bound or "")
    if source_pv is None:
        return None, f"claim {claim_name} is not bound to a PersistentVolume on the source: no data to copy"
    path = local_path(source_pv)
    if path is None:
        kind = next(
            (
                k
                for k in source_pv.get("spec", {})
                if isinstance(source_pv["spec"][k], dict) and k not in PV_FIELDS
            ),
            "?",
        )
        return None, (
            f"claim {claim_name} is on PV {bound}, a {kind} volume: rclone needs a folder "
            "(local or hostPath PV); move it with the storage's own snapshots"
        )
    storage_class = claim.get("spec", {}).get("storageClassName") or ""
    if storage_class and storage_class not in classes:
        return None, f"claim {claim_name}: the target has no StorageClass {storage_class}"
    if on_target is not None and on_target.get("spec", {}).get("volumeName"):
        chosen = target_pvs.get(on_target["spec"]["volumeName"])
    else:
        chosen = choose(claim, target_pvs.values(), taken)
    if chosen is None or local_path(chosen) is None:
        size = claim.get("spec", {}).get("resources", {}).get("requests", {}).get("storage", "?")
        return None, (
            f"claim {claim_name}: the target has no Available local PersistentVolume of class "
            f"{storage_class or '(none)'} with {size} and {', '.join(claim['spec'].get('accessModes') or [])}"
            " — provision one on the target"
        )
    namespace = claim["metadata"]["namespace"]
    return (
        VolumePair(
            workload,
            namespace,
            claim_name,
            str(bound),
            path,
            chosen["metadata"]["name"],
            str(local_path(chosen)),
        ),
        None,
    )


def _bind(target: Side, chosen: Plan, claims: dict[tuple[str, str], Obj]) -> None:
    existing = {
        (o["metadata"]["namespace"], o["metadata"]["name"])
        for o in read_objects(target, sorted({v.namespace for v in chosen.volumes}), [PVC])
    }
    bodies = [
        target_claim(claims[(v.namespace, v.claim)], v.target_pv)
        for v in chosen.volumes
        if (v.namespace, v.claim) not in existing
    ]
    apply(target, bodies)


def _wait_bound(target: Side, pairs: list[VolumePair], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = {
            (o["metadata"]["namespace"], o["metadata"]["name"]): o
            for o in read_objects(target, sorted({v.namespace for v in pairs}), [PVC])
        }
        waiting = [
            v.name
            for v in pairs
            if (found.get((v.namespace, v.claim)) or {}).get("status", {}).get("phase") != "Bound"
            or found[(v.namespace, v.claim)]["spec"].get("volumeName") != v.target_pv
        ]
        if not waiting:
            return
        if time.monotonic() >= deadline:
            raise NotAvailable(
                f"target claims not bound to their PVs after {timeout:.0f} s: {', '.join(waiting)}"
            )
        time.sleep(0.5)  # the target's PV controller binds pre-bound claims within a sync


# --- the assessment's view ----------------------------------------------------------------------------
def assess(
    source: Side, target: Side, result: Assessment, strategy: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Judge the stateful workloads of an assessment with the data path in mind (changes nothing).

    A stateful workload whose every claim can be paired is no longer blocked by its claims
    (still by host ports or hostPath); one that cannot gets the precise reason. Then the form's
    ``strategy`` per kind (:func:`slipway.migration.strategy.apply_to`): skipped workloads leave
    the copy and the blockers. Returns the ``stateful`` section of the assessment, with each
    workload's strategy under ``strategies``.

    :raises MigrationError: a strategy that cannot move a workload (``strategy.<Kind>``).
    """
    found = plan(source, target, result.namespaces)
    for name, workload in found.workloads.items():
        namespace = workload["metadata"]["namespace"]
        reasons = blockers_of(without_claims(workload)) + found.problems.get(name, [])
        if "HorizontalPodAutoscaler" in result.dependencies.get(name, {}):
            reasons.append("an HPA scales it: the freeze (0 replicas) would not hold; remove the HPA first")
        keys = [f"PersistentVolumeClaim/{namespace}/{c}" for c in found.claims[name]]
        if reasons:
            result.blockers[name] = reasons
            for claim_key in keys:
                result.blockers[claim_key] = [f"its workload {name} cannot move its data"]
            continue
        result.blockers.pop(name, None)
        for claim_key in keys:
            result.blockers.pop(claim_key, None)
        result.objects += [k for k in [name, *keys] if k not in result.objects]
    for orphan in found.orphans:
        namespace, claim = orphan.split("/", 1)
        result.blockers[f"PersistentVolumeClaim/{namespace}/{claim}"] = [
            "no Deployment or StatefulSet of the selection mounts it: its data has no cut-over"
        ]
    claim_keys = {
        name: [f"PersistentVolumeClaim/{w['metadata']['namespace']}/{c}" for c in found.claims[name]]
        for name, w in found.workloads.items()
    }
    chosen = strategies.apply_to(result, claim_keys, strategy or {})
    moved = [n for n in found.workloads if chosen.get(n) != "skip"]
    order = ["Namespace", *(k.kind for k in KINDS)]
    result.objects.sort(key=lambda n: order.index(n.split("/")[0]))
    return {
        "workloads": sorted(n for n in moved if n not in result.blockers),
        "volumes": [v.to_dict() for v in found.volumes if v.workload in moved],
        "cannot_move": {n: result.blockers[n] for n in moved if n in result.blockers},
        "strategies": chosen,
    }


# --- workloads on either side -------------------------------------------------------------------------
def _resource(side: Side, kind: Kind) -> Any:
    resource = side.resource(kind)
    if resource is None:
        raise MigrationError(
            [(side.name, f"does not serve {kind.api_version} {kind.kind}")], "volume data path"
        )
    return resource


def _kind(workload_key: str) -> Kind:
    return next(k for k in WORKLOAD_KINDS if k.kind == workload_key.split("/", maxsplit=1)[0])


def read_workload(side: Side, workload_key: str) -> Obj | None:
    kind_name, namespace, name = workload_key.split("/")
    resource = _resource(side, _kind(workload_key))
    listed = resource.get(namespace=namespace, field_selector=f"metadata.name={name}").to_dict()
    items = listed.get("items") or []
    return {"apiVersion": "apps/v1", "kind": kind_name, **items[0]} if items else None


def _patch(side: Side, workload_key: str, body: Obj) -> None:
    _, namespace, name = workload_key.split("/")
    _resource(side, _kind(workload_key)).patch(
        body=body, name=name, namespace=namespace, content_type="application/merge-patch+json"
    )


def ready(obj: Obj) -> bool:
    """Every replica updated and ready (0 wanted: none left), as the controller has seen the spec."""
    spec, status = obj.get("spec", {}), obj.get("status") or {}
    wanted = spec.get("replicas", 1)
    if (status.get("observedGeneration") or 0) < obj["metadata"].get("generation", 0):
        return False
    return bool(
        (status.get("readyReplicas") or 0) == wanted
        and (status.get("availableReplicas") or 0) == wanted
        and (status.get("replicas") or 0) == wanted
    )


def wait_ready(side: Side, workload_key: str, timeout: float, *, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        obj = read_workload(side, workload_key)
        if obj is not None and ready(obj):
            return
        if time.monotonic() >= deadline:
            status = (obj or {}).get("status") or {}
            raise NotAvailable(
                f"{workload_key} not available on the {side.name} after {timeout:.0f} s "
                f"(ready {status.get('readyReplicas') or 0} of {(obj or {}).get('spec', {}).get('replicas')})"
            )
        time.sleep(interval)  # polling the apiserver, bounded by the deadline


def pods_using(side: Side, namespace: str, claims: Iterable[str]) -> list[str]:
    """Pods (not finished) that mount any of ``claims``: while one exists the data may change."""
    wanted = set(claims)
    out = []
    for pod in _resource(side, POD).get(namespace=namespace).to_dict().get("items") or []:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        mounted = {
            v["persistentVolumeClaim"]["claimName"]
            for v in pod.get("spec", {}).get("volumes") or []
            if "persistentVolumeClaim" in v
        }
        if mounted & wanted:
            out.append(pod["metadata"]["name"])
    return sorted(out)


def wait_released(side: Side, namespace: str, claims: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = pods_using(side, namespace, claims)
        if not left:
            return
        if time.monotonic() >= deadline:
            raise NotAvailable(
                f"pods still mount {', '.join(claims)} on the {side.name} after {timeout:.0f} s: "
                + ", ".join(left)
            )
        time.sleep(0.5)


def _now() -> datetime:
    return datetime.now(UTC)


def _tag(frozen_at: str) -> str:
    return datetime.fromisoformat(frozen_at).strftime("%Y%m%dT%H%M%S%fZ")


# --- the cut-over ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Freeze:
    replicas: int
    frozen_at: str  # ISO 8601, UTC
    already: bool  # the source was found frozen (a cleared task)

    @property
    def tag(self) -> str:
        return _tag(self.frozen_at)


def freeze(source: Side, workload_key: str, timeout: float) -> Freeze:
    """Scale the source to 0 and wait until no pod mounts its claims.

    One merge patch sets ``replicas: 0`` and records the replicas it had and when; a source
    that carries the record is already frozen and is only awaited.
    """
    obj = read_workload(source, workload_key)
    if obj is None:
        raise MigrationError([("namespaces", f"{workload_key} no longer exists on the source")])
    annotations = obj["metadata"].get("annotations") or {}
    if REPLICAS in annotations and FROZEN_AT in annotations:
        found = Freeze(int(annotations[REPLICAS]), annotations[FROZEN_AT], already=True)
    else:
        found = Freeze(int(obj["spec"].get("replicas", 1)), _now().isoformat(), already=False)
        marks = {REPLICAS: str(found.replicas), FROZEN_AT: found.frozen_at}
        _patch(source, workload_key, {"metadata": {"annotations": marks}, "spec": {"replicas": 0}})
    if obj["spec"].get("replicas") != 0 and found.already:
        _patch(source, workload_key, {"spec": {"replicas": 0}})  # someone scaled it up while frozen
    claims = claim_names(obj, [c for c in claims_in(source, obj)])
    wait_released(source, obj["metadata"]["namespace"], claims, timeout)
    return found


def source_folders(source: Side, workload: Obj) -> dict[str, Path]:
    """Each claim of a source workload and its volume folder (claims without a folder left out)."""
    namespace = workload["metadata"]["namespace"]
    claims = {c["metadata"]["name"]: c for c in read_objects(source, [namespace], [PVC])}
    pvs = _by_name(source, PV)
    out = {}
    for name in claim_names(workload, claims):
        pv = pvs.get(claims[name].get("spec", {}).get("volumeName") or "")
        path = local_path(pv) if pv else None
        if path:
            out[name] = Path(path)
    return out


def claims_in(side: Side, workload: Obj) -> list[str]:
    return [c["metadata"]["name"] for c in read_objects(side, [workload["metadata"]["namespace"]], [PVC])]


def sync_all(pairs: Iterable[VolumePair], *, checksum: bool = False) -> dict[str, volumes.PassStats]:
    """One incremental pass over every volume (the source may be running)."""
    return {v.name: volumes.sync(Path(v.source_path), Path(v.target_path), checksum=checksum) for v in pairs}


def check_all(
    pairs: Iterable[VolumePair], *, seen: Callable[[dict[str, volumes.CheckResult]], None] | None = None
) -> dict[str, volumes.CheckResult]:
    """``rclone check`` every volume; ``seen`` gets the results (also failed ones) before any raise."""
    results = {v.name: volumes.check(Path(v.source_path), Path(v.target_path)) for v in pairs}
    if seen is not None:
        seen(results)
    failures = {name: r for name, r in results.items() if not r.ok}
    if failures:
        raise DataCheckFailed(failures)
    return results


def start_on_target(source: Side, target: Side, workload_key: str) -> Obj:
    """Apply the source workload to the target with the replicas it had before the freeze."""
    obj = read_workload(source, workload_key)
    if obj is None:
        raise MigrationError([("namespaces", f"{workload_key} no longer exists on the source")])
    body = declared(obj)
    apply(target, [body])
    return body


def verify_copy(source: Side, target: Side, workload_key: str) -> None:
    """sha256 of the declared source workload against its copy on the target."""
    mine, theirs = read_workload(source, workload_key), read_workload(target, workload_key)
    sums = pair_checksums([declared(mine)] if mine else [], [theirs] if theirs else [])
    problems = compare(sums.source, sums.target)
    if problems:
        raise ChecksumMismatch(problems)


@dataclass
class CutOver:
    workload: str
    replicas: int
    frozen_at: str
    available_at: str
    freeze_seconds: float
    final_pass: dict[str, volumes.PassStats]
    checked: dict[str, volumes.CheckResult]
    snapshots: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "replicas": self.replicas,
            "frozen_at": self.frozen_at,
            "available_at": self.available_at,
            "freeze_seconds": self.freeze_seconds,
            "final_pass": {n: s.to_dict() for n, s in self.final_pass.items()},
            "check": {
                n: {"matching": r.matching, "differences": len(r.differences)}
                for n, r in self.checked.items()
            },
            "snapshots": self.snapshots,
        }


def cut_over(
    source: Side,
    target: Side,
    workload_key: str,
    pairs: list[VolumePair],
    timeout: float,
    *,
    after_final_sync: Callable[[], None] | None = None,
    progress: Callable[[str, Any], None] | None = None,
) -> CutOver:
    """Freeze → snapshot → final sync (by hash) → check → start on the target → available.

    ``progress`` is told each step's result as it happens (``frozen``, ``final_pass``,
    ``checked``), so a cut-over that fails later still leaves its figures behind.

    :raises DataCheckFailed: naming every volume and file that differs (nothing started).
    :raises NotAvailable: the target copy did not become available in ``timeout``.
    """

    def tell(step: str, value: Any) -> None:
        if progress is not None:
            progress(step, value)

    frozen = freeze(source, workload_key, timeout)
    tell("frozen", frozen)
    snapshots = [str(volumes.snapshot(Path(v.source_path), frozen.tag)[0]) for v in pairs]
    # By hash while frozen: a copy damaged behind rclone's back (same size and time) is repaired
    # here instead of failing every later attempt's check.
    final = sync_all(pairs, checksum=True)
    tell("final_pass", final)
    if after_final_sync is not None:
        after_final_sync()
    checked = check_all(pairs, seen=lambda results: tell("checked", results))
    start_on_target(source, target, workload_key)
    wait_ready(target, workload_key, timeout)
    obj = read_workload(source, workload_key) or {"metadata": {}}
    available_at = (obj["metadata"].get("annotations") or {}).get(AVAILABLE_AT)
    if available_at is None:  # recorded once: a cleared task reports the same window
        available_at = _now().isoformat()
        _patch(source, workload_key, {"metadata": {"annotations": {AVAILABLE_AT: available_at}}})
    seconds = (
        datetime.fromisoformat(available_at) - datetime.fromisoformat(frozen.frozen_at)
    ).total_seconds()
    return CutOver(
        workload_key,
        frozen.replicas,
        frozen.frozen_at,
        available_at,
        round(seconds, 3),
        final,
        checked,
        snapshots,
    )


# --- the way back ---------------------------------------------------------------------------------------
def roll_back(source: Side, target: Side, workload_key: str, timeout: float) -> dict[str, Any] | None:
    """Undo a cut-over of one workload; None when its source is not frozen (nothing to undo).

    The target's copy goes to 0 (and its pods are awaited gone), each source folder gets its
    pre-cutover snapshot back (proven by ``rclone check``), then one patch restores the source's
    replicas and removes the freeze record, and the source is awaited available.
    """
    obj = read_workload(source, workload_key)
    annotations = (obj or {"metadata": {}})["metadata"].get("annotations") or {}
    if obj is None or REPLICAS not in annotations or FROZEN_AT not in annotations:
        return None
    namespace = obj["metadata"]["namespace"]
    folders = source_folders(source, obj)
    copy = read_workload(target, workload_key)
    if copy is not None and copy["spec"].get("replicas") != 0:
        _patch(target, workload_key, {"spec": {"replicas": 0}})
    if copy is not None:
        wait_released(target, namespace, sorted(folders), timeout)
    tag = _tag(annotations[FROZEN_AT])
    restored: dict[str, Any] = {}
    for claim, path in sorted(folders.items()):
        if volumes.snapshot_path(path, tag).is_dir():
            restored[f"{namespace}/{claim}"] = volumes.restore(path, tag).to_dict()
        else:  # frozen, but stopped before the snapshot: nothing touched the folder since
            restored[f"{namespace}/{claim}"] = (
                "no snapshot taken: the folder was not touched after the freeze"
            )
    replicas = int(annotations[REPLICAS])
    _patch(
        source,
        workload_key,
        {"metadata": {"annotations": dict.fromkeys(MARKS)}, "spec": {"replicas": replicas}},
    )
    wait_ready(source, workload_key, timeout)
    return {
        "workload": workload_key,
        "replicas": replicas,
        "restored": restored,
        "target_scaled_to_zero": copy is not None,
    }


def stateless(side: Side, namespaces: list[str], *, skip: Collection[str] = ()) -> list[Obj]:
    """The workloads the blue-green path copies: every Deployment and StatefulSet without claims
    (a stateful one applied with its replicas would start on empty target volumes), as declared:
    a source retired to 0 (:mod:`slipway.migration.retire`) is copied with its recorded replicas.
    ``skip``: kinds the form's strategy leaves on the source."""
    return [
        declared(o)
        for o in copyable(read_objects(side, namespaces, WORKLOAD_KINDS), WORKLOAD_KINDS)
        if not is_stateful(o) and o["kind"] not in skip
    ]


def verify_stateless(
    source: Side,
    target: Side,
    namespaces: list[str],
    *,
    target_view: Callable[[Obj], Obj] | None = None,
    skip: Collection[str] = (),
) -> Sums:
    """sha256 of every stateless workload and its copy; raise naming each mismatch."""
    return prove_copied(
        stateless(source, namespaces, skip=skip),
        stateless(target, namespaces, skip=skip),
        target_view=target_view,
    )
