"""Removed and deprecated APIs the target release would break (§1.2, §2.2), judged by *use*.

An API version the target no longer serves breaks the cluster only if something uses it, so
only evidence of use makes a blocker:

* ``removed-apis/manifests``: stored objects whose ``kubectl.kubernetes.io/last-applied-configuration``
  names a removed ``apiVersion`` — the next ``kubectl apply`` of that manifest fails. Every kind
  people apply and every kind of the removal table (the Deprecated API Migration Guide's
  included) is listed at whatever version this cluster serves it; a kind that cannot be read
  is recorded as skipped, by name, never dropped.
* ``removed-apis/requests``: the apiserver's ``apiserver_requested_deprecated_apis`` metric —
  a client called a deprecated API since the apiserver started; a removed one breaks it.
* ``removed-apis/audit`` (where the platform keeps an audit log): who called which deprecated
  API, from the ``k8s.io/deprecated`` and ``k8s.io/removed-release`` audit annotations.
* ``removed-apis/served``: API discovery — group versions served now that the target drops.
  Being served (by default or through ``--runtime-config``) is not use: at most ``info``.

Each finding names the object, resource, caller or group version, when it goes away and what
replaces it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.apiremovals import API_REMOVALS, ApiRemoval, deprecated_in_target, group_of
from slipway.checks.result import finding, listed, names
from slipway.inventory import metric_samples
from slipway.models import CheckResult
from slipway.versions import Version

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
DEPRECATED_METRIC = "apiserver_requested_deprecated_apis"
PAGE_SIZE = 500
# Object metadata only (annotations included): listing every Deployment's spec would be wasteful.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
NOT_FOUND = 404
FORBIDDEN = 403


@dataclass(frozen=True)
class ListedKind:
    """A kind Slipway lists to read last-applied manifests, at the version the cluster serves."""

    group: str
    version: str
    plural: str

    @property
    def path(self) -> str:
        return (
            f"/api/{self.version}/{self.plural}"
            if not self.group
            else f"/apis/{self.group}/{self.version}/{self.plural}"
        )


# Kinds no object is ever stored as: reviews are answered and forgotten, an Eviction is a pod
# subresource, APIGroupDiscovery is a discovery response. Only requests can show their use.
REQUEST_ONLY_KINDS = frozenset(
    {
        "TokenReview",
        "LocalSubjectAccessReview",
        "SelfSubjectAccessReview",
        "SubjectAccessReview",
        "SelfSubjectReview",
        "Eviction",
        "APIGroupDiscovery",
    }
)


def _applied(group: str, kinds: str) -> list[tuple[str, str]]:
    return [(group, kind) for kind in kinds.split()]


# (group, kind) pairs people keep in git and ``kubectl apply``; each is read at whatever
# version the cluster serves it, so a cluster without the GA version is still covered.
APPLIED_KINDS: tuple[tuple[str, str], ...] = (
    *_applied(
        "",
        "ConfigMap Service ServiceAccount PersistentVolumeClaim PersistentVolume Namespace "
        "LimitRange ResourceQuota",
    ),
    *_applied("apps", "Deployment StatefulSet DaemonSet"),
    *_applied("batch", "Job CronJob"),
    *_applied("policy", "PodDisruptionBudget"),
    *_applied("autoscaling", "HorizontalPodAutoscaler"),
    *_applied("networking.k8s.io", "Ingress IngressClass NetworkPolicy ServiceCIDR IPAddress"),
    *_applied("rbac.authorization.k8s.io", "Role RoleBinding ClusterRole ClusterRoleBinding"),
    *_applied("scheduling.k8s.io", "PriorityClass"),
    *_applied("storage.k8s.io", "StorageClass CSIDriver VolumeAttributesClass"),
    *_applied("flowcontrol.apiserver.k8s.io", "FlowSchema PriorityLevelConfiguration"),
    *_applied(
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration MutatingWebhookConfiguration "
        "ValidatingAdmissionPolicy ValidatingAdmissionPolicyBinding",
    ),
    *_applied("apiextensions.k8s.io", "CustomResourceDefinition"),
    *_applied("node.k8s.io", "RuntimeClass"),
    *_applied("resource.k8s.io", "DeviceClass ResourceClaim ResourceClaimTemplate"),
)


def scanned_kinds() -> list[tuple[str, str]]:
    """Every (group, kind) the manifest scan covers: applied kinds plus every kind the removal
    table names, in the group that serves its objects today (an ``extensions/v1beta1`` Ingress
    is read as a ``networking.k8s.io`` Ingress)."""
    wanted = dict.fromkeys(APPLIED_KINDS)
    for removal in API_REMOVALS:
        wanted.setdefault((removal.home_group, removal.kind))
    return list(wanted)


@dataclass(frozen=True)
class ServedResource:
    """One listable (or create-only) resource in a served group version."""

    group_version: str
    kind: str
    plural: str
    listable: bool


@dataclass
class Discovery:
    """What the apiserver serves: group versions in priority order, their resources, and the
    group versions discovery listed but could not read (named with the reason)."""

    versions: dict[str, list[str]]  # group -> group versions, preferred first
    resources: dict[str, dict[str, ServedResource]]  # group version -> kind -> resource
    skipped: list[str]

    def served_kinds(self) -> dict[str, set[str]]:
        return {gv: set(kinds) for gv, kinds in self.resources.items()}


@dataclass
class ScanPlan:
    """Where each scanned kind is read, and why the others are not listed."""

    kinds: list[ListedKind]
    not_served: list[str]
    request_only: list[str]
    skipped: list[str]


def plan_scan(discovery: Discovery, wanted: Sequence[tuple[str, str]]) -> ScanPlan:
    """Pick, for every (group, kind), the served version to list it at (the group's preferred one
    first); kinds this cluster does not serve at any version cannot have objects to read."""
    plan = ScanPlan([], [], [], [])
    for group, kind in wanted:
        label = f"{kind} ({group or 'core'})"
        found = [
            discovery.resources[gv][kind]
            for gv in discovery.versions.get(group, [])
            if kind in discovery.resources.get(gv, {})
        ]
        listable = [r for r in found if r.listable]
        unreadable = [s for s in discovery.skipped if group_of(s.split(":", 1)[0]) == group]
        if listable:
            served = listable[0]
            plan.kinds.append(ListedKind(group, served.group_version.rpartition("/")[2], served.plural))
        elif kind in REQUEST_ONLY_KINDS or found:
            plan.request_only.append(label)
        elif unreadable:
            plan.skipped.append(f"{label}: discovery failed ({unreadable[0]})")
        else:
            plan.not_served.append(label)
    return plan


@dataclass(frozen=True)
class AppliedObject:
    """A live object and the ``apiVersion``/``kind`` its last applied manifest used."""

    ref: str
    api_version: str
    kind: str


# ---- pure parts -------------------------------------------------------------------------------


def last_applied_api(annotations: Mapping[str, str] | None) -> tuple[str, str] | None:
    """``(apiVersion, kind)`` from the last-applied annotation; None when absent or not JSON."""
    text = (annotations or {}).get(LAST_APPLIED)
    if not text:
        return None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(manifest, dict):
        return None
    api_version, kind = manifest.get("apiVersion"), manifest.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return None
    return api_version.strip(), kind.strip()


def object_ref(kind: str, metadata: Mapping[str, Any]) -> str:
    """``Deployment shop/web`` or ``FlowSchema slipway-test``."""
    namespace = metadata.get("namespace")
    return f"{kind} {namespace}/{metadata.get('name')}" if namespace else f"{kind} {metadata.get('name')}"


def _removal(api_version: str, kind: str, target: Version) -> ApiRemoval | None:
    return next(
        (r for r in API_REMOVALS if (r.api_version, r.kind) == (api_version, kind) and r.removed_by(target)),
        None,
    )


def _deprecation(api_version: str, kind: str, target: Version) -> ApiRemoval | None:
    return next(
        (r for r in deprecated_in_target(target) if (r.api_version, r.kind) == (api_version, kind)), None
    )


def _replacement(removal: ApiRemoval) -> str:
    advice = f"use {removal.replacement}" if removal.replacement else "there is no replacement API"
    return f"{advice}; {removal.note}" if removal.note else advice


def judge_manifests(
    objects: Iterable[AppliedObject],
    current: Version,
    target: Version,
    skipped: Sequence[str] = (),
    coverage: ScanPlan | None = None,
) -> CheckResult:
    """Blocker for every object whose last-applied manifest names an API ``target`` does not serve.

    ``skipped`` names what could not be read; it is reported (``info``), never dropped, and
    never a blocker on its own. ``coverage`` adds which kinds were listed and which were not.
    """
    broken: list[dict[str, str]] = []
    deprecated: list[dict[str, str]] = []
    scanned = 0
    for obj in objects:
        scanned += 1
        removal = _removal(obj.api_version, obj.kind, target)
        if removal is not None:
            # Already gone before the current release: the manifest cannot be applied today either.
            status = (
                f"removed by this upgrade (in {removal.removed_in})"
                if removal.removed_after(current)
                else f"removed in {removal.removed_in}, before the current {current.minor_line}"
            )
            broken.append(
                {
                    "object": obj.ref,
                    "api_version": obj.api_version,
                    "removed_in": removal.removed_in,
                    "status": status,
                    "fix": _replacement(removal),
                }
            )
        elif (deprecation := _deprecation(obj.api_version, obj.kind, target)) is not None:
            deprecated.append(
                {"object": obj.ref, "api_version": obj.api_version, "removed_in": deprecation.removed_in}
            )
    skipped = [*(coverage.skipped if coverage else []), *skipped]
    evidence: dict[str, Any] = {
        "scanned": scanned,
        "removed": listed(broken),
        "deprecated": listed(deprecated),
        "skipped": list(skipped),
    }
    if coverage is not None:
        evidence |= {
            "kinds_listed": len(coverage.kinds),
            "not_served": listed(coverage.not_served),
            "request_only": listed(coverage.request_only),
        }
    unread = f"; could not read {len(skipped)} kind(s): {names(list(skipped), 3)}" if skipped else ""
    if broken:
        first = broken[0]
        return finding(
            "removed-apis/manifests",
            "blocker",
            f"{len(broken)} object(s) were last applied with an API {target} does not serve: "
            + names([f"{b['object']} ({b['api_version']}, removed in {b['removed_in']})" for b in broken], 3)
            + unread,
            evidence,
            f"Update the manifests in git and re-apply them ({first['fix']}) before upgrading to {target}.",
        )
    if deprecated:
        return finding(
            "removed-apis/manifests",
            "info",
            f"{len(deprecated)} object(s) use APIs deprecated in {target.minor_line}: "
            + names([f"{d['object']} ({d['api_version']})" for d in deprecated], 3)
            + unread,
            evidence,
            "Migrate these manifests before a later upgrade removes the APIs.",
        )
    if skipped:
        return finding(
            "removed-apis/manifests",
            "info",
            f"no readable last-applied manifest ({scanned} found) uses an API removed or deprecated by "
            f"{target}{unread}",
            evidence,
            "Grant the orchestrator read access to the skipped kinds, or check them by hand, first.",
        )
    return finding(
        "removed-apis/manifests",
        "ok",
        f"no last-applied manifest ({scanned} found) uses an API removed or deprecated by {target}",
        evidence,
    )


def _api_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def judge_requested(samples: Sequence[tuple[dict[str, str], float]], target: Version) -> CheckResult:
    """Blocker when a client requested an API whose ``removed_release`` is at or before ``target``."""
    removed: list[dict[str, str]] = []
    deprecated: list[dict[str, str]] = []
    for labels, value in samples:
        if value < 1:
            continue  # the metric keeps a 0 series for APIs nobody called since the restart
        resource = labels.get("resource", "") + (
            f"/{labels['subresource']}" if labels.get("subresource") else ""
        )
        entry = {
            "api_version": _api_version(labels.get("group", ""), labels.get("version", "")),
            "resource": resource,
            "removed_release": labels.get("removed_release", ""),
        }
        release = entry["removed_release"]
        if release and _minor(release) <= (target.major, target.minor):
            removed.append(entry)
        else:
            deprecated.append(entry)
    evidence = {"removed": listed(removed), "deprecated": listed(deprecated)}
    if removed:
        return finding(
            "removed-apis/requests",
            "blocker",
            f"clients still call {len(removed)} API(s) that {target} does not serve: "
            + names(
                [f"{r['resource']}.{r['api_version']} (removed in {r['removed_release']})" for r in removed],
                3,
            ),
            evidence,
            "Find the callers in the apiserver audit log (annotation k8s.io/deprecated) and move them to the "
            "replacement API before upgrading.",
        )
    if deprecated:
        return finding(
            "removed-apis/requests",
            "info",
            f"clients call {len(deprecated)} deprecated API(s) that {target} still serves: "
            + names([f"{d['resource']}.{d['api_version']}" for d in deprecated], 3),
            evidence,
            "Plan the migration of these clients before the release that removes the APIs.",
        )
    return finding("removed-apis/requests", "ok", "no client has called a deprecated API", evidence)


def judge_served(
    served: Mapping[str, set[str]], current: Version, target: Version, skipped: Sequence[str] = ()
) -> CheckResult:
    """Info for every kind served now (group version -> kinds) that ``target`` stops serving.

    Never a blocker: an apiserver serves many versions by default (flowcontrol ``v1beta3`` up
    to 1.31, for one) that nothing uses. Use is judged by the manifests, requests and audit
    checks; this one says what to look at and which group versions discovery could not read.
    """
    gone = sorted(
        (r for r in API_REMOVALS if r.removed_by(target) and r.kind in served.get(r.api_version, set())),
        key=lambda r: (r.api_version, r.kind),
    )
    evidence = {
        "removed": listed(
            [
                {"api": f"{r.kind}.{r.api_version}", "removed_in": r.removed_in, "fix": _replacement(r)}
                for r in gone
            ]
        ),
        "group_versions": len(served),
        "skipped": list(skipped),
    }
    unread = (
        f"; discovery could not read {len(skipped)} group version(s): {names(list(skipped), 3)}"
        if skipped
        else ""
    )
    if gone:
        return finding(
            "removed-apis/served",
            "info",
            f"{target} stops serving {len(gone)} API(s) this cluster serves now (served is not used: "
            "removed-apis/manifests and removed-apis/requests judge use): "
            + names([f"{r.kind} {r.api_version} (removed in {r.removed_in})" for r in gone], 3)
            + unread,
            evidence,
            "Nothing to do unless a client or stored manifest uses them; if the group version was turned on "
            "with --runtime-config, drop it there after migrating.",
        )
    if skipped:
        return finding(
            "removed-apis/served",
            "info",
            f"no readable served API is removed between {current} and {target}{unread}",
            evidence,
            "Check why the aggregated API behind each skipped group version is unavailable.",
        )
    return finding(
        "removed-apis/served", "ok", f"no served API is removed between {current} and {target}", evidence
    )


AUDIT_DEPRECATED = "k8s.io/deprecated"
AUDIT_REMOVED_RELEASE = "k8s.io/removed-release"


def judge_audit(events: Iterable[Mapping[str, Any]], target: Version) -> CheckResult:
    """Blocker naming each caller of an API ``target`` removes, from apiserver audit events.

    The apiserver annotates every request to a deprecated API with ``k8s.io/deprecated`` and,
    when its removal is scheduled, ``k8s.io/removed-release`` (Metadata level is enough).
    """
    calls: dict[tuple[str, str, str, str], int] = {}
    seen: set[str] = set()
    audited = 0
    for event in events:
        audited += 1
        annotations = event.get("annotations") or {}
        if annotations.get(AUDIT_DEPRECATED) != "true":
            continue
        audit_id = str(event.get("auditID", ""))
        if audit_id and audit_id in seen:
            continue  # one request logs several stages
        seen.add(audit_id)
        ref = event.get("objectRef") or {}
        resource = str(ref.get("resource", "")) + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        key = (
            _api_version(str(ref.get("apiGroup", "")), str(ref.get("apiVersion", ""))),
            resource,
            str((event.get("user") or {}).get("username", "")),
            str(annotations.get(AUDIT_REMOVED_RELEASE, "")),
        )
        calls[key] = calls.get(key, 0) + 1
    removed: list[dict[str, Any]] = []
    deprecated: list[dict[str, Any]] = []
    for (api_version, resource, user, release), count in sorted(calls.items()):
        entry = {
            "api_version": api_version,
            "resource": resource,
            "user": user,
            "removed_release": release,
            "requests": count,
        }
        (removed if release and _minor(release) <= (target.major, target.minor) else deprecated).append(entry)
    evidence = {"events": audited, "removed": listed(removed), "deprecated": listed(deprecated)}
    if removed:
        return finding(
            "removed-apis/audit",
            "blocker",
            f"the audit log shows {len(removed)} caller(s) of APIs {target} does not serve: "
            + names(
                [
                    f"{r['user']} -> {r['resource']}.{r['api_version']} (removed in {r['removed_release']})"
                    for r in removed
                ],
                3,
            ),
            evidence,
            "Move each named caller to the replacement API (Deprecated API Migration Guide) first.",
        )
    if deprecated:
        return finding(
            "removed-apis/audit",
            "info",
            f"the audit log shows {len(deprecated)} caller(s) of deprecated APIs {target} still serves: "
            + names([f"{d['user']} -> {d['resource']}.{d['api_version']}" for d in deprecated], 3),
            evidence,
            "Plan the migration of these callers before the release that removes the APIs.",
        )
    return finding(
        "removed-apis/audit", "ok", f"no deprecated API call in {audited} audit event(s)", evidence
    )


def _minor(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


# ---- reading the cluster ------------------------------------------------------------------------


def _get_json(
    api: client.ApiClient,
    path: str,
    query: list[tuple[str, Any]] | None = None,
    accept: str = "application/json",
) -> Any:
    response = api.call_api(
        path,
        "GET",
        query_params=query or [],
        header_params={"Accept": accept},
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
    )
    return json.loads(response.data)


def get_text(api: client.ApiClient, path: str) -> str:
    """A plain-text GET (``/metrics``, ``/readyz?verbose``) with the client's credentials."""
    response = api.call_api(
        path,
        "GET",
        header_params={"Accept": "text/plain"},
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
    )
    return str(response.data.decode(errors="replace"))


