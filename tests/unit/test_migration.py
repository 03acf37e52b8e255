"""Migration logic on plain data: the connection and request refusals, normalisation and
checksums, the dependency map and what cannot move."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from slipway.migration.assess import (
    api_problem,
    assess,
    blockers_of,
    dependencies,
    markdown,
    selector_matches,
)
from slipway.migration.connection import parse_connection
from slipway.migration.errors import MigrationError
from slipway.migration.frontdoor import render_config, set_split
from slipway.migration.objects import checksum, compare, generated, normalise, pair_checksums, project
from slipway.migration.request import MigrationRequest, parse_migration_request, refuse_unusable_copy_path

SERVED = {
    "v1",
    "apps/v1",
    "policy/v1",
    "rbac.authorization.k8s.io/v1",
    "autoscaling/v2",
    "networking.k8s.io/v1",
}


def _obj(
    kind: str, name: str, api_version: str = "v1", namespace: str | None = "shop", **fields: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}


def _deployment(name: str = "web", labels: dict[str, str] | None = None, **pod: Any) -> dict[str, Any]:
    labels = labels or {"app": name}
    spec = {"containers": [{"name": "c", "image": "i"}], **pod}
    return _obj(
        "Deployment",
        name,
        "apps/v1",
        spec={
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    )


# --- connection -------------------------------------------------------------------------------


@pytest.fixture
def kubeconfigs(tmp_path: Path) -> tuple[str, str]:
    a, b = tmp_path / "a.kubeconfig", tmp_path / "b.kubeconfig"
    a.write_text("{}")
    b.write_text("{}")
    return str(a), str(b)


def test_connection_accepts_two_kubeconfigs_and_contexts(kubeconfigs: tuple[str, str]) -> None:
    a, b = kubeconfigs
    conn = parse_connection({"source_kubeconfig": a, "target_kubeconfig": b, "target_context": "blue"})
    assert str(conn.source.kubeconfig) == a and conn.target.context == "blue" and conn.source.context is None
    # One kubeconfig with two contexts is two clusters.
    same_file = parse_connection(
        {"source_kubeconfig": a, "source_context": "old", "target_kubeconfig": a, "target_context": "new"}
    )
    assert same_file.target.context == "new"


def test_connection_refuses_each_bad_key_on_one_line(kubeconfigs: tuple[str, str]) -> None:
    a, _ = kubeconfigs
    with pytest.raises(MigrationError) as err:
        parse_connection({"source_kubeconfig": "relative.yaml", "taget_kubeconfig": a, "source_context": ""})
    lines = str(err.value).splitlines()
    assert lines[0] == "slipway_migration connection refused (4 problems):"
    assert "  taget_kubeconfig: unknown field (did you mean target_kubeconfig?)" in lines
    assert "  source_kubeconfig: 'relative.yaml' is relative: give an absolute path" in lines
    assert any(line.startswith("  source_context: must be a non-empty") for line in lines)
    assert any(line.startswith("  target_kubeconfig: required") for line in lines)
    with pytest.raises(MigrationError) as err:
        parse_connection({"source_kubeconfig": a, "target_kubeconfig": "/nonexistent/k"})
    assert str(err.value).splitlines()[1] == "  target_kubeconfig: /nonexistent/k is not a readable file"
    with pytest.raises(MigrationError) as err:
        parse_connection({"source_kubeconfig": a, "target_kubeconfig": a})
    assert err.value.fields == ["target_kubeconfig"] and "same kubeconfig and context" in str(err.value)
    with pytest.raises(MigrationError):
        parse_connection(None)


# --- request ----------------------------------------------------------------------------------


def test_request_defaults_to_a_dry_run_and_refuses_bad_fields() -> None:
    request = parse_migration_request({"namespaces": ["shop"]})
    assert request.dry_run and request.available_timeout_seconds == 300
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "namespaces": ({"namespaces": ["Shop"]}, "is not a namespace name"),
        "namespaces ": ({"namespaces": ["kube-system"]}, "system namespace"),
        "selector": ({"namespace_selector": "team=shop;rm -rf"}, "is not a label selector"),
        "nothing": ({}, "an empty selection moves nothing"),
        "unknown": ({"namespaces": ["a"], "namespace": "b"}, "unknown field (did you mean namespaces?)"),
        "bounds": ({"namespaces": ["a"], "available_timeout_seconds": 5}, "greater than or equal to 10"),
    }
    for case, (conf, reason) in cases.items():
        with pytest.raises(MigrationError) as err:
            parse_migration_request(conf)
        lines = str(err.value).splitlines()
        assert len(lines) == 2 and reason in lines[1], (case, lines)
    with pytest.raises(MigrationError) as err:
        parse_migration_request(["shop"])  # type: ignore[arg-type]
    assert err.value.fields == ["conf"]


# --- normalisation and checksums --------------------------------------------------------------


def test_checksum_ignores_what_the_cluster_assigns_and_sees_every_data_byte() -> None:
    service = _obj(
        "Service",
        "web",
        metadata_extra=None,
        spec={
            "clusterIP": "10.96.0.7",
            "clusterIPs": ["10.96.0.7"],
            "ports": [{"port": 80, "nodePort": 30080}],
        },
        status={"loadBalancer": {}},
    )
    elsewhere = copy.deepcopy(service)
    elsewhere["metadata"] |= {
        "uid": "u2",
        "resourceVersion": "99",
        "creationTimestamp": "t",
        "managedFields": [{}],
    }
    elsewhere["spec"] |= {"clusterIP": "10.96.3.3", "clusterIPs": ["10.96.3.3"]}
    elsewhere["spec"]["ports"][0]["nodePort"] = 31000
    assert checksum(service) == checksum(elsewhere)
    headless = _obj("Service", "db", spec={"clusterIP": "None", "clusterIPs": ["None"]})
    assert normalise(headless)["spec"]["clusterIP"] == "None"

    secret = _obj("Secret", "s", data={"token": "YQ=="}, type="Opaque")
    changed = copy.deepcopy(secret)
    changed["data"]["token"] = "Yg=="
    assert checksum(secret) != checksum(changed)
    assert compare({"Secret/shop/s": checksum(secret)}, {"Secret/shop/s": checksum(changed)})[0].startswith(
        "Secret/shop/s: sha256 "
    )
    assert compare({"Secret/shop/s": "x"}, {}) == ["Secret/shop/s: missing on the target"]


def test_target_defaults_are_left_out_but_an_extra_secret_key_is_not() -> None:
    source = _obj(
        "StatefulSet", "db", "apps/v1", spec={"updateStrategy": {"rollingUpdate": {"partition": 0}}}
    )
    target = copy.deepcopy(source)
    target["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = 1  # a 1.37 default
    _, dropped = project(normalise(target), normalise(source))
    assert dropped == [".spec.updateStrategy.rollingUpdate.maxUnavailable"]
    sums = pair_checksums([source], [target])
    assert sums.source == sums.target and sums.defaulted == {"StatefulSet/shop/db": dropped}

    secret = _obj("Secret", "s", data={"a": "YQ=="})
    extra = copy.deepcopy(secret)
    extra["data"]["b"] = "Yg=="
    labelled = copy.deepcopy(secret)
    labelled["metadata"]["labels"] = {"x": "y"}
    assert pair_checksums([secret], [extra]).target != pair_checksums([secret], [secret]).target
    # A label the source lacks: metadata.labels is compared whole once either side has labels.
    with_label = copy.deepcopy(secret)
    with_label["metadata"]["labels"] = {"x": "z"}
    sums = pair_checksums([with_label], [labelled])
    assert sums.source != sums.target


def test_cluster_generated_objects_are_named() -> None:
    assert generated(_obj("ConfigMap", "kube-root-ca.crt"))
    assert generated(_obj("Secret", "t", type="kubernetes.io/service-account-token"))
    assert generated(_obj("Service", "kubernetes", namespace="default"))
    assert generated(_obj("Secret", "t", type="Opaque")) is None


# --- assessment -------------------------------------------------------------------------------


def test_selectors_match_like_the_apiserver() -> None:
    labels = {"app": "web", "tier": "front"}
    assert selector_matches({}, labels)  # empty selects everything (a NetworkPolicy's podSelector)
    assert not selector_matches(None, labels)
    assert selector_matches({"matchLabels": {"app": "web"}}, labels)
    assert not selector_matches({"matchLabels": {"app": "db"}}, labels)
    expressions = [
        ({"key": "tier", "operator": "In", "values": ["front", "edge"]}, True),
        ({"key": "tier", "operator": "NotIn", "values": ["front"]}, False),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, True),
        ({"key": "zone", "operator": "Exists"}, False),
        ({"key": "zone", "operator": "DoesNotExist"}, True),
    ]
    for expression, expected in expressions:
        assert selector_matches({"matchExpressions": [expression]}, labels) is expected, expression


def test_dependency_map_from_the_pod_template() -> None:
    web = _deployment(
        serviceAccountName="app",
        imagePullSecrets=[{"name": "pull"}],
        volumes=[
            {"name": "a", "configMap": {"name": "cm-volume"}},
            {
                "name": "b",
                "projected": {
                    "sources": [{"secret": {"name": "projected"}}, {"configMap": {"name": "cm-proj"}}]
                },
            },
        ],
        initContainers=[{"name": "init", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
        containers=[
            {
                "name": "c",
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm-key", "key": "k"}}}],
            }
        ],
    )
    others = [
        _obj("Service", "web", spec={"selector": {"app": "web"}}),
        _obj("Service", "headless-all", spec={}),  # no selector: selects nothing
        _obj("Service", "web-other-ns", namespace="other", spec={"selector": {"app": "web"}}),
        _obj("PodDisruptionBudget", "web", "policy/v1", spec={"selector": {"matchLabels": {"app": "web"}}}),
        _obj("NetworkPolicy", "deny-all", "networking.k8s.io/v1", spec={"podSelector": {}}),
        _obj(
            "HorizontalPodAutoscaler",
            "web",
            "autoscaling/v2",
            spec={"scaleTargetRef": {"kind": "Deployment", "name": "web"}},
        ),
        _obj(
            "HorizontalPodAutoscaler",
            "db",
            "autoscaling/v2",
            spec={"scaleTargetRef": {"kind": "StatefulSet", "name": "web"}},
        ),
    ]
    assert dependencies(web, others) == {
        "ConfigMap": ["cm-key", "cm-proj", "cm-volume"],
        "Secret": ["init-env", "projected", "pull"],
        "ServiceAccount": ["app"],
        "Service": ["web"],
        "PodDisruptionBudget": ["web"],
        "NetworkPolicy": ["deny-all"],
        "HorizontalPodAutoscaler": ["web"],
    }


def test_what_cannot_move_and_why() -> None:
    assert blockers_of(_deployment()) == []
    stuck = _deployment(
        nodeName="worker-1",
        volumes=[
            {"name": "h", "hostPath": {"path": "/srv"}},
            {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
        ],
        containers=[{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}],
    )
    reasons = " | ".join(blockers_of(stuck))
    for words in ("hostPath", "PVC data", "host port 8080", "pinned to source node worker-1"):
        assert words in reasons
    assert "bare Pod" in blockers_of(_obj("Pod", "debug", spec={"containers": []}))[0]

    assert api_problem("apps/v1", "Deployment", SERVED) is None
    translate = api_problem("policy/v1beta1", "PodDisruptionBudget", SERVED)
    assert (
        translate
        == "policy/v1beta1 PodDisruptionBudget was removed in 1.25; rewrite it as policy/v1 before moving it"
    )
    assert "serves no replacement" in str(api_problem("policy/v1beta1", "PodSecurityPolicy", SERVED))
    assert api_problem("example.com/v1", "Widget", SERVED) == "the target does not serve example.com/v1"


def test_assessment_lists_objects_in_copy_order_and_refuses_blocked_ones() -> None:
    namespace = _obj("Namespace", "shop", namespace=None)
    objects = [
        _deployment(volumes=[{"name": "cfg", "configMap": {"name": "absent"}}]),
        _obj("Secret", "s", type="Opaque"),
        _obj("ConfigMap", "kube-root-ca.crt"),
        _obj("PersistentVolumeClaim", "data"),
        _obj("PodDisruptionBudget", "old", "policy/v1beta1", spec={}),
    ]
    result = assess([namespace], objects, SERVED, source_version="1.36.3", target_version="1.37.2")
    assert result.objects == ["Namespace/shop", "Secret/shop/s", "Deployment/shop/web"]
    assert set(result.blockers) == {"PersistentVolumeClaim/shop/data", "PodDisruptionBudget/shop/old"}
    assert result.missing == {"Deployment/shop/web": ["ConfigMap/shop/absent"]}
    assert result.skipped == {
        "ConfigMap/shop/kube-root-ca.crt": "published by the cluster in every namespace"
    }
    assert not result.movable and result.to_dict()["movable"] is False
    text = markdown(result)
    assert "## Cannot move" in text and "`PodDisruptionBudget/shop/old`: policy/v1beta1" in text
    assert "Source 1.36.3 → target 1.37.2" in text


def test_custom_kinds_follow_their_definitions_and_a_conversion_webhook_is_refused() -> None:
    """A custom kind's instances are copied after its definition (the target serves the kind only
    then, so its group is no blocker); a definition converted by a webhook of the source cannot."""
    from slipway.migration.objects import Kind

    namespace = _obj("Namespace", "shop", namespace=None)
    crd = _obj(
        "CustomResourceDefinition", "widgets.example.com", "apiextensions.k8s.io/v1", namespace=None, spec={}
    )
    hooked = _obj(
        "CustomResourceDefinition",
        "gadgets.example.com",
        "apiextensions.k8s.io/v1",
        namespace=None,
        spec={"conversion": {"strategy": "Webhook", "webhook": {}}},
    )
    objects = [
        crd,
        hooked,
        _deployment(),
        _obj("Widget", "blue", "example.com/v1", spec={"size": 1}),
        _obj("Ingress", "web", "networking.k8s.io/v1", spec={}),
    ]
    served = SERVED | {"apiextensions.k8s.io/v1"}
    result = assess([namespace], objects, served, custom=[Kind("example.com/v1", "Widget")])
    assert result.objects == [
        "Namespace/shop",
        "Ingress/shop/web",
        "CustomResourceDefinition/widgets.example.com",
        "Widget/shop/blue",
        "Deployment/shop/web",
    ]
    assert list(result.blockers) == ["CustomResourceDefinition/gadgets.example.com"]
    assert "conversion webhook" in result.blockers["CustomResourceDefinition/gadgets.example.com"][0]
    # Without the definition coming along, the target serving no example.com/v1 blocks the instance.
    alone = assess([namespace], objects[3:4], served)
    assert alone.blockers == {"Widget/shop/blue": ["the target does not serve example.com/v1"]}


# --- the front door and the form ---------------------------------------------------------------


class _RecordingApi:
    """Plain stand-in for HAProxy's runtime API: remembers weights and the order they were set in."""

    def __init__(self, source: int, target: int) -> None:
        self.weights = {"source": source, "target": target}
        self.calls: list[tuple[str, int]] = []

    def weight(self, server: str) -> int:
        return self.weights[server]

    def set_weight(self, server: str, weight: int) -> None:
        self.calls.append((server, weight))
        self.weights[server] = weight
        assert sum(self.weights.values()) > 0, f"both servers at weight 0 after {self.calls}"


