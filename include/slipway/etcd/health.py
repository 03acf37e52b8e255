"""Is etcd fit for an upgrade step (§2.2)? Every member healthy, one leader, no alarms, room
under the quota, one version, and the same data on every member.

The judging is pure (:func:`judge_health`, :func:`judge_hashes`) so it is tested on etcdctl's
JSON; :func:`check_health` and :func:`check_consistency` only gather that JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from slipway.etcd.client import (
    Alarm,
    EtcdEndpoints,
    EtcdError,
    KVHash,
    Member,
    MemberStatus,
    PerEndpoint,
    alarm_list,
    endpoint_health,
    endpoint_status,
    hashkv,
    member_list,
)

# etcd raises NOSPACE and refuses writes at the quota; warn well before, while a defrag or a
# bigger quota is still a planned change and not an outage.
DB_QUOTA_WARN_RATIO = 0.8
_GIB = 2**30


@dataclass(frozen=True)
class EtcdHealth:
    """What :func:`check_health` found; ``problems`` stop an upgrade step, ``warnings`` do not."""

    members: list[Member]
    statuses: dict[str, MemberStatus]
    latencies: dict[str, float]
    alarms: list[Alarm]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def leader(self) -> str | None:
        """The leader's member name, when exactly one leader is agreed on."""
        leaders = {s.leader_id for s in self.statuses.values()}
        if len(leaders) != 1:
            return None
        return next((name for name, s in self.statuses.items() if s.member_id in leaders), None)

    @property
    def versions(self) -> dict[str, str]:
        """Member name → etcd server version."""
        return {name: s.version for name, s in sorted(self.statuses.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "leader": self.leader,
            "members": {
                name: {
                    "endpoint": s.endpoint,
                    "id": s.member_id,
                    "version": s.version,
                    "db_size": s.db_size,
                    "db_size_in_use": s.db_size_in_use,
                    "db_quota": s.db_quota,
                    "raft_index": s.raft_index,
                    "revision": s.revision,
                    "leader": s.is_leader,
                    "read_seconds": round(self.latencies.get(name, 0.0), 4),
                }
                for name, s in sorted(self.statuses.items())
            },
            "alarms": [f"{a.alarm} on {a.member_id}" for a in self.alarms],
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }


def _name_of(endpoint: str, members: Sequence[Member], status: MemberStatus | None = None) -> str:
    """The member name serving ``endpoint``; the endpoint itself when the member list is unknown."""
    for member in members:
        if endpoint in member.client_urls or (status is not None and member.id == status.member_id):
            return member.name
    return endpoint


def judge_health(
    members: Sequence[Member],
    status: PerEndpoint[MemberStatus],
    health: PerEndpoint[float],
    alarms: Sequence[Alarm],
    *,
    quota_warn_ratio: float = DB_QUOTA_WARN_RATIO,
    cluster_errors: Sequence[str] = (),
) -> EtcdHealth:
    """Judge etcdctl's answers: name every unhealthy member and every reason.

    :param cluster_errors: cluster-wide commands that failed (member list, alarm list).
    """
    problems: list[str] = list(cluster_errors)
    warnings: list[str] = []
    statuses = {_name_of(ep, members, s): s for ep, s in status.results.items()}
    latencies = {_name_of(ep, members): took for ep, took in health.results.items()}
    for endpoint, reason in sorted((status.failures | health.failures).items()):
        problems.append(f"etcd member {_name_of(endpoint, members)} ({endpoint}) is unhealthy: {reason}")
    asked = set(status.results) | set(status.failures)
    for member in members:
        if not member.client_urls:
            problems.append(f"etcd member {member.name} ({member.id}) was added but never started")
        elif not asked & set(member.client_urls):
            warnings.append(f"etcd member {member.name} ({', '.join(member.client_urls)}) was not checked")
        if member.is_learner:
            warnings.append(f"etcd member {member.name} is a learner: it does not vote yet")
    names = {m.id: m.name for m in members}
    for alarm in alarms:
        problems.append(
            f"etcd alarm {alarm.alarm} is raised on member {names.get(alarm.member_id, alarm.member_id)}"
        )
    for name, s in sorted(statuses.items()):
        problems += [f"etcd member {name} reports: {error}" for error in s.errors]
        if s.db_quota and max(s.db_size, s.db_size_in_use) >= quota_warn_ratio * s.db_quota:
            warnings.append(
                f"etcd member {name}: database {s.db_size / _GIB:.2f} GiB "
                f"({s.db_size_in_use / _GIB:.2f} GiB in use) "
                f"is {s.db_size / s.db_quota:.0%} of the {s.db_quota / _GIB:.2f} GiB quota; "
                "defragment it or raise --quota-backend-bytes"
            )
    leaders = {s.leader_id for s in statuses.values()}
    if statuses and (leaders == {"0"} or not leaders):
        problems.append("etcd has no leader: the cluster cannot commit writes")
    elif len(leaders) > 1:
        seen = ", ".join(f"{name} sees {s.leader_id}" for name, s in sorted(statuses.items()))
        problems.append(f"etcd members disagree on the leader ({seen})")
    versions = {s.version for s in statuses.values()}
    if len(versions) > 1:
        running = ", ".join(f"{name} {s.version}" for name, s in sorted(statuses.items()))
        warnings.append(f"etcd members run different versions ({running}): an upgrade is half done")
    return EtcdHealth(list(members), statuses, latencies, list(alarms), problems, warnings)


def check_health(etcd: EtcdEndpoints, *, quota_warn_ratio: float = DB_QUOTA_WARN_RATIO) -> EtcdHealth:
    """Ask every member for its status, health and alarms, and judge the answers."""
    members: list[Member] = []
    alarms: list[Alarm] = []
    errors: list[str] = []
    try:
        members = member_list(etcd)
    except EtcdError as err:
        errors.append(f"{err} (the member list needs a quorum)")
    try:
        alarms = alarm_list(etcd)
    except EtcdError as err:
        errors.append(str(err))
    return judge_health(
        members,
        endpoint_status(etcd),
        endpoint_health(etcd),
        alarms,
        quota_warn_ratio=quota_warn_ratio,
        cluster_errors=errors,
    )


@dataclass(frozen=True)
class Consistency:
    """Members' KV hashes at one revision; equal hashes mean the same data (§2.2 data consistency)."""

    revision: int
    hashes: dict[str, int]
    compact_revisions: dict[str, int]
    problems: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "hashes": dict(sorted(self.hashes.items())),
            "compact_revisions": dict(sorted(self.compact_revisions.items())),
            "consistent": self.consistent,
            "problems": list(self.problems),
        }


