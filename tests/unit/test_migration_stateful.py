"""The stateful cut-over's pure parts (claims, PV choice, the declared workload) and the rclone data
path against real folders (Debian's rclone, no cluster)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from slipway.migration import stateful, volumes


def _claim(name: str, size: str = "1Gi", storage_class: str = "local-disk") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "db"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": size}},
        },
    }


def _pv(name: str, size: str, *, phase: str = "Available", claim_ref: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "capacity": {"storage": size},
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "local-disk",
        "local": {"path": f"/disks/{name}"},
    }
    if claim_ref:
        spec["claimRef"] = {"namespace": "db", "name": claim_ref}
    return {"metadata": {"name": name}, "spec": spec, "status": {"phase": phase}}


def _sts(volumes_: list[dict[str, Any]] | None = None, templates: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": 2,
        "template": {"spec": {"containers": [{"name": "db"}], "volumes": volumes_ or []}},
    }
    if templates:
        spec["volumeClaimTemplates"] = [{"metadata": {"name": "data"}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "pg", "namespace": "db"},
        "spec": spec,
    }


def test_claims_of_a_statefulset_are_its_templates_ordinals_and_named_claims() -> None:
    existing = ["data-pg-0", "data-pg-1", "data-pg-old", "data-pgx-0", "logs"]
    workload = _sts([{"name": "logs", "persistentVolumeClaim": {"claimName": "logs"}}])
    assert stateful.claim_names(workload, existing) == ["data-pg-0", "data-pg-1", "logs"]
    assert stateful.is_stateful(workload) and not stateful.is_stateful(_sts(templates=False))
    stripped = stateful.without_claims(workload)
    assert (
        "volumeClaimTemplates" not in stripped["spec"]
        and stripped["spec"]["template"]["spec"]["volumes"] == []
    )
    assert workload["spec"]["volumeClaimTemplates"]  # the original is left as it was


def test_the_target_pv_is_a_prebound_one_else_the_smallest_that_fits() -> None:
    claim = _claim("data-pg-0", "5Gi")
    pvs = [
        _pv("big", "100Gi"),
        _pv("small", "1Gi"),
        _pv("fits", "10Gi"),
        _pv("bound-elsewhere", "5Gi", phase="Bound", claim_ref="other"),
        _pv("released", "5Gi", phase="Released"),
    ]
    assert stateful.choose(claim, pvs, set())["metadata"]["name"] == "fits"  # type: ignore[index]
    assert stateful.choose(claim, pvs, {"fits"})["metadata"]["name"] == "big"  # type: ignore[index]
    reserved = _pv("reserved", "50Gi", phase="Available", claim_ref="data-pg-0")
    assert stateful.choose(claim, [*pvs, reserved], set())["metadata"]["name"] == "reserved"  # type: ignore[index]
    assert stateful.choose(_claim("x", storage_class="fast-ssd"), pvs, set()) is None
    csi = _pv("csi", "10Gi")
    csi["spec"].pop("local")
    csi["spec"]["csi"] = {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}
    assert stateful.choose(claim, [csi], set()) is None  # no folder for rclone


def test_a_claim_pairs_with_target_storage_or_says_what_is_missing() -> None:
    claim = _claim("data-pg-0")
    claim["spec"]["volumeName"] = "src-0"
    source_pvs = {"src-0": _pv("src-0", "1Gi", phase="Bound", claim_ref="data-pg-0")}
    target_pvs = {"tgt-0": _pv("tgt-0", "1Gi")}
    classes = {"local-disk"}

    def pair(**changes: Any) -> tuple[Any, str | None]:
        args: dict[str, Any] = {
            "claim": claim,
            "on_target": None,
            "source_pvs": source_pvs,
            "target_pvs": target_pvs,
            "classes": classes,
            "taken": set(),
        } | changes
        return stateful.pair_claim("StatefulSet/db/pg", claim_name="data-pg-0", **args)

    paired, why = pair()
    assert why is None and (paired.source_path, paired.target_pv, paired.target_path) == (
        "/disks/src-0",
        "tgt-0",
        "/disks/tgt-0",
    )
    assert "target has no StorageClass local-disk" in str(pair(classes=set())[1])
    assert "no Available local PersistentVolume of class local-disk with 1Gi" in str(pair(taken={"tgt-0"})[1])
    unbound = {**claim, "spec": {**claim["spec"], "volumeName": None}}
    assert "not bound to a PersistentVolume on the source" in str(pair(claim=unbound)[1])
    csi = _pv("src-0", "1Gi")
    csi["spec"].pop("local")
    csi["spec"]["csi"] = {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}
    assert "a csi volume: rclone needs a folder" in str(pair(source_pvs={"src-0": csi})[1])
    # A claim already on the target keeps its PV: the cluster decides, not a new choice.
    kept = {**claim, "spec": {**claim["spec"], "volumeName": "tgt-9"}}
    again, _ = pair(on_target=kept, target_pvs={**target_pvs, "tgt-9": _pv("tgt-9", "1Gi", phase="Bound")})
    assert again.target_pv == "tgt-9"


def test_target_claim_is_prebound_and_loses_the_source_binding_marks() -> None:
    source = _claim("data-pg-0")
    source["metadata"]["annotations"] = {"pv.kubernetes.io/bind-completed": "yes", "team": "db"}
    source["spec"]["volumeName"] = "src-disk-0"
    body = stateful.target_claim(source, "tgt-disk-2")
    assert body["spec"]["volumeName"] == "tgt-disk-2" and body["metadata"]["annotations"] == {"team": "db"}


def test_a_frozen_source_declares_its_old_replicas_without_the_freeze_record() -> None:
    frozen = _sts()
    frozen["spec"]["replicas"] = 0
    frozen["metadata"]["annotations"] = {
        stateful.REPLICAS: "3",
        stateful.FROZEN_AT: "2026-12-03T10:00:00+00:00",
        "a": "b",
    }
    declared = stateful.declared(frozen)
    assert declared["spec"]["replicas"] == 3 and declared["metadata"]["annotations"] == {"a": "b"}
    assert stateful.declared(_sts()) == _sts()


def _tree(root: Path) -> None:
    (root / "base").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "base" / "1259").write_bytes(os.urandom(64 * 1024))
    (root / "PG_VERSION").write_text("16\n")
    (root / "secret.key").write_text("k\n")
    (root / "secret.key").chmod(0o600)


def test_rclone_sync_is_incremental_and_check_names_every_difference(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    _tree(source)
    first = volumes.sync(source, target)
    assert (first.files, first.bytes) == (3, 64 * 1024 + 3 + 2)
    assert (target / "empty").is_dir() and (target / "secret.key").stat().st_mode & 0o777 == 0o600
    assert volumes.sync(source, target).files == 0  # nothing changed: nothing moves
    assert volumes.check(source, target) == volumes.CheckResult(matching=3)

    damaged = target / "base" / "1259"
    stat = damaged.stat()
    data = bytearray(damaged.read_bytes())
    data[0] ^= 0xFF  # same size, same time: only a hash tells
    damaged.write_bytes(bytes(data))
    os.utime(damaged, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (target / "extra").write_text("only on the target\n")
    (source / "PG_VERSION").unlink()
    result = volumes.check(source, target)
    assert result.differences == {
        "base/1259": "differs",
        "extra": "only on the target",
        "PG_VERSION": "only on the target",
    }
    plain = volumes.sync(source, target)  # size and time agree: a plain pass misses the damage
    assert (plain.files, plain.deletes) == (0, 2)
    repaired = volumes.sync(source, target, checksum=True)
    assert (repaired.files, repaired.bytes) == (1, 64 * 1024)
    assert volumes.check(source, target).ok


def test_snapshot_once_per_freeze_and_restore_proven(tmp_path: Path) -> None:
    volume = tmp_path / "disk"
    _tree(volume)
    saved, taken = volumes.snapshot(volume, "20261203T100000000000Z")
    assert taken and saved.name == "disk.slipway-pre-cutover-20261203T100000000000Z"
    (volume / "PG_VERSION").write_text("99\n")  # the source touched after the freeze
    assert volumes.snapshot(volume, "20261203T100000000000Z") == (saved, False)  # kept, not retaken
    (volume / "stray").write_text("x\n")
    volumes.restore(volume, "20261203T100000000000Z")
    assert (volume / "PG_VERSION").read_text() == "16\n" and not (volume / "stray").exists()
    with pytest.raises(volumes.RcloneError, match="no pre-cutover snapshot"):
        volumes.restore(volume, "another-freeze")


def test_relative_or_missing_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(volumes.RcloneError, match="does not exist"):
        volumes.sync(tmp_path / "nope", tmp_path / "dst")
    with pytest.raises(volumes.RcloneError, match="relative"):
        volumes.sync(Path("."), tmp_path / "dst")
    assert not volumes.check(tmp_path, tmp_path / "missing").ok


def test_a_sync_killed_mid_transfer_fails_loudly_and_the_next_pass_completes_it(tmp_path: Path) -> None:
    """rclone killed while it copies (a worker lost mid-sync): the pass raises, the target holds
    part of the data, and the next pass, the retry, makes it an exact copy the check proves."""
    import threading

    import psutil

    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    files, size = 60, 2 * 2**20
    for i in range(files):
        (source / f"block-{i:03}.bin").write_bytes(os.urandom(size))
    seen: dict[str, int] = {}

    def kill_when_part_is_copied() -> None:
        me = psutil.Process()
        while "bytes" not in seen:
            copied = sum(f.stat().st_size for f in target.glob("*") if f.is_file()) if target.is_dir() else 0
            rclone = [p for p in me.children(recursive=True) if p.name() == "rclone"]
            if rclone and 0 < copied < files * size:
                for proc in rclone:
                    proc.kill()
                seen["bytes"] = copied

    killer = threading.Thread(target=kill_when_part_is_copied, daemon=True)
    killer.start()
    with pytest.raises(volumes.RcloneError, match="failed"):
        volumes.sync(source, target)
    killer.join(timeout=30)
    assert 0 < seen["bytes"] < files * size  # killed mid-way, not before or after
    assert not volumes.check(source, target).ok

    again = volumes.sync(source, target)
    assert again.bytes > 0
    proof = volumes.check(source, target)
    assert proof.ok and proof.matching == files, proof.describe()
