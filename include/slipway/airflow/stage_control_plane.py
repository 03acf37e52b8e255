"""The control-plane stage (§2.2): proven etcd backup, then etcd → etcd data check →
kube-apiserver → kube-controller-manager → kube-scheduler one instance at a time, with an API
probe measuring downtime across all of it, and a rollback branch after verification.

Verification runs once every step ended, also when one failed: a failed step or a failed
etcd data check takes the rollback branch (with a SEV1 incident), and a failed data check
(after the etcd step, in verification, or after the etcd members went back) restores the
proven pre-upgrade snapshot, once, after checking its digest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import TriggerRule, get_current_context, setup, task, teardown
from airflow.sdk.exceptions import AirflowFailException

from slipway import plan_execution
from slipway.airflow import runbooks
from slipway.airflow.stage_common import declare_incident
from slipway.airflow.stage_lease import current_holder, holds_cluster_lease
from slipway.airflow.stage_prepare import artefacts_dir
from slipway.lazy import lazy

if TYPE_CHECKING:
    import slipway.etcd.safety as etcd_safety
    import slipway.etcd.store as etcd_store
    import slipway.upgraders.controlplane as upgraders_controlplane
    from slipway import etcd, probe_process, reports, runrecord
    from slipway.airflow import runtime
else:
    etcd = lazy("slipway.etcd")
    etcd_safety = lazy("slipway.etcd.safety")
    etcd_store = lazy("slipway.etcd.store")
    probe_process = lazy("slipway.probe_process")
    reports = lazy("slipway.reports")
    runrecord = lazy("slipway.runrecord")
    runtime = lazy("slipway.airflow.runtime")
    upgraders_controlplane = lazy("slipway.upgraders.controlplane")


GROUP = "control_plane"
# Upgrade order of component kinds; kubeadm upgrades whole control-plane nodes instead.
KINDS: tuple[upgraders_controlplane.ComponentKind, ...] = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "control-plane-node",
)
# The game-day switch: this ConfigMap in slipway-system injects faults on purpose (fail
# verification, fail a step, diverge an etcd member) so teams can rehearse the rollback on
# the local platform; other platforms ignore it.
CHAOS_CONFIGMAP = "slipway-chaos"
CHAOS_KEY = "fail-control-plane-verification"  # upgraders.controlplane.FAULT_FAIL_VERIFICATION
SNAPSHOTS_FOLDER = "etcd-snapshots"
ARTEFACT_SNAPSHOTS = "etcd"  # the snapshots' folder in the artefact store


def targets(
    plan: dict[str, Any],
) -> tuple[upgraders_controlplane.ControlPlaneTarget, upgraders_controlplane.ControlPlaneTarget]:
    """(target, previous) of this run's control-plane hop, from the plan summary."""
    hops = plan.get("hops", [])
    cp = [h for h in hops if h["kind"] == "control-plane"]
    etcd = [h for h in hops if h["kind"] == "etcd"]
    current = plan["current"]
    previous_etcd = etcd[0]["from"] if etcd else plan.get("etcd", "")
    target_k8s = cp[0]["to"] if cp else current
    target_etcd = etcd[-1]["to"] if etcd else previous_etcd  # the end of the etcd chain
    return upgraders_controlplane.ControlPlaneTarget(
        target_k8s, target_etcd
    ), upgraders_controlplane.ControlPlaneTarget(current, previous_etcd)


