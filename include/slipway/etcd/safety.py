"""The etcd safety net around a control-plane upgrade.

- :func:`check_data` runs after every etcd change: every member's ``hashkv`` at one revision,
  each member's own key count at that revision, and sanity against the proven pre-upgrade
  backup (no member behind the backup's revision, no member holding less than half its keys).
  Transient answers (a compaction half applied, a member restarting) are asked again; a
  real difference must be seen on several looks in a row before it counts.
- :func:`restore_once` rolls etcd back to the proven snapshot exactly once per run: only
  after the file's sha256 matches the digest recorded at the proof, and never again when the
  run record or the cluster itself (its revision bumped past the snapshot's) says it was done.

The restore takes every object in etcd back to the snapshot's moment, the run record
included; :func:`restore_once` therefore keeps a copy of the record beside the snapshot
and writes it back afterwards, so the timeline shows what led to the restore.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slipway.etcd.client import (
    EtcdEndpoints,
    EtcdError,
    Member,
    PerEndpoint,
    endpoint_status,
    hashkv,
    key_counts,
    member_list,
)
from slipway.etcd.health import Consistency, judge_hashes
from slipway.etcd.snapshot import DEFAULT_BUMP_REVISION, SNAPSHOT_FILE_MODE
from slipway.etcd.store import ProvenSnapshot, verify_digest
from slipway.runrecord import RunRecord

# A member holding less than this share of the proven backup's keys has lost data; the
# cluster's own churn (events expiring, leases) never comes near it during an upgrade.
MIN_KEY_SHARE = 0.5
CHECK_TIMEOUT_SECONDS = 60.0
CHECK_INTERVAL_SECONDS = 2.0
CONFIRMATIONS = 3
RESTORE_DONE = "done"
RECORD_COPY = "record-before-restore.json"


@dataclass(frozen=True)
class DataCheck:
    """One look at etcd's data: problems stop the upgrade; ``transient`` ones are asked again."""

    revision: int
    hashes: dict[str, int]
    keys: dict[str, int]
    revisions: dict[str, int]
    problems: list[str] = field(default_factory=list)
    transient: bool = False
    looks: int = 1

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "revision": self.revision,
            "hashes": dict(sorted(self.hashes.items())),
            "keys": dict(sorted(self.keys.items())),
            "revisions": dict(sorted(self.revisions.items())),
            "problems": list(self.problems),
            "looks": self.looks,
        }


def judge_data(
    consistency: Consistency,
    keys: dict[str, int],
    revisions: dict[str, int],
    baseline: ProvenSnapshot | None,
    *,
    key_failures: Sequence[str] = (),
) -> DataCheck:
    """Pure: name every member whose data differs from its peers or from the proven backup."""
    definitive: list[str] = []
    transient = list(consistency.problems) + list(key_failures)
    if any("hold different data" in p for p in consistency.problems):
        transient = [p for p in transient if "hold different data" not in p]
        definitive.append(next(p for p in consistency.problems if "hold different data" in p))
    at = consistency.revision
    if len(set(keys.values())) > 1:
        listing = ", ".join(f"{name} {count}" for name, count in sorted(keys.items()))
        definitive.append(f"etcd members count different numbers of keys at revision {at}: {listing}")
    if baseline is not None:
        for name, revision in sorted(revisions.items()):
            if revision < baseline.revision:
                definitive.append(
                    f"etcd member {name} is at revision {revision}, behind the proven backup's "
                    f"{baseline.revision}: it lost writes"
                )
        floor = int(baseline.keys * MIN_KEY_SHARE)
        for name, count in sorted(keys.items()):
            if count < floor:
                definitive.append(
                    f"etcd member {name} holds {count} keys at revision {at}, under half of the proven "
                    f"backup's {baseline.keys}: data is missing"
                )
    return DataCheck(
        revision=at,
        hashes=dict(consistency.hashes),
        keys=dict(keys),
        revisions=dict(revisions),
        problems=definitive + transient,
        transient=bool(transient) and not definitive,
    )


def _names(members: Sequence[Member]) -> dict[str, str]:
    return {url: m.name for m in members for url in m.client_urls}


def look(etcd: EtcdEndpoints, baseline: ProvenSnapshot | None = None) -> DataCheck:
    """One look: status, hashes and key counts of every member at the newest common revision."""
    status = endpoint_status(etcd)
    if not status.results:
        failures = "; ".join(f"{ep}: {why}" for ep, why in sorted(status.failures.items()))
        return DataCheck(0, {}, {}, {}, [f"no etcd member answered ({failures})"], transient=True)
    try:
        members = member_list(etcd)
    except EtcdError:
        members = []
    names = _names(members)
    revision = min(s.revision for s in status.results.values())
    answers = hashkv(etcd, revision)
    consistency = judge_hashes(
        revision, PerEndpoint(answers.results, status.failures | answers.failures), members
    )
    counts = key_counts(etcd, revision)
    keys = {names.get(ep, ep): n for ep, n in counts.results.items()}
    revisions = {names.get(ep, ep): s.revision for ep, s in status.results.items()}
    key_failures = [
        f"etcd member {names.get(ep, ep)} gave no key count: {why}"
        for ep, why in sorted(counts.failures.items())
        if ep not in status.failures
    ]
    return judge_data(consistency, keys, revisions, baseline, key_failures=key_failures)


