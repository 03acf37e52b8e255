"""The tasks of ``k8s_cluster_migration``: thin adapters from Airflow context to
:mod:`slipway.migration`. Both clusters are reached only through the ``slipway_migration``
connection (the migrator identity's kubeconfigs); every task re-reads the clusters, so any
task can be cleared and re-run.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Param, TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from slipway.airflow.runbooks import runbook
from slipway.lazy import lazy
from slipway.migration import frontdoor
from slipway.migration import strategy as strategies
from slipway.migration.assess import markdown
from slipway.migration.connection import CONN_ID, MigrationConnection, VeleroRef, parse_connection
from slipway.migration.errors import ChecksumMismatch, MigrationError, NotAvailable
from slipway.migration.objects import CONFIG_KINDS, WORKLOAD_KINDS, key
from slipway.migration.request import MigrationRequest, parse_migration_request, refuse_unusable_copy_path
from slipway.migration.volumes import RcloneError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from slipway.migration import clusters, stateful, velero
    from slipway.migration.objects import Obj
else:  # the kubernetes client loads when a task first runs, not when the DAG file is parsed
    clusters = lazy("slipway.migration.clusters")
    stateful = lazy("slipway.migration.stateful")
    velero = lazy("slipway.migration.velero")

DAG_ID = "k8s_cluster_migration"

# --- runbooks (what on-call engineers read in the UI) ---------------------------------------------
VALIDATE = runbook(
    "Validates the trigger form and the `slipway_migration` connection (source and target kubeconfigs) "
    "before any cluster is contacted.",
    "The log lists every refused field or connection key as `field: reason`. Fix the form or the "
    "connection's extras and trigger a new run.",
    "Safe, but pointless: the same input gives the same refusal.",
)
ASSESS = runbook(
    "Reads the selected namespaces on the source: inventory, the dependency map of every workload (from "
    "its pod template) and what cannot move and why (hostPath or PVC volumes, host ports, node pinning, "
    "API versions the target no longer serves), and the strategy each workload moves with (the form's "
    "strategy per kind, else blue-green without claims and sync-then-cutover with them; a skipped kind "
    "is left on the source and no longer blocks). Writes `assessment.json` and `assessment.md` to the "
    "run's report folder. Refuses unknown namespaces, a selector matching nothing, a target that is "
    "the source, and a strategy the code cannot do for a workload (blue-green or copy-only with claims, "
    "sync-then-cutover without). Changes nothing.",
    "A refusal names the field (`strategy.StatefulSet: ...` names the workload too: change that kind's "
    "strategy, or skip it). Objects that cannot move fail a real run (not a dry run): read "
    "`assessment.md`, then narrow the selection, skip their kind or fix the objects on the source.",
    "Safe: read-only.",
)
PROCEED = runbook(
    "Ends a dry run here (assessment only) and a retirement run (see `retire_source`); a real run goes "
    "on to the copy.",
    "It cannot fail on its own; an upstream failure shows here as upstream_failed.",
    "Safe.",
)
RETIRE_SOURCE = runbook(
    "Only when the form asks to retire the source (skipped otherwise): proves every Deployment and "
    "StatefulSet of the selection checksum-equal to its copy on the target and available there, and "
    "with a front door that the target takes 100 % of the traffic; then scales each source workload "
    "to 0, recording its replicas (`migration.slipway.dev/` annotations). Nothing is deleted. Writes "
    "`retirement.md`/`.json`.",
    "A mismatch, a missing or unavailable copy, or traffic still on the source is named and nothing "
    "on the source was changed: finish or redo the migration first. To undo a retirement, scale the "
    "workload back to the replicas its annotation records.",
    "Safe: a workload already at 0 with its record is left as it is.",
)
COPY_CONFIGURATION = runbook(
    "Copy path `velero`: a Velero Backup of the selected namespaces on the source (without Pods, "
    "ReplicaSets, PersistentVolumeClaims and PersistentVolumes, nor a kind whose strategy is skip: volume "
    "data moves with rclone) and a Restore of it on the target, both created by the migrator and awaited "
    "through Velero's API objects, deferred: the task waits in the triggerer (state deferred, no worker "
    "slot held) until the object's `status.phase` is final, and checks the `velero server` processes on "
    "this host before each wait and after it; stateful workloads are first placed on the target at 0 "
    "replicas so the restore leaves them alone (Velero never overwrites an existing object) and none "
    "starts on empty volumes. "
    "Velero restores the workloads too: `copy_workloads` then has nothing left to apply. "
    "Copy path `builtin`: applies the Namespaces, ServiceAccounts, Roles, RoleBindings, ConfigMaps, "
    "Secrets, Services, "
    "PodDisruptionBudgets, HorizontalPodAutoscalers, NetworkPolicies and Ingresses of the selection to "
    "the target, then the definitions (CRDs) of the custom kinds the namespaces hold, awaited until the "
    "target serves them, then those custom resources; read fresh from the source, with server-side apply "
    "(field manager `slipway-migration`). The source is never changed.",
    "A 403 means the migrator manifest (`migrator-rbac.yaml`) is missing on the target or the token "
    "expired; a custom kind the migrator may not list is named with the ClusterRole label that grants "
    "it; a 404 on a kind means the target does not serve it (the assessment lists those). Velero: "
    "the log names the Backup or Restore, its phase and Velero's reason (`velero backup describe` / "
    "`velero restore describe` with that name show the rest); `still InProgress after N s` means the "
    "trigger's wait (availability timeout + 600 s) ran out: look at the server's log before clearing.",
    "Safe: re-applying identical objects changes nothing on the target; the Backup and Restore are "
    "named after the run, so a retry finds and awaits them instead of making new ones.",
)
START_VELERO = runbook(
    "Only when the form's copy path is `velero`. When the `slipway_migration` connection names Velero "
    "server kubeconfigs (`source_velero_kubeconfig`, `target_velero_kubeconfig`: the local platform), "
    "starts `velero server` for each cluster on this host (pid files and logs under the run's folder "
    "in this worker's `SLIPWAY_REPORTS_DIR`, `velero/`; the bucket's keys in a private temporary "
    "folder, never in the report). Then "
    "waits until Velero's backup storage location `velero/default` is Available on both clusters and "
    "names the connection's bucket. Installing Velero (its CRDs, namespace, ServiceAccount and the "
    "location: read-write on the source, read-only on the target) is an admin's job done before.",
    "Not Available: Velero cannot reach the bucket (URL, keys, bucket name: read "
    "`velero/logs/velero-<side>.log` in that folder). A location naming another bucket: fix the "
    "connection or the location, they must agree. A 403 means `migrator-rbac.yaml` is not applied.",
    "Safe: a server already running is kept; the location is only read.",
)
STOP_VELERO = runbook(
    "Teardown of `start_velero`: stops the `velero server` processes this run started on this host "
    "(and their plugin processes) and removes the bucket's keys file. Runs whatever happened before.",
    "A server that does not stop in 20 s is killed with its process group; the log says which.",
    "Safe: a stopped server stays stopped.",
)
VERIFY_CONFIGURATION = runbook(
    "Computes a sha256 per object over its normalised form (status and cluster-assigned fields dropped) "
    "on the source and on the target and compares them; any mismatch fails the task naming the object. "
    "Custom resources and their definitions are compared too. The labels Velero adds to what it "
    "restores (`velero.io/backup-name`, `velero.io/restore-name`) are left out on the target side.",
    "A mismatch means the object changed on the source after the copy, or someone changed the copy on "
    "the target. Clear `copy_configuration` (it re-applies from the source) and this task.",
    "Safe: read-only.",
)
COPY_WORKLOADS = runbook(
    "Applies the selection's stateless Deployments and StatefulSets to the target (server-side apply), "
    "after the configuration they depend on is proven equal; a kind whose strategy is skip is left out. "
    "With the `velero` copy path the restore already brought them (a skipped kind was left out of the "
    "Backup): nothing is applied.",
    "As for `copy_configuration`: check the migrator's permissions on the target and the log's object name.",
    "Safe: re-applying identical objects changes nothing on the target.",
)
VALIDATE_WORKLOADS = runbook(
    "Proves every copied Deployment and StatefulSet equal to the source (sha256) and waits until each is "
    "available on the target (every replica updated and ready) within the form's availability timeout. "
    "A kind whose strategy is skip is neither compared nor awaited.",
    "A mismatch names the object (see `verify_configuration`). Not available: look at the workload's "
    "events on the target (image pulls, quotas, scheduling on the target's nodes).",
    "Safe: read-only.",
)
SYNC_VOLUMES = runbook(
    "For every stateful workload (a Deployment or StatefulSet mounting PersistentVolumeClaims): creates "
    "its claims on the target pre-bound to a free local PersistentVolume of the same StorageClass and "
    "size, then copies each source volume folder to its target folder with `rclone sync` while the "
    "source keeps running. Passes repeat (at most 3) until one moves nothing; each pass's bytes and files "
    "are recorded. Nothing stops. Does nothing when the selection has no stateful workload.",
    "A claim that cannot be paired names the missing target storage: provision an Available local PV "
    "of that class and size on the target (or a StorageClass). An rclone error names both folders: "
    "check the disk space and permissions on the target folder.",
    "Safe: every pass is incremental, and a claim already on the target keeps its PV.",
)
CUT_OVER_STATEFUL = runbook(
    "The data freeze, per stateful workload: scales the source to 0 (one patch that also records the "
    "replicas it had and when, as `migration.slipway.dev/` annotations) and waits until no pod mounts its "
    "claims; snapshots each source folder beside it (`<folder>.slipway-pre-cutover-<time>`); runs a final "
    "`rclone sync` comparing by hash; proves the copy with `rclone check` (size and MD5 of every file, both "
    "ways); starts the workload on the target with its old replicas and waits until it is available. "
    "Records the freeze window (scale to 0 until the target is available).",
    "A failed check names the volume and each file that differs; a target that does not become "
    "available names the workload. Either way `rollback_stateful` runs next and puts the source back: "
    "look at the target's events (scheduling against the PV's node, image pulls) before retrying.",
    "Safe: a frozen source is recognised by its annotations, the snapshot is taken once per freeze, and "
    "the final sync and check are repeatable. Clearing it after a rollback starts a new freeze.",
)
VALIDATE_STATEFUL = runbook(
    "Proves each cut-over workload: its copy on the target equal to the source's declaration (sha256, "
    "replicas as before the freeze), available on the target, and the source still at 0 with no pod "
    "mounting its claims.",
    "A mismatch names the object; a source with pods again means someone scaled it up during the "
    "cut-over: two copies may now be writing, decide which one holds the truth before anything else.",
    "Safe: read-only.",
)
ROLLBACK_STATEFUL = runbook(
    "Runs only when the cut-over or its validation failed. For every workload whose source is still "
    "frozen: scales the target's copy to 0 and waits until its pods are gone, restores each source "
    "folder from its pre-cutover snapshot (proven by `rclone check`), then scales the source back to the "
    "replicas it had (one patch that also removes the freeze record) and waits until it is available. "
    "Skipped when no source was frozen.",
    "Restoring needs the snapshot folder beside the volume: if it is gone, the log says so and the "
    "source folder is left as the freeze left it. Scale by hand with `kubectl scale` only after reading "
    "the `migration.slipway.dev/replicas-before-freeze` annotation.",
    "Safe: a source without the freeze record is left alone; restoring the same snapshot twice changes "
    "nothing.",
)
SWITCH_TRAFFIC = runbook(
    "Moves traffic from the source to the target through the front door (HAProxy, whose admin socket "
    "and URL the `slipway_migration` connection names): weights 0, 10, 50 and 100 % to the target, with "
    "a probe of 40 requests through the front door after each step. A failed probe request or the "
    "target's health check going down puts the weights back (100 % source): that is the rollback. "
    "Without a front door in the connection it does nothing and says so; so too when every moved "
    "workload's strategy is copy-only (or skip): traffic stays on the source.",
    "A rollback is not a task failure here: the report records it and fails the run. To roll back by "
    "hand: `echo 'set weight app/source 100; set weight app/target 0' | socat stdio <socket>`. Stateful "
    "workloads already cut over stay on the target (their sources frozen at 0); bringing one back is a "
    "decision (what the target wrote since the cut-over is lost) and a manual step: scale the target copy "
    "to 0, `rclone sync <folder>.slipway-pre-cutover-<time> <folder>` on the source disk, then scale the "
    "source to its `migration.slipway.dev/replicas-before-freeze` annotation.",
    "Safe: weights are set, never added to; a re-run starts again from 0 %.",
)
REPORT = runbook(
    "Writes `migration-report.json` and `migration-report.md` (the strategy of every workload and those "
    "not moved (skip, left on the source), objects copied, checksums compared, "
    "mismatches, objects per second, availability, the traffic switch, and for stateful workloads the "
    "volumes, bytes and files per pass, the check, the freeze window and any rollback) to the run's "
    "report folder. Fails the run when the traffic switch or a stateful cut-over rolled back, after "
    "writing the report.",
    "Check that the artefact store (`SLIPWAY_ARTEFACTS_URL`, else the folder `SLIPWAY_REPORTS_DIR`) is "
    "writable by the worker; a rolled-back switch names its step and "
    "reason in the log and the report.",
    "Safe: it rewrites the same report.",
)

_DROPPED = ("default", "description", "title")


def migration_params() -> dict[str, Param]:
    """The trigger form: one Param per :class:`MigrationRequest` field, from its JSON schema."""
    schema = MigrationRequest.model_json_schema()["properties"]
    params = {}
    for name, field in MigrationRequest.model_fields.items():
        keywords = {k: v for k, v in schema[name].items() if k not in _DROPPED}
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        params[name] = Param(
            default, title=schema[name].get("title"), description=field.description, **keywords
        )
    return params


# --- helpers ------------------------------------------------------------------------------------------
def _connection() -> MigrationConnection:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(CONN_ID)
    return parse_connection(conn.extra_dejson, login=conn.login, password=conn.password)


def _sides() -> tuple[clusters.Side, clusters.Side]:
    conn = _connection()
    return clusters.Side(conn.source.api_client(), "source"), clusters.Side(
        conn.target.api_client(), "target"
    )


def _report_folder() -> ObjectStoragePath:
    """This run's folder in the artefact store: reports and the stateful record other tasks read."""
    from slipway.artefacts import make_dirs
    from slipway.reports.run import report_dir  # loads the kubernetes client: at run time only

    context = get_current_context()
    folder = report_dir(DAG_ID, context["run_id"])
    make_dirs(folder)
    return folder


