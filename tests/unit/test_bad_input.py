"""Bad input as a suite: every way in is fed what a careless user or an attacker would type,
and each must be refused by the project's own refusal error, in one line naming the field,
before anything touches a cluster. Nothing here starts a cluster or opens a connection.

The ways in: the trigger form and ``conf`` (``conf_to_request`` + ``parse_request``, as the
first task of every upgrade DAG runs them), the GitOps desired state, the ``slipway_platform``
connection's extras, maintenance windows and blackouts (the timetable's input), health
checks, and the ``slipway-local`` command line. A case that raises anything else (TypeError,
OverflowError, LookupError, ...) fails, as does one that is accepted.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from slipway.airflow.params import (
    WORKERS_ONLY_DAG,
    approval_never_problem,
    conf_to_request,
    dag_request_problems,
    known_versions,
)
from slipway.airflow.timetable import MaintenanceWindowTimetable
from slipway.gitops import DESIRED_STATE, GitOpsError, desired_conf, validate_desired
from slipway.localcluster import cli
from slipway.localcluster.config import ConfigError
from slipway.migration import strategy as migration_strategy
from slipway.migration.assess import assess as migration_assess
from slipway.migration.errors import MigrationError
from slipway.migration.request import parse_migration_request
from slipway.models import RequestError, parse_request
from slipway.platform import PlatformError, parse_settings
from slipway.windows import WindowError, parse_blackouts, parse_windows

TARGET = known_versions()[0]
# The project's refusal errors, one per way in; all are ValueErrors with field-named lines.
REFUSALS = (RequestError, GitOpsError, PlatformError, WindowError, cli.CliError, ConfigError, MigrationError)


def _trigger(conf: dict[str, Any], *, local_platform: bool | None = None) -> Callable[[], object]:
    """What ``validate_request`` does with the form and ``conf`` before it reads the cluster."""
    return lambda: parse_request(
        conf_to_request({"target_version": TARGET} | conf), local_platform=local_platform
    )


def _check(check: dict[str, Any], *, local_platform: bool | None = None) -> Callable[[], object]:
    return _trigger({"health_checks": [check]}, local_platform=local_platform)


def _http(url: str, *, local_platform: bool | None = None) -> Callable[[], object]:
    return _check({"kind": "http", "url": url}, local_platform=local_platform)


def _gitops(data: Any) -> Callable[[], object]:
    documents = [{"kind": "ConfigMap", "metadata": {"name": DESIRED_STATE}, "data": data}]
    return lambda: validate_desired(desired_conf(documents, "staging"), "staging")


def _migration(conf: dict[str, Any]) -> Callable[[], object]:
    """What ``validate_migration`` does with the migration DAG's form."""
    return lambda: parse_migration_request({"namespaces": ["shop"]} | conf)


def _migration_strategy(kind: str, chosen: str, *, claims: bool) -> Callable[[], object]:
    """The form's strategy against a workload the assessment found (``assess`` does this before
    any copy), on plain data: one workload of ``kind``, with or without a claim."""

    def judge() -> object:
        pod: dict[str, Any] = {"containers": [{"name": "c", "image": "i"}]}
        if claims:
            pod["volumes"] = [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]
        workload = {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": "w", "namespace": "shop"},
            "spec": {"template": {"metadata": {"labels": {"app": "w"}}, "spec": pod}},
        }
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
        result = migration_assess([namespace], [workload], {"v1", "apps/v1"})
        stateful = {f"{kind}/shop/w": ["PersistentVolumeClaim/shop/data"]} if claims else {}
        return migration_strategy.apply_to(result, stateful, {kind: chosen})

    return judge


def _extras(extra: Any) -> Callable[[], object]:
    return lambda: parse_settings(extra)


def _timetable(windows: Any, blackouts: Any = None) -> Callable[[], object]:
    return lambda: MaintenanceWindowTimetable(windows, blackouts)


def _cli(*argv: str) -> Callable[[], object]:
    def run() -> None:
        args: argparse.Namespace = cli.parser().parse_args(list(argv))
        cli.validate_args(args)

    return run


