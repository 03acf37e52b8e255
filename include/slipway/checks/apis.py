"""Removed and deprecated APIs the target release would break (§1.2, §2.2), from three angles.

* ``removed-apis/manifests``: objects whose ``kubectl.kubernetes.io/last-applied-configuration``
  names an API the target does not serve — the next ``kubectl apply`` of that manifest fails.
* ``removed-apis/requests``: the apiserver's ``apiserver_requested_deprecated_apis`` metric —
  some client is calling a deprecated API right now; a removed one breaks that client.
* ``removed-apis/served``: API discovery — a group version served now (often turned on by
  ``--runtime-config``) that the target no longer serves.

Each finding names the object, resource or group version, when it goes away and what replaces it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.apiremovals import API_REMOVALS, ApiRemoval, deprecated_in_target
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


def _kinds(group: str, version: str, plurals: str) -> list[ListedKind]:
    return [ListedKind(group, version, plural) for plural in plurals.split()]


# The kinds people keep in git and kubectl apply, plus the GA homes of everything the removal
# table drops. Secrets are left out on purpose: the orchestrator may not read them.
COMMON_KINDS: tuple[ListedKind, ...] = (
    *_kinds(
        "",
        "v1",
        "configmaps services serviceaccounts persistentvolumeclaims persistentvolumes namespaces "
        "limitranges resourcequotas",
    ),
    *_kinds("apps", "v1", "deployments statefulsets daemonsets"),
    *_kinds("batch", "v1", "jobs cronjobs"),
    *_kinds("policy", "v1", "poddisruptionbudgets"),
    *_kinds("autoscaling", "v2", "horizontalpodautoscalers"),
    *_kinds("networking.k8s.io", "v1", "ingresses ingressclasses networkpolicies servicecidrs ipaddresses"),
    *_kinds("rbac.authorization.k8s.io", "v1", "roles rolebindings clusterroles clusterrolebindings"),
    *_kinds("scheduling.k8s.io", "v1", "priorityclasses"),
    *_kinds("storage.k8s.io", "v1", "storageclasses csidrivers volumeattributesclasses"),
    *_kinds("flowcontrol.apiserver.k8s.io", "v1", "flowschemas prioritylevelconfigurations"),
    *_kinds(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations mutatingwebhookconfigurations "
        "validatingadmissionpolicies validatingadmissionpolicybindings",
    ),
    *_kinds("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
    *_kinds("node.k8s.io", "v1", "runtimeclasses"),
    *_kinds("resource.k8s.io", "v1", "deviceclasses resourceclaims resourceclaimtemplates"),
)


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
    objects: Iterable[AppliedObject], current: Version, target: Version, skipped: Sequence[str] = ()
) -> CheckResult:
    """Blocker for every object whose last-applied manifest names an API ``target`` does not serve."""
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
    evidence = {
        "scanned": scanned,
        "removed": listed(broken),
        "deprecated": listed(deprecated),
        "skipped": list(skipped),
    }
    if broken:
        first = broken[0]
        return finding(
            "removed-apis/manifests",
            "blocker",
            f"{len(broken)} object(s) were last applied with an API {target} does not serve: "
            + names([f"{b['object']} ({b['api_version']}, removed in {b['removed_in']})" for b in broken], 3),
            evidence,
            f"Update the manifests in git and re-apply them ({first['fix']}) before upgrading to {target}.",
        )
    if deprecated:
        return finding(
            "removed-apis/manifests",
            "info",
            f"{len(deprecated)} object(s) use APIs deprecated in {target.minor_line}: "
            + names([f"{d['object']} ({d['api_version']})" for d in deprecated], 3),
            evidence,
            "Migrate these manifests before a later upgrade removes the APIs.",
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


def judge_served(served: Mapping[str, set[str]], current: Version, target: Version) -> CheckResult:
    """Blocker for every kind served now (group version → kinds) that ``target`` stops serving."""
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
    }
    if gone:
        return finding(
            "removed-apis/served",
            "blocker",
            f"{target} stops serving {len(gone)} API(s) this cluster serves now: "
            + names([f"{r.kind} {r.api_version} (removed in {r.removed_in})" for r in gone], 3),
            evidence,
            "Move every client and stored manifest to the replacement API, then drop the group version from "
            "--runtime-config, before the upgrade.",
        )
    return finding(
        "removed-apis/served", "ok", f"no served API is removed between {current} and {target}", evidence
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
    api: client.ApiClient, kinds: Sequence[ListedKind] = COMMON_KINDS
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


def served_kinds(api: client.ApiClient) -> dict[str, set[str]]:
    """Every group version the apiserver serves now → the kinds in it (from API discovery)."""
    served: dict[str, set[str]] = {}
    groups = client.ApisApi(api).get_api_versions().groups or []
    versions = [gv.group_version for group in groups for gv in group.versions]
    for group_version in ["v1", *versions]:
        path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        try:
            resources = _get_json(api, path).get("resources", [])
        except ApiException:
            continue
        served[group_version] = {r["kind"] for r in resources if "/" not in r["name"]}
    return served


def check_removed_api_manifests(api: client.ApiClient, current: Version, target: Version) -> CheckResult:
    """``removed-apis/manifests``: last-applied manifests using APIs ``target`` does not serve."""
    objects, skipped = applied_objects(api)
    return judge_manifests(objects, current, target, skipped)


def check_deprecated_api_requests(api: client.ApiClient, target: Version) -> CheckResult:
    """``removed-apis/requests``: what the apiserver behind the API endpoint saw clients call.

    The metric is per apiserver instance and resets on restart; through a load balancer one
    instance answers, so run the check again (or against each instance) for full coverage.
    """
    return judge_requested(metric_samples(get_text(api, "/metrics"), DEPRECATED_METRIC), target)


def check_served_removed_apis(api: client.ApiClient, current: Version, target: Version) -> CheckResult:
    """``removed-apis/served``: kinds served now that ``target`` removes."""
    return judge_served(served_kinds(api), current, target)


def check_removed_apis(api: client.ApiClient, current: Version, target: Version) -> list[CheckResult]:
    """All three ``removed-apis`` checks."""
    return [
        check_removed_api_manifests(api, current, target),
        check_deprecated_api_requests(api, target),
        check_served_removed_apis(api, current, target),
    ]