def test_weights_never_leave_the_front_door_without_a_server() -> None:
    forward = _RecordingApi(100, 0)
    for percent in (0, 10, 50, 100):
        set_split(forward, percent)  # type: ignore[arg-type]
    assert forward.weights == {"source": 0, "target": 100}
    back = _RecordingApi(0, 100)
    set_split(back, 0)  # type: ignore[arg-type]
    assert back.calls == [("source", 100), ("target", 0)]


def test_front_door_config_starts_with_every_request_on_the_source(tmp_path: Path) -> None:
    text = render_config(24300, 8001, 8002, tmp_path / "s.sock")
    assert "server source 127.0.0.1:8001 weight 100" in text
    assert "server target 127.0.0.1:8002 weight 0" in text
    assert f"stats socket {tmp_path / 's.sock'} mode 600 level admin" in text
    assert "retry-on conn-failure" in text and "option redispatch" in text


def test_trigger_form_is_generated_from_the_request_model() -> None:
    from slipway.airflow.stage_migration import migration_params

    params = migration_params()
    assert list(params) == list(MigrationRequest.model_fields)
    assert params["dry_run"].value is True and params["namespaces"].value == []
    timeout = params["available_timeout_seconds"].schema
    assert (timeout["minimum"], timeout["maximum"], timeout["type"]) == (10, 3600, "integer")
    assert params["namespace_selector"].schema["maxLength"] == 256
    assert all(p.description for p in params.values())