HUGE = 10**18
CASES: list[tuple[str, Callable[[], object], str]] = [
    # --- the trigger form and conf -------------------------------------------------------
    ("conf key typo", _trigger({"taget_version": "1.37.2"}), "conf.taget_version"),
    ("conf key unknown", _trigger({"soak_secs": 30}), "conf.soak_secs"),
    ("target newer than known", _trigger({"target_version": "1.99.0"}), "target_version"),
    ("target a word", _trigger({"target_version": "latest"}), "target_version"),
    ("target empty", _trigger({"target_version": ""}), "target_version"),
    ("target a float", _trigger({"target_version": 1.37}), "target_version"),
    ("target too long", _trigger({"target_version": "1.37.2" + "0" * 100}), "target_version"),
    ("strategy unknown", _trigger({"strategy": "rolling"}), "strategy"),
    ("batch policy unknown", _trigger({"batch_policy": "random"}), "batch_policy"),
    ("batch size zero", _trigger({"batch_size": 0}), "batch_size"),
    ("batch size huge", _trigger({"batch_size": HUGE}), "batch_size"),
    ("batch size a word", _trigger({"batch_size": "three"}), "batch_size"),
    ("max unavailable zero", _trigger({"max_unavailable_percent": 0}), "max_unavailable_percent"),
    ("max unavailable over 100", _trigger({"max_unavailable_percent": 150}), "max_unavailable_percent"),
    ("max unavailable NaN", _trigger({"max_unavailable_percent": float("nan")}), "max_unavailable_percent"),
    ("max surge negative", _trigger({"max_surge_percent": -5}), "max_surge_percent"),
    ("surge without room", _trigger({"strategy": "surge"}), "max_surge_percent"),
    ("grace period huge", _trigger({"drain_grace_period_seconds": HUGE}), "drain_grace_period_seconds"),
    ("grace period below -1", _trigger({"drain_grace_period_seconds": -2}), "drain_grace_period_seconds"),
    ("drain timeout below grace", _trigger({"drain_timeout_seconds": 60}), "drain_timeout_seconds"),
    ("drain timeout huge", _trigger({"drain_timeout_seconds": HUGE}), "drain_timeout_seconds"),
    ("soak huge", _trigger({"soak_seconds": HUGE}), "soak_seconds"),
    ("soak zero", _trigger({"soak_seconds": 0}), "soak_seconds"),
    ("soak infinite", _trigger({"soak_seconds": float("inf")}), "soak_seconds"),
    ("node ready timeout huge", _trigger({"node_ready_timeout_seconds": HUGE}), "node_ready_timeout_seconds"),
    ("latency tolerance 1x", _trigger({"latency_tolerance": 1.0}), "latency_tolerance"),
    ("latency tolerance huge", _trigger({"latency_tolerance": 1e300}), "latency_tolerance"),
    ("blocked drain policy unknown", _trigger({"blocked_drain_policy": "ignore"}), "blocked_drain_policy"),
    ("approval unknown", _trigger({"approval": "sometimes"}), "approval"),
    ("dry run a word", _trigger({"dry_run": "maybe"}), "dry_run"),
    ("window start naive", _trigger({"window_start": "2026-01-03T01:00:00"}), "window_start"),
    ("window start a word", _trigger({"window_start": "tomorrow"}), "window_start"),
    ("window end at year 9999", _trigger({"window_end": "9999-12-31T23:59:59Z"}), "window_end"),
    (
        "window end before start",
        _trigger({"window_start": "2026-01-03T05:00:00Z", "window_end": "2026-01-03T01:00:00Z"}),
        "window_end",
    ),
    (
        "window longer than 7 days",
        _trigger({"window_start": "2026-01-03T01:00:00Z", "window_end": "2026-03-03T01:00:00Z"}),
        "window_end",
    ),
    ("critical label not key=value", _trigger({"critical_labels": ["app"]}), "critical_labels[0]"),
    (
        "critical labels too many",
        _trigger({"critical_labels": [f"a=b{i}" for i in range(101)]}),
        "critical_labels",
    ),
    ("pool listed twice", _trigger({"node_pools": ["general", "general"]}), "node_pools"),
    ("pool a path", _trigger({"node_pools": ["../etc"]}), "node_pools[0]"),
    ("pool empty", _trigger({"node_pools": [""]}), "node_pools[0]"),
    ("conf not an object", lambda: parse_request(["target_version"]), "conf"),  # type: ignore[arg-type]
    ("health checks not a list", _trigger({"health_checks": "http://shop/healthz"}), "health_checks"),
    ("health check kind unknown", _check({"kind": "tcp", "url": "http://shop:80/"}), "health_checks[0].kind"),
    (
        "health check extra key",
        _check({"kind": "http", "url": "http://shop/", "headers": {"Authorization": "x"}}),
        "health_checks[0].headers",
    ),
    # --- health checks: the host allowlist and their bounds -------------------------------
    ("metadata IPv4", _http("http://169.254.169.254/latest/meta-data/"), "health_checks[0].url"),
    ("metadata IPv6", _http("http://[fd00:ec2::254]/latest/"), "health_checks[0].url"),
    ("metadata as mapped IPv6", _http("http://[::ffff:169.254.169.254]/"), "health_checks[0].url"),
    (
        "metadata by name",
        _http("http://metadata.google.internal/computeMetadata/v1/"),
        "health_checks[0].url",
    ),
    ("link-local IPv4", _http("http://169.254.10.1:8080/"), "health_checks[0].url"),
    ("link-local IPv6", _http("http://[fe80::1]/"), "health_checks[0].url"),
    ("unspecified IPv4", _http("http://0.0.0.0:8080/healthz"), "health_checks[0].url"),
    ("unspecified IPv6", _http("http://[::]/"), "health_checks[0].url"),
    ("address as one number", _http("http://2852039166/"), "health_checks[0].url"),
    ("address in hex", _http("http://0xa9fea9fe/"), "health_checks[0].url"),
    ("credentials in URL", _http("https://admin:hunter2@shop.example/healthz"), "health_checks[0].url"),
    ("credentials with another scheme", _http("ftp://admin:hunter2@shop.example/"), "health_checks[0].url"),
    ("credentials in a malformed URL", _http("http://admin:hunter2@[::1/"), "health_checks[0].url"),
    ("token in the query", _http("https://shop.example/healthz?token=hunter2"), "health_checks[0].url"),
    (
        "webhook key in the path",
        _http("https://hooks.slack.com/services/T0/B0/hunter2"),
        "health_checks[0].url",
    ),
    ("scheme ftp", _http("ftp://shop.example/health"), "health_checks[0].url"),
    ("scheme file", _http("file:///etc/passwd"), "health_checks[0].url"),
    (
        "loopback off the local platform",
        _http("http://127.0.0.1:8080/", local_platform=False),
        "health_checks[0].url",
    ),
    (
        "localhost off the local platform",
        _http("http://localhost/", local_platform=False),
        "health_checks[0].url",
    ),
    (
        "IPv6 loopback off the local platform",
        _http("http://[::1]/", local_platform=False),
        "health_checks[0].url",
    ),
    ("malformed IPv6 host", _http("http://[::1/"), "health_checks[0].url"),
    ("port out of range", _http("http://shop.example:99999/"), "health_checks[0].url"),
    ("whitespace in URL", _http("http://shop example/healthz"), "health_checks[0].url"),
    ("URL too long", _http("http://shop.example/" + "a" * 3000), "health_checks[0].url"),
    (
        "more than 20 checks",
        _trigger({"health_checks": [{"kind": "http", "url": f"http://web-{i}.shop/"} for i in range(21)]}),
        "health_checks",
    ),
    (
        "prometheus bounds crossed",
        _check(
            {"kind": "prometheus", "url": "http://prom:9090", "query": "up", "min_value": 2, "max_value": 1}
        ),
        "health_checks[0]",
    ),
    (
        "prometheus bound NaN",
        _check({"kind": "prometheus", "url": "http://prom:9090", "query": "up", "max_value": float("nan")}),
        "health_checks[0].max_value",
    ),
    (
        "prometheus query too long",
        _check({"kind": "prometheus", "url": "http://prom:9090", "query": "x" * 5000, "max_value": 1}),
        "health_checks[0].query",
    ),
    (
        "deployment namespace a path",
        _check({"kind": "deployment", "namespace": "../x", "name": "web"}),
        "health_checks[0]",
    ),
    # --- the GitOps desired state ---------------------------------------------------------
    ("gitops data not a mapping", _gitops(["target_version=1.37.2"]), "data"),
    (
        "gitops health checks not JSON",
        _gitops({"target_version": TARGET, "health_checks": "[{kind: http"}),
        "health_checks",
    ),
    ("gitops soak a word", _gitops({"target_version": TARGET, "soak_seconds": "forever"}), "soak_seconds"),
    ("gitops rollback declared", _gitops({"target_version": TARGET, "rollback": "true"}), "rollback"),
    ("gitops key typo", _gitops({"target_version": TARGET, "taget_version": TARGET}), "taget_version"),
    ("gitops value not a string", _gitops({"target_version": TARGET, "node_pools": ["a"]}), "node_pools"),
    ("gitops target missing", _gitops({"soak_seconds": "30"}), "target_version"),
    # --- the slipway_platform connection's extras -----------------------------------------
    ("extras not an object", _extras(["local"]), "extras"),
    ("extras platform unknown", _extras({"platform": "gke"}), "platform"),
    (
        "kubeadm image by tag",
        _extras({"platform": "kubeadm", "kubeadm_image": "kubeadm:latest"}),
        "kubeadm_image",
    ),
    ("kubeadm image missing", _extras({"platform": "kubeadm"}), "kubeadm_image"),
    ("extras key typo", _extras({"clustr_name": "prod"}), "clustr_name"),
    ("extras cluster name a path", _extras({"cluster_name": "../../etc"}), "cluster_name"),
    (
        "extras etcd endpoint without scheme",
        _extras({"etcd_endpoints": ["etcd-0:2379"]}),
        "etcd_endpoints[0]",
    ),
    (
        "extras etcd endpoint with credentials",
        _extras({"etcd_endpoints": ["https://root:pw@etcd-0:2379"]}),
        "etcd_endpoints[0]",
    ),
    ("extras etcd endpoints a string", _extras({"etcd_endpoints": "https://etcd-0:2379"}), "etcd_endpoints"),
    ("extras kubeconfig relative", _extras({"admin_kubeconfig": "admin.kubeconfig"}), "admin_kubeconfig"),
    (
        "extras scheduled DAG unknown",
        _extras({"scheduled_dags": ["k8s_cluster_upgrade"]}),
        "scheduled_dags.0",
    ),
    ("extras scheduled DAGs a string", _extras({"scheduled_dags": "k8s_worker_upgrade"}), "scheduled_dags"),
    # --- maintenance windows and blackouts (the timetable's input) ------------------------
    ("window hour 25", _timetable(["Sat 25:00-05:00 UTC"]), "windows[0]"),
    ("window duration overflows", _timetable(["Sat 01:00+99999999999999d UTC"]), "windows[0]"),
    ("window longer than a week", _timetable(["Sat 01:00+8d UTC"]), "windows[0]"),
    ("window day unknown", _timetable(["Someday 01:00-05:00 UTC"]), "windows[0]"),
    ("window zone unknown", _timetable(["Sat 01:00-05:00 Mars/Olympus_Mons"]), "windows[0]"),
    ("window zone a path", _timetable(["Sat 01:00-05:00 ../../etc/passwd"]), "windows[0]"),
    ("window entry not a string", _timetable([42]), "windows[0]"),
    ("window entry too long", _timetable(["Sat 01:00-05:00 UTC" + " " * 300]), "windows[0]"),
    ("windows one string, not a list", _timetable("Sat 01:00-05:00 UTC"), "windows"),
    ("windows empty", _timetable([]), "windows"),
    ("blackout over a year", _timetable(["Sat 01:00-05:00 UTC"], ["2026-01-01..2027-06-01"]), "blackouts[0]"),
    ("blackout at year 9999", lambda: parse_blackouts(["9999-12-31"]), "blackouts[0]"),
    ("blackout February 30", lambda: parse_blackouts(["2026-02-30"]), "blackouts[0]"),
    ("blackout ends before it starts", lambda: parse_blackouts(["2026-12-24..2026-12-01"]), "blackouts[0]"),
    (
        "blackouts too many",
        lambda: parse_blackouts([f"2026-01-{d:02d}" for d in range(1, 29)] * 4),
        "blackouts",
    ),
    ("windows too many", lambda: parse_windows(["Sat 01:00-05:00 UTC"] * 51), "windows"),
    # --- the slipway-local command line ---------------------------------------------------
    ("cli name root", _cli("--name", "/", "down", "--purge"), "--name"),
    ("cli name empty", _cli("--name", "", "down", "--purge"), "--name"),
    ("cli name parent folders", _cli("--name", "../..", "down", "--purge"), "--name"),
    ("cli name dot-dot", _cli("--name", "..", "status"), "--name"),
    ("cli name with slash", _cli("--name", "a/b", "status"), "--name"),
    ("cli name uppercase", _cli("--name", "Prod", "status"), "--name"),
    ("cli name too long", _cli("--name", "a" * 40, "status"), "--name"),
    ("cli name with leading dash", _cli("--name=-x", "status"), "--name"),
    ("cli state dir blank", _cli("--state-dir", " ", "status"), "--state-dir"),
    ("cli nodes negative", _cli("up", "--nodes", "-1"), "--nodes"),
    ("cli nodes huge", _cli("up", "--nodes", "1000000"), "--nodes"),
    ("cli base port privileged", _cli("up", "--base-port", "80"), "--base-port"),
    ("cli kubernetes version unknown", _cli("up", "--kubernetes-version", "1.99.0"), "--kubernetes-version"),
    ("cli etcd version unknown", _cli("up", "--etcd-version", "3.4.0"), "--etcd-version"),
    ("cli kubelet version a word", _cli("up", "--kubelet-version", "latest"), "--kubelet-version"),
    ("cli restart version unknown", _cli("restart", "kube-apiserver-0", "--version", "9.9.9"), "--version"),
    ("cli restart etcd at a Kubernetes version", _cli("restart", "etcd-0", "--version", TARGET), "--version"),
    ("cli restart kwok at a version", _cli("restart", "kwok", "--version", TARGET), "--version"),
    ("cli restart unknown component", _cli("restart", "kube-proxy"), "component"),
    # --- the migration form's strategy per workload kind ----------------------------------
    ("migration strategy not an object", _migration({"strategy": "skip"}), "strategy"),
    ("migration strategy unknown kind", _migration({"strategy": {"CronJob": "skip"}}), "strategy.CronJob"),
    (
        "migration strategy unknown",
        _migration({"strategy": {"Deployment": "rolling"}}),
        "strategy.Deployment",
    ),
    ("migration strategy not a string", _migration({"strategy": {"Deployment": 1}}), "strategy.Deployment"),
    (
        "migration DaemonSet copied",
        _migration({"strategy": {"DaemonSet": "copy-only"}}),
        "strategy.DaemonSet",
    ),
    (
        "migration blue-green StatefulSet with claims",
        _migration_strategy("StatefulSet", "blue-green", claims=True),
        "strategy.StatefulSet",
    ),
    (
        "migration copy-only Deployment with claims",
        _migration_strategy("Deployment", "copy-only", claims=True),
        "strategy.Deployment",
    ),
    (
        "migration sync-then-cutover without claims",
        _migration_strategy("StatefulSet", "sync-then-cutover", claims=False),
        "strategy.StatefulSet",
    ),
    # --- what a DAG cannot do is refused, not ignored -------------------------------------
    (
        "worker-only dry run",
        lambda: _raise(
            dag_request_problems(WORKERS_ONLY_DAG, parse_request({"target_version": TARGET, "dry_run": True}))
        ),
        "dry_run",
    ),
    (
        "worker-only approval always",
        lambda: _raise(
            dag_request_problems(
                WORKERS_ONLY_DAG, parse_request({"target_version": TARGET, "approval": "always"})
            )
        ),
        "approval",
    ),
]


