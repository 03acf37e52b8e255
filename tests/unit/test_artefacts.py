"""The artefact store: settings refused by name, reports written to and read from the store, and
etcd snapshots copied there with their checksum and fetched back (checked) on a worker without
the local file. ``file://`` stores in tmp_path stand for a folder every worker mounts; S3 needs
s3fs, which is not installed (botocore conflicts with the pinned python-dateutil)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from slipway import artefacts
from slipway.etcd.snapshot import BackupProof, sha256_of
from slipway.etcd.store import (
    RUN_MANIFEST,
    ProvenSnapshot,
    SnapshotRefused,
    SnapshotStore,
    verify_digest,
)
from slipway.reports.run import report_dir, write_run_report
from slipway.reports.web import ReportPathError, html_report_path

RECORDED = Path(__file__).with_name("recorded_run.json")
RUN = "manual__2026-12-03T10:00:00+00:00"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file:// store apart from this worker's local folder."""
    shared = tmp_path / "shared-store"
    shared.mkdir()
    monkeypatch.setenv(artefacts.REPORTS_ENV, str(tmp_path / "worker-a"))
    monkeypatch.setenv(artefacts.URL_ENV, shared.as_uri())
    monkeypatch.delenv(artefacts.CONN_ENV, raising=False)
    return shared


# --- settings ----------------------------------------------------------------------------------


def test_no_url_means_the_local_reports_folder_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(artefacts.URL_ENV, raising=False)
    monkeypatch.delenv(artefacts.CONN_ENV, raising=False)
    monkeypatch.delenv(artefacts.REPORTS_ENV, raising=False)
    assert artefacts.is_default()
    assert artefacts.parse_url(None, None) == ((tmp_path / "reports").as_uri(), None)
    root = artefacts.root()
    assert root.protocol == "file"
    assert artefacts.location(root / "x.md") == str(tmp_path / "reports" / "x.md")


@pytest.mark.parametrize(
    ("url", "conn", "message"),
    [
        ("srv/slipway", None, r"^SLIPWAY_ARTEFACTS_URL: 'srv/slipway' is not a URL"),
        ("/srv/slipway", None, r"^SLIPWAY_ARTEFACTS_URL: '/srv/slipway' is not a URL"),
        ("file://srv/slipway", None, r"^SLIPWAY_ARTEFACTS_URL: .* names host 'srv'"),
        ("file:///srv/x?y=1", None, r"^SLIPWAY_ARTEFACTS_URL: .* may not have a query"),
        ("s3:///prefix", "aws", r"^SLIPWAY_ARTEFACTS_URL: 's3:///prefix' names no bucket"),
        ("nonsense://bucket/p", None, r"^SLIPWAY_ARTEFACTS_URL: nonsense:// is not a storage protocol"),
        ("oci://bucket/p", None, r"^SLIPWAY_ARTEFACTS_URL: oci:// needs a package on every worker: .*ocifs"),
        ("file:///srv/slipway", "aws", r"^SLIPWAY_ARTEFACTS_CONN_ID: a connection is for a remote store"),
        (None, "aws", r"^SLIPWAY_ARTEFACTS_CONN_ID: set, but SLIPWAY_ARTEFACTS_URL is not"),
        ("memory://b/p", "bad id!", r"^SLIPWAY_ARTEFACTS_CONN_ID: 'bad id!' is not an Airflow connection"),
    ],
)
def test_unusable_settings_are_refused_in_one_line_naming_the_setting(
    url: str | None, conn: str | None, message: str
) -> None:
    with pytest.raises(artefacts.ArtefactStoreError, match=message) as err:
        artefacts.parse_url(url, conn)
    assert "\n" not in str(err.value)


def test_the_setting_is_checked_when_the_store_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(artefacts.URL_ENV, "reports-on-s3")
    with pytest.raises(artefacts.ArtefactStoreError, match=r"^SLIPWAY_ARTEFACTS_URL"):
        report_dir("k8s_cluster_upgrade", RUN)