@contextlib.contextmanager
def _kubeconfig_for_probe() -> Iterator[Path]:
    """The orchestrator kubeconfig as a file the probe process reads when it starts: the
    connection's own file, or a 0600 copy in a private 0700 folder that is removed as soon
    as the probe has started (it read the file by then), also when the start fails."""
    from slipway.airflow.runtime import kube_connection_extra, run_connections

    conn_id = run_connections()[0]
    extra = kube_connection_extra(conn_id)
    if extra.get("kube_config_path"):
        yield Path(str(extra["kube_config_path"])).expanduser()
        return
    content = extra.get("kube_config")
    if not content:
        raise AirflowFailException(f"connection {conn_id} has neither kube_config_path nor kube_config")
    folder = Path(tempfile.mkdtemp(prefix="slipway-probe-"))
    try:
        path = folder / "kubeconfig"
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(content if isinstance(content, str) else json.dumps(content))
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def snapshot_store() -> etcd_store.SnapshotStore:
    """This cluster's pre-upgrade snapshots: taken in this worker's folder (not one run's), and
    copied to the artefact store's ``etcd/<cluster>`` when one is configured, so a rollback on
    another worker finds them (the default store is that local folder already)."""
    from slipway import artefacts

    cluster = etcd_store.safe_name(runtime.platform().settings.cluster_name)
    mirror = None if artefacts.is_default() else artefacts.root() / ARTEFACT_SNAPSHOTS / cluster
    return etcd_store.SnapshotStore(reports.reports_root() / SNAPSHOTS_FOLDER / cluster, mirror)


