"""The migration's cluster calls: read the selection on the source, apply it to the target
(server-side apply: re-running changes nothing), checksum both sides, wait for availability.

Every call works with the migrator identity of ``manifests/migrator-rbac.yaml``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from slipway.migration.assess import Assessment, assess
from slipway.migration.errors import ChecksumMismatch, MigrationError, NotAvailable
from slipway.migration.objects import (
    CONFIG_KINDS,
    CRD,
    KINDS,
    NAMESPACE,
    WORKLOAD_KINDS,
    Kind,
    Obj,
    Sums,
    compare,
    generated,
    key,
    normalise,
    pair_checksums,
)
from slipway.migration.request import SYSTEM_NAMESPACES, SYSTEM_PREFIXES, MigrationRequest

FIELD_MANAGER = "slipway-migration"
FORBIDDEN = 403
AGGREGATE_LABEL = "slipway.dev/aggregate-to-migrator"
# A definition applied to the target serves its kind once Established (normally within a second).
ESTABLISHED_TIMEOUT_SECONDS = 60.0


@dataclass
class Side:
    """One cluster of the migration, with its discovery cached."""

    api: client.ApiClient
    name: str  # "source" or "target", for messages

    def __post_init__(self) -> None:
        self.dyn = DynamicClient(self.api)

    def resource(self, kind: Kind) -> Any | None:
        try:
            return self.dyn.resources.get(api_version=kind.api_version, kind=kind.kind)
        except ResourceNotFoundError:
            return None

    def served(self) -> set[str]:
        """Group versions the apiserver serves (``v1``, ``apps/v1``, ...)."""
        versions = {f"v{v.removeprefix('v')}" for v in client.CoreApi(self.api).get_api_versions().versions}
        for group in client.ApisApi(self.api).get_api_versions().groups:
            versions |= {v.group_version for v in group.versions}
        return versions

    def version(self) -> str:
        info = client.VersionApi(self.api).get_code()
        return str(info.git_version).lstrip("v")

    def identity(self) -> str:
        """The kube-system namespace's uid: the same cluster reached by two addresses gives one uid."""
        return str(client.CoreV1Api(self.api).read_namespace("kube-system").metadata.uid)


def _items(resource: Any, **kwargs: Any) -> list[Obj]:
    listed = resource.get(**kwargs).to_dict()
    api_version, kind = listed["apiVersion"], listed["kind"].removesuffix("List")
    # List items omit apiVersion/kind: restore them so every object names its own type.
    return [{"apiVersion": api_version, "kind": kind, **item} for item in listed.get("items") or []]


def select_namespaces(source: Side, request: MigrationRequest) -> list[Obj]:
    """The source namespaces the request names; unknown ones and an empty selector are refused."""
    resource = source.resource(NAMESPACE)
    every = {n["metadata"]["name"]: n for n in _items(resource)}
    problems = []
    chosen: dict[str, Obj] = {}
    for name in request.namespaces:
        if name in every:
            chosen[name] = every[name]
        else:
            problems.append(("namespaces", f"{name} does not exist on the source"))
    if request.namespace_selector:
        matched = _items(resource, label_selector=request.namespace_selector)
        matched = [
            n
            for n in matched
            if n["metadata"]["name"] not in SYSTEM_NAMESPACES
            and not n["metadata"]["name"].startswith(SYSTEM_PREFIXES)
        ]
        if not matched:
            problems.append(
                ("namespace_selector", f"{request.namespace_selector!r} matches no namespace on the source")
            )
        chosen |= {n["metadata"]["name"]: n for n in matched}
    if problems:
        raise MigrationError(problems, "migration request")
    return [chosen[name] for name in sorted(chosen)]


def refuse_same_cluster(source: Side, target: Side) -> None:
    if source.identity() == target.identity():
        raise MigrationError(
            [("target", "is the source cluster (same kube-system uid): a migration needs two clusters")],
            "slipway_migration connection",
        )


def read_objects(side: Side, namespaces: Iterable[str], kinds: Iterable[Kind] = KINDS) -> list[Obj]:
    """Every object of ``kinds`` in ``namespaces``, as the apiserver returns it."""
    out: list[Obj] = []
    for kind in kinds:
        resource = side.resource(kind)
        if resource is None:
            continue  # this cluster does not serve the kind: nothing of it can exist here
        for namespace in namespaces:
            out += _items(resource, namespace=namespace)
    return out


@dataclass
class CustomKinds:
    """The custom kinds the selected namespaces hold instances of, and their definitions."""

    definitions: list[Obj]
    kinds: list[Kind]


