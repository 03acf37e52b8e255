"""Where pre-upgrade etcd snapshots live, and the rules that keep them from being lost.

A snapshot holds every object of the cluster, Secrets included, and is the only way back
from a data rollback, so:

- **write-once per run and attempt**: ``<root>/<run>/attempt-<n>.db`` is created with an
  exclusive link; an existing file is never replaced (a retried attempt gets its own file);
- **private**: files 0600 in folders 0700;
- **checked**: the sha256 recorded when the backup was proven must match the file before it
  is reused or restored (:func:`verify_digest`);
- **kept for the last N runs** (default 5): older run folders are pruned once a new backup is
  proven, never before, and never the current run's;
- **found from any worker**: with a ``mirror`` (a folder of the artefact store), a proven
  snapshot is copied there with its checksum (``<mirror>/<run>/attempt-<n>.db`` and
  ``attempt-<n>.db.sha256``); a worker without the local file fetches it back and checks both
  digests before any use (:meth:`SnapshotStore.fetch`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slipway.etcd.client import EtcdEndpoints
from slipway.etcd.snapshot import SNAPSHOT_FILE_MODE, BackupProof, prove_backup, save_snapshot, sha256_of

SNAPSHOT_DIR_MODE = 0o700
DEFAULT_KEEP_RUNS = 5
MAX_KEEP_RUNS = 1000
KEEP_ENV = "SLIPWAY_ETCD_SNAPSHOTS_KEEP"
RUN_MANIFEST = "run.json"
CHECKSUM_SUFFIX = ".sha256"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


class SnapshotRefused(RuntimeError):
    """A snapshot cannot be used or written; the message names the file and the reason."""


@dataclass(frozen=True)
class ProvenSnapshot:
    """A snapshot a restore drill proved, with the digest taken at the proof."""

    path: str
    sha256: str
    revision: int
    keys: int
    stored: str = ""  # the copy in the artefact store ("" when there is none)

    @classmethod
    def from_proof(cls, proof: BackupProof, stored: str = "") -> ProvenSnapshot:
        if not proof.restore_ok:
            raise SnapshotRefused(f"etcd snapshot {proof.path} was not proven: {proof.problem}")
        return cls(proof.path, proof.sha256, proof.revision, proof.keys, stored)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProvenSnapshot:
        """From the run record or an XCom; refuses a record without a usable digest."""
        missing = [k for k in ("path", "sha256", "revision", "keys") if data.get(k) in (None, "")]
        if missing:
            raise SnapshotRefused(f"proven etcd snapshot record lacks {', '.join(missing)}: {data}")
        digest = str(data["sha256"])
        if not _SHA256.match(digest):
            raise SnapshotRefused(f"proven etcd snapshot {data['path']}: sha256 {digest!r} is not a digest")
        return cls(
            str(data["path"]), digest, int(data["revision"]), int(data["keys"]), str(data.get("stored") or "")
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_digest(snapshot: ProvenSnapshot) -> None:
    """The file is still the one that was proven.

    :raises SnapshotRefused: when it is missing or its sha256 differs from the proof's.
    """
    path = Path(snapshot.path)
    if not path.is_file():
        raise SnapshotRefused(f"proven etcd snapshot {path} is missing")
    actual = sha256_of(path)
    if actual != snapshot.sha256:
        raise SnapshotRefused(
            f"etcd snapshot {path} changed since it was proven: sha256 {actual[:16]}…, "
            f"proven {snapshot.sha256[:16]}…"
        )


def parse_keep(value: str | None) -> int:
    """How many runs' snapshots to keep, from the ``SLIPWAY_ETCD_SNAPSHOTS_KEEP`` text.

    :raises ValueError: one line naming the setting and the reason.
    """
    if value is None or not value.strip():
        return DEFAULT_KEEP_RUNS
    try:
        keep = int(value)
    except ValueError:
        raise ValueError(f"{KEEP_ENV}: {value!r} is not a whole number") from None
    if not 1 <= keep <= MAX_KEEP_RUNS:
        raise ValueError(f"{KEEP_ENV}: {keep} is out of range (1 to {MAX_KEEP_RUNS} runs)")
    return keep


def safe_name(run_id: str) -> str:
    """A folder name for any run id (Airflow run ids hold ':' and '+')."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in run_id) or "_"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SNAPSHOT_FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=SNAPSHOT_DIR_MODE)
    # mkdir's mode is masked by the umask and leaves existing folders alone: set it outright.
    os.chmod(path, SNAPSHOT_DIR_MODE)
    return path