@task(doc_md=runbooks.BACKUP_ETCD, retries=1, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
@holds_cluster_lease
def backup_etcd() -> dict[str, Any]:
    """A proven snapshot, write-once per run and attempt: a cleared task reuses the one this
    run proved (its sha256 must still match) and never takes a second one mid-upgrade."""
    try:
        keep = etcd_store.parse_keep(os.environ.get(etcd_store.KEEP_ENV))
    except ValueError as err:
        raise AirflowFailException(str(err)) from err
    rec = runtime.record()
    proven = rec.get("backup") or {}
    if proven.get("restore_ok"):
        try:
            snapshot = snapshot_store().fetch(etcd_store.ProvenSnapshot.from_dict(proven))
            etcd_store.verify_digest(snapshot)
        except etcd_store.SnapshotRefused as err:
            rec.event("backup-refused", f"{err}; this run's pre-upgrade snapshot is never replaced")
            raise AirflowFailException(
                f"{err}; this run's pre-upgrade snapshot is never replaced mid-run: start a new run"
            ) from err
        rec.event(
            "backup-reused", f"etcd snapshot {snapshot.path} proven earlier in this run: sha256 matches"
        )
        return snapshot.to_dict()
    context = get_current_context()
    run_id = str(context["run_id"])
    store = snapshot_store()
    try:
        proof = store.take(runtime.platform().etcd(), run_id, int(context["ti"].try_number))
    except etcd_store.SnapshotRefused as err:
        raise AirflowFailException(str(err)) from err
    data = proof.to_dict()
    if not proof.restore_ok:
        rec.update(backup=data)
        rec.event("backup-failed", f"etcd backup not proven: {proof.problem}")
        raise AirflowFailException(
            f"etcd backup not proven, refusing to touch the control plane: {proof.problem}"
        )
    try:
        stored = store.publish(proof, run_id, int(context["ti"].try_number))
    except (etcd_store.SnapshotRefused, OSError) as err:
        rec.event("backup-failed", f"etcd snapshot not copied to the artefact store: {err}")
        raise AirflowFailException(f"etcd snapshot not copied to the artefact store: {err}") from err
    rec.update(backup=data | {"stored": stored})  # proven and stored: a cleared task reuses it
    pruned = store.prune(keep, current_run=run_id)
    rec.event(
        "backup-proven",
        f"etcd snapshot {proof.path} restored in a drill: revision {proof.revision}, {proof.keys} keys, "
        f"sha256 {proof.sha256}; {len(pruned)} older run(s) pruned, the last {keep} kept",
        sha256=proof.sha256,
    )
    return etcd_store.ProvenSnapshot.from_proof(proof, stored).to_dict()


@task(doc_md=runbooks.DEFRAGMENT_ETCD, retries=1)
@holds_cluster_lease
def defragment_etcd() -> list[dict[str, Any]]:
    """§2.2: reclaim etcd's free pages before the upgrade, one member at a time, leader last."""
    try:
        done = etcd.defragment(runtime.platform().etcd())
    except etcd.EtcdError as err:
        raise AirflowFailException(f"etcd defragmentation stopped, control plane untouched: {err}") from err
    results = [r.to_dict() for r in done]
    rec = runtime.record()
    _merge_control_plane(rec, lambda section: section.update(defragmentation=results))
    reclaimed = sum(r.reclaimed for r in done)
    order = ", ".join(r.member for r in done)
    rec.event(
        "etcd-defragmented", f"etcd defragmented member by member ({order}): {reclaimed} bytes reclaimed"
    )
    return results


def probe_tasks() -> tuple[Any, Any]:
    """The probe's setup/teardown pair; the DAG places the teardown at the end of the run, so
    the probe measures the workers too. Built per DAG parse: Airflow's setup/teardown
    decorators mark the decorated object, so a module-level one cannot serve two parses."""

    @setup
    @task(doc_md=runbooks.START_PROBE)
    def start_api_probe() -> dict[str, Any]:
        direct = runtime.platform().control_plane_reader().apiserver_urls()
        # The run's lease holder names the probe (its state in the cluster) and stops it
        # by itself once the run is over.
        holder = current_holder()
        api = runtime.orchestrator_api()
        with _kubeconfig_for_probe() as kubeconfig:
            state = probe_process.start(
                api, kubeconfig, artefacts_dir() / "probe", holder, direct=direct, holder=holder
            )
        print(f"API probe measuring: {state.where()}")
        return {"host": state.host, "pid": state.pid}

    @teardown
    @task(doc_md=runbooks.STOP_PROBE)
    def stop_api_probe() -> dict[str, Any]:
        from slipway.reports.run import probe_sentence, whole_run_probe_sentence

        try:
            result = probe_process.stop(runtime.orchestrator_api(), current_holder())
        except RuntimeError as err:
            raise AirflowFailException(str(err)) from err
        rec = runtime.record()
        whole = result["whole"]
        rec.update(probe=whole)
        said = whole_run_probe_sentence(whole)
        figures = result.get("control_plane")
        if figures is not None:  # a run with a control-plane phase: its own figures too
            _merge_control_plane(rec, lambda section: section.update(probe=figures))
            said = f"{probe_sentence(figures)}. {said}"
        rec.event("probe", said)
        return {
            path: {k: f[k] for k in ("requests", "failures", "disruption_seconds")}
            for path, f in (whole["paths"] | whole["direct"]).items()
        }

    return start_api_probe(), stop_api_probe()


def _merge_control_plane(rec: runrecord.RunRecord, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the record's ``control_plane`` section in one resourceVersion-checked write:
    the probe's teardown and verification may write it at the same moment."""

    def apply(data: dict[str, Any]) -> None:
        section = dict(data.get("control_plane") or {})
        change(section)
        data["control_plane"] = section

    rec._mutate(apply)  # runrecord.RunRecord's conflict-retrying write; it has no public nested update


class InjectedFault(AirflowFailException):
    """A game-day fault fired on purpose; never retried."""


def _chaos_data() -> dict[str, str]:
    from kubernetes import client

    try:
        cm = client.CoreV1Api(runtime.orchestrator_api()).read_namespaced_config_map(
            CHAOS_CONFIGMAP, "slipway-system"
        )
    except client.exceptions.ApiException as err:
        if err.status == 404:
            return {}
        raise
    return dict(cm.data or {})


def _faults() -> upgraders_controlplane.ControlPlaneFaults:
    """Game-day faults from slipway-system/slipway-chaos, honoured only on a platform that takes
    injected faults (the local cluster); anywhere else the ConfigMap is ignored, and said so."""
    data = _chaos_data()
    if not data:
        return upgraders_controlplane.ControlPlaneFaults()
    if not runtime.platform().capabilities.fault_injection:
        rec = runtime.record()
        if not any(e["kind"] == "fault-injection-ignored" for e in rec.get("events", [])):
            rec.event(
                "fault-injection-ignored",
                f"ConfigMap slipway-system/{CHAOS_CONFIGMAP} ignored: this platform takes no injected faults",
            )
        return upgraders_controlplane.ControlPlaneFaults()
    try:
        return upgraders_controlplane.parse_faults(data)
    except ValueError as err:
        raise AirflowFailException(f"ConfigMap slipway-system/{CHAOS_CONFIGMAP} refused: {err}") from err


def _already_past(upgrader: Any, ref: Any, version: str) -> bool:
    from slipway.versions import Version

    current = upgrader.current_version(ref)
    return current is not None and Version.parse(current) >= Version.parse(version)


def _chained(earlier: dict[str, Any] | None, step: dict[str, Any]) -> dict[str, Any]:
    """One component's step in the record: a second pass of the same run (etcd's next hop)
    continues the first: from its start, through the versions in between, to the end."""
    if not earlier or earlier.get("to") != step["from"] or step["action"] != "upgraded":
        return step
    return step | {
        "from": earlier["from"],
        "via": [*earlier.get("via", []), earlier["to"]],
        "seconds": round(float(earlier["seconds"]) + float(step["seconds"]), 3),
    }


def upgrade_kind(kind: str) -> Any:
    @task(task_id=f"upgrade_{kind.replace('-', '_')}", doc_md=runbooks.UPGRADE_COMPONENT, retries=1)
    @holds_cluster_lease
    def upgrade(plan: dict[str, Any]) -> list[dict[str, Any]]:
        target, previous = targets(plan)
        faults = _faults()  # a refused game-day switch stops the step before it changes anything
        upgrader = runtime.platform().control_plane_upgrader()
        rec = runtime.record()
        done: list[dict[str, Any]] = []
        refs = [r for r in upgrader.components() if r.kind == kind]
        # etcd may move more than once (the patch the guide requires, then the next minor):
        # every member reaches each version before any member moves on.
        versions = plan_execution.etcd_path(plan) if kind == "etcd" else []
        passes = [(ref, v) for v in versions[:-1] for ref in refs]
        passes += [(ref, target.version_for(ref)) for ref in refs]
        try:
            for ref, version in passes:
                if version != target.version_for(ref) and _already_past(upgrader, ref, version):
                    continue  # a retried task: this member left the intermediate version behind
                result = upgrader.upgrade(ref, version)
                step = {
                    "from": result.from_version or "",
                    "to": result.to_version,
                    "seconds": result.duration_seconds,
                    "action": "upgraded" if result.changed else "already at target",
                }

                def note(section: dict[str, Any], name: str = ref.name, step: dict[str, Any] = step) -> None:
                    steps = dict(section.get("steps") or {})
                    steps[name] = _chained(steps.get(name), step)
                    section["steps"] = steps
                    section["previous"] = previous.__dict__

                _merge_control_plane(rec, note)
                rec.event("component-upgraded", f"{ref.name}: {result.message}", component=ref.name)
                done.append(step | {"component": ref.name})
                if faults.fail_step == kind:
                    raise InjectedFault(
                        f"fault injected by ConfigMap slipway-system/{CHAOS_CONFIGMAP} "
                        f"({upgraders_controlplane.FAULT_FAIL_STEP}): "
                        f"the {kind} step fails after {ref.name}"
                    )
            if kind == "etcd" and refs and faults.diverge_etcd_member:
                _diverge_once(rec, faults.diverge_etcd_member)
        except Exception as err:
            message = str(err) or type(err).__name__

            def failed(section: dict[str, Any]) -> None:
                section["step_failures"] = dict(section.get("step_failures") or {}) | {
                    kind: {"error": message[:500], "after": [d["component"] for d in done]}
                }
                section["previous"] = previous.__dict__

            _merge_control_plane(rec, failed)
            rec.event("control-plane-step-failed", f"upgrade step {kind} failed: {message}", step=kind)
            raise

        def succeeded(section: dict[str, Any]) -> None:
            # A retry that gets through clears the failure its first attempt left.
            section["step_failures"] = {
                k: v for k, v in (section.get("step_failures") or {}).items() if k != kind
            }

        _merge_control_plane(rec, succeeded)
        return done

    return upgrade


def _diverge_once(rec: runrecord.RunRecord, member: str) -> None:
    if any(e["kind"] == "fault-injected" for e in rec.get("events", [])):
        return  # a retried etcd step: the fault landed already
    evidence = runtime.platform().fault_injector().diverge_etcd_member(member)
    rec.event(
        "fault-injected",
        f"fault injected by ConfigMap slipway-system/{CHAOS_CONFIGMAP} "
        f"({upgraders_controlplane.FAULT_DIVERGE_ETCD}): "
        f"{member}'s data now differs from its peers ({evidence.get('places_changed', 0)} place(s) changed)",
        evidence=evidence,
    )


def _etcd_data_check(
    rec: runrecord.RunRecord, after: str, baseline: etcd_store.ProvenSnapshot | None
) -> etcd_safety.DataCheck:
    """The etcd data check, recorded; a failed one marks etcd's data as suspect for the rollback."""
    current = runtime.platform()
    if not current.capabilities.etcd_access:
        check = etcd_safety.DataCheck(
            0, {}, {}, {}, [f"the {current.settings.platform} platform gives no etcd access"]
        )
    else:
        check = etcd_safety.check_data(current.etcd(), baseline)
    entry = {"after": after} | check.to_dict()

    def note(section: dict[str, Any]) -> None:
        section["etcd_checks"] = [*(section.get("etcd_checks") or []), entry]
        if not check.ok:
            section["etcd_data_suspect"] = True

    _merge_control_plane(rec, note)
    if check.ok:
        hashes = len(set(check.hashes.values()))
        rec.event(
            "etcd-data-checked",
            f"etcd data checked after {after}: {len(check.hashes)} members, {hashes} hash at revision "
            f"{check.revision}, {sorted(set(check.keys.values()))} keys",
        )
    else:
        rec.event(
            "etcd-data-check-failed", f"etcd data check after {after} failed: " + "; ".join(check.problems)
        )
    return check


@task(doc_md=runbooks.CHECK_ETCD_DATA, retries=0)
def check_etcd_data(backup: dict[str, Any]) -> dict[str, Any]:
    """After the etcd step: every member holds the same data, no less than the proven backup."""
    check = _etcd_data_check(runtime.record(), "the etcd step", etcd_store.ProvenSnapshot.from_dict(backup))
    if not check.ok:
        raise AirflowFailException(
            "etcd data check failed after the etcd step, the rollback branch restores the proven snapshot: "
            + "; ".join(check.problems)
        )
    return check.to_dict()


@task.branch(doc_md=runbooks.VERIFY_CONTROL_PLANE, trigger_rule=TriggerRule.NONE_SKIPPED)
def verify_control_plane(plan: dict[str, Any], next_task: str) -> str | None:
    """Runs when every step ended, also when one failed (NONE_SKIPPED): the record says which."""
    rec = runtime.record()
    section = rec.get("control_plane", {})
    if not upgraders_controlplane.control_plane_touched(section):
        rec.event("control-plane-untouched", "no control-plane step ran: nothing to verify or roll back")
        return None  # an earlier task failed; skip both branches
    target, _ = targets(plan)
    problems = [
        f"upgrade step {kind} failed: {failure['error']}"
        for kind, failure in sorted((section.get("step_failures") or {}).items())
    ]
    problems += [
        f"etcd data check after {c['after']} failed: {'; '.join(c['problems'][:2])}"
        for c in section.get("etcd_checks") or []
        if not c["ok"]
    ]
    upgrader = runtime.platform().control_plane_upgrader()
    for ref in upgrader.components():
        version = upgrader.current_version(ref)
        if version != target.version_for(ref):
            problems.append(f"{ref.name} runs {version}, expected {target.version_for(ref)}")
        if not upgrader.verify(ref):
            problems.append(f"{ref.name} is not healthy")
    if not problems:
        backup = rec.get("backup") or {}
        baseline = etcd_store.ProvenSnapshot.from_dict(backup) if backup.get("restore_ok") else None
        check = _etcd_data_check(rec, "the control plane", baseline)
        problems += [f"etcd data: {p}" for p in check.problems]
    if _faults().fail_verification:
        problems.append(f"fault injected by ConfigMap slipway-system/{CHAOS_CONFIGMAP} ({CHAOS_KEY})")

    def note(section: dict[str, Any]) -> None:
        section["verification"] = problems

    _merge_control_plane(rec, note)
    if problems:
        rec.event("control-plane-verification-failed", "; ".join(problems))
        return f"{GROUP}.rollback_control_plane"
    rec.event(
        "control-plane-verified", f"every component at {target.kubernetes} (etcd {target.etcd}), healthy"
    )
    return next_task


def _restore_etcd(rec: runrecord.RunRecord, snapshot: etcd_store.ProvenSnapshot, version: str) -> str:
    """The data rollback, once per run, on a platform that can restore etcd."""
    current = runtime.platform()
    if not current.capabilities.data_restore:
        message = (
            f"etcd data cannot be trusted and the {current.settings.platform} platform cannot restore it: "
            f"restore {snapshot.path} (sha256 {snapshot.sha256}) by the etcd restore plan"
        )
        rec.event("etcd-restore-needed", message)
        raise AirflowFailException(message)
    restorer = current.etcd_restorer()
    try:
        snapshot = snapshot_store().fetch(snapshot)  # from the artefact store if not on this worker
        outcome = etcd_safety.restore_once(
            rec,
            current.etcd(),
            snapshot,
            lambda proven: restorer.restore_etcd(proven, version).model_dump(mode="json"),
        )
    except (etcd_store.SnapshotRefused, upgraders_controlplane.ControlPlaneError) as err:
        rec.event("etcd-restore-failed", f"etcd restore from {snapshot.path} failed: {err}")
        raise AirflowFailException(f"etcd restore from {snapshot.path} failed: {err}") from err
    return outcome.message


@task(doc_md=runbooks.ROLLBACK_CONTROL_PLANE, retries=1)
@holds_cluster_lease
def rollback_control_plane(plan: dict[str, Any], backup: dict[str, Any]) -> list[str]:
    """Previous versions back (reverse order), and the proven snapshot when etcd's data is suspect
    (a failed data check, before or after the etcd members went back)."""
    _, previous = targets(plan)
    rec = runtime.record()
    section = rec.get("control_plane", {})
    verification = section.get("verification", [])
    declare_incident("SEV1", "control-plane upgrade failed, rolling back: " + "; ".join(verification[:2]))
    snapshot = etcd_store.ProvenSnapshot.from_dict(backup)
    upgrader = runtime.platform().control_plane_upgrader()
    kube_kinds = tuple(k for k in KINDS if k != "etcd")
    results = [
        f"{r.component}: {r.message}"
        for r in upgraders_controlplane.rollback_control_plane(upgrader, previous, kinds=kube_kinds)
    ]
    suspect = bool(section.get("etcd_data_suspect"))
    if not suspect:
        try:
            results += [
                f"{r.component}: {r.message}"
                for r in upgraders_controlplane.rollback_control_plane(upgrader, previous, kinds=("etcd",))
            ]
        except upgraders_controlplane.ControlPlaneError as err:
            rec.event("etcd-rollback-failed", f"etcd members could not go back to {previous.etcd}: {err}")
            suspect = True
        else:
            # Every etcd change is checked: the members just went back a release.
            suspect = not _etcd_data_check(rec, "the rollback", snapshot).ok
    if suspect:
        results.append(_restore_etcd(rec, snapshot, previous.etcd))
    rec.event("control-plane-rolled-back", "; ".join(results))
    return results


@task(doc_md=runbooks.FINAL_VERDICT)
def control_plane_failed() -> None:
    raise AirflowFailException("the control-plane upgrade failed; the control plane was rolled back")
