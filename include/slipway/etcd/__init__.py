"""etcd operations for the control-plane stage (§2.2): health, consistency, backups, defrag.

Everything runs the official ``etcdctl``/``etcdutl`` with ``-w json`` over TLS, so the same code
serves the local cluster and a real one: only :class:`EtcdEndpoints` differs.
"""

from __future__ import annotations

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
    key_count,
    member_list,
)
from slipway.etcd.health import Consistency, EtcdHealth, check_consistency, check_health
from slipway.etcd.maintenance import DefragResult, defragment, move_leader_away
from slipway.etcd.snapshot import (
    DEFAULT_BUMP_REVISION,
    BackupProof,
    RestorePlan,
    SnapshotStatus,
    back_up_and_prove,
    prove_backup,
    restore_plan,
    restore_snapshot,
    save_snapshot,
    scratch_member,
    snapshot_status,
)

__all__ = [
    "DEFAULT_BUMP_REVISION",
    "Alarm",
    "BackupProof",
    "Consistency",
    "DefragResult",
    "EtcdEndpoints",
    "EtcdError",
    "EtcdHealth",
    "KVHash",
    "Member",
    "MemberStatus",
    "PerEndpoint",
    "RestorePlan",
    "SnapshotStatus",
    "alarm_list",
    "back_up_and_prove",
    "check_consistency",
    "check_health",
    "defragment",
    "endpoint_health",
    "endpoint_status",
    "hashkv",
    "key_count",
    "member_list",
    "move_leader_away",
    "prove_backup",
    "restore_plan",
    "restore_snapshot",
    "save_snapshot",
    "scratch_member",
    "snapshot_status",
]