def _storage_kind(crd: Obj) -> Kind:
    spec = crd["spec"]
    version = next(v["name"] for v in spec["versions"] if v.get("storage"))
    return Kind(f"{spec['group']}/{version}", spec["names"]["kind"])


# The migration tool's own kinds: Velero keeps its Backups, Restores and locations in its own
# namespace, as the tool's state, never an application's; the migrator may read them only there.
TOOL_GROUPS = frozenset({"velero.io"})


def custom_kinds(source: Side, namespaces: Iterable[str]) -> CustomKinds:
    """Every namespaced custom kind with an instance in ``namespaces`` (read at its storage
    version), with its definition. A kind the migrator may not list is refused, naming the
    definition and the grant that fixes it."""
    namespaces = list(namespaces)
    found = CustomKinds([], [])
    problems = []
    for crd in _items(source.resource(CRD)):
        if crd["spec"].get("scope") != "Namespaced":
            continue  # cluster-scoped instances belong to no namespace of the selection
        if crd["spec"]["group"] in TOOL_GROUPS:
            continue
        kind = _storage_kind(crd)
        try:
            instances = read_objects(source, namespaces, [kind])
        except DynamicApiError as err:
            if err.status != FORBIDDEN:
                raise
            problems.append(
                (
                    f"CustomResourceDefinition/{crd['metadata']['name']}",
                    "the migrator may not list its instances: grant get, list, create, patch on "
                    f"{crd['spec']['names']['plural']}.{crd['spec']['group']} with a ClusterRole "
                    f'labelled {AGGREGATE_LABEL}: "true" on both clusters',
                )
            )
            continue
        if instances:
            found.definitions.append(crd)
            found.kinds.append(kind)
    if problems:
        raise MigrationError(problems, "custom resources")
    return found


def assessment(
    source: Side, target: Side, request: MigrationRequest
) -> tuple[Assessment, list[Obj], list[Obj]]:
    """Refuse bad selections and a target that is the source, then judge the inventory (custom
    resources and their definitions included)."""
    refuse_same_cluster(source, target)
    namespaces = select_namespaces(source, request)
    names = [n["metadata"]["name"] for n in namespaces]
    custom = custom_kinds(source, names)
    objects = custom.definitions + read_objects(source, names) + read_objects(source, names, custom.kinds)
    result = assess(
        namespaces,
        objects,
        target.served(),
        source_version=source.version(),
        target_version=target.version(),
        custom=custom.kinds,
    )
    return result, namespaces, objects


def copyable(objects: Iterable[Obj], kinds: Iterable[Kind]) -> list[Obj]:
    """The user's objects of ``kinds`` (copy order kept), without the cluster-generated ones."""
    wanted = [(k.api_version, k.kind) for k in kinds]
    chosen = [o for o in objects if (o["apiVersion"], o["kind"]) in wanted and not generated(o)]
    return sorted(chosen, key=lambda o: wanted.index((o["apiVersion"], o["kind"])))


