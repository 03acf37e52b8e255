"""Velero for the migration's resources: a Backup of the chosen namespaces on the source, a
Restore of the same backup on the target, both through Velero's own API objects.

Velero's server runs as a process on this host against each cluster's API (its documented
out-of-cluster mode), one per cluster, with the AWS object-store plugin talking to an
S3-compatible bucket both servers share: read-write for the source, read-only for the target,
whose server learns of the backup by syncing the bucket. No node-agent (kwok nodes run no pods):
volume data moves through rclone instead.

Core code (no Airflow). Every cluster change is idempotent: the API objects are the truth, so a
repeated call finds its Backup or Restore and waits for it instead of starting another.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.kube.client import apply_manifest
from slipway.localcluster import binaries
from slipway.localcluster.kit import Release
from slipway.localcluster.processes import Supervisor
from slipway.migration.errors import MigrationError
from slipway.migration.identity import service_account_kubeconfig, write_private
from slipway.migration.objects import Obj

NAMESPACE = "velero"
SERVICE_ACCOUNT = "velero"
LOCATION = "default"
GROUP, VERSION = "velero.io", "v1"
# Labels Velero puts on every object it restores: its bookkeeping, not part of the user's object.
RESTORE_LABELS = ("velero.io/backup-name", "velero.io/restore-name")

BACKUP_DONE = ("Completed",)
RESTORE_DONE = ("Completed",)
# Terminal phases that are not success; anything else is still on its way.
FAILED = ("PartiallyFailed", "Failed", "FailedValidation")
TERMINAL = ("Completed", *FAILED)  # a Backup's or Restore's phase once Velero is done with it
NOT_FOUND = 404

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class VeleroError(RuntimeError):
    """A Velero backup, restore or server failed; the message names which and Velero's reason."""


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectStore:
    """The S3-compatible bucket both Velero servers use, and the keys to it."""

    url: str  # http(s)://host:port of the S3 API
    bucket: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str = "us-east-1"
    prefix: str = ""  # folder inside the bucket, so one bucket can hold several migrations

    def problems(self) -> list[tuple[str, str]]:
        out = []
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            out.append(("url", f"{self.url!r} must be http(s)://host[:port] of an S3 API"))
        if not _BUCKET.match(self.bucket):
            out.append(
                ("bucket", f"{self.bucket!r} is not a bucket name (3-63 lowercase letters, digits, '.', '-')")
            )
        if not self.access_key or not self.secret_key:
            out.append(("access_key", "the bucket's access key and secret key are both required"))
        if self.prefix.startswith("/") or ".." in self.prefix.split("/"):
            out.append(("prefix", f"{self.prefix!r} must be a relative folder inside the bucket"))
        return out


def _refuse(problems: list[tuple[str, str]], what: str) -> None:
    if problems:
        raise MigrationError(problems, what)


def _name_problems(field_name: str, names: Iterable[str]) -> list[tuple[str, str]]:
    return [
        (field_name, f"{n!r} is not a DNS label (1-63 lowercase letters, digits, '-')")
        for n in names
        if not _DNS_LABEL.match(n)
    ]


# --- install into a cluster ----------------------------------------------------------------


def install_documents(velero: Path, server: str) -> list[Obj]:
    """What ``velero install`` puts in a cluster, rendered by Velero itself: its CRDs, the
    ``velero`` namespace, ServiceAccount bound to cluster-admin (a restore creates any kind) and
    the server Deployment, here at 0 replicas (Velero's documented way to run the server on a
    host). Restore actions read that Deployment, so it must exist even though no pod runs.

    :param server: the apiserver URL: the installer wants a kubeconfig, which a dry run never uses.
    """
    with tempfile.TemporaryDirectory(prefix="velero-render-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        config: Obj = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "c",
        }
        kubeconfig.write_text(yaml.safe_dump(config))
        argv = [str(velero), "install", f"--kubeconfig={kubeconfig}", f"--namespace={NAMESPACE}"]
        argv += ["--no-secret", "--no-default-backup-location", "--use-volume-snapshots=false"]
        out = subprocess.run(
            [*argv, "--dry-run", "-o", "yaml"], capture_output=True, text=True, timeout=60, check=False
        )
    if out.returncode != 0:
        raise VeleroError(f"`velero install --dry-run` failed: {out.stderr.strip()}")
    docs: list[Obj] = []
    for doc in yaml.safe_load_all(out.stdout):
        if doc:
            docs += doc["items"] if doc.get("kind") == "List" else [doc]
    for doc in docs:
        doc.pop("status", None)
        doc["metadata"].pop("creationTimestamp", None)
        if doc["kind"] == "Deployment":
            doc["spec"]["replicas"] = 0
    return docs


