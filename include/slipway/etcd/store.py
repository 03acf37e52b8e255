"""Where pre-upgrade etcd snapshots live, and the rules that keep them from being lost.

A snapshot holds every object of the cluster, Secrets included, and is the only way back
from a data rollback, so:

- **write-once per run and attempt**: ``<root>/<run>/attempt-<n>.db`` is created with an
  exclusive link; an existing file is never replaced (a retried attempt gets its own file);
- **private**: files 0600 in folders 0700;
- **checked**: the sha256 recorded when the backup was proven must match the file before it
  is reused or restored (:func:`verify_digest`);
- **kept for the last N runs** (default 5): older run folders are pruned once a new backup is
  proven, never before, and never the current run's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slipway.etcd.client import EtcdEndpoints
from slipway.etcd.snapshot import SNAPSHOT_FILE_MODE, BackupProof, prove_backup, save_snapshot, sha256_of

SNAPSHOT_DIR_MODE = 0o700
DEFAULT_KEEP_RUNS = 5
MAX_KEEP_RUNS = 1000
KEEP_ENV = "SLIPWAY_ETCD_SNAPSHOTS_KEEP"
RUN_MANIFEST = "run.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class SnapshotRefused(RuntimeError):
    """A snapshot cannot be used or written; the message names the file and the reason."""


@dataclass(frozen=True)
class ProvenSnapshot:
    """A snapshot a restore drill proved, with the digest taken at the proof."""

    path: str
    sha256: str
    revision: int
    keys: int

    @classmethod
    def from_proof(cls, proof: BackupProof) -> ProvenSnapshot:
        if not proof.restore_ok:
            raise SnapshotRefused(f"etcd snapshot {proof.path} was not proven: {proof.problem}")
        return cls(proof.path, proof.sha256, proof.revision, proof.keys)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProvenSnapshot:
        """From the run record or an XCom; refuses a record without a usable digest."""
        missing = [k for k in ("path", "sha256", "revision", "keys") if data.get(k) in (None, "")]
        if missing:
            raise SnapshotRefused(f"proven etcd snapshot record lacks {', '.join(missing)}: {data}")
        digest = str(data["sha256"])
        if not _SHA256.match(digest):
            raise SnapshotRefused(f"proven etcd snapshot {data['path']}: sha256 {digest!r} is not a digest")
        return cls(str(data["path"]), digest, int(data["revision"]), int(data["keys"]))

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


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=SNAPSHOT_DIR_MODE)
    # mkdir's mode is masked by the umask and leaves existing folders alone: set it outright.
    os.chmod(path, SNAPSHOT_DIR_MODE)
    return path


@dataclass(frozen=True)
class SnapshotStore:
    """One cluster's snapshots: ``root/<run>/attempt-<n>.db`` plus a small manifest per run."""

    root: Path

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
        return deleted