def _work_folder() -> Path:
    """This run's local working folder on this worker (the ``velero server`` processes' files)."""
    from slipway.reports.run import reports_root, safe_run_name

    folder = reports_root() / DAG_ID / safe_run_name(get_current_context()["run_id"])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _where(path: ObjectStoragePath) -> str:
    from slipway.artefacts import location

    return location(path)


def _fail(err: Exception) -> AirflowFailException:
    return AirflowFailException(str(err))


# --- tasks --------------------------------------------------------------------------------------------
@task(doc_md=VALIDATE, retries=0)
def validate_migration() -> dict[str, Any]:
    """The request as JSON, after the form and the connection were both accepted."""
    try:
        request = parse_migration_request(dict(get_current_context()["params"]))
        refuse_unusable_copy_path(request, object_store=_connection().velero is not None)
    except MigrationError as err:
        raise _fail(err) from err
    return request.model_dump()


@task(doc_md=ASSESS)
def assess(request: dict[str, Any]) -> dict[str, Any]:
    wanted = MigrationRequest.model_validate(request)
    try:
        source, target = _sides()
        result, namespaces, _ = clusters.assessment(source, target, wanted)
        # Stateful workloads move with their data when every claim has a folder and target room.
        volumes = stateful.assess(source, target, result, wanted.strategy)
    except MigrationError as err:
        raise _fail(err) from err
    chosen = volumes.pop("strategies")
    folder = _report_folder()
    (folder / "assessment.json").write_text(
        json.dumps(result.to_dict() | {"stateful": volumes, "strategies": chosen}, indent=2, sort_keys=True)
    )
    (folder / "assessment.md").write_text(
        markdown(result) + strategies.markdown(chosen) + _stateful_markdown(volumes)
    )
    summary = {
        "namespaces": [n["metadata"]["name"] for n in namespaces],
        "objects": len(result.objects),
        "cannot_move": len(result.blockers),
        "stateful": volumes["workloads"],
        "dry_run": wanted.dry_run,
        "copy_path": wanted.copy_path,
        "retire_source": wanted.retire_source,
        "strategy": wanted.strategy,
        "strategies": chosen,
        "available_timeout_seconds": wanted.available_timeout_seconds,
        "report": _where(folder / "assessment.md"),
    }
    if result.blockers and not wanted.dry_run:
        names = ", ".join(sorted(result.blockers))
        raise AirflowFailException(
            f"{len(result.blockers)} object(s) cannot move: {names} (reasons in {summary['report']})"
        )
    return summary