def _list_metadata(api: client.ApiClient, kind: ListedKind) -> Iterator[dict[str, Any]]:
    token = ""
    while True:
        query: list[tuple[str, Any]] = [("limit", PAGE_SIZE)] + ([("continue", token)] if token else [])
        page = _get_json(api, kind.path, query, METADATA_ONLY)
        yield from (item.get("metadata", {}) for item in page.get("items") or [])
        token = page.get("metadata", {}).get("continue", "")
        if not token:
            return


def applied_objects(
    api: client.ApiClient, kinds: Sequence[ListedKind]
) -> tuple[list[AppliedObject], list[str]]:
    """Objects of ``kinds`` that carry a last-applied manifest, and the kinds that could not be listed."""
    found: list[AppliedObject] = []
    skipped: list[str] = []
    for kind in kinds:
        try:
            for metadata in _list_metadata(api, kind):
                applied = last_applied_api(metadata.get("annotations"))
                if applied is not None:
                    found.append(AppliedObject(object_ref(applied[1], metadata), *applied))
        except ApiException as err:
            if err.status == FORBIDDEN:
                skipped.append(f"{kind.path}: forbidden for this identity")
            elif err.status != NOT_FOUND:  # a group this cluster does not serve has nothing stored
                skipped.append(f"{kind.path}: HTTP {err.status} {err.reason}")
    return found, skipped


