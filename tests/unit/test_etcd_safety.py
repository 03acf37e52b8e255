"""The etcd safety net's pure parts, with plain data: the data judgement, the snapshot store's
rules on plain files, the game-day switch, and the platform capabilities the DAG consults."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from slipway.etcd.client import KVHash, PerEndpoint
from slipway.etcd.faults import overwrite_in_place
from slipway.etcd.health import judge_hashes
from slipway.etcd.safety import judge_data
from slipway.etcd.snapshot import sha256_of
from slipway.etcd.store import (
    DEFAULT_KEEP_RUNS,
    RUN_MANIFEST,
    ProvenSnapshot,
    SnapshotRefused,
    SnapshotStore,
    parse_keep,
    verify_digest,
)
from slipway.platform import Platform, PlatformError, PlatformSettings
from slipway.upgraders.controlplane import ControlPlaneFaults, control_plane_touched, parse_faults

BASELINE = ProvenSnapshot("/snapshots/run/attempt-1.db", "a" * 64, revision=1000, keys=400)


def hashes(values: dict[str, int], compact: dict[str, int] | None = None) -> PerEndpoint[KVHash]:
    compact = compact or {}
    return PerEndpoint(
        {ep: KVHash(ep, f"id-{ep}", h, 1200, compact.get(ep, 900)) for ep, h in values.items()}
    )


def test_agreeing_members_at_or_past_the_backup_pass() -> None:
    consistency = judge_hashes(1200, hashes({"etcd-0": 7, "etcd-1": 7, "etcd-2": 7}))
    check = judge_data(
        consistency, {"etcd-0": 410, "etcd-1": 410, "etcd-2": 410}, {"etcd-0": 1200, "etcd-1": 1201}, BASELINE
    )
    assert check.ok and not check.transient
    assert check.to_dict()["ok"] is True


def test_a_member_with_other_data_is_a_definitive_problem_naming_the_hashes() -> None:
    consistency = judge_hashes(1200, hashes({"etcd-0": 7, "etcd-1": 7, "etcd-2": 9}))
    check = judge_data(consistency, {"etcd-0": 410, "etcd-1": 410, "etcd-2": 410}, {}, BASELINE)
    assert not check.ok and not check.transient
    assert "hold different data at revision 1200" in check.problems[0]
    assert "etcd-2 9" in check.problems[0]


def test_a_compaction_half_applied_or_a_silent_member_is_only_transient() -> None:
    compacting = judge_hashes(
        1200, hashes({"etcd-0": 7, "etcd-1": 8}, compact={"etcd-0": 900, "etcd-1": 1100})
    )
    check = judge_data(compacting, {"etcd-0": 410, "etcd-1": 410}, {}, BASELINE)
    assert not check.ok and check.transient
    silent = judge_hashes(1200, PerEndpoint({}, {"etcd-1": "context deadline exceeded"}))
    assert judge_data(silent, {}, {}, None).transient


def test_key_counts_and_revisions_are_judged_against_each_other_and_the_backup() -> None:
    consistency = judge_hashes(1200, hashes({"etcd-0": 7, "etcd-1": 7}))
    differ = judge_data(consistency, {"etcd-0": 410, "etcd-1": 409}, {}, None)
    assert differ.problems == [
        "etcd members count different numbers of keys at revision 1200: etcd-0 410, etcd-1 409"
    ]
    behind = judge_data(
        consistency, {"etcd-0": 410, "etcd-1": 410}, {"etcd-0": 1200, "etcd-1": 999}, BASELINE
    )
    assert behind.problems == [
        "etcd member etcd-1 is at revision 999, behind the proven backup's 1000: it lost writes"
    ]
    lost = judge_data(consistency, {"etcd-0": 150, "etcd-1": 150}, {}, BASELINE)
    assert len(lost.problems) == 2 and all(
        "under half of the proven backup's 400" in p for p in lost.problems
    )
    # Ordinary churn (events expiring) is not data loss.
    assert judge_data(consistency, {"etcd-0": 250, "etcd-1": 250}, {}, BASELINE).ok


def test_proven_snapshot_records_without_a_digest_are_refused() -> None:
    assert ProvenSnapshot.from_dict(BASELINE.to_dict()) == BASELINE
    with pytest.raises(SnapshotRefused, match="lacks sha256"):
        ProvenSnapshot.from_dict({"path": "/s.db", "revision": 3, "keys": 2})
    with pytest.raises(SnapshotRefused, match="is not a digest"):
        ProvenSnapshot.from_dict(BASELINE.to_dict() | {"sha256": "abc"})


def test_digest_is_checked_before_a_snapshot_is_used(tmp_path: Path) -> None:
    path = tmp_path / "attempt-1.db"
    path.write_bytes(b"etcd snapshot bytes")
    proven = ProvenSnapshot(str(path), sha256_of(path), 10, 5)
    verify_digest(proven)
    path.write_bytes(b"etcd snapshot bytes, changed")
    with pytest.raises(SnapshotRefused, match="changed since it was proven"):
        verify_digest(proven)
    path.unlink()
    with pytest.raises(SnapshotRefused, match="is missing"):
        verify_digest(proven)


def test_retention_setting_is_bounded_and_named() -> None:
    assert parse_keep(None) == parse_keep("") == DEFAULT_KEEP_RUNS == 5
    assert parse_keep("12") == 12
    with pytest.raises(ValueError, match=r"^SLIPWAY_ETCD_SNAPSHOTS_KEEP: 'five' is not a whole number$"):
        parse_keep("five")
    with pytest.raises(ValueError, match=r"^SLIPWAY_ETCD_SNAPSHOTS_KEEP: 0 is out of range"):
        parse_keep("0")


def test_store_folders_are_private_and_attempts_have_their_own_files(tmp_path: Path) -> None:
    os.umask(0o022)
    store = SnapshotStore(tmp_path / "etcd-snapshots" / "prod")
    first = store.attempt_path("manual__2026-12-02T03:00:00+00:00", 1)
    second = store.attempt_path("manual__2026-12-02T03:00:00+00:00", 2)
    assert first.parent == second.parent and first != second
    assert first.parent.name == "manual__2026-12-02T03_00_00_00_00"
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(first.parent.stat().st_mode) == 0o700
    manifest = json.loads((first.parent / RUN_MANIFEST).read_text())
    assert manifest["run_id"] == "manual__2026-12-02T03:00:00+00:00"
    with pytest.raises(ValueError, match="attempt"):
        store.attempt_path("r", 0)


def test_prune_keeps_the_newest_runs_and_always_the_current_one(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for i in range(8):
        folder = store.run_dir(f"run-{i}")
        (folder / "attempt-1.db").write_bytes(b"x")
        (folder / RUN_MANIFEST).write_text(
            json.dumps({"run_id": f"run-{i}", "created_at": f"2026-12-0{i + 1}"})
        )
    (tmp_path / "not-a-run").mkdir()  # no manifest: never Slipway's to delete
    deleted = store.prune(DEFAULT_KEEP_RUNS, current_run="run-0")
    left = sorted(p.name for p in tmp_path.iterdir())
    # The current run (the oldest here) counts as one of the five kept.
    assert left == ["not-a-run", "run-0", "run-4", "run-5", "run-6", "run-7"]
    assert sorted(Path(d).name for d in deleted) == ["run-1", "run-2", "run-3"]
    assert store.prune(DEFAULT_KEEP_RUNS, current_run="run-0") == []


def test_overwrite_in_place_changes_every_copy_and_keeps_the_length(tmp_path: Path) -> None:
    db = tmp_path / "db"
    db.write_bytes(b"\0" * 100 + b"slipway-fault-1234" + b"\1" * 50 + b"slipway-fault-1234" + b"\0" * 10)
    size = db.stat().st_size
    assert overwrite_in_place(db, b"slipway-fault-1234", b"slipway-FAULT-1234") == 2
    assert db.stat().st_size == size and b"slipway-fault" not in db.read_bytes()
    with pytest.raises(LookupError):
        overwrite_in_place(db, b"slipway-fault-1234", b"slipway-FAULT-1234")
    with pytest.raises(ValueError, match="one length"):
        overwrite_in_place(db, b"abc", b"abcd")


def test_game_day_switch_is_parsed_and_bad_keys_are_named() -> None:
    assert parse_faults({}) == ControlPlaneFaults()
    assert not parse_faults({}).any
    faults = parse_faults({"fail-upgrade-step": "kube-apiserver", "diverge-etcd-member": "etcd-1"})
    assert faults.fail_step == "kube-apiserver" and faults.diverge_etcd_member == "etcd-1" and faults.any
    assert parse_faults({"fail-control-plane-verification": "true"}).fail_verification
    with pytest.raises(ValueError) as refused:
        parse_faults({"fail-upgrade-step": "kubelet", "diverge-etcd-member": "../etcd", "drop-tables": "1"})
    message = str(refused.value)
    assert "drop-tables: unknown fault" in message
    assert "fail-upgrade-step: 'kubelet' is not one of etcd, kube-apiserver" in message
    assert "diverge-etcd-member: '../etcd' is not an etcd member name" in message


def test_a_control_plane_is_touched_once_a_step_ran_or_failed() -> None:
    assert not control_plane_touched({})
    assert not control_plane_touched({"defragmentation": [{"member": "etcd-0"}], "probe": {}})
    assert control_plane_touched({"steps": {"etcd-0": {"action": "upgraded"}}})
    assert control_plane_touched({"step_failures": {"etcd": {"error": "boom"}}})


def test_capabilities_are_declared_per_platform() -> None:
    local = Platform(PlatformSettings(platform="local"), api=None).capabilities
    assert local.to_dict() == {
        "etcd_access": True,
        "data_restore": True,
        "add_nodes": True,
        "run_pods_on_nodes": False,
        "fault_injection": True,
    }
    kubeadm = Platform(
        PlatformSettings(platform="kubeadm", etcd_endpoints=["https://10.0.0.1:2379"]), api=None
    )
    assert kubeadm.capabilities.to_dict() == {
        "etcd_access": True,
        "data_restore": False,
        "add_nodes": False,
        "run_pods_on_nodes": True,
        "fault_injection": False,
    }
    assert not Platform(PlatformSettings(platform="kubeadm"), api=None).capabilities.etcd_access
    with pytest.raises(PlatformError, match="cannot restore etcd by itself"):
        kubeadm.etcd_restorer()
    with pytest.raises(PlatformError, match="takes no injected faults"):
        kubeadm.fault_injector()
    assert "adds nodes" in (kubeadm.strategy_problem("surge") or "")