def install(admin: client.ApiClient, velero: Path, *, timeout: float = 60) -> list[str]:
    """Install Velero as its installer would (CRDs established first), with the server
    Deployment at 0 replicas; server-side apply, so running it again changes nothing."""
    docs = install_documents(velero, admin.configuration.host)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    applied = apply_manifest(admin, crds)
    ext = client.ApiextensionsV1Api(admin)

    def established(name: str) -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    names = [d["metadata"]["name"] for d in crds]
    _poll(
        lambda: all(established(n) for n in names),
        timeout,
        lambda: f"Velero's CRDs not established after {timeout:.0f} s",
    )
    rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    rest.sort(key=lambda d: d["kind"] != "Namespace")  # the namespace before what lives in it
    return applied + apply_manifest(admin, rest)


def write_kubeconfig(
    admin: client.ApiClient, path: Path, *, name: str, expiration_seconds: int = 7200
) -> Path:
    """A kubeconfig (mode 0600) for Velero's ServiceAccount from a token the cluster issues: the
    server runs as Velero's own identity, as it would in the cluster."""
    return service_account_kubeconfig(
        admin,
        path,
        name=name,
        namespace=NAMESPACE,
        service_account=SERVICE_ACCOUNT,
        seconds=expiration_seconds,
    )


def location_document(store: ObjectStore, *, read_only: bool, sync_seconds: int = 5) -> Obj:
    """The BackupStorageLocation for ``store``: read-write where backups are made, read-only
    where they are restored (the target can never write to or delete the source's backups)."""
    config = {
        "region": store.region,
        "s3Url": store.url.rstrip("/"),
        "s3ForcePathStyle": "true",
        # Credentials come from the server's AWS_SHARED_CREDENTIALS_FILE (see VeleroServer).
        "checksumAlgorithm": "",  # S3-compatible servers differ in the checksums they accept
    }
    storage: dict[str, str] = {"bucket": store.bucket}
    if store.prefix:
        storage["prefix"] = store.prefix.strip("/")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BackupStorageLocation",
        "metadata": {"name": LOCATION, "namespace": NAMESPACE},
        "spec": {
            "provider": "aws",
            "default": True,
            "objectStorage": storage,
            "config": config,
            "accessMode": "ReadOnly" if read_only else "ReadWrite",
            # The target learns of the source's backup by this sync; validation notices an
            # unreachable bucket. Both short: a migration waits on them.
            "backupSyncPeriod": f"{sync_seconds}s",
            "validationFrequency": f"{sync_seconds}s",
        },
    }


def apply_location(api: client.ApiClient, store: ObjectStore, *, read_only: bool) -> None:
    _refuse(store.problems(), "velero object store")
    apply_manifest(api, [location_document(store, read_only=read_only)])


# --- Velero's objects -----------------------------------------------------------------------


def _custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def _get(api: client.ApiClient, plural: str, name: str) -> Obj | None:
    try:
        obj: Obj = _custom(api).get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name)
    except ApiException as err:
        if err.status == NOT_FOUND:
            return None
        raise
    return obj


def _create(
    api: client.ApiClient, plural: str, kind: str, name: str, spec: Obj, labels: dict[str, str]
) -> Obj:
    """Create the object unless it exists already (a retried task finds its own)."""
    found = _get(api, plural, name)
    if found is not None:
        return found
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": spec,
    }
    try:
        created: Obj = _custom(api).create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, body)
    except ApiException as err:
        if err.status != 409:  # created by a concurrent retry in between: use it
            raise
        return _get(api, plural, name) or body
    return created