def _stored_digest(copy: ObjectStoragePath) -> str:
    """The digest written beside a stored copy; refuses a missing or malformed one."""
    checksum = copy.with_name(copy.name + CHECKSUM_SUFFIX)
    try:
        digest = checksum.read_text().split()[0] if checksum.exists() else ""
    except (OSError, IndexError):
        digest = ""
    if not _SHA256.match(digest):
        raise SnapshotRefused(f"etcd snapshot copy {copy}: no usable checksum beside it ({checksum.name})")
    return digest


@dataclass(frozen=True)
class SnapshotStore:
    """One cluster's snapshots: ``root/<run>/attempt-<n>.db`` plus a small manifest per run,
    copied to ``mirror`` (the cluster's folder in the artefact store) once proven."""

    root: Path
    mirror: ObjectStoragePath | None = None

    def run_dir(self, run_id: str) -> Path:
        """This run's folder (0700, like the root), created with its manifest on first use."""
        _private_dir(self.root)
        folder = _private_dir(self.root / safe_name(run_id))
        manifest = folder / RUN_MANIFEST
        if not manifest.exists():
            created = datetime.now(UTC).isoformat(timespec="microseconds")
            manifest.write_text(json.dumps({"run_id": run_id, "created_at": created}))
            os.chmod(manifest, SNAPSHOT_FILE_MODE)
        return folder

    def attempt_path(self, run_id: str, attempt: int) -> Path:
        if attempt < 1:
            raise ValueError(f"attempt: must be >= 1, got {attempt}")
        return self.run_dir(run_id) / f"attempt-{attempt}.db"

    def take(self, etcd: EtcdEndpoints, run_id: str, attempt: int) -> BackupProof:
        """Snapshot to this run and attempt's own file and prove it by a restore drill.

        :raises SnapshotRefused: when this attempt's file already exists (never replaced).
        """
        path = self.attempt_path(run_id, attempt)
        try:
            save_snapshot(etcd, path)
        except FileExistsError as err:
            raise SnapshotRefused(
                f"etcd snapshot {path} already exists for run {run_id} attempt {attempt}; "
                "snapshots are write-once"
            ) from err
        return prove_backup(etcd, path, work_dir=path.parent)

    def stored_copy(self, run_id: str, attempt: int) -> ObjectStoragePath | None:
        """Where this run and attempt's snapshot goes in the artefact store (None: no mirror)."""
        if self.mirror is None:
            return None
        return self.mirror / safe_name(run_id) / f"attempt-{attempt}.db"

    def publish(self, proof: BackupProof, run_id: str, attempt: int) -> str:
        """Copy a proven snapshot and its checksum to the artefact store; returns the copy's
        location ("" without a mirror). Write-once there too: a copy with another digest is
        never replaced.

        :raises SnapshotRefused: when the proof failed or another snapshot holds the name.
        """
        copy = self.stored_copy(run_id, attempt)
        if copy is None:
            return ""
        from slipway import artefacts

        if not proof.restore_ok:
            raise SnapshotRefused(f"etcd snapshot {proof.path} was not proven: {proof.problem}")
        local = Path(proof.path)
        if sha256_of(local) != proof.sha256:
            raise SnapshotRefused(f"etcd snapshot {local} changed since it was proven: not copied")
        if copy.exists():
            if _stored_digest(copy) != proof.sha256:
                raise SnapshotRefused(f"etcd snapshot copy {copy} exists with another digest; never replaced")
            return artefacts.location(copy)
        manifest = copy.parent / RUN_MANIFEST
        if not manifest.exists():
            artefacts.upload(local.parent / RUN_MANIFEST, manifest, private=True)
        artefacts.upload(local, copy, private=True)
        checksum = copy.with_name(copy.name + CHECKSUM_SUFFIX)
        sidecar = local.with_name(local.name + CHECKSUM_SUFFIX)
        _write_private(sidecar, f"{proof.sha256}  {local.name}\n")
        artefacts.upload(sidecar, checksum, private=True)
        return artefacts.location(copy)

    def fetch(self, snapshot: ProvenSnapshot) -> ProvenSnapshot:
        """The snapshot with a local file to use: as is when its file is here, else fetched
        from the artefact store into this store's run folder, both digests checked first.

        :raises SnapshotRefused: when the copy is missing, or its digest differs from the proof's.
        """
        if Path(snapshot.path).is_file() or not snapshot.stored:
            return snapshot  # verify_digest says "missing" when there is no copy either
        from slipway import artefacts

        copy = artefacts.from_location(snapshot.stored)
        if not copy.exists():
            raise SnapshotRefused(
                f"proven etcd snapshot {snapshot.path} is missing here and in the artefact store "
                f"({snapshot.stored})"
            )
        if _stored_digest(copy) != snapshot.sha256:
            raise SnapshotRefused(f"etcd snapshot copy {snapshot.stored}: its checksum is not the proven one")
        folder = self.run_dir(copy.parent.name)  # with a manifest: pruned like the others
        target = folder / copy.name
        if target.is_file():
            return replace(snapshot, path=str(target))  # fetched before; verify_digest checks it
        partial = folder / f".{copy.name}.fetching"
        partial.unlink(missing_ok=True)
        artefacts.download(copy, partial)
        actual = sha256_of(partial)
        if actual != snapshot.sha256:
            partial.unlink()
            raise SnapshotRefused(
                f"etcd snapshot copy {snapshot.stored} changed since it was proven: sha256 {actual[:16]}…, "
                f"proven {snapshot.sha256[:16]}…; refused"
            )
        os.replace(partial, target)
        return replace(snapshot, path=str(target))

    def runs(self) -> list[Path]:
        """Run folders, newest first (by the manifest's creation time)."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in self.root.iterdir():
            manifest = folder / RUN_MANIFEST
            if not folder.is_dir() or not manifest.is_file():
                continue  # not ours: never pruned
            try:
                created = str(json.loads(manifest.read_text())["created_at"])
            except (ValueError, KeyError, OSError):
                created = datetime.fromtimestamp(manifest.stat().st_mtime, UTC).isoformat()
            found.append((created, folder))
        return [folder for _, folder in sorted(found, reverse=True)]

    def prune(self, keep: int, *, current_run: str) -> list[str]:
        """Delete every run folder but the newest ``keep`` ones (the current run always stays).

        :returns: the folders deleted.
        """
        if keep < 1:
            raise ValueError(f"keep: must be >= 1, got {keep}")
        current = self.root / safe_name(current_run)
        kept = [current]
        deleted = []
        for folder in self.runs():
            if folder == current:
                continue
            if len(kept) < keep:
                kept.append(folder)
                continue
            shutil.rmtree(folder)
            deleted.append(str(folder))
        return deleted + self._prune_mirror(keep, current_run)

    def _prune_mirror(self, keep: int, current_run: str) -> list[str]:
        """The same rule in the artefact store: its run folders, newest ``keep`` kept."""
        if self.mirror is None or not self.mirror.exists():
            return []
        current = safe_name(current_run)
        found = []
        for folder in self.mirror.iterdir():
            manifest = folder / RUN_MANIFEST
            if folder.name == current or not manifest.exists():
                continue  # the current run, or not ours: never pruned
            try:
                created = str(json.loads(manifest.read_text())["created_at"])
            except (ValueError, KeyError, OSError):
                continue  # unreadable: kept rather than guessed
            found.append((created, folder))
        deleted = []
        for _, folder in sorted(found, key=lambda pair: pair[0], reverse=True)[keep - 1 :]:
            folder.rmdir(recursive=True)
            deleted.append(str(folder))
        return deleted