# Where the field alone does not show that the right rule refused it, the reason must too.
REASONS = {
    "metadata IPv4": "cloud metadata",
    "metadata IPv6": "cloud metadata",
    "metadata as mapped IPv6": "cloud metadata",
    "metadata by name": "cloud metadata",
    "link-local IPv4": "link-local",
    "link-local IPv6": "link-local",
    "unspecified IPv4": "unspecified",
    "unspecified IPv6": "unspecified",
    "address as one number": "is a number",
    "address in hex": "is a number",
    "credentials in URL": "credentials",
    "credentials with another scheme": "credentials",
    "credentials in a malformed URL": "credentials",
    "scheme ftp": "scheme 'ftp'",
    "scheme file": "scheme 'file'",
    "loopback off the local platform": "loopback, allowed only on the local platform",
    "localhost off the local platform": "loopback, allowed only on the local platform",
    "IPv6 loopback off the local platform": "loopback, allowed only on the local platform",
    "more than 20 checks": "at most 20",
    "window end at year 9999": "outside the years",
    "window longer than 7 days": "longer than 7 days",
    "blackout over a year": "longer than 366 days",
    "cli name root": "is not a cluster name",
    "cli name parent folders": "is not a cluster name",
    "gitops rollback declared": "never declared in git",
    "conf key typo": "did you mean target_version?",
    "migration strategy unknown kind": "not a workload kind",
    "migration DaemonSet copied": "only skip",
    "migration blue-green StatefulSet with claims": "blue-green cannot move StatefulSet/shop/w",
    "migration copy-only Deployment with claims": "copy-only cannot move Deployment/shop/w",
    "migration sync-then-cutover without claims": "no PersistentVolumeClaim",
}