def _poll(
    done: Callable[[], bool], timeout: float, message: Callable[[], str], interval: float = 0.5
) -> None:
    """Poll the API until ``done`` holds; raise VeleroError(message()) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            raise VeleroError(message())
        time.sleep(interval)  # between API reads, bounded by the deadline


def location_phase(api: client.ApiClient, name: str = LOCATION) -> str:
    obj = _get(api, "backupstoragelocations", name)
    return str(((obj or {}).get("status") or {}).get("phase") or "")


def wait_location_available(
    api: client.ApiClient, *, timeout: float = 60, check: Callable[[], None] | None = None
) -> None:
    """Wait until the server has validated the bucket (the BSL's ``status.phase`` Available)."""

    def available() -> bool:
        if check:
            check()
        return location_phase(api) == "Available"

    _poll(
        available,
        timeout,
        lambda: (
            f"backup storage location {NAMESPACE}/{LOCATION} is {location_phase(api) or 'not validated'} "
            f"after {timeout:.0f} s: Velero cannot reach the bucket (see the server log)"
        ),
    )


@dataclass(frozen=True)
class State:
    """Where a Backup or Restore stands, from its ``status``: what a sensor pokes."""

    kind: str  # "backup" or "restore"
    name: str
    phase: str
    items_done: int
    items_total: int
    warnings: int
    errors: int
    reason: str  # Velero's own failure reason or validation errors, "" when none

    @property
    def done(self) -> bool:
        return self.phase in ("Completed", *FAILED)

    @property
    def succeeded(self) -> bool:
        return self.phase == "Completed"

    def error(self) -> VeleroError:
        reason = self.reason or f"{self.errors} error(s), {self.warnings} warning(s)"
        return VeleroError(f"velero {self.kind} {NAMESPACE}/{self.name} {self.phase}: {reason}")


def _state(kind: str, name: str, obj: Obj | None) -> State:
    status = (obj or {}).get("status") or {}
    progress = status.get("progress") or {}
    done_key = "itemsBackedUp" if kind == "backup" else "itemsRestored"
    reasons = [*(status.get("validationErrors") or [])]
    if status.get("failureReason"):
        reasons.append(status["failureReason"])
    return State(
        kind=kind,
        name=name,
        phase=str(status.get("phase") or ("New" if obj else "absent")),
        items_done=int(progress.get(done_key) or 0),
        items_total=int(progress.get("totalItems") or 0),
        warnings=int(status.get("warnings") or 0),
        errors=int(status.get("errors") or 0),
        reason="; ".join(reasons),
    )


def backup_state(api: client.ApiClient, name: str) -> State:
    return _state("backup", name, _get(api, "backups", name))


def restore_state(api: client.ApiClient, name: str) -> State:
    return _state("restore", name, _get(api, "restores", name))


def start_backup(
    api: client.ApiClient,
    name: str,
    namespaces: list[str],
    *,
    labels: dict[str, str] | None = None,
    ttl: str = "720h0m0s",
    excluded_resources: list[str] | None = None,
) -> State:
    """Create the Backup of ``namespaces`` on the source (once: an existing one is kept).

    Resources only: no volume snapshots and no file-system backup (volume data goes through
    rclone), so the backup is the namespaces' objects and the cluster objects they use."""
    _refuse(
        _name_problems("backup", [name])
        + _name_problems("namespaces", namespaces)
        + ([("namespaces", "at least one namespace is required")] if not namespaces else []),
        "velero backup",
    )
    spec = {
        "includedNamespaces": sorted(namespaces),
        "storageLocation": LOCATION,
        "snapshotVolumes": False,
        "defaultVolumesToFsBackup": False,
        "ttl": ttl,
    }
    if excluded_resources:
        spec["excludedResources"] = sorted(excluded_resources)
    _create(api, "backups", "Backup", name, spec, labels or {})
    return backup_state(api, name)


def start_restore(
    api: client.ApiClient,
    name: str,
    backup: str,
    *,
    namespaces: list[str] | None = None,
    labels: dict[str, str] | None = None,
) -> State:
    """Create the Restore of ``backup`` on the target (once). Objects that exist already are left
    as they are (Velero's default policy) and reported as warnings."""
    _refuse(
        _name_problems("restore", [name])
        + _name_problems("backup", [backup])
        + _name_problems("namespaces", namespaces or []),
        "velero restore",
    )
    spec: Obj = {"backupName": backup, "restorePVs": False}
    if namespaces:
        spec["includedNamespaces"] = sorted(namespaces)
    _create(api, "restores", "Restore", name, spec, labels or {})
    return restore_state(api, name)


def _wait(
    read: Callable[[], State], timeout: float, check: Callable[[], None] | None, interval: float = 0.5
) -> State:
    deadline = time.monotonic() + timeout
    while True:
        if check:
            check()
        state = read()
        if state.done:
            return state
        if time.monotonic() >= deadline:
            raise VeleroError(
                f"velero {state.kind} {NAMESPACE}/{state.name} still {state.phase} after {timeout:.0f} s "
                f"({state.items_done}/{state.items_total} items)"
            )
        time.sleep(interval)  # between API reads, bounded by the deadline


def wait_backup_synced(
    api: client.ApiClient, backup: str, *, timeout: float = 60, check: Callable[[], None] | None = None
) -> bool:
    """Wait until the target's server has synced ``backup`` from the bucket as a Completed
    Backup object; False when it has not appeared in ``timeout`` s (the restore then names why)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check:
            check()
        if backup_state(api, backup).phase == "Completed":
            return True
        time.sleep(0.5)  # the sync runs every few seconds; bounded by the deadline
    return False


# --- results ----------------------------------------------------------------------------------


@dataclass
class Result:
    """A finished Backup or Restore: counts, Velero's messages and, for a restore, each item."""

    state: State
    seconds: float
    warnings: list[str] = field(default_factory=list)  # "namespace: message" / "velero: message"
    errors: list[str] = field(default_factory=list)
    items: dict[str, list[str]] = field(default_factory=dict)  # "apps/v1/Deployment" -> ["shop/web(created)"]
    sync_seconds: float = 0.0  # of ``seconds``: waiting for the target to sync the backup from the bucket

    def summary(self) -> dict[str, Any]:
        """Small JSON for an XCom."""
        return {
            "name": self.state.name,
            "phase": self.state.phase,
            "items": self.state.items_done,
            "warnings": self.state.warnings,
            "errors": self.state.errors,
            "seconds": round(self.seconds, 1),
            "sync_seconds": round(self.sync_seconds, 1),
        }


def _messages(result: Obj) -> list[str]:
    out = [f"velero: {m}" for m in result.get("velero") or []]
    out += [f"cluster: {m}" for m in result.get("cluster") or []]
    for namespace, messages in sorted((result.get("namespaces") or {}).items()):
        out += [f"{namespace}: {m}" for m in messages]
    return out


def download(api: client.ApiClient, kind: str, name: str, *, timeout: float = 30) -> Any:
    """One of Velero's result files (``RestoreResults``, ``RestoreResourceList``, ``BackupResults``)
    through a DownloadRequest: the server signs a URL to the bucket, which is read here."""
    request_name = f"{name}-{kind.lower()}-{int(time.time() * 1000)}"[:253]
    _create(
        api, "downloadrequests", "DownloadRequest", request_name, {"target": {"kind": kind, "name": name}}, {}
    )
    url = ""

    def processed() -> bool:
        nonlocal url
        status = (_get(api, "downloadrequests", request_name) or {}).get("status") or {}
        url = status.get("downloadURL") or ""
        return status.get("phase") == "Processed" and bool(url)

    try:
        _poll(
            processed,
            timeout,
            lambda: f"velero did not sign a URL for the {kind} of {name} in {timeout:.0f} s",
        )
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return json.loads(gzip.decompress(response.read()))
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise VeleroError(f"reading the {kind} of {name} from the bucket failed: {err}") from err
    finally:
        with contextlib.suppress(ApiException):
            _custom(api).delete_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "downloadrequests", request_name
            )


