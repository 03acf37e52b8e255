"""etcd operations against the local cluster's real 3-member TLS etcd: no mocks, real etcdctl/etcdutl."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from slipway.etcd import (
    DEFAULT_BUMP_REVISION,
    EtcdEndpoints,
    EtcdError,
    back_up_and_prove,
    check_consistency,
    check_health,
    defragment,
    endpoint_status,
    key_count,
    member_list,
    move_leader_away,
    prove_backup,
    restore_plan,
    restore_snapshot,
    save_snapshot,
    scratch_member,
    snapshot_status,
)
from slipway.etcd.client import etcdctl
from slipway.etcd.safety import check_data
from slipway.etcd.snapshot import DRILL_MEMBER, free_loopback_ports, sha256_of
from slipway.etcd.store import ProvenSnapshot, SnapshotRefused, SnapshotStore, verify_digest
from slipway.localcluster import components
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import ETCD_OLD

pytestmark = pytest.mark.cluster


@pytest.fixture
def etcd(local_cluster: LocalCluster) -> EtcdEndpoints:
    return EtcdEndpoints.for_local_cluster(local_cluster.cfg)


def drill_processes() -> list[str]:
    """Command lines of scratch etcd members still running (there must never be any)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"--name={DRILL_MEMBER}" in text or "--name=slipway-test-restore" in text:
            found.append(text)
    return found


def test_members_status_and_health(local_cluster: LocalCluster, etcd: EtcdEndpoints) -> None:
    members = member_list(etcd)
    assert [m.name for m in members] == [components.etcd_name(i) for i in range(3)]
    health = check_health(etcd)
    assert health.healthy, health.problems
    assert health.versions == {f"etcd-{i}": ETCD_OLD for i in range(3)}
    assert health.leader in {m.name for m in members}
    assert all(s.db_quota == 2 * 2**30 and s.revision > 0 for s in health.statuses.values())


def test_unreachable_member_is_named(local_cluster: LocalCluster, etcd: EtcdEndpoints) -> None:
    local_cluster.stop_component("etcd-2")
    try:
        health = check_health(etcd)
        assert not health.healthy
        down = f"https://127.0.0.1:{local_cluster.cfg.etcd_client_port(2)}"
        assert any(p.startswith(f"etcd member etcd-2 ({down}) is unhealthy") for p in health.problems), (
            health.problems
        )
        assert set(health.statuses) == {"etcd-0", "etcd-1"}
    finally:
        local_cluster.start_component("etcd-2")
    assert check_health(etcd).healthy


def test_every_member_holds_the_same_data(etcd: EtcdEndpoints) -> None:
    consistency = check_consistency(etcd)
    assert consistency.consistent, consistency.problems
    assert len(set(consistency.hashes.values())) == 1 and len(consistency.hashes) == 3