def test_a_remote_url_keeps_its_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert artefacts.parse_url("memory://bucket/prefix/", "minio") == ("memory://bucket/prefix", "minio")
    monkeypatch.setenv(artefacts.URL_ENV, "memory://bucket/prefix")
    monkeypatch.delenv(artefacts.CONN_ENV, raising=False)
    path = artefacts.root() / "a" / "b.txt"
    assert artefacts.local_path(path) is None
    assert artefacts.location(path) == "memory://bucket/prefix/a/b.txt"


# --- reports -----------------------------------------------------------------------------------


def test_reports_are_written_to_the_store_and_read_back_by_the_report_view(
    store: Path, tmp_path: Path
) -> None:
    data = json.loads(RECORDED.read_text())
    written = write_run_report(data, dag_id="k8s_cluster_upgrade", run_id=data["run_id"])
    markdown = Path(artefacts.location(written["markdown"]))  # a local store: a plain path
    assert markdown.is_relative_to(store) and markdown.is_file()
    assert "# Slipway run report" in markdown.read_text()
    assert not (tmp_path / "worker-a").exists()  # nothing on this worker's own disk
    served = html_report_path("k8s_cluster_upgrade", data["run_id"])
    assert served.read_text() == written["html"].read_text()
    assert artefacts.from_location(artefacts.location(written["json"])).read_text().startswith("{")


def test_the_report_view_reads_a_remote_store_and_refuses_path_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(artefacts.URL_ENV, "memory://slipway-test-reports/prefix")
    monkeypatch.delenv(artefacts.CONN_ENV, raising=False)
    data = json.loads(RECORDED.read_text())
    written = write_run_report(data, dag_id="k8s_cluster_upgrade", run_id=data["run_id"])
    assert artefacts.location(written["html"]).startswith("memory://slipway-test-reports/prefix/")
    served = html_report_path("k8s_cluster_upgrade", data["run_id"])
    assert served.read_text() == written["html"].read_text()
    with pytest.raises(ReportPathError, match=r"^dag_id: '\.\.' is a path step"):
        html_report_path("..", data["run_id"])
    with pytest.raises(ReportPathError, match=r"^run_id: may not contain a path separator"):
        html_report_path("k8s_cluster_upgrade", "../../etc")


def test_a_local_store_refuses_a_symlink_out_of_it(store: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "upgrade-report.html").write_text("secret")
    (store / "k8s_cluster_upgrade").mkdir()
    (store / "k8s_cluster_upgrade" / "evil").symlink_to(outside)
    with pytest.raises(ReportPathError, match=r"^run_id: names a path outside the reports folder"):
        html_report_path("k8s_cluster_upgrade", "evil")


# --- etcd snapshots ----------------------------------------------------------------------------


def _proven(store: SnapshotStore, run: str, attempt: int, content: bytes) -> BackupProof:
    """A snapshot file as etcdctl leaves it (0600) and a proof of it, without a cluster."""
    path = store.attempt_path(run, attempt)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
    return BackupProof(str(path), sha256_of(path), len(content), 10, 4, "3.5", 10, 4, True, 0.1)


def _worker_store(tmp_path: Path, worker: str) -> SnapshotStore:
    return SnapshotStore(tmp_path / worker / "etcd-snapshots" / "prod", artefacts.root() / "etcd" / "prod")


def test_a_snapshot_is_copied_with_its_checksum_and_fetched_on_another_worker(
    store: Path, tmp_path: Path
) -> None:
    os.umask(0o022)
    worker_a = _worker_store(tmp_path, "worker-a")
    proof = _proven(worker_a, RUN, 1, b"etcd data " * 1000)
    stored = worker_a.publish(proof, RUN, 1)
    copy = store / "etcd" / "prod" / "manual__2026-12-03T10_00_00_00_00" / "attempt-1.db"
    assert stored == str(copy)
    assert copy.read_bytes() == Path(proof.path).read_bytes()
    assert (copy.parent / "attempt-1.db.sha256").read_text().split()[0] == proof.sha256
    assert (copy.parent / RUN_MANIFEST).is_file()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600  # every Secret of the cluster is in it
    assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
    assert worker_a.publish(proof, RUN, 1) == stored  # a cleared task: same copy, not replaced

    snapshot = ProvenSnapshot.from_dict(ProvenSnapshot.from_proof(proof, stored).to_dict())
    assert worker_a.fetch(snapshot) == snapshot  # the local file is there: used as is
    Path(proof.path).unlink()  # the worker that took it is gone, its disk with it
    worker_b = _worker_store(tmp_path, "worker-b")
    fetched = worker_b.fetch(snapshot)
    assert Path(fetched.path).is_relative_to(worker_b.root)
    assert stat.S_IMODE(Path(fetched.path).stat().st_mode) == 0o600
    verify_digest(fetched)
    assert (fetched.sha256, fetched.revision, fetched.stored) == (proof.sha256, 10, stored)
    assert worker_b.fetch(snapshot) == fetched  # fetched once: the path is known only by the XCom