def _details(api: client.ApiClient, kind: str, name: str) -> tuple[list[str], list[str]]:
    """(warnings, errors) from Velero's results file; empty when it cannot be read (a failed
    validation writes none): the counts and reason in ``status`` still say what happened."""
    try:
        results = download(api, kind, name)
    except VeleroError:
        return [], []
    return _messages(results.get("warnings") or {}), _messages(results.get("errors") or {})


def backup(
    api: client.ApiClient,
    name: str,
    namespaces: list[str],
    *,
    timeout: float = 600,
    labels: dict[str, str] | None = None,
    check: Callable[[], None] | None = None,
    excluded_resources: list[str] | None = None,
) -> Result:
    """Back up ``namespaces`` on the source and wait for the Backup to finish.

    :param check: called at every poll, e.g. ``server.check`` to fail early when the server died.
    :raises VeleroError: the backup ended other than Completed (Velero's reason and errors), or
        did not finish in ``timeout`` s.
    """
    started = time.monotonic()
    start_backup(api, name, namespaces, labels=labels, excluded_resources=excluded_resources)
    _wait(lambda: backup_state(api, name), timeout, check)
    return finish_backup(api, name, time.monotonic() - started)


def _finished(state: State) -> State:
    if not state.done:  # a caller that waited elsewhere (a trigger) and woke too early
        raise VeleroError(f"velero {state.kind} {NAMESPACE}/{state.name} is still {state.phase}")
    return state


