"""The form's strategy per workload kind on plain data: what the field refuses alone, what it
refuses against the workloads found, and how it changes what the assessment copies and blocks."""

from __future__ import annotations

from typing import Any

import pytest

from slipway.migration import strategy
from slipway.migration.assess import assess
from slipway.migration.errors import MigrationError
from slipway.migration.request import parse_migration_request

SERVED = {"v1", "apps/v1"}


def _workload(kind: str, name: str, *, claim: str | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": [{"name": "c", "image": "i"}]}
    if claim:
        pod["volumes"] = [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
        },
    }


def _claim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "shop"},
    }


NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
INVENTORY = [
    _workload("Deployment", "web"),
    _workload("StatefulSet", "db", claim="data"),
    _claim("data"),
    _workload("DaemonSet", "agent"),
]
# What stateful.assess knows from the plan: each workload with claims and its claims' keys.
STATEFUL = {"StatefulSet/shop/db": ["PersistentVolumeClaim/shop/data"]}


def _judged(chosen: dict[str, str]) -> tuple[Any, dict[str, str]]:
    result = assess([NAMESPACE], INVENTORY, SERVED)
    # As stateful.assess does for a pairable stateful workload: its claims no longer block it.
    for name in ("StatefulSet/shop/db", "PersistentVolumeClaim/shop/data"):
        result.blockers.pop(name)
        result.objects.append(name)
    return result, strategy.apply_to(result, STATEFUL, chosen)


def test_the_form_field_refuses_unknown_kinds_strategies_and_what_a_kind_can_never_do() -> None:
    conf = {
        "namespaces": ["shop"],
        "strategy": {"CronJob": "skip", "Deployment": "rolling", "DaemonSet": "blue-green"},
    }
    with pytest.raises(MigrationError) as err:
        parse_migration_request(conf)
    assert err.value.fields == ["strategy.CronJob", "strategy.Deployment", "strategy.DaemonSet"]
    assert "'rolling' is not a strategy (blue-green, sync-then-cutover, copy-only, skip)" in str(err.value)
    assert "only skip" in str(err.value)
    accepted = parse_migration_request({"namespaces": ["shop"], "strategy": {"DaemonSet": "skip"}})
    assert accepted.strategy == {"DaemonSet": "skip"}
    assert parse_migration_request({"namespaces": ["shop"]}).strategy == {}


def test_the_trigger_form_offers_each_kinds_allowed_strategies() -> None:
    from slipway.airflow.stage_migration import migration_params

    param = migration_params()["strategy"]
    assert param.value == {} and param.schema["type"] == "object"
    assert param.schema["properties"]["DaemonSet"]["enum"] == ["skip"]
    assert param.schema["properties"]["StatefulSet"]["enum"] == list(strategy.STRATEGIES)
    assert "skip" in str(param.description) and "copy-only" in str(param.description)


def test_by_default_stateless_moves_blue_green_stateful_syncs_and_a_daemonset_blocks() -> None:
    result, chosen = _judged({})
    assert chosen == {"Deployment/shop/web": "blue-green", "StatefulSet/shop/db": "sync-then-cutover"}
    assert list(result.blockers) == ["DaemonSet/shop/agent"]
    assert strategy.switches_traffic(chosen)


def test_a_skipped_kind_leaves_the_copy_and_the_blockers_and_is_reported_as_not_moved() -> None:
    result, chosen = _judged({"DaemonSet": "skip", "StatefulSet": "skip"})
    assert result.movable  # the DaemonSet no longer blocks the run
    assert "StatefulSet/shop/db" not in result.objects
    assert "PersistentVolumeClaim/shop/data" not in result.objects  # its claim stays with it
    assert "Deployment/shop/web" in result.objects
    assert chosen["DaemonSet/shop/agent"] == chosen["StatefulSet/shop/db"] == "skip"
    text = strategy.markdown(chosen)
    assert "| `StatefulSet/shop/db` | skip (not moved) |" in text
    assert "| `Deployment/shop/web` | blue-green |" in text
    described = strategy.describe({"strategies": chosen})
    assert described["not_moved"] == ["DaemonSet/shop/agent", "StatefulSet/shop/db"]
    assert strategy.velero_excluded({"StatefulSet": "skip"}) == ["daemonsets.apps", "statefulsets.apps"]


@pytest.mark.parametrize(
    ("chosen", "field", "words"),
    [
        ({"StatefulSet": "blue-green"}, "strategy.StatefulSet", "blue-green cannot move StatefulSet/shop/db"),
        ({"StatefulSet": "copy-only"}, "strategy.StatefulSet", "copy-only cannot move StatefulSet/shop/db"),
        ({"Deployment": "sync-then-cutover"}, "strategy.Deployment", "no PersistentVolumeClaim"),
    ],
)
def test_a_combination_the_code_cannot_do_is_refused_naming_the_field_and_the_workload(
    chosen: dict[str, str], field: str, words: str
) -> None:
    with pytest.raises(MigrationError) as err:
        _judged(chosen)
    assert err.value.fields == [field]
    lines = [line for line in str(err.value).splitlines() if f"{field}: " in line]
    assert len(lines) == 1 and words in lines[0]


def test_traffic_is_switched_only_when_a_moved_workload_asks_for_it() -> None:
    assert not strategy.switches_traffic({"Deployment/shop/web": "copy-only", "StatefulSet/shop/db": "skip"})
    assert strategy.switches_traffic(
        {"Deployment/shop/web": "copy-only", "StatefulSet/shop/db": "blue-green"}
    )
    assert strategy.switches_traffic({})  # configuration only: as before the field existed