def test_front_door_extras_are_both_or_neither_and_carry_no_credentials(kubeconfigs: tuple[str, str]) -> None:
    a, b = kubeconfigs
    base = {"source_kubeconfig": a, "target_kubeconfig": b}
    assert parse_connection(base).front_door is None
    door = parse_connection(
        base | {"front_door_socket": "/run/haproxy.sock", "front_door_url": "http://lb:80/"}
    )
    assert door.front_door is not None and door.front_door.url == "http://lb:80/"
    cases = {
        "front_door_url": ({"front_door_socket": "/run/haproxy.sock"}, "required with front_door_socket"),
        "front_door_socket": (
            {"front_door_socket": "run.sock", "front_door_url": "http://lb/"},
            "absolute path",
        ),
        "front_door_url ": (
            {"front_door_socket": "/s", "front_door_url": "http://u:p@lb/"},
            "without credentials",
        ),
    }
    for field, (extra, reason) in cases.items():
        with pytest.raises(MigrationError) as err:
            parse_connection(base | extra)
        assert err.value.fields == [field.strip()] and reason in str(err.value), field


def test_copy_path_is_builtin_or_velero_and_velero_needs_a_bucket(kubeconfigs: tuple[str, str]) -> None:
    assert parse_migration_request({"namespaces": ["shop"]}).copy_path == "builtin"
    with pytest.raises(MigrationError) as err:
        parse_migration_request({"namespaces": ["shop"], "copy_path": "rsync"})
    assert err.value.fields == ["copy_path"] and "'builtin' or 'velero'" in str(err.value)
    velero = parse_migration_request({"namespaces": ["shop"], "copy_path": "velero"})
    refuse_unusable_copy_path(velero, object_store=True)
    refuse_unusable_copy_path(parse_migration_request({"namespaces": ["shop"]}), object_store=False)
    with pytest.raises(MigrationError) as err:
        refuse_unusable_copy_path(velero, object_store=False)
    assert err.value.fields == ["copy_path"] and "velero_bucket_url" in str(err.value)
    assert "Copy path" in str(MigrationRequest.model_json_schema()["properties"]["copy_path"])