def check_data(
    etcd: EtcdEndpoints,
    baseline: ProvenSnapshot | None = None,
    *,
    timeout: float = CHECK_TIMEOUT_SECONDS,
    interval: float = CHECK_INTERVAL_SECONDS,
    confirmations: int = CONFIRMATIONS,
) -> DataCheck:
    """Look until etcd's data checks out, a real difference is seen ``confirmations`` times in a
    row, or ``timeout`` passes (then the last look's problems stand)."""
    deadline = time.monotonic() + timeout
    seen = looks = 0
    while True:
        try:
            check = look(etcd, baseline)
        except EtcdError as err:
            check = DataCheck(0, {}, {}, {}, [f"etcd data check failed: {err}"], transient=True)
        looks += 1
        seen = 0 if check.transient else seen + 1
        if check.ok or seen >= confirmations or time.monotonic() >= deadline:
            return replace(check, looks=looks)
        time.sleep(interval)  # between looks at a cluster that may be settling


def restore_done_in_cluster(etcd: EtcdEndpoints, snapshot: ProvenSnapshot) -> bool:
    """Whether etcd already went through a restore of ``snapshot``: a restore bumps every
    member's revision past the snapshot's by :data:`DEFAULT_BUMP_REVISION`, which normal
    writes never reach."""
    try:
        statuses = endpoint_status(etcd).results
    except EtcdError:
        return False
    return bool(statuses) and min(s.revision for s in statuses.values()) >= (
        snapshot.revision + DEFAULT_BUMP_REVISION
    )


@dataclass(frozen=True)
class RestoreOutcome:
    """What :func:`restore_once` did: ``restored`` is False when an earlier attempt had."""

    restored: bool
    message: str
    entry: dict[str, Any]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SNAPSHOT_FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _put_back(record: RunRecord, saved: dict[str, Any]) -> None:
    """Write the record as it was before the restore back over what the restore left: its keys
    win, timelines are merged (nothing either side holds is lost)."""
    current = record.load()
    events = list(saved.get("events", []))
    events += [e for e in current.get("events", []) if e not in events]
    record.update(**(saved | {"events": events}))


def restore_once(
    record: RunRecord,
    etcd: EtcdEndpoints,
    snapshot: ProvenSnapshot,
    restore: Callable[[ProvenSnapshot], dict[str, Any]],
) -> RestoreOutcome:
    """Restore ``snapshot`` with ``restore`` unless this run already did; digest checked first.

    :raises SnapshotRefused: when the file is missing or differs from the proven one.
    """
    keep = Path(snapshot.path).with_name(RECORD_COPY)
    done = record.get("etcd_restore") or {}
    if done.get("state") == RESTORE_DONE:
        message = f"etcd was already restored in this run at {done.get('at')}: not restoring twice"
        record.event("etcd-restore-skipped", message)
        return RestoreOutcome(False, message, done)
    if restore_done_in_cluster(etcd, snapshot):
        # An earlier attempt restored and stopped before it could say so: put its record back.
        if keep.is_file():
            _put_back(record, json.loads(keep.read_text()))
        entry: dict[str, Any] = {
            "state": RESTORE_DONE,
            "snapshot": snapshot.path,
            "sha256": snapshot.sha256,
            "found": "cluster",
        }
        record.update(etcd_restore=entry)
        message = (
            f"etcd already restored from {snapshot.path}: every member's revision is past the snapshot's "
            f"{snapshot.revision} + {DEFAULT_BUMP_REVISION}; not restoring twice"
        )
        record.event("etcd-restore-skipped", message)
        return RestoreOutcome(False, message, entry)
    verify_digest(snapshot)
    record.event(
        "etcd-restore-started",
        f"restoring etcd from {snapshot.path}: sha256 {snapshot.sha256} matches the digest proven",
        sha256=snapshot.sha256,
    )
    saved = record.load()
    _write_private(keep, json.dumps(saved))
    result = restore(snapshot)
    _put_back(record, saved)  # the restore took the record back to the snapshot's moment
    entry = {
        "state": RESTORE_DONE,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "snapshot": snapshot.path,
        "sha256": snapshot.sha256,
        "digest_verified": True,
        "result": result,
    }
    record.update(etcd_restore=entry)
    message = (
        f"etcd restored from the proven snapshot {snapshot.path} (sha256 {snapshot.sha256[:16]}… verified): "
        f"revision {result.get('revision_after_restore')}, {result.get('keys_after_restore')} keys, "
        "members consistent"
    )
    record.event("etcd-restored", message, sha256=snapshot.sha256)
    return RestoreOutcome(True, message, entry)