def test_backup_proven_by_restore_drill(etcd: EtcdEndpoints, tmp_path: Path) -> None:
    proof = back_up_and_prove(etcd, tmp_path / "etcd.db")
    assert proof.restore_ok, proof.problem
    assert (proof.restored_revision, proof.restored_keys) == (proof.revision, proof.keys)
    assert proof.keys > 100  # the cluster's objects, not an empty keyspace
    status = snapshot_status(etcd, tmp_path / "etcd.db")
    assert (status.revision, status.total_keys) == (proof.revision, proof.keys)
    assert len(proof.sha256) == 64 and proof.size_bytes == (tmp_path / "etcd.db").stat().st_size
    assert drill_processes() == []
    assert [p.name for p in tmp_path.iterdir()] == ["etcd.db"]  # scratch data dir removed
    with pytest.raises(FileExistsError, match="already exists"):
        save_snapshot(etcd, tmp_path / "etcd.db")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        # A damaged page fails bolt's page check, or, when it lands on a page bolt does not
        # read (free space), the appended sha256: either way the proof must fail and say why.
        ("page", ("is unreadable", "integrity hash does not match its content")),
        ("checksum", ("integrity hash does not match its content, the file is corrupted",)),
        ("truncate", ("is unreadable",)),
    ],
)
def test_corrupted_snapshot_fails_the_proof(
    etcd: EtcdEndpoints, tmp_path: Path, damage: str, message: tuple[str, ...]
) -> None:
    good = save_snapshot(etcd, tmp_path / "good.db")
    bad = tmp_path / f"{damage}.db"
    shutil.copy(good, bad)
    data = bytearray(bad.read_bytes())
    if damage == "page":
        middle = len(data) // 2
        data[middle : middle + 64] = b"\xff" * 64
    elif damage == "checksum":
        data[-40:-20] = b"\0" * 20  # the sha256 etcdctl appends after the database
    else:
        data = data[: len(data) // 3]
    bad.write_bytes(bytes(data))
    proof = prove_backup(etcd, bad)
    assert not proof.restore_ok
    assert str(bad) in proof.problem
    assert any(m in proof.problem for m in message), proof.problem
    assert drill_processes() == []


def test_restore_bumps_revision_and_marks_it_compacted(etcd: EtcdEndpoints, tmp_path: Path) -> None:
    snapshot = save_snapshot(etcd, tmp_path / "etcd.db")
    status = snapshot_status(etcd, snapshot)
    bump = 1_000_000
    peer, port = free_loopback_ports(2)
    name = "slipway-test-restore"
    data_dir = restore_snapshot(
        etcd, snapshot, tmp_path / "restored", name, {name: f"http://127.0.0.1:{peer}"}, bump_revision=bump
    )
    with scratch_member(etcd, data_dir, name, peer, port) as restored:
        answer = endpoint_status(restored)
        assert next(iter(answer.results.values())).revision == status.revision + bump
        assert key_count(restored) == status.total_keys
        # Watchers that saw revisions after the snapshot must be told to relist.
        with pytest.raises(EtcdError, match="compacted"):
            etcdctl(
                restored, ["get", "/registry/namespaces/shop", f"--rev={status.revision}"], what="old read"
            )
    assert drill_processes() == []
    with pytest.raises(EtcdError, match="is not empty"):
        restore_snapshot(etcd, snapshot, tmp_path / "restored", name, {name: f"http://127.0.0.1:{peer}"})


def test_restore_plan_for_the_local_members(local_cluster: LocalCluster, etcd: EtcdEndpoints) -> None:
    cfg = local_cluster.cfg
    members = {components.etcd_name(i): f"https://127.0.0.1:{cfg.etcd_peer_port(i)}" for i in range(3)}
    plan = restore_plan(
        etcd, Path("/backups/etcd.db"), members, str(cfg.state_dir / "etcd-restored" / "{name}")
    )
    assert plan.bump_revision == DEFAULT_BUMP_REVISION
    assert set(plan.commands) == set(members)
    assert f"--initial-advertise-peer-urls={members['etcd-1']}" in plan.commands["etcd-1"]
    assert any("Stop every kube-apiserver" in step for step in plan.steps)


def test_defragment_one_member_at_a_time_leader_last(etcd: EtcdEndpoints) -> None:
    leader = check_health(etcd).leader
    results = defragment(etcd)
    assert [r.member for r in results][-1] == leader
    assert sorted(r.member for r in results) == ["etcd-0", "etcd-1", "etcd-2"]
    assert all(r.db_size_after > 0 for r in results)
    assert check_health(etcd).healthy


def test_leadership_moves_away_before_a_leader_restarts(etcd: EtcdEndpoints) -> None:
    statuses = endpoint_status(etcd).results
    leader = next(ep for ep, s in statuses.items() if s.is_leader)
    follower = sorted(ep for ep in statuses if ep != leader)[-1]
    # Not the leader: nothing to do.
    assert move_leader_away(etcd, follower) is None
    new = move_leader_away(etcd, leader, prefer=[follower])
    assert new == follower  # the preferred member (e.g. already upgraded) takes over
    after = endpoint_status(etcd).results
    assert {s.leader_id for s in after.values()} == {statuses[follower].member_id}
    assert not after[leader].is_leader
    assert check_health(etcd).healthy


def test_snapshot_store_is_write_once_private_and_digest_checked(etcd: EtcdEndpoints, tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "etcd-snapshots" / "test")
    proof = store.take(etcd, "manual__run-1", 1)
    assert proof.restore_ok, proof.problem
    path = Path(proof.path)
    assert path.name == "attempt-1.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert proof.sha256 == sha256_of(path)
    proven = ProvenSnapshot.from_proof(proof)
    verify_digest(proven)
    # The same attempt again never replaces the proven file; a retry gets its own.
    before = path.read_bytes()
    with pytest.raises(SnapshotRefused, match=r"already exists .* attempt 1; snapshots are write-once"):
        store.take(etcd, "manual__run-1", 1)
    assert path.read_bytes() == before
    second = store.take(etcd, "manual__run-1", 2)
    assert Path(second.path).name == "attempt-2.db" and second.restore_ok
    assert sorted(p.name for p in path.parent.glob("*.db")) == ["attempt-1.db", "attempt-2.db"]
    assert not list(path.parent.glob("*.saving*"))  # no half-written file left behind
    # A changed file no longer passes for the proven one.
    with path.open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(SnapshotRefused, match="changed since it was proven"):
        verify_digest(proven)
    assert drill_processes() == []


def test_snapshot_retention_prunes_older_runs_after_a_new_proof(etcd: EtcdEndpoints, tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "etcd-snapshots" / "test")
    for run in ("run-a", "run-b", "run-c"):
        assert store.take(etcd, run, 1).restore_ok
    assert store.prune(2, current_run="run-c") == [str(store.root / "run-a")]
    assert sorted(p.name for p in store.root.iterdir()) == ["run-b", "run-c"]
    assert (store.root / "run-b" / "attempt-1.db").is_file()


def test_data_check_agrees_with_the_proven_backup(etcd: EtcdEndpoints, tmp_path: Path) -> None:
    proof = back_up_and_prove(etcd, tmp_path / "etcd.db")
    check = check_data(etcd, ProvenSnapshot.from_proof(proof))
    assert check.ok, check.problems
    assert sorted(check.hashes) == sorted(check.keys) == ["etcd-0", "etcd-1", "etcd-2"]
    assert len(set(check.hashes.values())) == 1 and len(set(check.keys.values())) == 1
    assert min(check.revisions.values()) >= proof.revision
    assert next(iter(check.keys.values())) >= proof.keys // 2
    # A baseline from the future (a revision this cluster never reached) is named as lost writes.
    future = ProvenSnapshot(proof.path, proof.sha256, check.revision + 10_000, proof.keys)
    behind = check_data(etcd, future, confirmations=1)
    assert not behind.ok and not behind.transient
    assert all("behind the proven backup's" in p for p in behind.problems), behind.problems