def test_velero_bucket_in_the_connection_with_keys_as_login_and_password(
    kubeconfigs: tuple[str, str],
) -> None:
    a, b = kubeconfigs
    base = {"source_kubeconfig": a, "target_kubeconfig": b}
    store = {"velero_bucket_url": "http://s3.local:9000", "velero_bucket": "moves"}
    assert parse_connection(base).velero is None
    conn = parse_connection(base | store, login="AKIA", password="very-secret")
    assert conn.velero is not None and conn.velero.servers is None
    assert (conn.velero.store.bucket, conn.velero.store.secret_key) == ("moves", "very-secret")
    assert "very-secret" not in repr(conn)  # the keys are never in a repr, hence never in a log
    servers = {"source_velero_kubeconfig": a, "target_velero_kubeconfig": b}
    local = parse_connection(base | store | servers, login="AKIA", password="very-secret")
    assert local.velero is not None and local.velero.servers == (Path(a), Path(b))
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "velero_bucket_url": ({"velero_bucket": "moves"}, "required with velero_bucket"),
        "velero_bucket": (store | {"velero_bucket": "Moves_1"}, "is not a bucket name"),
        "velero_bucket_url ": (store | {"velero_bucket_url": "s3.local:9000"}, "must be http(s)://host"),
        "target_velero_kubeconfig": (store | {"source_velero_kubeconfig": a}, "both or neither"),
        "velero_prefix": (store | {"velero_prefix": "/abs"}, "relative folder"),
    }
    for field, (extra, reason) in cases.items():
        with pytest.raises(MigrationError) as err:
            parse_connection(base | extra, login="AKIA", password="very-secret")
        assert err.value.fields == [field.strip()] and reason in str(err.value), (field, str(err.value))
    with pytest.raises(MigrationError) as err:
        parse_connection(base | store, login="AKIA")
    assert err.value.fields == ["login"] and "(login) and secret key (password)" in str(err.value)
    assert "AKIA" not in str(err.value)


