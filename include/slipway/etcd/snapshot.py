"""etcd snapshots: take one, read its status, restore it, and prove it by a restore drill.

A backup is only a backup once it has been restored (§2.2 backup verification). The drill
(:func:`prove_backup`) restores the snapshot into a scratch data directory with ``etcdutl``,
starts a throw-away single-member etcd on it (plain http on free loopback ports), and checks
that it serves the snapshot's revision and key count. The scratch member is always stopped
and its data deleted, whether the drill passes or fails.

Restoring for a rollback (:func:`restore_snapshot`, :func:`restore_plan`) bumps the revision
and marks it compacted, as etcd's Kubernetes recovery guide asks: every watcher (kubelets,
controllers, informers) then gets "compacted" and relists, instead of silently missing the
writes made after the snapshot.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from slipway.etcd.client import (
    EtcdEndpoints,
    EtcdError,
    endpoint_status,
    etcdctl,
    key_count,
    key_counts,
    reason_from,
    run_tool,
)
from slipway.localcluster.health import NotHealthy, wait_until

# etcd's recovery guide for Kubernetes: a bump far beyond the writes made since the snapshot.
DEFAULT_BUMP_REVISION = 1_000_000_000
DRILL_MEMBER = "slipway-restore-drill"
DRILL_TOKEN = "slipway-restore-drill"
DRILL_START_TIMEOUT_SECONDS = 60.0
DRILL_STOP_TIMEOUT_SECONDS = 10.0
SNAPSHOT_TIMEOUT_SECONDS = 600.0
_CHUNK = 1 << 20
SNAPSHOT_FILE_MODE = 0o600


@dataclass(frozen=True)
class SnapshotStatus:
    """``etcdutl snapshot status``: what a snapshot file holds."""

    hash: int
    revision: int
    # etcdutl's ``totalKey``: not the live keys. etcd 3.5 counts every entry of every bucket
    # (each revision of each key, members, leases, meta); a restore serves fewer keys.
    total_keys: int
    total_size: int
    storage_version: str


@dataclass(frozen=True)
class BackupProof:
    """The result of a restore drill, small enough for XCom and the run's evidence pack."""

    path: str
    sha256: str
    size_bytes: int
    revision: int
    keys: int
    storage_version: str
    restored_revision: int
    restored_keys: int
    restore_ok: bool
    seconds: float
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def save_snapshot(
    etcd: EtcdEndpoints, path: Path, *, endpoint: str | None = None, overwrite: bool = False
) -> Path:
    """``etcdctl snapshot save`` from one member (default: the first endpoint) to ``path``, mode 0600.

    etcdctl renames its output over the target, so it writes beside it and the file is then
    linked into place: without ``overwrite`` an existing snapshot is never replaced, even by
    a save racing this one.

    :param overwrite: replace an existing file; off by default so a retry never clobbers a backup.
    :raises FileExistsError: when ``path`` exists and ``overwrite`` is False.
    :raises EtcdError: naming the member and etcdctl's reason.
    """
    source = etcd.only(endpoint or etcd.endpoints[0])
    if path.exists() and not overwrite:
        raise FileExistsError(f"etcd snapshot {path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    saving = path.with_name(f"{path.name}.saving-{os.getpid()}")
    saving.unlink(missing_ok=True)
    try:
        etcdctl(
            source,
            ["snapshot", "save", str(saving)],
            what=f"etcd snapshot to {path}",
            timeout=SNAPSHOT_TIMEOUT_SECONDS,
            expect_json=False,
        )
        os.chmod(saving, SNAPSHOT_FILE_MODE)  # every Secret of the cluster is in it
        if overwrite:
            os.replace(saving, path)
        else:
            os.link(saving, path)  # fails when path appeared meanwhile: never replaced
    finally:
        saving.unlink(missing_ok=True)
    return path


def snapshot_status(etcd: EtcdEndpoints, path: Path) -> SnapshotStatus:
    """``etcdutl snapshot status``: revision, entry count and hash of a snapshot file.

    :raises EtcdError: when the file is missing or not a readable snapshot.
    """
    if not path.is_file():
        raise EtcdError(f"etcd snapshot {path} does not exist")
    out = run_tool(etcd, "etcdutl", ["snapshot", "status", str(path), "-w", "json"], what=f"status of {path}")
    if out.returncode != 0 or not isinstance(out.data, dict):
        raise EtcdError(f"etcd snapshot {path} is unreadable: {reason_from(out.stderr)}")
    return SnapshotStatus(
        hash=int(out.data.get("hash", 0)),
        revision=int(out.data.get("revision", 0)),
        total_keys=int(out.data.get("totalKey", 0)),
        total_size=int(out.data.get("totalSize", 0)),
        storage_version=str(out.data.get("version", "")),
    )


def restore_snapshot(
    etcd: EtcdEndpoints,
    snapshot: Path,
    data_dir: Path,
    member_name: str,
    initial_cluster: Mapping[str, str],
    *,
    bump_revision: int = 0,
    initial_cluster_token: str = DRILL_TOKEN,
) -> Path:
    """``etcdutl snapshot restore`` of ``snapshot`` into a new ``data_dir`` for ``member_name``.

    :param initial_cluster: member name → peer URL of the cluster being rebuilt; must name
        ``member_name``.
    :param bump_revision: raise the revision by this much and mark it compacted
        (``--bump-revision --mark-compacted``); use :data:`DEFAULT_BUMP_REVISION` when
        restoring a cluster Kubernetes has been writing to.
    :raises EtcdError: when ``data_dir`` is in use, or etcdutl refuses the snapshot.
    """
    if member_name not in initial_cluster:
        raise EtcdError(
            f"restore of {snapshot}: member {member_name} is not in initial cluster {dict(initial_cluster)}"
        )
    if bump_revision < 0:
        raise EtcdError(f"restore of {snapshot}: bump_revision must be >= 0, got {bump_revision}")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise EtcdError(
            f"restore of {snapshot}: data dir {data_dir} is not empty; restore into a new directory"
        )
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        data_dir.rmdir()  # etcdutl insists on creating the directory itself
    args = [
        "snapshot",
        "restore",
        str(snapshot),
        f"--data-dir={data_dir}",
        f"--name={member_name}",
        f"--initial-cluster={','.join(f'{n}={u}' for n, u in initial_cluster.items())}",
        f"--initial-cluster-token={initial_cluster_token}",
        f"--initial-advertise-peer-urls={initial_cluster[member_name]}",
    ]
    if bump_revision:
        # etcdutl requires both together: the bumped revisions must read as compacted.
        args += [f"--bump-revision={bump_revision}", "--mark-compacted"]
    out = run_tool(etcd, "etcdutl", args, what=f"restore of {snapshot}", timeout=SNAPSHOT_TIMEOUT_SECONDS)
    if out.returncode != 0:
        shutil.rmtree(data_dir, ignore_errors=True)
        reason = reason_from(out.stderr)
        if "expected sha256" in reason:
            reason = f"its integrity hash does not match its content, the file is corrupted ({reason})"
        raise EtcdError(f"restore of etcd snapshot {snapshot} failed: {reason}")
    return data_dir


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (the kernel picks them)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _http_healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def scratch_member(
    etcd: EtcdEndpoints, data_dir: Path, name: str, peer_port: int, client_port: int
) -> Iterator[EtcdEndpoints]:
    """Run a single-member etcd on a restored ``data_dir`` (plain http on 127.0.0.1) while the
    block runs; it is stopped (killed if it will not stop) however the block ends.

    ``data_dir`` must have been restored for ``name`` with peer URL ``http://127.0.0.1:<peer_port>``.

    :raises EtcdError: when the member does not become healthy; the message ends with its log.
    """
    log_path = data_dir.parent / f"{name}.log"
    argv = [
        str(etcd.tool("etcd")),
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls=http://127.0.0.1:{client_port}",
        f"--advertise-client-urls=http://127.0.0.1:{client_port}",
        f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
        f"--initial-cluster={name}=http://127.0.0.1:{peer_port}",
        # The data is thrown away afterwards: durability would only slow the drill down.
        "--unsafe-no-fsync",
        "--logger=zap",
        "--log-level=warn",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        try:
            wait_until(
                f"scratch etcd {name} on port {client_port}",
                lambda: _http_healthy(client_port),
                DRILL_START_TIMEOUT_SECONDS,
                alive=lambda: proc.poll() is None,
            )
        except NotHealthy as err:
            tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
            raise EtcdError(f"{err}; log: {tail or 'empty'}") from err
        yield EtcdEndpoints(endpoints=(f"http://127.0.0.1:{client_port}",), bin_dir=etcd.bin_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=DRILL_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _live_keys_at(etcd: EtcdEndpoints, revision: int) -> tuple[int, str]:
    """The live keys the cluster held at ``revision`` (every answering member agreeing), or a
    problem. What a restore of a snapshot taken at that revision must serve, on any etcd
    minor (``snapshot status`` counts differently from one minor to the next)."""
    counts = key_counts(etcd, revision)
    found = set(counts.results.values())
    if len(found) == 1:
        return found.pop(), ""
    if not found:
        return 0, f"no etcd member could count its keys at revision {revision}: {counts.failures}"
    return (
        0,
        f"etcd members disagree on the keys at revision {revision}: {dict(sorted(counts.results.items()))}",
    )


def prove_backup(etcd: EtcdEndpoints, snapshot: Path, *, work_dir: Path | None = None) -> BackupProof:
    """Restore ``snapshot`` into a scratch member and check it serves what the snapshot holds.

    Never raises for a bad snapshot: the proof comes back with ``restore_ok=False`` and a
    ``problem`` naming the file and what failed, for the check and the evidence pack.

    :param work_dir: where the scratch data directory goes (default: the system temp dir).
    """
    started = time.monotonic()
    digest = sha256_of(snapshot) if snapshot.is_file() else ""
    size = snapshot.stat().st_size if snapshot.is_file() else 0
    status = SnapshotStatus(0, 0, 0, 0, "")
    restored_revision = restored_keys = 0
    problem = ""
    try:
        status = snapshot_status(etcd, snapshot)
        with tempfile.TemporaryDirectory(prefix="slipway-restore-drill-", dir=work_dir) as scratch:
            peer_port, client_port = free_loopback_ports(2)
            data_dir = restore_snapshot(
                etcd,
                snapshot,
                Path(scratch) / "data",
                DRILL_MEMBER,
                {DRILL_MEMBER: f"http://127.0.0.1:{peer_port}"},
            )
            with scratch_member(etcd, data_dir, DRILL_MEMBER, peer_port, client_port) as member:
                answer = endpoint_status(member)
                if not answer.results:
                    raise EtcdError(f"restored member gave no status: {answer.failures}")
                restored_revision = next(iter(answer.results.values())).revision
                restored_keys = key_count(member)
    except EtcdError as err:
        problem = str(err)
    expected_keys = 0
    if not problem:
        expected_keys, problem = _live_keys_at(etcd, status.revision)
    if not problem and (restored_revision, restored_keys) != (status.revision, expected_keys):
        problem = (
            f"etcd snapshot {snapshot} restored to revision {restored_revision} with {restored_keys} keys, "
            f"but the cluster held {expected_keys} keys at the snapshot's revision {status.revision}"
        )
    return BackupProof(
        path=str(snapshot),
        sha256=digest,
        size_bytes=size,
        revision=status.revision,
        keys=expected_keys,
        storage_version=status.storage_version,
        restored_revision=restored_revision,
        restored_keys=restored_keys,
        restore_ok=not problem,
        seconds=round(time.monotonic() - started, 3),
        problem=problem,
    )


def back_up_and_prove(
    etcd: EtcdEndpoints, path: Path, *, endpoint: str | None = None, overwrite: bool = False
) -> BackupProof:
    """Take a snapshot to ``path`` and prove it by a restore drill (the §2.2 backup gate)."""
    save_snapshot(etcd, path, endpoint=endpoint, overwrite=overwrite)
    return prove_backup(etcd, path, work_dir=path.parent)


@dataclass(frozen=True)
class RestorePlan:
    """The runbook for rolling etcd back to a snapshot, with the exact restore command per member."""

    snapshot: str
    bump_revision: int
    steps: list[str]
    commands: dict[str, list[str]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def restore_plan(
    etcd: EtcdEndpoints,
    snapshot: Path,
    members: Mapping[str, str],
    data_dir: str,
    *,
    bump_revision: int = DEFAULT_BUMP_REVISION,
    initial_cluster_token: str = "etcd-cluster-restored",
) -> RestorePlan:
    """Notes and commands to roll the whole etcd cluster back to ``snapshot``.

    :param members: member name → peer URL, as in ``--initial-cluster``.
    :param data_dir: the new data directory per member, ``{name}`` is replaced
        (e.g. ``/var/lib/etcd-restored/{name}``).
    """
    if bump_revision <= 0:
        raise ValueError(
            "bump_revision must be > 0: Kubernetes watchers must see the rollback as a compaction"
        )
    initial = ",".join(f"{name}={url}" for name, url in members.items())
    commands = {
        name: [
            str(etcd.tool("etcdutl")),
            "snapshot",
            "restore",
            str(snapshot),
            f"--data-dir={data_dir.format(name=name)}",
            f"--name={name}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-token={initial_cluster_token}",
            f"--initial-advertise-peer-urls={url}",
            f"--bump-revision={bump_revision}",
            "--mark-compacted",
        ]
        for name, url in members.items()
    }
    steps = [
        f"Prove the snapshot first: prove_backup({snapshot}) must pass (restore drill).",
        "Stop every kube-apiserver so nothing writes to etcd while it goes back in time.",
        f"Stop every etcd member ({', '.join(members)}); keep their old data directories for forensics.",
        f"On each member run its restore command: --bump-revision {bump_revision} moves the revision past "
        "anything clients have seen, --mark-compacted makes their watches fail with 'compacted' so "
        "they relist.",
        f"Start every etcd member on its restored data dir ({data_dir}) with "
        f"--initial-cluster-token={initial_cluster_token}; wait until endpoint health passes on all.",
        "Check data consistency (endpoint hashkv at one revision agrees on every member).",
        "Start the kube-apiservers, then restart kube-controller-manager, kube-scheduler and every kubelet "
        "so no component keeps a cache from after the snapshot.",
    ]
    return RestorePlan(str(snapshot), bump_revision, steps, commands)
