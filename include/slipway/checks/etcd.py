"""etcd preflight (§2.2): every member healthy, data consistent, and a backup proven by a restore drill."""

from __future__ import annotations

from pathlib import Path

from slipway.checks.result import finding
from slipway.etcd.client import EtcdEndpoints, EtcdError
from slipway.etcd.health import DB_QUOTA_WARN_RATIO, Consistency, EtcdHealth, check_consistency, check_health
from slipway.etcd.snapshot import BackupProof, back_up_and_prove
from slipway.models import CheckResult


def judge_etcd_health(health: EtcdHealth) -> CheckResult:
    """Blocker on any problem (down member, alarm, no leader); warning on quota or mixed versions."""
    evidence = health.to_dict()
    if health.problems:
        return finding(
            "etcd-health",
            "blocker",
            f"etcd is not healthy: {'; '.join(health.problems)}",
            evidence,
            "Repair etcd first (restart or replace the member, disarm alarms after freeing space); "
            "never upgrade a control plane whose etcd has lost a member.",
        )
    if health.warnings:
        return finding(
            "etcd-health",
            "warning",
            f"etcd is healthy with {len(health.warnings)} warning(s): {'; '.join(health.warnings)}",
            evidence,
            "Defragment members near their quota (one at a time) and finish any half-done etcd upgrade.",
        )
    return finding(
        "etcd-health",
        "ok",
        f"{len(health.statuses)} etcd member(s) healthy, leader {health.leader}, "
        f"version {', '.join(sorted(set(health.versions.values())))}, no alarms",
        evidence,
    )


def judge_etcd_consistency(consistency: Consistency) -> CheckResult:
    """Blocker when members hold different data at one revision."""
    if consistency.consistent:
        return finding(
            "etcd-health/consistency",
            "ok",
            f"all {len(consistency.hashes)} etcd members hold the same data "
            f"at revision {consistency.revision}",
            consistency.to_dict(),
        )
    return finding(
        "etcd-health/consistency",
        "blocker",
        f"etcd data consistency not confirmed: {'; '.join(consistency.problems)}",
        consistency.to_dict(),
        "A member with a different hash is corrupt: remove it and add it back empty so it resyncs "
        "from the leader.",
    )


def judge_backup(proof: BackupProof) -> CheckResult:
    """Blocker unless the snapshot was restored and served its revision and key count."""
    if proof.restore_ok:
        return finding(
            "etcd-backup",
            "ok",
            f"etcd snapshot {proof.path} proven by a restore drill: revision {proof.revision}, "
            f"{proof.keys} keys, sha256 {proof.sha256[:12]}…, {proof.seconds:.1f}s",
            proof.to_dict(),
        )
    return finding(
        "etcd-backup",
        "blocker",
        f"etcd backup not proven: {proof.problem}",
        proof.to_dict(),
        "Take a new snapshot from a healthy member and prove it again; do not start destructive steps "
        "without a backup that restores.",
    )


def check_etcd_health(etcd: EtcdEndpoints, *, quota_warn_ratio: float = DB_QUOTA_WARN_RATIO) -> CheckResult:
    """``etcd-health``: members, leader, alarms, database size against quota, versions."""
    try:
        return judge_etcd_health(check_health(etcd, quota_warn_ratio=quota_warn_ratio))
    except EtcdError as err:
        return finding(
            "etcd-health",
            "blocker",
            f"etcd did not answer: {err}",
            {"endpoints": list(etcd.endpoints)},
            "Bring the etcd members back (or fix the endpoints and certificates) before anything else.",
        )


def check_etcd_consistency(etcd: EtcdEndpoints) -> CheckResult:
    """``etcd-health/consistency``: every member's KV hash at the same revision."""
    try:
        return judge_etcd_consistency(check_consistency(etcd))
    except EtcdError as err:
        return finding(
            "etcd-health/consistency", "blocker", str(err), {}, "Bring the etcd members back first."
        )


def check_etcd_backup(etcd: EtcdEndpoints, path: Path, *, overwrite: bool = False) -> CheckResult:
    """``etcd-backup``: take a snapshot to ``path`` and prove it by restoring it."""
    try:
        return judge_backup(back_up_and_prove(etcd, path, overwrite=overwrite))
    except (EtcdError, FileExistsError) as err:
        return finding(
            "etcd-backup",
            "blocker",
            f"etcd snapshot to {path} failed: {err}",
            {"path": str(path)},
            "Check the etcd members' health and the backup directory, then run the check again.",
        )