@task.short_circuit(doc_md=PROCEED)
def proceed(summary: dict[str, Any]) -> bool:
    """False on a dry run or a retirement: every copy task is skipped (a dry run's report is the
    assessment; a retirement's is written by ``retire_source``)."""
    return not summary["dry_run"] and not summary.get("retire_source")


@task(doc_md=RETIRE_SOURCE)
def retire_source(summary: dict[str, Any]) -> dict[str, Any]:
    from slipway.migration.retire import retire_source as retire

    if not summary.get("retire_source") or summary["dry_run"]:
        raise AirflowSkipException("no retirement asked for (or a dry run)")
    door = _connection().front_door
    source, target = _sides()
    try:
        percent = frontdoor.RuntimeApi(door.socket).weight("target") if door is not None else None
        done = retire(
            source,
            target,
            summary["namespaces"],
            summary["available_timeout_seconds"],
            target_percent=percent,
            skip=strategies.skipped_kinds(summary.get("strategy") or {}),
        )
    except (MigrationError, ChecksumMismatch, NotAvailable) as err:
        raise _fail(err) from err
    retired = [r.to_dict() for r in done]
    lines = ["# Source retired", "", "| workload | replicas before | already at 0 |", "|---|---|---|"]
    lines += [f"| {r['workload']} | {r['replicas']} | {'yes' if r['already'] else 'no'} |" for r in retired]
    folder = _report_folder()
    (folder / "retirement.json").write_text(json.dumps({"retired": retired}, indent=2, sort_keys=True))
    (folder / "retirement.md").write_text("\n".join(lines) + "\n")
    return {"retired": retired, "report": _where(folder / "retirement.md")}


