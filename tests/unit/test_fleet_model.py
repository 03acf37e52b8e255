"""The fleet file: accepted when sound, refused one line per field otherwise."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from slipway.fleet import FleetError, load_fleet, parse_fleet, plan_fleet
from slipway.fleet.model import MAX_STAGES

REPO = Path(__file__).resolve().parents[2]


def fleet(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "fleet",
        "request": {"target_version": "1.37.2"},
        "clusters": [
            {
                "name": "canary-eu",
                "connection": "k8s_canary",
                "platform_connection": "p_canary",
                "labels": {"environment": "staging", "region": "eu", "canary": True},
            },
            {
                "name": "prod-eu",
                "connection": "k8s_prod_eu",
                "platform_connection": "p_prod_eu",
                "labels": {"environment": "production", "region": "eu"},
            },
            {
                "name": "prod-us",
                "connection": "k8s_prod_us",
                "platform_connection": "p_prod_us",
                "labels": {"environment": "production", "region": "us"},
            },
        ],
        "strategy": {
            "stages": [
                {
                    "name": "canary",
                    "groups": [{"name": "c", "selector": {"canary": True}}],
                    "soak_seconds": 60,
                },
                {
                    "name": "production",
                    "max_concurrency": 2,
                    "groups": [{"name": "prod", "selector": {"environment": "production"}}],
                },
            ]
        },
    }
    data = copy.deepcopy(base)
    data.update(changes)
    return data


def refusal(data: Any) -> FleetError:
    with pytest.raises(FleetError) as caught:
        parse_fleet(data)
    for line in str(caught.value).splitlines()[1:]:
        assert line.startswith("  ") and ": " in line, line  # one "field: reason" line each
    return caught.value


def test_the_repository_fleet_file_is_valid() -> None:
    plan = plan_fleet(load_fleet(REPO / "gitops" / "fleet.yaml"))
    assert plan.stages[0].name == "canary"
    assert plan.approvals == ("production/before/0",)


def test_selectors_resolve_in_file_order() -> None:
    plan = plan_fleet(parse_fleet(fleet()))
    assert [s.clusters for s in plan.stages] == [("canary-eu",), ("prod-eu", "prod-us")]


def test_canary_selector_accepts_the_string_true() -> None:
    data = fleet()
    data["strategy"]["stages"][0]["groups"][0]["selector"] = {"canary": "true"}
    assert plan_fleet(parse_fleet(data)).stages[0].clusters == ("canary-eu",)


def test_unknown_cluster_in_a_group() -> None:
    data = fleet()
    data["strategy"]["stages"][1]["groups"][0] = {"name": "prod", "clusters": ["prod-eu", "prod-uss"]}
    err = refusal(data)
    assert err.problems == (
        ("strategy.stages[1].groups[0].clusters[1]", "unknown cluster 'prod-uss' (did you mean prod-us?)"),
    )


def test_a_cluster_in_two_stages() -> None:
    data = fleet()
    data["strategy"]["stages"][1]["groups"][0]["selector"] = {"region": "eu"}
    err = refusal(data)
    assert err.fields == ["strategy.stages[1].groups[0]"]
    assert "'canary-eu' is already in canary/c" in str(err)


def test_max_concurrency_below_one() -> None:
    data = fleet()
    data["strategy"]["stages"][1]["max_concurrency"] = 0
    err = refusal(data)
    assert err.fields == ["strategy.stages[1].max_concurrency"]
    assert "greater than or equal to 1" in str(err)


def test_unknown_label_in_a_selector() -> None:
    data = fleet()
    data["strategy"]["stages"][1]["groups"][0]["selector"] = {"enviroment": "production"}
    err = refusal(data)
    assert err.problems == (
        ("strategy.stages[1].groups[0].selector", "unknown label 'enviroment' (did you mean environment?)"),
    )


def test_unknown_label_on_a_cluster() -> None:
    data = fleet()
    data["clusters"][0]["labels"]["zone"] = "a"
    assert refusal(data).problems == (("clusters[0].labels.zone", "unknown field"),)


def test_duplicate_cluster_stage_and_group_names() -> None:
    data = fleet()
    data["clusters"][2]["name"] = "prod-eu"
    data["strategy"]["stages"][1]["name"] = "canary"
    data["strategy"]["stages"][1]["groups"].append({"name": "prod", "clusters": ["canary-eu"]})
    fields = refusal(data).fields
    assert "clusters[2].name" in fields
    assert "strategy.stages[1].name" in fields
    assert "strategy.stages[1].groups[1].name" in fields


def test_two_clusters_sharing_a_connection() -> None:
    data = fleet()
    data["clusters"][2]["connection"] = "k8s_prod_eu"
    assert refusal(data).fields == ["clusters[2].connection"]


@pytest.mark.parametrize(("soak", "ok"), [(-1, False), (0, True), (86_400, True), (86_401, False)])
def test_soak_bounds(soak: int, ok: bool) -> None:
    data = fleet()
    data["strategy"]["stages"][0]["soak_seconds"] = soak
    if ok:
        assert parse_fleet(data).strategy.stages[0].soak_seconds == soak
    else:
        assert refusal(data).fields == ["strategy.stages[0].soak_seconds"]


def test_malformed_window_gate() -> None:
    data = fleet()
    data["strategy"]["stages"][1]["before"] = [{"kind": "window", "window": "Sat 25:00-05:00 UTC"}]
    err = refusal(data)
    assert err.fields == ["strategy.stages[1].before[0]"]
    assert "Sat 25:00-05:00 UTC" in str(err)


def test_window_gate_without_window_and_approval_with_one() -> None:
    data = fleet()
    data["strategy"]["stages"][1]["before"] = [
        {"kind": "window"},
        {"kind": "approval", "window": "Sat 01:00-05:00 UTC"},
    ]
    assert refusal(data).fields == ["strategy.stages[1].before[0]", "strategy.stages[1].before[1]"]


def test_unknown_gate_kind() -> None:
    data = fleet()
    data["strategy"]["stages"][0]["after"] = [{"kind": "vote"}]
    assert refusal(data).fields == ["strategy.stages[0].after[0].kind"]


def test_bad_request_is_refused_under_request() -> None:
    err = refusal(fleet(request={"target_version": "1.37.2", "taget": 1}))
    assert err.fields == ["request.taget"]


def test_a_request_may_not_name_one_connection_for_every_cluster() -> None:
    err = refusal(fleet(request={"target_version": "1.37.2", "kubernetes_conn_id": "k8s_prod_eu"}))
    assert err.fields == ["request.kubernetes_conn_id"]


def test_group_that_selects_nothing() -> None:
    data = fleet()
    data["strategy"]["stages"][1]["groups"][0]["selector"] = {"region": "ap"}
    assert refusal(data).problems == (
        ("strategy.stages[1].groups[0]", "selects no cluster (after exclusions)"),
    )


def test_exclusions_remove_clusters_and_must_exist() -> None:
    data = fleet()
    data["strategy"]["exclude"] = ["prod-us"]
    assert plan_fleet(parse_fleet(data)).clusters == ("canary-eu", "prod-eu")
    data["strategy"]["exclude"] = ["prod-uk"]
    assert refusal(data).fields == ["strategy.exclude[0]"]


def test_bad_names_connection_ids_and_shapes() -> None:
    data = fleet()
    data["clusters"][0]["name"] = "Canary_EU"
    data["clusters"][1]["connection"] = "k8s prod"
    data["strategy"]["stages"] = []
    fields = refusal(data).fields
    assert fields == ["clusters[0].name", "clusters[1].connection", "strategy.stages"]


def test_too_many_stages() -> None:
    data = fleet()
    data["strategy"]["stages"] = [
        {"name": f"s{i}", "groups": [{"name": "g", "clusters": ["prod-eu"]}]} for i in range(MAX_STAGES + 1)
    ]
    assert refusal(data).fields == ["strategy.stages"]


def test_not_a_mapping_and_not_yaml(tmp_path: Path) -> None:
    assert refusal(["x"]).problems == (("fleet", "must be a mapping, got list"),)
    bad = tmp_path / "fleet.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(FleetError, match=r"fleet: fleet.yaml is not valid YAML at line 2"):
        load_fleet(bad)