def finish_backup(api: client.ApiClient, name: str, seconds: float) -> Result:
    """The result of a Backup that has finished (waited for here or by a trigger).

    :raises VeleroError: it ended other than Completed (Velero's reason and errors), or has not ended.
    """
    state = _finished(backup_state(api, name))
    warnings, errors = _details(api, "BackupResults", name) if (state.warnings or state.errors) else ([], [])
    if not state.succeeded:
        raise VeleroError(f"{state.error()}{_listed(errors)}")
    return Result(state, seconds, warnings, errors)


def restore(
    api: client.ApiClient,
    name: str,
    backup: str,
    *,
    namespaces: list[str] | None = None,
    timeout: float = 600,
    sync_timeout: float = 60,
    labels: dict[str, str] | None = None,
    check: Callable[[], None] | None = None,
) -> Result:
    """Restore ``backup`` on the target and wait for the Restore to finish.

    First waits (up to ``sync_timeout`` s) for the target's server to sync the Backup from the
    bucket; a backup that never appears is still asked for, so Velero itself says why it refuses.

    :returns: the restored items per resource (``shop/web(created)``), warnings and errors.
    :raises VeleroError: the restore ended other than Completed, naming Velero's reason and errors.
    """
    started = time.monotonic()
    if restore_state(api, name).phase == "absent":
        wait_backup_synced(api, backup, timeout=sync_timeout, check=check)
    synced = time.monotonic() - started
    start_restore(api, name, backup, namespaces=namespaces, labels=labels)
    _wait(lambda: restore_state(api, name), timeout, check)
    return finish_restore(api, name, time.monotonic() - started, synced)


def finish_restore(api: client.ApiClient, name: str, seconds: float, sync_seconds: float = 0.0) -> Result:
    """The result of a Restore that has finished (waited for here or by a trigger): each restored
    item, warnings and errors.

    :raises VeleroError: it ended other than Completed, naming Velero's reason and errors, or has
        not ended.
    """
    state = _finished(restore_state(api, name))
    if state.phase == "FailedValidation":
        raise state.error()
    warnings, errors = _details(api, "RestoreResults", name)
    if not state.succeeded:
        raise VeleroError(f"{state.error()}{_listed(errors)}")
    try:
        items: dict[str, list[str]] = download(api, "RestoreResourceList", name)
    except VeleroError:
        items = {}
    return Result(state, seconds, warnings, errors, items, sync_seconds)


def _listed(errors: list[str]) -> str:
    return (": " + "; ".join(errors[:10]) + (" ..." if len(errors) > 10 else "")) if errors else ""


def strip_restore_labels(obj: Obj) -> Obj:
    """``obj`` without the labels Velero adds to what it restores, for the checksum comparison."""
    labels = obj.get("metadata", {}).get("labels") or {}
    if not any(k in labels for k in RESTORE_LABELS):
        return obj
    kept = {k: v for k, v in labels.items() if k not in RESTORE_LABELS}
    return {**obj, "metadata": {**obj["metadata"], "labels": kept or None}}


# --- processes on this host ----------------------------------------------------------------


def _binary(release: Release) -> Path:
    return binaries.binary(release, release.binaries[0])


