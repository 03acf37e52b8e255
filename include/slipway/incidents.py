"""§5.2 incident response: severity, declaration and the post-incident report of a run.

An incident is derived from the run record's timeline, never from task states: the same
record that drove the run says what went wrong, when it was first seen, what was rolled
back and what is left for a human. Severity follows §4.2's split of critical alerts
(cluster unavailable, data inconsistency, control-plane failure) and warnings:

- ``SEV1`` — the control plane failed verification, a step failed or it was rolled back, etcd's
  data failed its check, or etcd was (or needs to be) restored;
- ``SEV2`` — a worker batch failed and was rolled back, a blue-green upgrade switched back,
  the final validation failed, API requests failed while the control plane moved, or the
  run's proven snapshot was altered (backup refused);
- ``SEV3`` — the upgrade stopped safely short of its goal (backup not proven, no capacity,
  nodes quarantined for a human).

Pure apart from :func:`declare`, which writes the declaration into the run record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from slipway.runrecord import RunRecord

SEVERITIES = ("SEV1", "SEV2", "SEV3")
DECLARED = "incident-declared"
# Timeline events that are failure signals, and the severity each one alone warrants.
SIGNALS = {
    "control-plane-verification-failed": "SEV1",
    "control-plane-rolled-back": "SEV1",
    "control-plane-step-failed": "SEV1",
    "etcd-data-check-failed": "SEV1",
    "etcd-restored": "SEV1",
    "etcd-restore-needed": "SEV1",
    "etcd-restore-failed": "SEV1",
    "backup-refused": "SEV2",
    "batch-failed": "SEV2",
    "batch-rolled-back": "SEV2",
    "switched-back": "SEV2",
    "validation-failed": "SEV2",
    "backup-failed": "SEV3",
    "no-capacity": "SEV3",
    "quarantined": "SEV3",
}
FOLLOW_UPS = {
    "control-plane-verification-failed": (
        "Find why verification failed (the event names the component) before the next attempt; "
        "check every component's logs for the failed version."
    ),
    "control-plane-step-failed": (
        "The failed step is named in the event; read that component's log at the target version, fix "
        "the cause, then trigger a new run (the rollback put the previous versions back)."
    ),
    "etcd-data-check-failed": (
        "etcd members held different data (or less than the proven backup): keep the data dirs the "
        "restore set aside (`*.before-restore-*`) for forensics and check the disks of the member named."
    ),
    "etcd-restore-needed": (
        "etcd data cannot be trusted and this platform cannot restore it: restore the proven snapshot "
        "named in the event by the etcd restore plan, now."
    ),
    "etcd-restore-failed": (
        "The etcd restore stopped: read the event, then finish the restore by hand from the proven "
        "snapshot (its sha256 is in the run record)."
    ),
    "backup-refused": (
        "The run's proven pre-upgrade snapshot was altered or removed: find out how before trusting "
        "any snapshot in that folder."
    ),
    "etcd-restored": (
        "Data was restored from the pre-upgrade snapshot: writes made after the snapshot are lost; "
        "reconcile controllers and tell the owners of recently changed objects."
    ),
    "batch-failed": (
        "Read the failed batch's validation problems in the report; fix the cause (node, workload or "
        "health check) before triggering again — the run resumes from the cluster."
    ),
    "validation-failed": (
        "The cluster-wide validation names the unhealthy objects; fix them or roll back the affected pool."
    ),
    "backup-failed": (
        "The etcd backup could not be proven; nothing was changed. Fix the backup before retrying."
    ),
    "no-capacity": (
        "Free room for the next batch (resolve quarantined nodes, add nodes or use strategy=surge)."
    ),
    "quarantined": (
        "Quarantined nodes are cordoned at the old version: resolve the blocking PDB, then drain and "
        "upgrade them (or remove the slipway.dev/quarantined label to let the next run try)."
    ),
    "api-failures": (
        "Read the probe's failure samples; a write refused during etcd's leader hand-over is the known "
        "residual — anything else is a regression to investigate."
    ),
}


@dataclass(frozen=True)
class Incident:
    severity: str
    title: str
    detected_at: str
    declared_at: str | None
    signals: list[dict[str, Any]] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    left_for_a_human: list[str] = field(default_factory=list)
    follow_ups: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def classify(data: dict[str, Any]) -> Incident | None:
    """The run's incident, or None when nothing went wrong (a pause is not an incident)."""
    events = data.get("events", [])
    signals = [e | {"severity": SIGNALS[e["kind"]]} for e in events if e["kind"] in SIGNALS]
    probe = data.get("control_plane", {}).get("probe") or {}
    if probe.get("failures"):
        at = next((e["at"] for e in events if e["kind"] == "probe"), events[-1]["at"] if events else "")
        signals.append(
            {
                "at": at,
                "kind": "api-failures",
                "severity": "SEV2",
                "message": f"{probe['failures']} of {probe['requests']} API probe requests failed "
                f"while the control plane moved",
            }
        )
    if not signals:
        return None
    signals.sort(key=lambda s: s["at"])
    worst = min(signals, key=lambda s: (_rank(s["severity"]), s["at"]))
    declared = next((e["at"] for e in events if e["kind"] == DECLARED), None)
    undone = ("batch-rolled-back", "control-plane-rolled-back", "switched-back", "etcd-restored")
    rolled_back = [e["message"] for e in events if e["kind"] in undone]
    phase = data.get("worker_phase") or {}
    left = [f"node {n} quarantined (cordoned, old version)" for n in phase.get("quarantined", [])]
    if phase.get("remaining"):
        left.append(f"{phase['remaining']} worker node(s) not yet at the target")
    if phase.get("refused"):
        left.append(phase["refused"])
    kinds = list(dict.fromkeys(s["kind"] for s in signals))
    return Incident(
        severity=worst["severity"],
        title=f"{data.get('dag_id', 'upgrade')}: {worst['message']}"[:300],
        detected_at=signals[0]["at"],
        declared_at=declared,
        signals=[{k: s[k] for k in ("at", "kind", "severity", "message")} for s in signals],
        rolled_back=rolled_back,
        left_for_a_human=left,
        follow_ups=[FOLLOW_UPS[k] for k in kinds if k in FOLLOW_UPS],
    )


def declare(record: RunRecord, severity: str, title: str) -> bool:
    """Record that an incident is declared (once per run and severity); True when new.

    Called when a rollback starts, so the timeline shows when the response began, not only
    when the run ended.
    """
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    events = record.get("events", [])
    if any(e["kind"] == DECLARED and e.get("severity") == severity for e in events):
        return False
    record.event(DECLARED, f"{severity}: {title}", severity=severity)
    return True


def render_markdown(incident: Incident) -> list[str]:
    """The post-incident section of the run report."""
    out = [
        "## Incident (post-incident report)",
        "",
        f"- Severity: **{incident.severity}** — {incident.title}",
        f"- First signal: `{incident.detected_at}`; "
        f"declared: `{incident.declared_at or 'at the end of the run'}`",
        "",
        "What happened, in order:",
        "",
    ]
    out += [f"- `{s['at']}` {s['severity']} **{s['kind']}** {s['message']}" for s in incident.signals]
    out += ["", "Rolled back: " + ("; ".join(incident.rolled_back) or "nothing"), ""]
    out += ["Left for a human: " + ("; ".join(incident.left_for_a_human) or "nothing"), ""]
    if incident.follow_ups:
        out += ["Follow-ups:", ""] + [f"- {f}" for f in incident.follow_ups] + [""]
    return out