def discover(api: client.ApiClient) -> Discovery:
    """Every group version the apiserver serves, its resources, and what discovery could not read."""
    groups = client.ApisApi(api).get_api_versions().groups or []
    versions: dict[str, list[str]] = {"": ["v1"]}
    for group in groups:
        ordered = [gv.group_version for gv in group.versions]
        preferred = group.preferred_version.group_version if group.preferred_version else None
        if preferred in ordered:
            ordered.remove(preferred)
            ordered.insert(0, preferred)
        versions[group.name] = ordered
    resources: dict[str, dict[str, ServedResource]] = {}
    skipped: list[str] = []
    for group_versions in versions.values():
        for group_version in group_versions:
            path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
            try:
                listing = _get_json(api, path).get("resources", [])
            except ApiException as err:
                # An aggregated API whose backend is down: say so, never drop it silently.
                skipped.append(f"{group_version}: HTTP {err.status} {err.reason}")
                continue
            resources[group_version] = {
                r["kind"]: ServedResource(
                    group_version, r["kind"], r["name"], "list" in (r.get("verbs") or [])
                )
                for r in listing
                if "/" not in r["name"]
            }
    return Discovery(versions, resources, skipped)


def served_kinds(api: client.ApiClient) -> dict[str, set[str]]:
    """Every group version the apiserver serves now -> the kinds in it (from API discovery)."""
    return discover(api).served_kinds()