def _raise(problems: list[tuple[str, str]]) -> None:
    """As ``validate_request`` does with a DAG's own problems."""
    if problems:
        raise RequestError(problems)


def _lines_naming(message: str, field: str) -> list[str]:
    pattern = re.compile(rf"(?:^|\s){re.escape(field)}: \S")
    return [line for line in message.splitlines() if pattern.search(line)]


@pytest.mark.parametrize(("case", "feed", "field"), CASES, ids=[case for case, _, _ in CASES])
def test_bad_input_is_refused_in_one_line_naming_the_field(
    case: str, feed: Callable[[], object], field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI reads its state root and binary cache: point both at empty folders.
    monkeypatch.setenv("SLIPWAY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SLIPWAY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SLIPWAY_PREBUILT_BIN_DIR", raising=False)
    with pytest.raises(REFUSALS) as caught:
        feed()
    named = _lines_naming(str(caught.value), field)
    assert len(named) == 1, f"{case}: expected one line naming {field!r} in:\n{caught.value}"
    assert REASONS.get(case, "") in named[0]
    assert "hunter2" not in str(caught.value)  # a refused URL's password is not echoed


def test_the_suite_covers_every_way_in_with_at_least_60_inputs() -> None:
    assert len(CASES) >= 60
    assert len({case for case, _, _ in CASES}) == len(CASES)  # distinct
    assert set(REASONS) <= {case for case, _, _ in CASES}


def test_restart_refuses_a_kit_version_that_is_not_built_before_stopping_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLIPWAY_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("SLIPWAY_PREBUILT_BIN_DIR", raising=False)
    args = cli.parser().parse_args(
        ["--state-dir", str(tmp_path), "restart", "kube-apiserver-0", "--version", TARGET]
    )
    with pytest.raises(cli.CliError, match=r"^--version: kube-apiserver .* is not built yet"):
        cli.validate_args(args)
    # main() refuses it the same way, with exit code 1 and nothing started or stopped.
    assert cli.main(["--state-dir", str(tmp_path), "restart", "kube-apiserver-0", "--version", TARGET]) == 1


def test_purge_removes_only_a_folder_that_holds_a_local_cluster(tmp_path: Path) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert cli.main(["--state-dir", str(tmp_path), "--name", "home", "down", "--purge"]) == 1
    assert (precious / "notes.txt").read_text() == "keep me"


def test_approval_never_is_refused_when_the_risk_needs_a_human() -> None:
    critical = {"items": [{"name": "downtime", "level": "critical"}], "minors_crossed": 1}
    problem = approval_never_problem(critical, local_platform=False)
    assert problem is not None and problem.startswith("approval=never refused: the risk needs a human")
    assert "downtime risk is critical" in problem
    two_minors = {"items": [{"name": "compatibility", "level": "medium"}], "minors_crossed": 2}
    assert "crosses 2 minor versions" in str(approval_never_problem(two_minors, local_platform=False))
    # A low-risk run may skip the human, and the local sandbox may always.
    assert (
        approval_never_problem(
            {"items": [{"name": "x", "level": "medium"}], "minors_crossed": 1}, local_platform=False
        )
        is None
    )
    assert approval_never_problem(critical, local_platform=True) is None


def test_a_scheduled_run_changes_only_a_cluster_enabled_for_its_dag() -> None:
    from slipway.platform import refuse_unless_enabled_for_schedule

    nobody = parse_settings({"cluster_name": "prod-eu"})
    enabled = parse_settings({"cluster_name": "prod-eu", "scheduled_dags": ["k8s_worker_upgrade"]})
    refuse_unless_enabled_for_schedule(nobody, "k8s_worker_upgrade", "manual")  # a person chose it
    refuse_unless_enabled_for_schedule(enabled, "k8s_worker_upgrade", "scheduled")
    with pytest.raises(PlatformError) as refused:
        refuse_unless_enabled_for_schedule(enabled, "k8s_gitops_sync", "scheduled")
    text = str(refused.value)
    assert text.startswith("slipway_platform.scheduled_dags: cluster 'prod-eu' is not enabled")
    assert "k8s_gitops_sync" in text and "\n" not in text