def test_a_tampered_copy_is_refused_and_never_left_on_disk(store: Path, tmp_path: Path) -> None:
    worker_a = _worker_store(tmp_path, "worker-a")
    proof = _proven(worker_a, RUN, 1, b"etcd data " * 1000)
    snapshot = ProvenSnapshot.from_proof(proof, worker_a.publish(proof, RUN, 1))
    copy = Path(snapshot.stored)
    copy.write_bytes(copy.read_bytes().replace(b"etcd", b"evil", 1))
    Path(proof.path).unlink()
    worker_b = _worker_store(tmp_path, "worker-b")
    with pytest.raises(SnapshotRefused, match=r"changed since it was proven: .*refused$"):
        worker_b.fetch(snapshot)
    assert not list(worker_b.root.rglob("attempt-*"))
    assert not list(worker_b.root.rglob(".attempt-*"))

    checksum = copy.with_name("attempt-1.db.sha256")
    checksum.write_text("f" * 64 + "  attempt-1.db\n")  # a copy swapped along with its checksum
    with pytest.raises(SnapshotRefused, match="its checksum is not the proven one"):
        worker_b.fetch(snapshot)
    checksum.unlink()
    with pytest.raises(SnapshotRefused, match="no usable checksum beside it"):
        worker_b.fetch(snapshot)


def test_a_missing_snapshot_with_no_copy_is_refused(store: Path, tmp_path: Path) -> None:
    worker_a = _worker_store(tmp_path, "worker-a")
    proof = _proven(worker_a, RUN, 1, b"data")
    snapshot = ProvenSnapshot.from_proof(proof, worker_a.publish(proof, RUN, 1))
    Path(snapshot.stored).unlink()
    Path(proof.path).unlink()
    with pytest.raises(SnapshotRefused, match="missing here and in the artefact store"):
        _worker_store(tmp_path, "worker-b").fetch(snapshot)
    without_copy = ProvenSnapshot(str(tmp_path / "gone.db"), proof.sha256, 10, 4)
    with pytest.raises(SnapshotRefused, match="is missing"):
        verify_digest(_worker_store(tmp_path, "worker-b").fetch(without_copy))


def test_the_store_copy_is_write_once(store: Path, tmp_path: Path) -> None:
    first = _worker_store(tmp_path, "worker-a")
    first.publish(_proven(first, RUN, 1, b"one"), RUN, 1)
    other = _worker_store(tmp_path, "worker-b")
    with pytest.raises(SnapshotRefused, match="exists with another digest; never replaced"):
        other.publish(_proven(other, RUN, 1, b"two"), RUN, 1)


def test_pruning_keeps_the_newest_runs_in_the_store_too(store: Path, tmp_path: Path) -> None:
    worker = _worker_store(tmp_path, "worker-a")
    runs = [f"run-{i}" for i in range(4)]
    for i, run in enumerate(runs):
        manifest = worker.run_dir(run) / RUN_MANIFEST
        manifest.write_text(json.dumps({"run_id": run, "created_at": f"2026-12-0{i + 1}"}))
        worker.publish(_proven(worker, run, 1, run.encode()), run, 1)
    deleted = worker.prune(2, current_run="run-3")
    in_store = sorted(p.name for p in (store / "etcd" / "prod").iterdir())
    assert in_store == ["run-2", "run-3"]
    assert sorted(Path(d).name for d in deleted) == ["run-0", "run-0", "run-1", "run-1"]