# --- the cut-over window -------------------------------------------------------------------------


def test_cutover_waits_for_its_window_and_bad_windows_are_refused() -> None:
    from datetime import UTC, datetime

    from slipway.migration.request import cutover_opens

    saturday_noon = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert cutover_opens([], saturday_noon) is None  # no window: at once
    assert cutover_opens(["Sat 10:00-14:00 UTC"], saturday_noon) is None  # open now
    assert cutover_opens(["Sun 01:00-05:00 Europe/Berlin"], saturday_noon) == datetime(
        2026, 12, 6, 0, 0, tzinfo=UTC
    )
    with pytest.raises(MigrationError) as err:
        parse_migration_request({"namespaces": ["shop"], "cutover_windows": ["Sat 01:00-05:00 Mars/Olympus"]})
    assert err.value.fields == ["cutover_windows"]
    assert "entry 0" in str(err.value) and "unknown timezone" in str(err.value)


def test_the_cutover_task_defers_until_the_window_opens() -> None:
    """The operator itself, as the DAG runs it: outside the window it defers on a DateTimeTrigger
    at the window's start; inside it returns at once."""
    from datetime import UTC, datetime, timedelta

    from airflow.sdk.exceptions import TaskDeferred

    from slipway.airflow.cutover_window import CutoverWindowOperator

    now = datetime.now(UTC)
    later = now + timedelta(hours=2)
    closed = f"daily {later:%H}:00+1h UTC"
    operator = CutoverWindowOperator(task_id="await_cutover_window")
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"params": {"namespaces": ["shop"], "cutover_windows": [closed]}})
    moment = deferred.value.trigger.moment
    assert moment == later.replace(minute=0, second=0, microsecond=0)
    assert deferred.value.method_name == "window_opened"
    opened = operator.execute(
        {"params": {"namespaces": ["shop"], "cutover_windows": ["daily 00:00+24h UTC"]}}
    )
    assert opened["opened_at"] is None
