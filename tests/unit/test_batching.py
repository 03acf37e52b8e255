"""Unit tests for batch sizing, pool ordering and the adaptive batcher."""

from __future__ import annotations

import json
from typing import Any

import pytest

from slipway.batching import (
    AdaptiveBatcher,
    batch_size_for,
    max_unavailable,
    next_batch,
    plan_batches,
    surge_count,
)
from slipway.models import NodeInfo, RequestError, UpgradeRequest, parse_request


def request(**overrides: Any) -> UpgradeRequest:
    """A valid request for 1.37.2 with ``overrides`` applied."""
    return parse_request({"target_version": "1.37.2", **overrides})


def nodes(pool: str, count: int, kubelet: str = "1.36.3", control_plane: bool = False) -> list[NodeInfo]:
    """``count`` ready nodes named ``<pool>-NN``."""
    return [
        NodeInfo(
            name=f"{pool}-{n:02d}",
            pool=pool,
            kubelet_version=kubelet,
            ready=True,
            control_plane=control_plane,
        )
        for n in range(count)
    ]


class TestSizes:
    @pytest.mark.parametrize(("count", "size"), [(1, 1), (5, 1), (12, 1), (100, 5), (1000, 10)])
    def test_seed_defaults_with_ten_percent_unavailable(self, count: int, size: int) -> None:
        assert batch_size_for(count) == size

    @pytest.mark.parametrize(
        ("count", "size"),
        [
            (1, 1),
            (5, 1),
            (9, 2),
            (10, 3),
            (12, 3),
            (30, 4),
            (50, 5),
            (51, 5),
            (100, 5),
            (500, 10),
            (1000, 10),
        ],
    )
    def test_bands_without_the_unavailable_cap(self, count: int, size: int) -> None:
        assert batch_size_for(count, max_unavailable_percent=100) == size

    def test_pool_caps_the_band(self) -> None:
        assert batch_size_for(1000, 10, pool_size=20) == 2
        assert batch_size_for(1000, 10, pool_size=3) == 1

    def test_empty_cluster_refused(self) -> None:
        with pytest.raises(ValueError, match="node_count"):
            batch_size_for(0)

    @pytest.mark.parametrize(
        ("pool", "percent", "count"), [(30, 10, 3), (29, 10, 2), (5, 10, 1), (3, 100, 3)]
    )
    def test_max_unavailable_rounds_down_but_allows_one(self, pool: int, percent: float, count: int) -> None:
        assert max_unavailable(pool, percent) == count

    @pytest.mark.parametrize(
        ("pool", "percent", "count"), [(10, 0, 0), (10, 10, 1), (10, 25, 3), (30, 10, 3)]
    )
    def test_surge_rounds_up(self, pool: int, percent: float, count: int) -> None:
        assert surge_count(pool, percent) == count

    def test_surge_refuses_bad_percent(self) -> None:
        with pytest.raises(ValueError, match="percent"):
            surge_count(10, 120)


class TestPlan:
    def test_control_plane_excluded_and_pools_ordered(self) -> None:
        cluster = (
            nodes("cp", 3, control_plane=True) + nodes("zeta", 2) + nodes("alpha", 2) + nodes("canary", 1)
        )
        plan = plan_batches(cluster, request(node_pools=["canary"]))
        assert [pool.pool for pool in plan.pools] == ["canary", "alpha", "zeta"]
        assert [batch.nodes for batch in plan.batches] == [
            ["canary-00"],
            ["alpha-00"],
            ["alpha-01"],
            ["zeta-00"],
            ["zeta-01"],
        ]
        assert [batch.index for batch in plan.batches] == [0, 1, 2, 3, 4]
        assert plan.node_count == 5

    def test_nodes_ordered_by_name_whatever_the_input_order(self) -> None:
        cluster = list(reversed(nodes("general", 4)))
        plan = plan_batches(cluster, request(batch_size=2, max_unavailable_percent=50))
        assert [batch.nodes for batch in plan.batches] == [
            ["general-00", "general-01"],
            ["general-02", "general-03"],
        ]

    def test_nodes_at_target_left_out_so_replanning_resumes(self) -> None:
        cluster = nodes("general", 3) + nodes("done", 2, kubelet="v1.37.2")
        done = nodes("general", 1, kubelet="1.37.2")[0]
        plan = plan_batches([done, *cluster[1:]], request())
        assert [pool.pool for pool in plan.pools] == ["general"]
        assert plan.pools[0].nodes == ["general-01", "general-02"]
        assert plan.pools[0].pool_size == 3

    def test_unknown_pool_refused_with_pools_listed(self) -> None:
        with pytest.raises(RequestError) as caught:
            plan_batches(nodes("general", 2), request(node_pools=["gpu"]))
        assert caught.value.fields == ["node_pools"]
        assert "gpu" in str(caught.value) and "general" in str(caught.value)

    def test_large_cluster_batches_respect_pool_share(self) -> None:
        plan = plan_batches(nodes("big", 80) + nodes("small", 20), request())
        big, small = plan.pools
        assert (big.batch_size, big.max_unavailable) == (5, 8)
        assert (small.batch_size, small.max_unavailable) == (2, 2)
        assert len(plan.batches) == 16 + 10
        assert all(len(batch.nodes) <= 5 for batch in plan.batches)

    def test_requested_batch_size_still_capped_by_pool(self) -> None:
        plan = plan_batches(nodes("a", 40) + nodes("b", 10), request(batch_size=4))
        assert [pool.batch_size for pool in plan.pools] == [4, 1]

    def test_surge_recorded_per_pool(self) -> None:
        plan = plan_batches(nodes("a", 10), request(strategy="surge", max_surge_percent=25))
        assert plan.pools[0].max_surge == 3

    def test_adaptive_forecast_grows_like_clean_batches(self) -> None:
        plan = plan_batches(nodes("a", 100), request(batch_policy="adaptive"))
        sizes = [len(batch.nodes) for batch in plan.batches]
        assert sizes[:7] == [1, 1, 2, 2, 4, 4, 5]
        assert sum(sizes) == 100

    def test_plan_is_json(self) -> None:
        plan = plan_batches(nodes("a", 12), request())
        assert type(plan).model_validate(json.loads(json.dumps(plan.model_dump(mode="json")))) == plan