# --- the Velero copy path -------------------------------------------------------------------------
# Left out of the Velero backup: Pods and ReplicaSets are their controllers' to make on the target,
# claims and volumes belong to the rclone path (sync_volumes binds the target's claims itself).
VELERO_EXCLUDED = [
    "pods",
    "replicasets.apps",
    "controllerrevisions.apps",
    "persistentvolumeclaims",
    "persistentvolumes",
    "events",
    "events.events.k8s.io",
    "endpoints",
    "endpointslices.discovery.k8s.io",
]


def _velero_ref() -> VeleroRef:
    ref = _connection().velero
    if ref is None:  # validate_migration refuses this; the connection changed since
        raise AirflowFailException("copy_path: the slipway_migration connection no longer names a bucket")
    return ref


def _run_digest() -> str:
    return hashlib.sha256(get_current_context()["run_id"].encode()).hexdigest()[:10]


def _velero_names() -> tuple[str, str]:
    """The run's Backup and Restore: the same on every retry, so a retry finds its own."""
    backup = f"slipway-migration-{_run_digest()}"
    return backup, f"{backup}-restore"


def _velero_servers(ref: VeleroRef) -> list[velero.VeleroServer]:
    """The run's ``velero server`` processes on this host (none when Velero runs in the clusters)."""
    if ref.servers is None:
        return []
    work = _work_folder() / "velero"
    # The bucket's keys: a private folder outside the report, which users read and archive.
    secrets = Path(tempfile.gettempdir()) / f"slipway-velero-{_run_digest()}"
    secrets.mkdir(mode=0o700, exist_ok=True)
    return [
        velero.VeleroServer(name, kubeconfig, ref.store, work, credentials_dir=secrets)
        for name, kubeconfig in zip(("source", "target"), ref.servers, strict=True)
    ]


def _check_location(api: Any, side: str, store: velero.ObjectStore) -> None:
    """The location Velero uses must be the bucket the connection names (an admin set it up)."""
    found = velero._get(api, "backupstoragelocations", velero.LOCATION) or {}
    spec = found.get("spec") or {}
    bucket = (spec.get("objectStorage") or {}).get("bucket")
    url = str((spec.get("config") or {}).get("s3Url") or "").rstrip("/")
    if bucket != store.bucket or url != store.url.rstrip("/"):
        raise AirflowFailException(
            f"velero_bucket_url: the {side}'s backup storage location {velero.NAMESPACE}/{velero.LOCATION} "
            f"names {url or '?'} bucket {bucket or '?'}, the connection {store.url} bucket {store.bucket}"
        )


@task(doc_md=START_VELERO, execution_timeout=timedelta(minutes=10))
def start_velero(summary: dict[str, Any]) -> dict[str, Any]:
    if summary.get("copy_path") != "velero":
        return {"started": [], "reason": "copy path builtin: Velero is not used"}
    ref = _velero_ref()
    source, target = _sides()
    servers = _velero_servers(ref)
    try:
        for server in servers:
            server.start()
        checks = {s.name: s.check for s in servers}
        for side in (source, target):
            velero.wait_location_available(side.api, timeout=120, check=checks.get(side.name))
            _check_location(side.api, side.name, ref.store)
    except (velero.VeleroError, MigrationError) as err:
        raise _fail(err) from err
    return {"started": [s.process for s in servers], "locations": "Available"}


@task(doc_md=STOP_VELERO)
def stop_velero() -> dict[str, Any]:
    ref = _connection().velero
    if ref is None or ref.servers is None:
        return {"stopped": []}
    servers = _velero_servers(ref)
    for server in servers:
        server.stop()
    secrets = servers[0].credentials_dir
    if secrets:
        for server in servers:
            (secrets / f"credentials-{server.name}").unlink(missing_ok=True)
        secrets.rmdir()
    return {"stopped": [s.process for s in servers]}