def judge_hashes(revision: int, answers: PerEndpoint[KVHash], members: Sequence[Member] = ()) -> Consistency:
    """Equal hashes at ``revision`` on every member, or a problem naming who differs."""
    hashes = {_name_of(ep, members): h.hash for ep, h in answers.results.items()}
    compacted = {_name_of(ep, members): h.compact_revision for ep, h in answers.results.items()}
    problems = [
        f"etcd member {_name_of(ep, members)} ({ep}) gave no hash: {reason}"
        for ep, reason in sorted(answers.failures.items())
    ]
    if len(set(compacted.values())) > 1:
        # The hash covers (compact revision, revision]; a compaction half applied is not corruption.
        problems.append(
            f"members report different compact revisions ({_listing(compacted)}): a compaction is in "
            "progress, check again"
        )
    elif len(set(hashes.values())) > 1:
        problems.append(f"etcd members hold different data at revision {revision}: hashes {_listing(hashes)}")
    return Consistency(revision, hashes, compacted, problems)


def check_consistency(etcd: EtcdEndpoints) -> Consistency:
    """Hash every member's keyspace at the newest revision all of them have applied."""
    status = endpoint_status(etcd)
    if not status.results:
        raise EtcdError(f"etcd consistency check: no member answered ({_listing(status.failures)})")
    revision = min(s.revision for s in status.results.values())
    try:
        members = member_list(etcd)
    except EtcdError:
        members = []
    answers = hashkv(etcd, revision)
    failed = PerEndpoint(answers.results, status.failures | answers.failures)
    return judge_hashes(revision, failed, members)


def _listing(values: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(values.items()))
