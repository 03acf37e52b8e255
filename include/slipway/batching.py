"""Worker batches (§2.1): how many nodes at once, in which order, and how that adapts.

Sizes follow the seed: small clusters (< 10 nodes) 1-2 nodes per batch, medium (10-50) 3-5,
large (> 50) 5-10, and never more than the pool's max-unavailable share (at least one node).
Percentages round like Kubernetes rolling updates do: max unavailable down, max surge up.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slipway.models import Batch, NodeInfo, PoolPlan, RequestError, UpgradeRequest, WorkerPlan

# (first node count, last node count, smallest batch, largest batch); sizes grow linearly
# across each band so a 49-node cluster is not treated like a 10-node one.
_BANDS = ((1, 9, 1, 2), (10, 50, 3, 5), (51, 500, 5, 10))
_LARGEST_BATCH = 10
# Float percentages such as 30 × 10 / 100 must not round 3.0000000004 up or 2.9999999 down.
_EPSILON = 1e-9


def max_unavailable(pool_size: int, percent: float) -> int:
    """Nodes of a pool that may be down at once: ``percent`` of it rounded down, at least 1."""
    return max(1, math.floor(pool_size * percent / 100 + _EPSILON))


def surge_count(pool_size: int, percent: float) -> int:
    """Extra nodes to add before draining under the surge strategy: ``percent`` rounded up."""
    if pool_size < 0 or not 0 <= percent <= 100:
        raise ValueError(f"surge needs pool_size >= 0 and 0 <= percent <= 100, got {pool_size}, {percent}")
    return math.ceil(pool_size * percent / 100 - _EPSILON)


def batch_size_for(
    node_count: int, max_unavailable_percent: float = 10.0, pool_size: int | None = None
) -> int:
    """The seed's batch size for a cluster of ``node_count`` workers, capped by max unavailable.

    :param node_count: worker nodes in the cluster (sets the small/medium/large band).
    :param max_unavailable_percent: the share of a pool that may be down at once.
    :param pool_size: the pool the batch comes from; defaults to the whole cluster.
    """
    if node_count < 1:
        raise ValueError(f"node_count must be at least 1, got {node_count}")
    size = _LARGEST_BATCH
    for first, last, smallest, largest in _BANDS:
        if node_count <= last:
            size = smallest + (largest - smallest) * (node_count - first) // (last - first)
            break
    return min(size, max_unavailable(pool_size or node_count, max_unavailable_percent))


class AdaptiveBatcher(BaseModel):
    """Batch size that doubles after ``grow_after`` clean batches and halves after trouble.

    Immutable and JSON-shaped: a task reads it with :meth:`from_state`, calls :meth:`record`
    and hands :meth:`to_state` to the next task, so a cleared task replays the same decision.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cap: int = Field(ge=1)
    size: int = Field(default=1, ge=1)
    grow_after: int = Field(default=2, ge=1)
    clean_streak: int = Field(default=0, ge=0)
    batches_recorded: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _size_within_cap(self) -> AdaptiveBatcher:
        if self.size > self.cap:
            raise ValueError(f"size {self.size} is above cap {self.cap}")
        return self

    @classmethod
    def for_plan(cls, plan: WorkerPlan, grow_after: int = 2) -> AdaptiveBatcher:
        """Start at one node, allowed to grow to the largest batch any pool of ``plan`` permits."""
        return cls(cap=max((pool.batch_size for pool in plan.pools), default=1), grow_after=grow_after)

    def record(self, clean: bool) -> AdaptiveBatcher:
        """The batcher after one more batch: ``clean`` is False when the batch had any trouble."""
        if not clean:
            return self.model_copy(
                update={
                    "size": max(1, self.size // 2),
                    "clean_streak": 0,
                    "batches_recorded": self.batches_recorded + 1,
                }
            )
        streak = self.clean_streak + 1
        size = self.size
        if streak >= self.grow_after:
            size, streak = min(self.cap, size * 2), 0
        return self.model_copy(
            update={"size": size, "clean_streak": streak, "batches_recorded": self.batches_recorded + 1}
        )

    def to_state(self) -> dict[str, int]:
        """The state to persist between tasks."""
        return self.model_dump()

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> AdaptiveBatcher:
        """Resume from :meth:`to_state` output.

        :raises ValueError: naming what is wrong with a corrupted or hand-edited state.
        """
        try:
            return cls.model_validate(dict(state))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'state'}: {error['msg']}"
                for error in exc.errors()
            )
            raise ValueError(f"adaptive batcher state is invalid: {problems}") from None


