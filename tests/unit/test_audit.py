"""Reading the apiservers' audit log and matching requests to RBAC grants. Plain data, no cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slipway.localcluster import audit
from slipway.localcluster.config import ClusterConfig

USER = "slipway-orchestrator"


def event(
    audit_id: str,
    verb: str,
    resource: str = "",
    *,
    group: str = "",
    sub: str = "",
    ns: str = "",
    name: str = "",
    uri: str = "/api/v1/x",
    decision: str = "allow",
    code: int = 200,
    stage: str = "ResponseComplete",
    user: str = USER,
) -> dict[str, Any]:
    ref = {"resource": resource, "apiGroup": group, "subresource": sub, "namespace": ns, "name": name}
    return {
        "auditID": audit_id,
        "stage": stage,
        "verb": verb,
        "requestURI": uri,
        "user": {"username": user, "groups": ["slipway:orchestrators", "system:authenticated"]},
        "objectRef": {k: v for k, v in ref.items() if v} if resource else None,
        "responseStatus": {"code": code},
        "annotations": {audit.DECISION: decision},
    }


MANIFEST: list[dict[str, Any]] = [
    {"kind": "Namespace", "metadata": {"name": "slipway-system"}},
    {
        "kind": "ClusterRole",
        "metadata": {"name": "orch"},
        "rules": [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
            {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
            {"nonResourceURLs": ["/metrics", "/readyz/*"], "verbs": ["get"]},
        ],
    },
    {
        "kind": "Role",
        "metadata": {"name": "orch", "namespace": "slipway-system"},
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["chaos"]},
        ],
    },
]


def test_a_watch_counts_once_with_its_final_status_and_other_users_are_left_out() -> None:
    events = [
        event("a", "watch", "nodes", stage="ResponseStarted"),
        event("a", "watch", "nodes", code=200),
        event("b", "get", "nodes", user="kubernetes-admin"),
        event("c", "delete", "pods", ns="default", name="web", decision="forbid", code=403),
    ]
    found = audit.requests(events, USER)
    assert sorted(r.audit_id for r in found) == ["a", "c"]
    assert [r.describe() for r in audit.refused(found)] == ["delete core/pods web in default"]
    assert audit.usage(found) == {("watch", "", "nodes", "", ""), ("delete", "", "pods", "", "default")}


def test_a_403_is_refused_even_when_authorization_allowed_it() -> None:
    # Admission (Pod Security, for one) answers 403 after RBAC said allow.
    found = audit.requests([event("a", "create", "pods", ns="slipway-system", code=403)], USER)
    assert audit.refused(found) == found


def test_grants_expand_every_verb_resource_and_url_with_the_role_namespace() -> None:
    described = [g.describe() for g in audit.grants(MANIFEST)]
    assert described == [
        "ClusterRole orch: get core/nodes",
        "ClusterRole orch: patch core/nodes",
        "ClusterRole orch: create core/pods/eviction",
        "ClusterRole orch: get /metrics",
        "ClusterRole orch: get /readyz/*",
        "Role orch: create core/configmaps in slipway-system",
        "Role orch: get core/configmaps named chaos in slipway-system",
    ]


def test_grants_cover_subresources_namespaces_names_and_url_prefixes() -> None:
    grants = audit.grants(MANIFEST)
    found = audit.requests(
        [
            event("1", "get", "nodes", name="w1"),
            event("2", "create", "pods", sub="eviction", ns="shop", name="web-1"),
            event("3", "get", uri="/readyz/etcd?verbose"),
            event("4", "create", "configmaps", ns="default"),  # the Role is for slipway-system only
            event("5", "get", "configmaps", ns="slipway-system", name="other"),  # not the named one
            event("6", "create", "pods", ns="shop"),  # the subresource grant is not the resource
        ],
        USER,
    )
    assert sorted(r.audit_id for r in audit.uncovered(grants, found)) == ["4", "5", "6"]
    assert [g.describe() for g in audit.unused(grants, found)] == [
        "ClusterRole orch: patch core/nodes",
        "ClusterRole orch: get /metrics",
        "Role orch: create core/configmaps in slipway-system",
        "Role orch: get core/configmaps named chaos in slipway-system",
    ]


def test_a_refused_request_uses_no_grant() -> None:
    grants = audit.grants(MANIFEST)
    found = audit.requests([event("1", "get", "nodes", decision="forbid", code=403)], USER)
    assert "ClusterRole orch: get core/nodes" in [g.describe() for g in audit.unused(grants, found)]


def test_log_files_include_rotated_backups_and_cut_lines_are_skipped(tmp_path: Path) -> None:
    cfg = ClusterConfig(name="audit", state_root=tmp_path)
    policy = audit.write_policy(cfg)
    assert "omitStages" in policy.read_text()
    current = audit.log_path(cfg, 0)
    backup = current.with_name("kube-apiserver-0-2026-12-02T16-00-00.000.log")
    backup.write_text(json.dumps(event("old", "list", "pods")) + "\n")
    current.write_text(json.dumps(event("new", "get", "nodes")) + "\n" + '{"auditID": "cut", "ver')
    assert audit.log_files(cfg) == sorted([backup, current])
    assert sorted(r.audit_id for r in audit.user_requests(cfg, USER)) == ["new", "old"]