def check_removed_api_manifests(
    api: client.ApiClient, current: Version, target: Version, discovery: Discovery | None = None
) -> CheckResult:
    """``removed-apis/manifests``: last-applied manifests using APIs ``target`` does not serve."""
    coverage = plan_scan(discovery or discover(api), scanned_kinds())
    objects, skipped = applied_objects(api, coverage.kinds)
    return judge_manifests(objects, current, target, skipped, coverage)


def check_deprecated_api_requests(api: client.ApiClient, target: Version) -> CheckResult:
    """``removed-apis/requests``: what the apiserver behind the API endpoint saw clients call.

    The metric is per apiserver instance and resets on restart; through a load balancer one
    instance answers, so run the check again (or against each instance) for full coverage,
    or give :func:`check_removed_apis` the audit log.
    """
    return judge_requested(metric_samples(get_text(api, "/metrics"), DEPRECATED_METRIC), target)


def check_served_removed_apis(
    api: client.ApiClient, current: Version, target: Version, discovery: Discovery | None = None
) -> CheckResult:
    """``removed-apis/served``: kinds served now that ``target`` removes (information only)."""
    found = discovery or discover(api)
    return judge_served(found.served_kinds(), current, target, found.skipped)


def check_removed_apis(
    api: client.ApiClient,
    current: Version,
    target: Version,
    audit_events: Iterable[Mapping[str, Any]] | None = None,
) -> list[CheckResult]:
    """Every ``removed-apis`` check: manifests, requests, served, and audit when events are given.

    :param audit_events: the apiserver audit log's events (JSON objects), where the platform
        keeps one; ``None`` leaves ``removed-apis/audit`` out.
    """
    discovery = discover(api)
    results = [
        check_removed_api_manifests(api, current, target, discovery),
        check_deprecated_api_requests(api, target),
        check_served_removed_apis(api, current, target, discovery),
    ]
    if audit_events is not None:
        results.append(judge_audit(audit_events, target))
    return results