def _pool_order(pools: Collection[str], requested: Sequence[str]) -> list[str]:
    unknown = [pool for pool in requested if pool not in pools]
    if unknown:
        have = ", ".join(sorted(pools)) or "none"
        raise RequestError([("node_pools", f"unknown pool(s) {', '.join(unknown)}; the cluster has: {have}")])
    return list(requested) + sorted(set(pools) - set(requested))


def _already_at_target(node: NodeInfo, request: UpgradeRequest) -> bool:
    try:
        return node.kubelet == request.target
    except ValueError:
        # A kubelet reporting an unparseable version is not known to be done: upgrade it.
        return False


def plan_batches(nodes: Sequence[NodeInfo], request: UpgradeRequest) -> WorkerPlan:
    """Order the worker nodes into batches, one pool at a time.

    Control-plane nodes are left to the control-plane stage, and nodes already at the target
    are left out, so planning again after a partial run plans only what remains. Pools go in
    ``request.node_pools`` order, then the rest alphabetically; nodes by name within a pool.

    :raises RequestError: when ``request.node_pools`` names a pool the cluster does not have.
    """
    workers = [node for node in nodes if not node.control_plane]
    by_pool: dict[str, list[NodeInfo]] = {}
    for node in workers:
        by_pool.setdefault(node.pool, []).append(node)

    pools: list[PoolPlan] = []
    for pool in _pool_order(by_pool, request.node_pools):
        members = by_pool[pool]
        todo = sorted(node.name for node in members if not _already_at_target(node, request))
        if not todo:
            continue
        cap = max_unavailable(len(members), request.max_unavailable_percent)
        wanted = request.batch_size or batch_size_for(len(workers), request.max_unavailable_percent)
        pools.append(
            PoolPlan(
                pool=pool,
                nodes=todo,
                pool_size=len(members),
                max_unavailable=cap,
                max_surge=surge_count(len(members), request.max_surge_percent),
                batch_size=min(wanted, cap),
            )
        )
    plan = WorkerPlan(policy=request.batch_policy, pools=pools)
    return plan.model_copy(update={"batches": _forecast(plan)})


def _forecast(plan: WorkerPlan) -> list[Batch]:
    """Fixed: the batches. Adaptive: the batches if every one of them is clean."""
    batcher = AdaptiveBatcher.for_plan(plan) if plan.policy == "adaptive" else None
    batches: list[Batch] = []
    for pool in plan.pools:
        start = 0
        while start < len(pool.nodes):
            size = pool.batch_size if batcher is None else min(batcher.size, pool.batch_size)
            batches.append(Batch(index=len(batches), pool=pool.pool, nodes=pool.nodes[start : start + size]))
            start += size
            if batcher is not None:
                batcher = batcher.record(clean=True)
    return batches


def next_batch(
    plan: WorkerPlan, done: Collection[str], batcher: AdaptiveBatcher | None = None
) -> Batch | None:
    """The batch to upgrade next, given the nodes already done; None when all are.

    A node that is not in ``done`` is picked again, so a retried task resumes with the node it
    failed on. The fixed policy keeps the planned batches; the adaptive one needs ``batcher``.
    """
    if plan.policy == "fixed":
        for batch in plan.batches:
            remaining = [name for name in batch.nodes if name not in done]
            if remaining:
                return batch.model_copy(update={"nodes": remaining})
        return None
    if batcher is None:
        raise ValueError("the adaptive policy needs the AdaptiveBatcher state to pick the next batch")
    for pool in plan.pools:
        remaining = [name for name in pool.nodes if name not in done]
        if remaining:
            size = min(batcher.size, pool.batch_size)
            return Batch(index=batcher.batches_recorded, pool=pool.pool, nodes=remaining[:size])
    return None