@dataclass
class VeleroServer:
    """``velero server`` for one cluster, run on this host with a kubeconfig (pid and log files
    under ``work_dir``). Its Prometheus endpoint listens on ``metrics_port``; the default 0 lets
    the kernel pick a free port, so a fixed port cannot be taken by another connection first."""

    name: str  # e.g. "source" or "target": names the process and its log
    kubeconfig: Path
    store: ObjectStore
    work_dir: Path
    metrics_port: int = 0
    # Where the bucket's keys file goes (0600); default ``work_dir``. A DAG keeps it out of
    # the run's artefact folder, which users read and archive.
    credentials_dir: Path | None = None

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.work_dir / "run", self.work_dir / "logs")
        self.process = f"velero-{self.name}"

    @property
    def log(self) -> Path:
        return self.work_dir / "logs" / f"{self.process}.log"

    def argv(self) -> list[str]:
        plugins = self.work_dir / "plugins"
        return [
            str(_binary(binaries.VELERO)),
            "server",
            f"--kubeconfig={self.kubeconfig}",
            f"--namespace={NAMESPACE}",
            f"--plugin-dir={plugins}",
            f"--metrics-address=127.0.0.1:{self.metrics_port}",
            "--profiler-address=",  # no pprof listener: one less port per server
            "--log-level=info",
        ]

    def start(self) -> None:
        """Start the server unless it is running already; the caller then waits on the BSL."""
        _refuse(self.store.problems(), "velero object store")
        if self.supervisor.is_running(self.process):
            return
        plugins = self.work_dir / "plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        link = plugins / "velero-plugin-for-aws"
        link.unlink(missing_ok=True)
        link.symlink_to(_binary(binaries.VELERO_AWS_PLUGIN))
        creds = (self.credentials_dir or self.work_dir) / f"credentials-{self.name}"
        write_private(
            creds,
            f"[default]\naws_access_key_id={self.store.access_key}\naws_secret_access_key={self.store.secret_key}\n",
        )
        # The AWS plugin, a child of the server, reads the keys from this file, as in the cluster.
        env = {"AWS_SHARED_CREDENTIALS_FILE": str(creds)}
        self.supervisor.start(self.process, self.argv(), env=env)

    def check(self) -> None:
        """Raise naming the server's last log lines when it has exited."""
        if not self.supervisor.is_running(self.process):
            raise VeleroError(
                f"velero server {self.process} is not running; last lines of {self.log}:\n"
                + self.supervisor.tail(self.process, 8)
            )

    def stop(self) -> None:
        """Stop the server and the plugin processes it started (its own process group)."""
        info = self.supervisor.info(self.process)
        self.supervisor.stop(self.process, timeout=20)
        if info is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(info.pid, signal.SIGKILL)

    def __enter__(self) -> VeleroServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class LocalBucket:
    """An S3-compatible server on this host (gofakes3, files under ``work_dir``) standing in for
    the bucket: what the local platform gives Velero. Its data survives a restart."""

    work_dir: Path
    port: int
    bucket: str = "slipway-migration"

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.work_dir / "run", self.work_dir / "logs")

    @property
    def store(self) -> ObjectStore:
        # gofakes3 checks no signature: any key pair is accepted.
        return ObjectStore(f"http://127.0.0.1:{self.port}", self.bucket, "slipway", "slipway-local")

    def start(self, *, timeout: float = 30) -> ObjectStore:
        if not self.supervisor.is_running("s3"):
            data = self.work_dir / "s3"
            argv = [
                str(_binary(binaries.GOFAKES3)),
                "-backend=fs",
                f"-fs.path={data}",
                "-fs.create",
                f"-host=127.0.0.1:{self.port}",
                f"-initialbucket={self.bucket}",
                "-quiet",
            ]
            self.supervisor.start("s3", argv)
        _poll(
            self.answers,
            timeout,
            lambda: f"S3 server on port {self.port} not answering: {self.supervisor.tail('s3')}",
        )
        return self.store

    def answers(self) -> bool:
        if not self.supervisor.is_running("s3"):
            raise VeleroError(f"S3 server exited: {self.supervisor.tail('s3')}")
        try:
            with urllib.request.urlopen(f"{self.store.url}/{self.bucket}", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        self.supervisor.stop("s3", timeout=10)

    def __enter__(self) -> LocalBucket:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
