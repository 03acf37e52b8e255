"""The local apiservers' audit log: who asked for what, and what RBAC decided.

Every kube-apiserver of a local cluster writes one JSON line per request (Metadata level:
user, verb, resource, namespace, name, decision; never a body) to
``<state dir>/audit/kube-apiserver-N.log``, rotated by size. This module reads those files
back and answers the two questions least privilege asks of an identity: was every request
it made allowed, and which of the grants in a manifest did it actually use?
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from slipway.localcluster.config import ClusterConfig

DECISION = "authorization.k8s.io/decision"
REASON = "authorization.k8s.io/reason"
FORBIDDEN = 403
# Metadata for every request, no bodies; the RequestReceived stage only doubles the lines.
POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}
MAX_SIZE_MB = 100
MAX_BACKUPS = 5


def audit_dir(cfg: ClusterConfig) -> Path:
    return cfg.state_dir / "audit"


def log_path(cfg: ClusterConfig, apiserver: int) -> Path:
    return audit_dir(cfg) / f"kube-apiserver-{apiserver}.log"


def write_policy(cfg: ClusterConfig) -> Path:
    """The policy file the apiservers load (rewritten each start: it is ours, not the user's)."""
    path = audit_dir(cfg) / "policy.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(POLICY, sort_keys=False))
    return path


def log_files(cfg: ClusterConfig) -> list[Path]:
    """Every apiserver's current log and its rotated backups (``kube-apiserver-0-<time>.log``)."""
    folder = audit_dir(cfg)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("kube-apiserver-*.log") if p.is_file())


@dataclass(frozen=True)
class Request:
    """One audited request, reduced to what authorization looked at."""

    audit_id: str
    user: str
    groups: tuple[str, ...]
    verb: str
    api_group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    uri: str
    decision: str
    reason: str
    code: int
    user_agent: str = ""

    @property
    def non_resource(self) -> bool:
        return not self.resource

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]

    @property
    def allowed(self) -> bool:
        return self.decision == "allow" and self.code != FORBIDDEN

    def key(self) -> tuple[str, str, str, str, str]:
        """(verb, apiGroup, resource, subresource, namespace); a non-resource request is (verb, path)."""
        if self.non_resource:
            return (self.verb, "", "", "", self.path)
        return (self.verb, self.api_group, self.resource, self.subresource, self.namespace)

    def describe(self) -> str:
        if self.non_resource:
            return f"{self.verb} {self.path}"
        what = self.resource + (f"/{self.subresource}" if self.subresource else "")
        group = self.api_group or "core"
        where = f" in {self.namespace}" if self.namespace else ""
        named = f" {self.name}" if self.name else ""
        return f"{self.verb} {group}/{what}{named}{where}"


def parse_event(event: dict[str, Any]) -> Request:
    ref = event.get("objectRef") or {}
    user = event.get("user") or {}
    annotations = event.get("annotations") or {}
    status = event.get("responseStatus") or {}
    return Request(
        audit_id=str(event.get("auditID", "")),
        user=str(user.get("username", "")),
        groups=tuple(user.get("groups") or ()),
        verb=str(event.get("verb", "")),
        api_group=str(ref.get("apiGroup", "")),
        resource=str(ref.get("resource", "")),
        subresource=str(ref.get("subresource", "")),
        namespace=str(ref.get("namespace", "")),
        name=str(ref.get("name", "")),
        uri=str(event.get("requestURI", "")),
        decision=str(annotations.get(DECISION, "")),
        reason=str(annotations.get(REASON, "")),
        code=int(status.get("code") or 0),
        user_agent=str(event.get("userAgent", "")),
    )


def read_events(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every event in ``paths``; a line cut by a rotation or a crash is skipped."""
    for path in paths:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(event, dict):
                    yield event


def requests(events: Iterable[dict[str, Any]], user: str) -> list[Request]:
    """The requests ``user`` made, one per audit ID (a watch logs ResponseStarted and
    ResponseComplete; the later stage carries the final status)."""
    by_id: dict[str, Request] = {}
    for event in events:
        if (event.get("user") or {}).get("username") != user:
            continue
        request = parse_event(event)
        if request.audit_id not in by_id or event.get("stage") == "ResponseComplete":
            by_id[request.audit_id] = request
    return list(by_id.values())


def user_requests(cfg: ClusterConfig, user: str) -> list[Request]:
    """What ``user`` asked of the cluster's apiservers, from every audit log file."""
    return requests(read_events(log_files(cfg)), user)


def refused(found: Iterable[Request]) -> list[Request]:
    return [r for r in found if not r.allowed]


def usage(found: Iterable[Request]) -> set[tuple[str, str, str, str, str]]:
    """The distinct (verb, apiGroup, resource, subresource, namespace) of ``found``."""
    return {r.key() for r in found}


# ---- the manifest's grants -----------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One verb on one resource (or one non-resource URL) that a Role/ClusterRole rule gives.

    ``namespace`` is the Role's namespace, empty for a ClusterRole (every namespace and
    cluster-scoped objects). ``resource`` may carry a subresource: ``pods/eviction``.
    """

    role: str
    namespace: str
    verb: str
    api_group: str = ""
    resource: str = ""
    resource_names: tuple[str, ...] = ()
    url: str = ""

    def describe(self) -> str:
        if self.url:
            return f"{self.role}: {self.verb} {self.url}"
        where = f" in {self.namespace}" if self.namespace else ""
        names = f" named {','.join(self.resource_names)}" if self.resource_names else ""
        return f"{self.role}: {self.verb} {self.api_group or 'core'}/{self.resource}{names}{where}"

    def covers(self, request: Request) -> bool:
        if self.verb not in ("*", request.verb):
            return False
        if self.url or request.non_resource:
            if not (self.url and request.non_resource):
                return False
            if self.url.endswith("*"):
                return request.path.startswith(self.url[:-1])
            return request.path == self.url
        if self.namespace and request.namespace != self.namespace:
            return False
        if self.api_group not in ("*", request.api_group):
            return False
        wanted = request.resource + (f"/{request.subresource}" if request.subresource else "")
        if self.resource not in ("*", wanted):
            return False
        return not self.resource_names or request.name in self.resource_names


def grants(documents: Iterable[dict[str, Any]]) -> list[Grant]:
    """Every (verb, resource) pair of every Role and ClusterRole in a manifest."""
    found: list[Grant] = []
    for doc in documents:
        if doc.get("kind") not in ("Role", "ClusterRole"):
            continue
        meta = doc.get("metadata") or {}
        role = f"{doc['kind']} {meta.get('name', '')}"
        namespace = str(meta.get("namespace", "")) if doc["kind"] == "Role" else ""
        for rule in doc.get("rules") or []:
            names = tuple(rule.get("resourceNames") or ())
            for verb in rule.get("verbs") or []:
                for url in rule.get("nonResourceURLs") or []:
                    found.append(Grant(role, "", verb, url=url))
                for group in rule.get("apiGroups") or []:
                    for resource in rule.get("resources") or []:
                        found.append(Grant(role, namespace, verb, group, resource, names))
    return found


def unused(all_grants: Iterable[Grant], found: Iterable[Request]) -> list[Grant]:
    """The grants no request in ``found`` needed."""
    allowed = [r for r in found if r.allowed]
    return [g for g in all_grants if not any(g.covers(r) for r in allowed)]


def uncovered(all_grants: Iterable[Grant], found: Iterable[Request]) -> list[Request]:
    """Requests no grant of the manifest covers (another role allowed them, or nothing did)."""
    listed = list(all_grants)
    return [r for r in found if not any(g.covers(r) for g in listed)]
