"""etcd maintenance around an upgrade (§2.2): defragmentation, one member at a time, and
handing leadership away from a member before it restarts.

A defrag blocks the member it runs on for its whole duration. Doing one member at a time,
followers before the leader, and only while every other member is healthy, keeps a quorum
serving throughout; the member must be healthy again before the next one starts.

A leader that is simply stopped hands over on its own, but followers that have not heard
yet keep forwarding writes to it, and those writes are lost (the client sees "etcdserver:
request timed out" seven seconds later). Moving leadership first, and restarting only
once every member follows the new leader, leaves the old leader an ordinary follower.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial

from slipway.etcd.client import EtcdEndpoints, EtcdError, endpoint_health, endpoint_status, etcdctl
from slipway.etcd.health import check_health
from slipway.localcluster.health import NotHealthy, wait_until

# A defrag rewrites the whole database file; on a multi-GiB member that takes minutes.
DEFRAG_TIMEOUT_SECONDS = 300.0
HEALTHY_AFTER_DEFRAG_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class DefragResult:
    """One member's defragmentation: database size before and after, and how long it took."""

    member: str
    endpoint: str
    db_size_before: int
    db_size_after: int
    seconds: float

    @property
    def reclaimed(self) -> int:
        return self.db_size_before - self.db_size_after

    def to_dict(self) -> dict[str, object]:
        return asdict(self) | {"reclaimed": self.reclaimed}


def _healthy(etcd: EtcdEndpoints) -> bool:
    try:
        return not endpoint_health(etcd).failures
    except EtcdError:
        return False


def defragment(
    etcd: EtcdEndpoints, *, healthy_timeout: float = HEALTHY_AFTER_DEFRAG_TIMEOUT_SECONDS
) -> list[DefragResult]:
    """Defragment every member in turn: followers first, the leader last.

    Before each member the whole cluster must be healthy, and after it that member must be
    healthy again within ``healthy_timeout``. Safe to run again: a defragmented member just
    has nothing to reclaim.

    :raises EtcdError: naming the member, before touching it, when the cluster is unhealthy,
        or after it, when it does not come back.
    """
    health = check_health(etcd)
    order = sorted(health.statuses.items(), key=lambda item: (item[1].is_leader, item[0]))
    results: list[DefragResult] = []
    for name, status in order:
        health = check_health(etcd)
        if not health.healthy:
            raise EtcdError(
                f"refusing to defragment etcd member {name}: the cluster is not healthy "
                f"({'; '.join(health.problems)})"
            )
        member = etcd.only(status.endpoint)
        before = health.statuses[name].db_size
        started = time.monotonic()
        etcdctl(
            member.with_command_timeout(DEFRAG_TIMEOUT_SECONDS),
            ["defrag"],
            what=f"defragmentation of etcd member {name}",
            expect_json=False,
        )
        try:
            wait_until(
                f"etcd member {name} healthy after defragmentation",
                partial(_healthy, member),
                healthy_timeout,
            )
        except NotHealthy as err:
            raise EtcdError(str(err)) from err
        answer = endpoint_status(member).results.get(status.endpoint)
        after = answer.db_size if answer else before
        results.append(
            DefragResult(name, status.endpoint, before, after, round(time.monotonic() - started, 3))
        )
    return results


LEADER_SETTLE_TIMEOUT_SECONDS = 30.0


def move_leader_away(
    etcd: EtcdEndpoints,
    endpoint: str,
    prefer: Sequence[str] = (),
    *,
    timeout: float = LEADER_SETTLE_TIMEOUT_SECONDS,
) -> str | None:
    """If the member at ``endpoint`` leads, hand leadership to another answering member
    (one in ``prefer`` first, e.g. already upgraded) and wait until every member follows it.

    Returns the new leader's endpoint, or None when ``endpoint`` was not the leader.

    :raises EtcdError: naming the members, when no other member answers or they do not
        settle on the new leader within ``timeout``.
    """
    statuses = endpoint_status(etcd).results
    current = statuses.get(endpoint)
    if current is None or not current.is_leader:
        return None
    # The most caught-up preferred member: raft drops proposals while a transfer waits for
    # the transferee to catch up, so a shorter wait means fewer writes refused.
    others = sorted(
        (ep for ep in statuses if ep != endpoint),
        key=lambda ep: (ep not in prefer, -statuses[ep].raft_applied_index, ep),
    )
    if not others:
        raise EtcdError(f"cannot move etcd leadership away from {endpoint}: no other member answers")
    target = others[0]
    transferee = statuses[target].member_id
    committed = current.raft_index

    def caught_up() -> bool:
        try:
            answer = endpoint_status(etcd.only(target)).results.get(target)
        except EtcdError:
            return False
        return answer is not None and answer.raft_applied_index >= committed

    try:
        wait_until(f"etcd member {target} caught up with the leader", caught_up, timeout)
    except NotHealthy as err:
        raise EtcdError(str(err)) from err
    etcdctl(
        etcd.only(endpoint),
        ["move-leader", transferee],
        what=f"etcd move-leader from {endpoint} to {target}",
        expect_json=False,
    )

    def settled() -> bool:
        try:
            now = endpoint_status(etcd).results
        except EtcdError:
            return False
        return len(now) == len(statuses) and all(s.leader_id == transferee for s in now.values())

    try:
        wait_until(f"every etcd member follows {target}", settled, timeout)
    except NotHealthy as err:
        raise EtcdError(str(err)) from err
    return target