def apply(target: Side, objects: Iterable[Obj]) -> list[str]:
    """Server-side apply each normalised object to the target; an identical object is left unchanged."""
    applied = []
    for obj in objects:
        body = normalise(obj)
        resource = target.dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"])
        resource.server_side_apply(
            body=body,
            name=body["metadata"]["name"],
            namespace=body["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        applied.append(key(body))
    return applied


def namespace_objects(side: Side, namespaces: Iterable[str]) -> list[Obj]:
    """The Namespace objects of ``namespaces`` that exist on ``side``."""
    wanted = set(namespaces)
    return [n for n in _items(side.resource(NAMESPACE)) if n["metadata"]["name"] in wanted]


def user_objects(side: Side, namespaces: list[str], kinds: list[Kind], with_namespaces: bool) -> list[Obj]:
    objects = copyable(read_objects(side, namespaces, kinds), kinds)
    return (namespace_objects(side, namespaces) if with_namespaces else []) + objects


def prove_copied(
    source: list[Obj], target: list[Obj], *, target_view: Callable[[Obj], Obj] | None = None
) -> Sums:
    """Checksum every source object and its copy; raise naming each mismatch or missing copy.
    ``target_view`` drops what the copying tool added on the target (Velero's restore labels)."""
    sums = pair_checksums(source, [target_view(o) for o in target] if target_view else target)
    problems = compare(sums.source, sums.target)
    if problems:
        raise ChecksumMismatch(problems)
    return sums


def verify(
    source: Side,
    target: Side,
    namespaces: list[str],
    kinds: Iterable[Kind],
    *,
    with_namespaces: bool = False,
    target_view: Callable[[Obj], Obj] | None = None,
) -> Sums:
    """Checksum every source object of ``kinds`` and its copy (see :func:`prove_copied`)."""
    kinds = list(kinds)
    return prove_copied(
        user_objects(source, namespaces, kinds, with_namespaces),
        user_objects(target, namespaces, kinds, with_namespaces),
        target_view=target_view,
    )


def _available(obj: Obj) -> bool:
    spec, status = obj.get("spec", {}), obj.get("status") or {}
    wanted = spec.get("replicas", 1)
    if (status.get("observedGeneration") or 0) < obj["metadata"].get("generation", 0):
        return False
    if obj["kind"] == "Deployment":
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        return (
            status.get("availableReplicas", 0) == wanted
            and conditions.get("Available") == "True"
            and (status.get("updatedReplicas", 0) == wanted)
        )
    return bool(status.get("availableReplicas", 0) == wanted and status.get("readyReplicas", 0) == wanted)


def wait_available(
    target: Side,
    names: list[str],
    kinds: Iterable[Kind],
    timeout: float,
    *,
    interval: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Wait until every workload of ``kinds`` in ``names`` is available on the target.

    :returns: how many workloads are available.
    :raises NotAvailable: naming the workloads still short after ``timeout`` seconds.
    """
    kinds = list(kinds)
    deadline = clock() + timeout
    while True:
        workloads = copyable(read_objects(target, names, kinds), kinds)
        short = [key(w) for w in workloads if not _available(w)]
        if not short:
            return len(workloads)
        if clock() >= deadline:
            raise NotAvailable(f"not available on the target after {timeout:.0f} s: {', '.join(short)}")
        time.sleep(interval)  # polling the apiserver, bounded by the deadline


def _established(obj: Obj) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def wait_established(
    target: Side,
    names: list[str],
    timeout: float = ESTABLISHED_TIMEOUT_SECONDS,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Wait until the target serves every named definition, then forget its cached discovery
    (the new kinds must be found by the next apply)."""
    resource = target.resource(CRD)
    if resource is None:
        raise MigrationError([("target", "serves no CustomResourceDefinitions (apiextensions.k8s.io/v1)")])
    deadline = clock() + timeout
    while True:
        waiting = [n for n in names if not _established(resource.get(name=n).to_dict())]
        if not waiting:
            break
        if clock() >= deadline:
            raise NotAvailable(f"definitions not established on the target after {timeout:.0f} s: {waiting}")
        time.sleep(0.2)  # polling the apiserver, bounded by the deadline
    target.dyn.resources.invalidate_cache()


def copy_custom_resources(source: Side, target: Side, namespaces: list[str]) -> list[str]:
    """The custom kinds' definitions, then their instances in ``namespaces``, read fresh from the
    source and applied to the target. Idempotent."""
    custom = custom_kinds(source, namespaces)
    if not custom.kinds:
        return []
    applied = apply(target, custom.definitions)
    wait_established(target, [d["metadata"]["name"] for d in custom.definitions])
    return applied + apply(target, read_objects(source, namespaces, custom.kinds))


def verify_custom_resources(
    source: Side, target: Side, namespaces: list[str], *, target_view: Callable[[Obj], Obj] | None = None
) -> Sums:
    """Checksum every custom kind's definition and instance and its copy on the target."""
    custom = custom_kinds(source, namespaces)
    names = {d["metadata"]["name"] for d in custom.definitions}
    copied = [d for d in _items(target.resource(CRD)) if d["metadata"]["name"] in names]
    on_target = read_objects(target, namespaces, custom.kinds) if len(copied) == len(names) else []
    return prove_copied(
        custom.definitions + read_objects(source, namespaces, custom.kinds),
        copied + on_target,
        target_view=target_view,
    )


def copy_configuration(source: Side, target: Side, namespaces: list[str]) -> list[str]:
    """Namespaces, then ServiceAccounts, RBAC, ConfigMaps, Secrets, Services, policies and
    Ingresses, then custom resources with their definitions, read fresh from the source and
    applied to the target. Idempotent."""
    chosen = [n for n in _items(source.resource(NAMESPACE)) if n["metadata"]["name"] in namespaces]
    missing = sorted(set(namespaces) - {n["metadata"]["name"] for n in chosen})
    if missing:
        raise MigrationError([("namespaces", f"{', '.join(missing)} no longer exist on the source")])
    config = copyable(read_objects(source, namespaces, CONFIG_KINDS), CONFIG_KINDS)
    return apply(target, chosen) + apply(target, config) + copy_custom_resources(source, target, namespaces)


def copy_workloads(source: Side, target: Side, namespaces: list[str]) -> list[str]:
    """Deployments and StatefulSets, read fresh from the source and applied to the target."""
    return apply(target, copyable(read_objects(source, namespaces, WORKLOAD_KINDS), WORKLOAD_KINDS))
