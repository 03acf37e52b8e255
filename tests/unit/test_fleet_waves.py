"""Wave decisions from recorded outcomes only (plain data, no Airflow, no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from slipway.fleet.waves import (
    ClusterRecord,
    FleetPlan,
    GatePlan,
    GroupPlan,
    StagePlan,
    next_action,
    stage_waves,
)

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # a Saturday, 12:00 UTC
OK = ClusterRecord("succeeded", T0)
RUNNING = ClusterRecord("running")


def plan(
    *,
    prod_concurrency: int = 2,
    soak: int = 600,
    prod_before: tuple[GatePlan, ...] = (),
    group_before: tuple[GatePlan, ...] = (),
    canary_after: tuple[GatePlan, ...] = (),
) -> FleetPlan:
    return FleetPlan(
        "fleet",
        (
            StagePlan("canary", (GroupPlan("c", ("canary",)),), 1, soak, after=canary_after),
            StagePlan(
                "prod",
                (
                    GroupPlan("eu", ("eu1", "eu2", "eu3")),
                    GroupPlan("us", ("us1", "us2"), before=group_before),
                ),
                prod_concurrency,
                0,
                before=prod_before,
            ),
        ),
    )


def test_waves_respect_max_concurrency_in_group_order() -> None:
    stages = plan(prod_concurrency=2).stages
    assert stage_waves(stages[0]) == [["canary"]]
    assert stage_waves(stages[1]) == [["eu1", "eu2"], ["eu3", "us1"], ["us2"]]
    assert all(len(w) <= 2 for w in stage_waves(stages[1]))


def test_first_action_starts_the_canary_only() -> None:
    action = next_action(plan(), {}, {}, T0)
    assert (action.kind, action.clusters, action.stage) == ("start", ("canary",), "canary")


def test_running_canary_means_wait() -> None:
    action = next_action(plan(), {"canary": RUNNING}, {}, T0)
    assert (action.kind, action.clusters) == ("wait", ("canary",))


def test_soak_after_the_canary_until_its_end_plus_soak() -> None:
    action = next_action(plan(soak=600), {"canary": OK}, {}, T0 + timedelta(seconds=10))
    assert action.kind == "soak"
    assert action.until == T0 + timedelta(seconds=600)
    after = next_action(plan(soak=600), {"canary": OK}, {}, T0 + timedelta(seconds=600))
    assert (after.kind, after.clusters) == ("start", ("eu1", "eu2"))


def test_slots_refill_without_exceeding_max_concurrency() -> None:
    records = {"canary": OK, "eu1": OK, "eu2": RUNNING}
    action = next_action(plan(soak=0), records, {}, T0)
    assert action.clusters == ("eu3",)  # one slot left: eu2 still runs
    records |= {"eu3": RUNNING}
    assert next_action(plan(soak=0), records, {}, T0).kind == "wait"


def test_every_decision_sequence_keeps_concurrency() -> None:
    """Drive a whole fleet, finishing the oldest running cluster each step: never more than
    max_concurrency running in a stage, never a stage before the previous one ended."""
    p = plan(prod_concurrency=2, soak=0)
    records: dict[str, ClusterRecord] = {}
    order: list[str] = []
    for _ in range(50):
        action = next_action(p, records, {}, T0)
        if action.kind == "done":
            break
        if action.kind == "start":
            for name in action.clusters:
                records[name] = RUNNING
                order.append(name)
        else:
            assert action.kind == "wait"
            records[action.clusters[0]] = OK
        for stage in p.stages:
            assert sum(records.get(c, ClusterRecord()).outcome == "running" for c in stage.clusters) <= (
                stage.max_concurrency
            )
    assert action.kind == "done" and action.verdict == "upgraded"
    assert order == ["canary", "eu1", "eu2", "eu3", "us1", "us2"]


def test_failed_canary_halts_and_leaves_production_untouched() -> None:
    action = next_action(plan(), {"canary": ClusterRecord("failed", T0)}, {}, T0)
    assert action.kind == "halt"
    assert (action.failed, action.verdict, action.stage) == ("canary", "failed", "canary")
    assert action.untouched == ("eu1", "eu2", "eu3", "us1", "us2")
    assert "cluster canary failed" in action.reason


def test_rolled_back_cluster_halts_naming_it_and_lists_still_running() -> None:
    records = {"canary": OK, "eu1": ClusterRecord("rolled-back", T0), "eu2": RUNNING}
    action = next_action(plan(soak=0), records, {}, T0)
    assert (action.kind, action.failed, action.verdict) == ("halt", "eu1", "rolled-back")
    assert action.clusters == ("eu2",)
    assert action.untouched == ("eu3", "us1", "us2")


def test_rejected_cluster_run_halts_with_rejected() -> None:
    action = next_action(plan(), {"canary": ClusterRecord("rejected", T0)}, {}, T0)
    assert (action.kind, action.verdict) == ("halt", "rejected")


def test_approval_gate_before_a_stage() -> None:
    gate = GatePlan("prod/before/0", "approval")
    p = plan(soak=0, prod_before=(gate,))
    pending = next_action(p, {"canary": OK}, {}, T0)
    assert (pending.kind, pending.gate) == ("gate", "prod/before/0")
    approved = next_action(p, {"canary": OK}, {"prod/before/0": "approved"}, T0)
    assert approved.kind == "start"
    rejected = next_action(p, {"canary": OK}, {"prod/before/0": "rejected"}, T0)
    assert (rejected.kind, rejected.verdict, rejected.failed) == ("halt", "rejected", "prod/before/0")
    assert rejected.untouched == ("eu1", "eu2", "eu3", "us1", "us2")


def test_rejected_gate_halts_even_before_its_stage() -> None:
    p = plan(prod_before=(GatePlan("prod/before/0", "approval"),))
    action = next_action(p, {}, {"prod/before/0": "rejected"}, T0)
    assert (action.kind, action.verdict) == ("halt", "rejected")
    assert "canary" in action.untouched


def test_window_gate_on_a_group_lets_other_groups_go() -> None:
    # Sat 20:00-22:00 UTC: closed at 12:00, open at 21:00.
    gate = GatePlan("prod/us/before/0", "window", "Sat 20:00-22:00 UTC")
    p = plan(prod_concurrency=5, soak=0, group_before=(gate,))
    closed = next_action(p, {"canary": OK}, {}, T0)
    assert (closed.kind, closed.clusters) == ("start", ("eu1", "eu2", "eu3"))
    records = {"canary": OK, "eu1": OK, "eu2": OK, "eu3": OK}
    waiting = next_action(p, records, {}, T0)
    assert (waiting.kind, waiting.gate, waiting.until) == ("gate", gate.id, T0.replace(hour=20))
    opened = next_action(p, records, {}, T0.replace(hour=21))
    assert opened.clusters == ("us1", "us2")


def test_window_gate_stays_passed_once_its_clusters_started() -> None:
    gate = GatePlan("prod/us/before/0", "window", "Sat 20:00-22:00 UTC")
    p = plan(prod_concurrency=1, soak=0, group_before=(gate,))
    records = {"canary": OK, "eu1": OK, "eu2": OK, "eu3": OK, "us1": OK}
    # 23:00: the window closed, but us1 started inside it: us2 goes on.
    assert next_action(p, records, {}, T0.replace(hour=23)).clusters == ("us2",)


def test_after_gate_blocks_the_next_stage_until_passed() -> None:
    gate = GatePlan("canary/after/0", "approval")
    p = plan(soak=0, canary_after=(gate,))
    assert next_action(p, {"canary": OK}, {}, T0).gate == "canary/after/0"
    assert next_action(p, {"canary": OK}, {"canary/after/0": "approved"}, T0).kind == "start"


def test_resumed_run_continues_where_the_records_stopped() -> None:
    """The same records give the same decision: nothing but the records is consulted."""
    records = {"canary": OK, "eu1": OK, "eu2": OK}
    first = next_action(plan(soak=0), records, {}, T0)
    again = next_action(plan(soak=0), dict(records), {}, T0)
    assert first == again
    assert first.clusters == ("eu3", "us1")


def test_plan_round_trips_through_json_dict() -> None:
    p = plan(prod_before=(GatePlan("prod/before/0", "approval"),))
    assert FleetPlan.from_dict(p.to_dict()) == p
    assert p.approvals == ("prod/before/0",)


def test_preflight_refusal_halts_everything_untouched() -> None:
    from slipway.fleet.preflight import blocking
    from slipway.fleet.waves import refused_by_preflight

    found = {
        "eu1": {"decision": "refuse", "blockers": ["etcd-health"]},
        "canary": {"decision": "proceed", "blockers": []},
    }
    lines = blocking(found)
    assert lines == ["eu1: preflight decision refuse (etcd-health)"]
    action = refused_by_preflight(plan(), lines)
    assert (action.kind, action.verdict, action.failed) == ("halt", "refused", "eu1")
    assert action.untouched == plan().clusters
