"""Unit tests for the request contract, quantity parsing and result models."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from typing import Any

import pytest

from slipway.models import (
    Batch,
    CheckResult,
    ClusterInventory,
    NodeInfo,
    RequestError,
    Resources,
    Taint,
    UpgradeRequest,
    WorkerPlan,
    parse_cpu,
    parse_memory,
    parse_request,
    split_label,
)
from slipway.versions import Version, newest_release

NEWEST = str(newest_release())


def refusal(conf: dict[str, Any]) -> RequestError:
    """Parse ``conf`` expecting a refusal, and hand back the error."""
    with pytest.raises(RequestError) as caught:
        parse_request(conf)
    return caught.value


def reason_for(error: RequestError, field: str) -> str:
    """The reason given for ``field``; fails the test when the field is not named."""
    reasons = dict(error.problems)
    assert field in reasons, f"{field} not named in:\n{error}"
    # The message Airflow shows must carry the same line.
    assert f"  {field}: {reasons[field]}" in str(error)
    return reasons[field]


class TestParseRequest:
    def test_minimal_request_gets_seed_defaults(self) -> None:
        request = parse_request({"target_version": f"v{NEWEST}"})
        assert request.target_version == NEWEST
        assert request.target == newest_release()
        assert request.strategy == "in-place"
        assert request.max_unavailable_percent == 10
        assert request.max_surge_percent == 0
        assert (request.drain_grace_period_seconds, request.drain_timeout_seconds) == (300, 600)
        assert request.delete_emptydir_data is False
        assert request.soak_seconds == 30

    def test_full_request_round_trips_through_json(self) -> None:
        conf = {
            "target_version": NEWEST,
            "strategy": "surge",
            "batch_policy": "adaptive",
            "batch_size": 3,
            "max_surge_percent": 20,
            "window_start": "2026-01-03T01:00:00Z",
            "window_end": "2026-01-03T05:00:00+00:00",
            "critical_labels": ["tier=payments", "example.com/critical=true", "team="],
            "health_checks": [
                {"kind": "http", "url": "https://shop.example.com/healthz"},
                {"kind": "deployment", "namespace": "payments", "name": "api"},
                {"kind": "prometheus", "url": "http://prom:9090", "query": "sum(up)", "min_value": 3},
            ],
            "node_pools": ["canary", "general"],
        }
        request = parse_request(conf)
        dumped = request.model_dump(mode="json")
        assert parse_request(dumped) == request
        assert request.critical_label_pairs() == [
            ("tier", "payments"),
            ("example.com/critical", "true"),
            ("team", ""),
        ]

    def test_malformed_version_names_field(self) -> None:
        assert "malformed version" in reason_for(refusal({"target_version": "1.37"}), "target_version")

    def test_newer_than_newest_release_refused(self) -> None:
        newest = newest_release()
        beyond = f"{newest.major}.{newest.minor + 1}.0"
        reason = reason_for(refusal({"target_version": beyond}), "target_version")
        assert "newer than the newest release" in reason and NEWEST in reason

    def test_unknown_patch_refused_with_newest_patch_hint(self) -> None:
        reason = reason_for(refusal({"target_version": "1.30.99"}), "target_version")
        assert "not a known Kubernetes release" in reason and "1.30.14" in reason

    def test_missing_target_version(self) -> None:
        assert "required" in reason_for(refusal({}), "target_version")

    def test_unknown_strategy_lists_allowed(self) -> None:
        reason = reason_for(refusal({"target_version": NEWEST, "strategy": "rolling"}), "strategy")
        assert "'rolling'" in reason
        for allowed in ("in-place", "surge", "blue-green"):
            assert allowed in reason

    @pytest.mark.parametrize("percent", [0, -5, 100.5, 150])
    def test_max_unavailable_out_of_range(self, percent: float) -> None:
        error = refusal({"target_version": NEWEST, "max_unavailable_percent": percent})
        assert str(percent) in reason_for(error, "max_unavailable_percent")

    def test_max_unavailable_of_100_allowed(self) -> None:
        assert parse_request({"target_version": NEWEST, "max_unavailable_percent": 100})

    def test_surge_strategy_needs_surge_room(self) -> None:
        error = refusal({"target_version": NEWEST, "strategy": "surge"})
        assert "surge" in reason_for(error, "max_surge_percent")

    def test_batch_size_zero_refused(self) -> None:
        reason_for(refusal({"target_version": NEWEST, "batch_size": 0}), "batch_size")

    def test_drain_timeout_shorter_than_grace_refused(self) -> None:
        error = refusal({"target_version": NEWEST, "drain_grace_period_seconds": 700})
        assert "700" in reason_for(error, "drain_timeout_seconds")

    @pytest.mark.parametrize("end", ["2026-01-03T01:00:00Z", "2026-01-02T23:00:00Z"])
    def test_window_ending_before_start_refused(self, end: str) -> None:
        conf = {"target_version": NEWEST, "window_start": "2026-01-03T01:00:00Z", "window_end": end}
        assert "not after window_start" in reason_for(refusal(conf), "window_end")

    def test_naive_window_time_refused(self) -> None:
        error = refusal({"target_version": NEWEST, "window_start": "2026-01-03T01:00:00"})
        assert "timezone" in reason_for(error, "window_start")

    def test_typo_field_named_with_suggestion(self) -> None:
        error = refusal({"target_version": NEWEST, "stratgy": "surge"})
        assert reason_for(error, "stratgy") == "unknown field (did you mean strategy?)"

    def test_bad_label_items_named_by_position(self) -> None:
        error = refusal({"target_version": NEWEST, "critical_labels": ["tier=web", "app", "a=b c"]})
        assert "key=value" in reason_for(error, "critical_labels[1]")
        assert "label value" in reason_for(error, "critical_labels[2]")
        assert "critical_labels[0]" not in error.fields

    @pytest.mark.parametrize(
        ("check", "words"),
        [
            ({"kind": "http"}, "needs url"),
            ({"kind": "http", "url": "http://x", "name": "api"}, "takes url, not namespace"),
            ({"kind": "http", "url": "http://x", "query": "up"}, "only url"),
            ({"kind": "deployment", "name": "api"}, "namespace"),
            ({"kind": "deployment", "namespace": "shop", "name": "Bad_Name"}, "deployment name"),
            ({"kind": "deployment", "namespace": "shop", "name": "api", "url": "http://x"}, "not url"),
            ({"kind": "prometheus", "query": "up", "max_value": 1}, "needs url"),
            ({"kind": "prometheus", "url": "http://prom:9090", "max_value": 1}, "needs a query"),
            ({"kind": "prometheus", "url": "http://prom:9090", "query": "up"}, "min_value, max_value"),
            (
                {"kind": "prometheus", "url": "http://p", "query": "up", "min_value": 2, "max_value": 1},
                "above",
            ),
        ],
    )
    def test_bad_health_checks(self, check: dict[str, str], words: str) -> None:
        error = refusal({"target_version": NEWEST, "health_checks": [check]})
        assert words in reason_for(error, "health_checks[0]")

    @pytest.mark.parametrize(
        ("url", "words"),
        [
            ("ftp://x", "scheme 'ftp' is not allowed"),
            ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
            ("http://[fd00:ec2::254]/", "cloud metadata"),
            ("http://169.254.1.1/", "link-local"),
            ("http://0.0.0.0:8080/", "unspecified"),
            ("http://2852039166/", "is a number"),
            ("https://user:hunter2@shop.example/healthz", "credentials"),
            ("http://metadata.google.internal/", "cloud metadata"),
        ],
    )
    def test_health_check_urls_outside_the_allowlist_are_refused(self, url: str, words: str) -> None:
        error = refusal({"target_version": NEWEST, "health_checks": [{"kind": "http", "url": url}]})
        reason = reason_for(error, "health_checks[0].url")
        assert words in reason
        assert "hunter2" not in str(error)  # a refused URL's credentials are not echoed

    def test_loopback_is_allowed_only_on_the_local_platform(self) -> None:
        conf = {
            "target_version": NEWEST,
            "health_checks": [{"kind": "http", "url": "http://127.0.0.1:8080/"}],
        }
        assert parse_request(conf, local_platform=True).health_checks[0].url == "http://127.0.0.1:8080/"
        with pytest.raises(RequestError) as caught:
            parse_request(conf, local_platform=False)
        assert "loopback, allowed only on the local platform" in reason_for(
            caught.value, "health_checks[0].url"
        )

    def test_private_in_cluster_addresses_are_allowed(self) -> None:
        urls = [
            "http://10.0.0.7:8080/healthz",
            "http://web.shop.svc.cluster.local/healthz",
            "http://[fd12::1]/",
        ]
        conf = {"target_version": NEWEST, "health_checks": [{"kind": "http", "url": u} for u in urls]}
        assert [c.url for c in parse_request(conf, local_platform=False).health_checks] == urls

    def test_more_than_twenty_health_checks_are_refused(self) -> None:
        checks = [{"kind": "http", "url": f"http://web-{i}.shop/"} for i in range(21)]
        assert "at most 20" in reason_for(
            refusal({"target_version": NEWEST, "health_checks": checks}), "health_checks"
        )

    def test_duplicate_pools_refused(self) -> None:
        error = refusal({"target_version": NEWEST, "node_pools": ["a", "b", "a"]})
        assert "a" in reason_for(error, "node_pools")

    def test_every_bad_field_reported_at_once(self) -> None:
        error = refusal({"target_version": "x", "strategy": "y", "soak_seconds": 0})
        assert error.fields == ["target_version", "strategy", "soak_seconds"]
        assert str(error).startswith("upgrade request refused (3 problems):")

    def test_error_survives_pickling(self) -> None:
        error = refusal({"target_version": "x"})
        copy = pickle.loads(pickle.dumps(error))
        assert (copy.problems, str(copy)) == (error.problems, str(error))

    def test_conf_that_is_not_a_mapping(self) -> None:
        with pytest.raises(RequestError) as caught:
            parse_request(["target_version"])  # type: ignore[arg-type]
        assert caught.value.fields == ["conf"]


class TestValidateAgainst:
    CLUSTER = Version.parse("1.36.3")

    def test_upgrade_and_same_version_pass(self) -> None:
        parse_request({"target_version": "1.37.2", "batch_size": 5}).validate_against(self.CLUSTER, 5)
        parse_request({"target_version": "1.36.3"}).validate_against(self.CLUSTER, 1)

    @pytest.mark.parametrize("target", ["1.35.4", "1.36.2"])
    def test_target_older_than_cluster_refused_without_rollback(self, target: str) -> None:
        with pytest.raises(RequestError) as caught:
            parse_request({"target_version": target}).validate_against(self.CLUSTER, 3)
        reason = reason_for(caught.value, "target_version")
        assert "older than the cluster (1.36.3)" in reason and "rollback" in reason

    def test_downgrade_allowed_with_rollback(self) -> None:
        parse_request({"target_version": "1.35.4", "rollback": True}).validate_against(self.CLUSTER, 3)

    def test_batch_above_node_count_refused(self) -> None:
        with pytest.raises(RequestError) as caught:
            parse_request({"target_version": "1.37.2", "batch_size": 4}).validate_against(self.CLUSTER, 3)
        assert "3 worker nodes" in reason_for(caught.value, "batch_size")


class TestQuantities:
    @pytest.mark.parametrize(
        ("text", "millis"),
        [
            ("250m", 250),
            ("2", 2000),
            ("0.5", 500),
            ("1.5", 1500),
            ("100n", 1),
            ("1e3", 1_000_000),
            ("1k", 1_000_000),
        ],
    )
    def test_cpu(self, text: str, millis: int) -> None:
        assert parse_cpu(text) == millis

    @pytest.mark.parametrize(
        ("text", "size"),
        [
            ("128974848", 128974848),
            ("1Ki", 1024),
            ("129M", 129_000_000),
            ("123Mi", 123 * 2**20),
            ("1Gi", 2**30),
            ("1.5Gi", 3 * 2**29),
            ("1Ti", 2**40),
            ("1Pi", 2**50),
            ("1Ei", 2**60),
            ("1k", 1000),
            ("1G", 10**9),
            ("1T", 10**12),
            ("1P", 10**15),
            ("1E", 10**18),
            ("129e6", 129_000_000),
            ("1E3", 1000),
            ("500m", 1),
        ],
    )
    def test_memory(self, text: str, size: int) -> None:
        assert parse_memory(text) == size

    @pytest.mark.parametrize("text", ["", "Gi", "1GB", "1 Gi", "1.2.3", "one", "1e", "1e999999999"])
    def test_malformed_quantity_names_text(self, text: str) -> None:
        with pytest.raises(ValueError, match="quantity"):
            parse_memory(text)


def test_split_label_rejects_bad_prefix() -> None:
    with pytest.raises(ValueError, match="prefix"):
        split_label("Not_DNS/app=x")
    assert split_label("k8s.io/role=") == ("k8s.io/role", "")


class TestResultModels:
    def test_check_result_severity_must_match_outcome(self) -> None:
        with pytest.raises(ValueError, match="passed check cannot have severity blocker"):
            CheckResult(name="capacity", severity="blocker", passed=True, summary="")
        with pytest.raises(ValueError, match="failed check cannot have severity ok"):
            CheckResult(name="capacity", severity="ok", passed=False, summary="")

    def test_inventory_is_json_and_knows_its_oldest_apiserver(self) -> None:
        worker = NodeInfo(
            name="w-1",
            pool="general",
            kubelet_version="v1.36.3",
            ready=True,
            allocatable=Resources(cpu_millis=4000, memory_bytes=2**33, pods=110),
            labels={"tier": "web"},
            taints=[Taint(key="dedicated", value="web", effect="NoSchedule")],
        )
        plane = worker.model_copy(update={"name": "cp-1", "control_plane": True})
        inventory = ClusterInventory(
            apiserver_versions={"cp-1": "1.37.2", "cp-2": "1.36.3"},
            etcd_versions={"cp-1": "3.6.16"},
            nodes=[plane, worker],
            collected_at=datetime(2026, 1, 3, tzinfo=UTC),
        )
        assert inventory.apiserver_version == Version.parse("1.36.3")
        assert inventory.workers == [worker]
        assert worker.kubelet == Version.parse("1.36.3")
        assert ClusterInventory.model_validate(inventory.model_dump(mode="json")) == inventory

    def test_plan_counts_nodes_and_refuses_empty_batches(self) -> None:
        with pytest.raises(ValueError, match="at least 1 item"):
            Batch(index=0, pool="a", nodes=[])
        assert WorkerPlan(policy="fixed").node_count == 0

    def test_requests_are_immutable(self) -> None:
        request = parse_request({"target_version": NEWEST})
        with pytest.raises(ValueError, match="frozen"):
            request.dry_run = True

    def test_unknown_field_refused_on_direct_construction(self) -> None:
        with pytest.raises(ValueError, match="extra"):
            UpgradeRequest.model_validate({"target_version": NEWEST, "dryrun": True})