def _park_stateful(
    source: clusters.Side, target: clusters.Side, namespaces: list[str], moved: list[str]
) -> list[str]:
    """Stateful workloads on the target at 0 replicas before the restore: Velero leaves an
    existing object alone, so none starts on empty volumes; cut_over_stateful starts them.
    ``moved``: the stateful workloads the run moves (a skipped kind's are left out)."""
    found = [
        o
        for o in clusters.copyable(clusters.read_objects(source, namespaces, WORKLOAD_KINDS), WORKLOAD_KINDS)
        if stateful.is_stateful(o) and key(o) in moved
    ]
    if not found:
        return []
    parked = []
    for obj in found:
        body = stateful.declared(obj)
        parked.append({**body, "spec": {**body["spec"], "replicas": 0}})
    namespace_objs = clusters.namespace_objects(source, {o["metadata"]["namespace"] for o in found})
    return clusters.apply(target, namespace_objs) + clusters.apply(target, parked)


def _target_view(summary: dict[str, Any]) -> Callable[[Obj], Obj] | None:
    """What the copy path added on the target and the checksums leave out."""
    return velero.strip_restore_labels if summary.get("copy_path") == "velero" else None


class CopyConfigurationOperator(BaseOperator):
    """``copy_configuration``: the builtin copy in one go; the Velero copy as a Backup on the
    source and a Restore on the target, each awaited deferred (:class:`VeleroPhaseTrigger` in the
    triggerer, no worker slot held). The ``velero server`` processes on this host are checked
    alive before each deferral and after each wake-up; the trigger carries the run's figures."""

    template_fields = ("summary",)

    def __init__(self, *, summary: Any, **kwargs: Any) -> None:
        kwargs.setdefault("doc_md", COPY_CONFIGURATION)
        super().__init__(**kwargs)
        self.summary = summary

    def execute(self, context: Any) -> dict[str, Any]:
        summary = self.summary
        if summary.get("copy_path") == "velero":
            self._start_backup(summary)  # defers (raises): the task resumes in backup_finished
        source, target = _sides()
        started = time.monotonic()
        try:
            applied = clusters.copy_configuration(source, target, summary["namespaces"])
        except MigrationError as err:
            raise _fail(err) from err
        return {"applied": len(applied), "seconds": round(time.monotonic() - started, 3)}

    # --- the Velero path: backup → (deferred) → synced on the target → restore → (deferred) ---
    def _timeout(self) -> float:
        return float(self.summary["available_timeout_seconds"]) + 600

    def _alive(self, side: str) -> None:
        """The ``velero server`` of ``side`` on this host still runs (none: Velero in the cluster)."""
        for server in _velero_servers(_velero_ref()):
            if server.name == side:
                try:
                    server.check()
                except velero.VeleroError as err:
                    raise _fail(err) from err

    def _defer(
        self,
        side: str,
        plural: str,
        name: str,
        phases: tuple[str, ...],
        timeout: float,
        then: str,
        carry: dict[str, Any],
    ) -> None:
        from slipway.airflow.triggers import VeleroPhaseTrigger

        self._alive(side)
        self.log.info(
            "waiting (deferred) for velero %s %s/%s on the %s", plural, velero.NAMESPACE, name, side
        )
        trigger = VeleroPhaseTrigger(side, plural, name, list(phases), timeout, conn_id=CONN_ID, carry=carry)
        self.defer(trigger=trigger, method_name=then, timeout=timedelta(seconds=timeout + 120))

    def _woke(self, side: str, event: dict[str, Any], what: str, name: str) -> dict[str, Any]:
        """Back from the trigger: the server still alive and the object finished, else fail naming it."""
        self._alive(side)
        if event["status"] == "timeout":
            error = f" (last API error: {event['error']})" if event.get("error") else ""
            waited = f"still {event['phase']} after {event['seconds']:.0f} s"
            raise AirflowFailException(f"velero {what} {velero.NAMESPACE}/{name} {waited}{error}")
        return dict(event["carry"])

    def _start_backup(self, summary: dict[str, Any]) -> None:
        source, target = _sides()
        backup_name, _ = _velero_names()
        namespaces = summary["namespaces"]
        excluded = VELERO_EXCLUDED + strategies.velero_excluded(summary.get("strategy") or {})
        self._alive("source")
        try:
            parked = _park_stateful(source, target, namespaces, summary.get("stateful") or [])
            velero.start_backup(
                source.api, backup_name, namespaces, labels=_velero_labels(), excluded_resources=excluded
            )
        except (velero.VeleroError, MigrationError) as err:
            raise _fail(err) from err
        carry = {"started": time.time(), "parked": len(parked)}
        self._defer(
            "source", "backups", backup_name, velero.TERMINAL, self._timeout(), "backup_finished", carry
        )

    def backup_finished(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        backup_name, restore_name = _velero_names()
        carry = self._woke("source", event, "backup", backup_name)
        source, target = _sides()
        try:
            backed = velero.finish_backup(source.api, backup_name, time.time() - carry["started"])
        except velero.VeleroError as err:
            raise _fail(err) from err
        carry |= {"backup": backed.summary(), "sync_started": time.time()}
        if velero.restore_state(target.api, restore_name).phase != "absent":  # a retry: it was asked for
            return self.backup_synced(context, {"status": "done", "phase": "", "carry": carry})
        # The target's server syncs the Backup from the bucket; one never synced is still asked
        # for, so Velero itself says why it refuses.
        self._defer("target", "backups", backup_name, ("Completed",), 120, "backup_synced", carry)
        return {}  # not reached: defer raises

    def backup_synced(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        carry = dict(event["carry"])  # a sync that timed out still goes on to the restore
        self._alive("target")
        _, target = _sides()
        backup_name, restore_name = _velero_names()
        carry["sync_seconds"] = round(time.time() - carry["sync_started"], 1)
        try:
            velero.start_restore(
                target.api,
                restore_name,
                backup_name,
                namespaces=self.summary["namespaces"],
                labels=_velero_labels(),
            )
        except (velero.VeleroError, MigrationError) as err:
            raise _fail(err) from err
        self._defer(
            "target", "restores", restore_name, velero.TERMINAL, self._timeout(), "restore_finished", carry
        )
        return {}  # not reached: defer raises

    def restore_finished(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        _, restore_name = _velero_names()
        carry = self._woke("target", event, "restore", restore_name)
        _, target = _sides()
        seconds = time.time() - carry["sync_started"]
        try:
            restored = velero.finish_restore(target.api, restore_name, seconds, carry["sync_seconds"])
        except velero.VeleroError as err:
            raise _fail(err) from err
        created = sum(1 for items in restored.items.values() for item in items if item.endswith("(created)"))
        return {
            "copy_path": "velero",
            "applied": restored.state.items_done,
            "created": created,
            "parked_stateful": carry["parked"],
            "seconds": round(time.time() - carry["started"], 3),
            "backup": carry["backup"],
            "restore": restored.summary(),
            "restore_warnings": restored.warnings[:20],
        }


def _velero_labels() -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": "slipway", "migration.slipway.dev/run": _run_digest()}


def copy_configuration(summary: Any) -> CopyConfigurationOperator:
    """The ``copy_configuration`` task of the DAG (an operator: the Velero path defers)."""
    return CopyConfigurationOperator(task_id="copy_configuration", summary=summary)


@task(doc_md=VERIFY_CONFIGURATION)
def verify_configuration(summary: dict[str, Any]) -> dict[str, Any]:
    source, target = _sides()
    names, kinds = summary["namespaces"], list(CONFIG_KINDS)
    view = _target_view(summary)
    try:
        sums = clusters.verify(source, target, names, kinds, with_namespaces=True, target_view=view)
        custom = clusters.verify_custom_resources(source, target, names, target_view=view)
    except (ChecksumMismatch, MigrationError) as err:
        raise _fail(err) from err
    return {
        "compared": len(sums.source) + len(custom.source),
        "custom_resources": len(custom.source),
        "mismatches": 0,
        "target_defaults": len(sums.defaulted) + len(custom.defaulted),
    }


@task(doc_md=COPY_WORKLOADS)
def copy_workloads(summary: dict[str, Any]) -> dict[str, Any]:
    if summary.get("copy_path") == "velero":
        return {"applied": 0, "seconds": 0, "reason": "restored by Velero with the configuration"}
    source, target = _sides()
    started = time.monotonic()
    # Stateless only: a stateful workload starts on the target after its data (cut_over_stateful).
    skip = strategies.skipped_kinds(summary.get("strategy") or {})
    applied = clusters.apply(target, stateful.stateless(source, summary["namespaces"], skip=skip))
    return {"applied": len(applied), "seconds": round(time.monotonic() - started, 3)}


# Waits up to the form's availability timeout (at most an hour), then checksums: past the default.
@task(doc_md=VALIDATE_WORKLOADS, execution_timeout=timedelta(minutes=70))
def validate_workloads(summary: dict[str, Any]) -> dict[str, Any]:
    source, target = _sides()
    started = time.monotonic()
    skip = strategies.skipped_kinds(summary.get("strategy") or {})
    kinds = [k for k in WORKLOAD_KINDS if k.kind not in skip]
    try:
        sums = stateful.verify_stateless(
            source, target, summary["namespaces"], target_view=_target_view(summary), skip=skip
        )
        available = clusters.wait_available(
            target, summary["namespaces"], kinds, summary["available_timeout_seconds"]
        )
    except (ChecksumMismatch, NotAvailable) as err:
        raise _fail(err) from err
    return {
        "compared": len(sums.source),
        "mismatches": 0,
        "target_defaults": sorted(f"{name}: {', '.join(paths)}" for name, paths in sums.defaulted.items()),
        "available": available,
        "seconds_to_available": round(time.monotonic() - started, 3),
    }


# --- stateful workloads: sync, freeze, final sync, check, cut over (or back) --------------------------
STATEFUL_RECORD = "stateful.json"  # passes and outcomes across tasks and retries, in the run's folder
MAX_PASSES = 3


def _stateful_markdown(section: dict[str, Any]) -> str:
    if not section["workloads"] and not section["cannot_move"]:
        return ""
    lines = ["", "## Stateful workloads (sync, then cut over with a data freeze)", ""]
    lines += [f"- `{name}` moves with its data" for name in section["workloads"]]
    lines += [
        f"  - claim `{v['namespace']}/{v['claim']}`: {v['source_path']} → target PV "
        f"`{v['target_pv']}` ({v['target_path']})"
        for v in section["volumes"]
    ]
    lines += [f"- `{name}` cannot move: {'; '.join(why)}" for name, why in section["cannot_move"].items()]
    return "\n".join(lines) + "\n"


def _record() -> tuple[ObjectStoragePath, dict[str, Any]]:
    path = _report_folder() / STATEFUL_RECORD
    found = json.loads(path.read_text()) if path.exists() else {}
    return path, {"passes": [], "checks": {}, "cut_over": [], "failure": None, "rollback": []} | found


def _save(path: ObjectStoragePath, record: dict[str, Any]) -> None:
    path.write_text(json.dumps(record, indent=2, sort_keys=True))


def _pass(kind: str, moved: dict[str, Any]) -> dict[str, Any]:
    """One pass over every volume: totals and per volume (from rclone's stats)."""
    return {
        "kind": kind,
        "bytes": sum(s.bytes for s in moved.values()),
        "files": sum(s.files for s in moved.values()),
        "deletes": sum(s.deletes for s in moved.values()),
        "seconds": round(sum(s.seconds for s in moved.values()), 3),
        "volumes": {name: s.to_dict() for name, s in moved.items()},
    }


def _plan(summary: dict[str, Any]) -> tuple[clusters.Side, clusters.Side, stateful.Plan]:
    source, target = _sides()
    found = stateful.plan(
        source,
        target,
        summary["namespaces"],
        bind=True,
        timeout=summary["available_timeout_seconds"],
        only=summary["stateful"],
    )
    return source, target, found


# Passes copy whole volumes: they may take long, bounded by rclone's own per-call timeout.
@task(doc_md=SYNC_VOLUMES, execution_timeout=timedelta(hours=6))
def sync_volumes(summary: dict[str, Any]) -> dict[str, Any]:
    if not summary.get("stateful"):
        return {"volumes": 0, "passes": 0, "reason": "no stateful workload in the selection"}
    try:
        _, _, found = _plan(summary)
        path, record = _record()
        passes = []
        for _ in range(MAX_PASSES):  # while the source runs: repeat until a pass moves nothing
            one = _pass("while running", stateful.sync_all(found.volumes))
            record["passes"].append(one)
            _save(path, record)
            passes.append({k: one[k] for k in ("bytes", "files", "deletes", "seconds")})
            if one["files"] == 0 and one["deletes"] == 0:
                break
    except (MigrationError, NotAvailable, RcloneError) as err:
        raise _fail(err) from err
    return {"volumes": len(found.volumes), "passes": passes}


@task(doc_md=CUT_OVER_STATEFUL, execution_timeout=timedelta(hours=6))
def cut_over_stateful(summary: dict[str, Any]) -> dict[str, Any]:
    if not summary.get("stateful"):
        return {"workloads": [], "reason": "no stateful workload in the selection"}
    path, record = _record()
    record["failure"], record["rollback"] = None, []  # a new attempt (e.g. cleared after a rollback)
    done = []
    try:
        source, target, found = _plan(summary)
        for name in sorted(found.workloads):

            def progress(step: str, value: Any, name: str = name) -> None:
                # Saved as they happen: a cut-over that fails later still reports its final pass and check.
                if step == "final_pass":
                    record["passes"].append(_pass(f"final ({name})", value))
                elif step == "checked":
                    record["checks"][name] = {
                        volume: {
                            "matching": r.matching,
                            "differences": len(r.differences),
                            "files": r.describe(),
                        }
                        for volume, r in value.items()
                    }
                _save(path, record)

            result = stateful.cut_over(
                source, target, name, found.of(name), summary["available_timeout_seconds"], progress=progress
            )
            record["cut_over"] = [c for c in record["cut_over"] if c["workload"] != name]
            record["cut_over"].append(result.to_dict())
            _save(path, record)
            done.append({"workload": name, "freeze_seconds": result.freeze_seconds})
    except (stateful.DataCheckFailed, NotAvailable, MigrationError, RcloneError) as err:
        record["failure"] = str(err)
        _save(path, record)
        raise _fail(err) from err
    return {"workloads": done}


@task(doc_md=VALIDATE_STATEFUL)
def validate_stateful(summary: dict[str, Any]) -> dict[str, Any]:
    if not summary.get("stateful"):
        return {"validated": 0}
    source, target = _sides()
    problems = []
    for name in summary["stateful"]:
        try:
            stateful.verify_copy(source, target, name)
            stateful.wait_ready(target, name, summary["available_timeout_seconds"])
        except (ChecksumMismatch, NotAvailable) as err:
            problems.append(str(err))
        workload = stateful.read_workload(source, name) or {"metadata": {"namespace": ""}, "spec": {}}
        claims = stateful.claim_names(workload, stateful.claims_in(source, workload))
        running = stateful.pods_using(source, workload["metadata"]["namespace"], claims)
        if workload["spec"].get("replicas") != 0 or running:
            problems.append(f"{name} runs again on the source ({', '.join(running) or 'replicas > 0'})")
    if problems:
        raise AirflowFailException("; ".join(problems))
    return {"validated": len(summary["stateful"])}


@task(doc_md=ROLLBACK_STATEFUL, trigger_rule=TriggerRule.ONE_FAILED, execution_timeout=timedelta(hours=6))
def rollback_stateful() -> dict[str, Any]:
    """Reads the assessment's summary itself: it also runs when a task before it failed."""
    summary = get_current_context()["ti"].xcom_pull(task_ids="assess")
    if not summary or not summary.get("stateful"):
        raise AirflowSkipException("the run stopped before any stateful workload was frozen")
    source, target = _sides()
    undone = []
    for name in summary["stateful"]:
        try:
            result = stateful.roll_back(source, target, name, summary["available_timeout_seconds"])
        except (NotAvailable, RcloneError) as err:
            raise _fail(err) from err
        if result is not None:
            undone.append(result)
    if not undone:
        raise AirflowSkipException("no source workload was frozen: nothing to roll back")
    path, record = _record()
    record["rollback"] = undone
    _save(path, record)
    return {"rolled_back": [r["workload"] for r in undone]}


@task(doc_md=SWITCH_TRAFFIC)
def switch_traffic() -> dict[str, Any]:
    summary = get_current_context()["ti"].xcom_pull(task_ids="assess") or {}
    if not strategies.switches_traffic(summary.get("strategies") or {}):
        reason = "no workload moves blue-green or sync-then-cutover (strategy: copy-only or skip)"
        return {"switched": False, "reason": f"{reason}: traffic stays on the source"}
    door = _connection().front_door
    if door is None:
        return {"switched": False, "reason": "no front door in the slipway_migration connection"}
    api = frontdoor.RuntimeApi(door.socket)
    try:
        steps = frontdoor.switch(api, door.url)
    except frontdoor.SwitchRolledBack as err:
        return {"switched": False, "rolled_back": True, "reason": str(err), "steps": _steps(err.steps)}
    return {"switched": True, "rolled_back": False, "target_percent": 100, "steps": _steps(steps)}


def _steps(steps: list[frontdoor.StepResult]) -> list[dict[str, Any]]:
    return [
        {"percent": s.percent, "sent": s.sent, "failed": s.failed, "answered_by": s.answered_by}
        for s in steps
    ]


# After the traffic switch, or after a stateful rollback (the switch never ran then).
@task(doc_md=REPORT, trigger_rule=TriggerRule.ONE_SUCCESS)
def write_migration_report() -> str:
    ti = get_current_context()["ti"]

    def pulled(task_id: str) -> dict[str, Any]:
        return ti.xcom_pull(task_ids=task_id) or {}

    summary, traffic = pulled("assess"), pulled("switch_traffic")
    config_copy, config_check = pulled("copy_configuration"), pulled("verify_configuration")
    workload_copy, workload_check = pulled("copy_workloads"), pulled("validate_workloads")
    applied = config_copy.get("applied", 0) + workload_copy.get("applied", 0)
    seconds = config_copy.get("seconds", 0) + workload_copy.get("seconds", 0)
    record_path, record = _record()
    section = _stateful_section(record, summary.get("stateful", []))
    report = {
        "namespaces": summary.get("namespaces", []),
        "copy_path": summary.get("copy_path", "builtin"),
        "velero": {k: config_copy[k] for k in ("backup", "restore", "parked_stateful") if k in config_copy}
        or None,
        "objects_copied": applied,
        "checksums_compared": config_check.get("compared", 0) + workload_check.get("compared", 0),
        "checksum_mismatches": config_check.get("mismatches", 0) + workload_check.get("mismatches", 0),
        "copy_seconds": round(seconds, 3),
        "objects_per_second": round(applied / seconds, 1) if seconds > 0 else None,
        "workloads_available": workload_check.get("available"),
        "seconds_to_available": workload_check.get("seconds_to_available"),
        "target_defaults_ignored": workload_check.get("target_defaults", []),
        "traffic": traffic or {"switched": False, "reason": "not run: the stateful cut-over failed first"},
        "failed_requests_during_switch": sum(step["failed"] for step in traffic.get("steps", [])),
        "stateful": section,
        "strategy": strategies.describe(summary),
        "assessment": summary.get("report"),
        "source_kept": "the source is scaled down (stateful) or left running, never deleted",
    }
    folder = record_path.parent
    (folder / "migration-report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    lines = ["# Migration report", ""] + [
        f"- **{k.replace('_', ' ')}**: {v}" for k, v in report.items() if k not in ("stateful", "strategy")
    ]
    moves = report["strategy"]
    lines.append(strategies.markdown(moves["per_workload"]))
    if moves["not_moved"]:
        lines.append(f"- **not moved (strategy skip, left on the source)**: {', '.join(moves['not_moved'])}")
    (folder / "migration-report.md").write_text("\n".join(lines + _stateful_lines(section)) + "\n")
    where = _where(folder / "migration-report.md")
    if section["rolled_back"]:
        raise AirflowFailException(f"stateful cut-over rolled back ({section['failure']}); report: {where}")
    if traffic.get("rolled_back"):
        stays = (
            f"; stateful workloads {', '.join(section['cut_over'])} stay on the target (their sources are "
            "frozen at 0): not rolled back automatically, writes on the target since the cut-over "
            "would be lost (runbook of switch_traffic)"
            if section["cut_over"]
            else ""
        )
        raise AirflowFailException(f"{traffic['reason']}{stays}; report: {where}")
    return _where(folder / "migration-report.json")


def _stateful_section(record: dict[str, Any], workloads: list[str]) -> dict[str, Any]:
    """The report's stateful part: volumes, bytes and files per pass, check, freeze window, rollback."""
    cut = record["cut_over"]
    passes = [{k: p[k] for k in ("kind", "bytes", "files", "deletes", "seconds")} for p in record["passes"]]
    volumes = sorted({v for p in record["passes"] for v in p["volumes"]})
    # The last check of each volume (a failed one included), as the cut-over recorded it.
    checks = {volume: c for per_workload in record["checks"].values() for volume, c in per_workload.items()}
    return {
        "workloads": workloads,
        "volumes": volumes,
        "passes": passes,
        "bytes_copied": sum(p["bytes"] for p in passes),
        "files_copied": sum(p["files"] for p in passes),
        "check": {
            "volumes": len(checks),
            "files_matching": sum(c["matching"] for c in checks.values()),
            "differences": sum(c["differences"] for c in checks.values()),
            "differing": {volume: c["files"] for volume, c in checks.items() if c["differences"]},
        },
        "freeze_seconds": {one["workload"]: one["freeze_seconds"] for one in cut},
        "cut_over": [one["workload"] for one in cut],
        "failure": record["failure"],
        "rolled_back": record["rollback"],
    }


def _stateful_lines(section: dict[str, Any]) -> list[str]:
    if not section["workloads"]:
        return []
    lines = ["", "## Stateful workloads", ""]
    lines += [f"- **volumes**: {', '.join(section['volumes']) or 'none'}"]
    lines += [
        f"- pass {i} ({p['kind']}): {p['bytes']} bytes, {p['files']} files, {p['deletes']} deleted, "
        f"{p['seconds']} s"
        for i, p in enumerate(section["passes"], 1)
    ]
    check = section["check"]
    lines += [
        f"- **rclone check**: {check['files_matching']} files identical in {check['volumes']} volume(s), "
        f"{check['differences']} differences",
        *[f"  - `{volume}` differs: {files}" for volume, files in check["differing"].items()],
        *[f"- **data freeze** `{name}`: {secs} s" for name, secs in section["freeze_seconds"].items()],
    ]
    if section["failure"]:
        lines.append(f"- **cut-over failed**: {section['failure']}")
    for undone in section["rolled_back"]:
        lines.append(
            f"- **rolled back** `{undone['workload']}`: source back to {undone['replicas']} replicas, "
            f"volumes restored from the pre-cutover snapshot: {', '.join(undone['restored'])}"
        )
    return lines