class TestNextBatch:
    def test_fixed_resumes_with_the_nodes_not_done(self) -> None:
        plan = plan_batches(nodes("a", 6), request(batch_size=3, max_unavailable_percent=50))
        first = next_batch(plan, done=set())
        assert first is not None and first.nodes == ["a-00", "a-01", "a-02"]
        resumed = next_batch(plan, done={"a-00"})
        assert resumed is not None and (resumed.index, resumed.nodes) == (0, ["a-01", "a-02"])
        assert next_batch(plan, done={f"a-{n:02d}" for n in range(6)}) is None

    def test_adaptive_takes_the_batcher_size(self) -> None:
        plan = plan_batches(
            nodes("a", 3) + nodes("b", 20),
            request(batch_policy="adaptive", batch_size=5, max_unavailable_percent=50),
        )
        batcher = AdaptiveBatcher.for_plan(plan).model_copy(update={"size": 4, "batches_recorded": 2})
        batch = next_batch(plan, done={"a-00"}, batcher=batcher)
        # Pool a allows one node at a time (50 % of 3), however big the batcher has grown.
        assert batch is not None and (batch.index, batch.pool, batch.nodes) == (2, "a", ["a-01"])
        batch = next_batch(plan, done={"a-00", "a-01", "a-02"}, batcher=batcher)
        assert batch is not None and batch.nodes == ["b-00", "b-01", "b-02", "b-03"]

    def test_adaptive_without_batcher_refused(self) -> None:
        plan = plan_batches(nodes("a", 3), request(batch_policy="adaptive"))
        with pytest.raises(ValueError, match="AdaptiveBatcher"):
            next_batch(plan, done=set())


class TestAdaptiveBatcher:
    def test_grows_after_clean_batches_up_to_cap(self) -> None:
        batcher = AdaptiveBatcher(cap=5, grow_after=2)
        sizes = []
        for _ in range(8):
            batcher = batcher.record(clean=True)
            sizes.append(batcher.size)
        assert sizes == [1, 2, 2, 4, 4, 5, 5, 5]
        assert batcher.batches_recorded == 8

    def test_halves_on_trouble_and_restarts_the_streak(self) -> None:
        batcher = AdaptiveBatcher(cap=10, size=8, clean_streak=1)
        batcher = batcher.record(clean=False)
        assert (batcher.size, batcher.clean_streak) == (4, 0)
        assert batcher.record(clean=True).size == 4
        assert AdaptiveBatcher(cap=10, size=1).record(clean=False).size == 1

    def test_state_round_trips_through_json(self) -> None:
        batcher = AdaptiveBatcher(cap=6, grow_after=3).record(clean=True).record(clean=True)
        state = json.loads(json.dumps(batcher.to_state()))
        resumed = AdaptiveBatcher.from_state(state)
        assert resumed == batcher
        assert resumed.record(clean=True).size == 2

    @pytest.mark.parametrize(
        ("state", "words"),
        [
            ({"cap": 4, "size": 8}, "size 8 is above cap 4"),
            ({"cap": 4, "size": 0}, "size"),
            ({"size": 1}, "cap"),
            ({"cap": 4, "sise": 2}, "sise"),
        ],
    )
    def test_bad_state_refused_by_name(self, state: dict[str, int], words: str) -> None:
        with pytest.raises(ValueError, match="adaptive batcher state is invalid") as caught:
            AdaptiveBatcher.from_state(state)
        assert words in str(caught.value)
