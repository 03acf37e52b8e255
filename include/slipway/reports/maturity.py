"""§1.1 upgrade maturity, measured from Slipway's own run history.

The seed names four levels — manual, scripted, automated, intelligent — and three metrics:
upgrade duration, downtime and success rate. Every figure here comes from the run records
(``slipway-run-*`` ConfigMaps) of upgrade runs, never from a declaration; a level is reached
only when every criterion of it and of the levels below holds, and each criterion carries
the evidence that decided it, so the report says what to change to reach the next level.

Pure: :func:`run_facts` and :func:`assess` take plain dicts; reading the ConfigMaps is
:func:`load_run_records`.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kubernetes import client

from slipway.artefacts import make_dirs
from slipway.reports.run import phase_timings, report_dir, run_verdict
from slipway.runrecord import NAMESPACE, records_from

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

LEVELS = {1: "manual", 2: "scripted", 3: "automated", 4: "intelligent"}
UPGRADE_DAGS = ("k8s_cluster_upgrade", "k8s_worker_upgrade")
HISTORY_DAG = "k8s_upgrade_history"
# Verdicts that say nothing about whether an upgrade works: the risk gate or a human
# stopped it before it started, or it only planned.
NOT_ATTEMPTS = ("dry-run", "refused", "rejected")
# Automated (level 3) asks for a track record, not one lucky run.
MIN_RUNS = 3
MIN_SUCCESS_RATE = 0.9
RECENT = 10  # the runs level 4's traits are judged on


@dataclass(frozen=True)
class RunFacts:
    """What one upgrade run shows about the way upgrades are done."""

    run_id: str
    dag_id: str
    verdict: str
    started_at: str
    seconds: float
    api_requests: int | None  # the zero-downtime probe, when the control plane moved
    api_failures: int | None
    worst_node_out_of_service: float | None
    unattended: bool  # a scheduled run, not a hand trigger
    risk_assessed: bool
    adaptive: bool
    backup_proven: bool
    gated: bool  # every opened batch was judged before the next one opened

    @property
    def attempted(self) -> bool:
        return self.verdict not in NOT_ATTEMPTS

    @property
    def succeeded(self) -> bool:
        return self.verdict == "upgraded"


@dataclass(frozen=True)
class Criterion:
    level: int
    name: str
    met: bool
    evidence: str


@dataclass
class Maturity:
    level: int
    runs: int
    attempted: int
    success_rate: float | None
    median_seconds: float | None
    worst_seconds: float | None
    api_failures: int
    api_requests: int
    worst_node_out_of_service: float | None
    criteria: list[Criterion] = field(default_factory=list)

    @property
    def name(self) -> str:
        return LEVELS[self.level]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"name": self.name}


def run_facts(data: dict[str, Any]) -> RunFacts | None:
    """The facts of one run record; None for what is not an upgrade run (preflights, probes)."""
    if data.get("dag_id") not in UPGRADE_DAGS or "request" not in data:
        return None
    events = data.get("events", [])
    kinds = {e["kind"] for e in events}
    request = data["request"]
    probe = data.get("control_plane", {}).get("probe")
    out = [float(e["seconds"]) for e in events if e["kind"] == "node-uncordoned" and e.get("seconds")]
    batches = data.get("batches", [])
    total = dict(phase_timings(events)).get("total", 0.0)
    return RunFacts(
        run_id=str(data.get("run_id", "")),
        dag_id=str(data["dag_id"]),
        verdict=run_verdict(data),
        started_at=str(events[0]["at"]) if events else "",
        seconds=total,
        api_requests=int(probe["requests"]) if probe else None,
        api_failures=int(probe["failures"]) if probe else None,
        worst_node_out_of_service=max(out) if out else None,
        unattended=data.get("run_type") == "scheduled",
        risk_assessed="risk" in data,
        adaptive=request.get("batch_policy") == "adaptive",
        backup_proven="backup-proven" in kinds,
        gated=bool(batches) and all("verdict" in b for b in batches),
    )


def assess(runs: Iterable[RunFacts]) -> Maturity:
    """The level the recorded runs reach, with every criterion and its evidence."""
    ordered = sorted(runs, key=lambda r: r.started_at)
    attempts = [r for r in ordered if r.attempted]
    finished = [r for r in attempts if r.verdict != "paused"]  # a paused run is neither yet
    successes = [r for r in finished if r.succeeded]
    rate = len(successes) / len(finished) if finished else None
    durations = [r.seconds for r in successes if r.seconds]
    probed = [r for r in attempts if r.api_requests is not None]
    failures = sum(r.api_failures or 0 for r in probed)
    requests = sum(r.api_requests or 0 for r in probed)
    outages = [r.worst_node_out_of_service for r in attempts if r.worst_node_out_of_service is not None]
    recent = attempts[-RECENT:]
    full_runs = [r for r in attempts if r.dag_id == "k8s_cluster_upgrade"]
    recent_full = [r for r in recent if r.dag_id == "k8s_cluster_upgrade"]

    criteria = [
        Criterion(2, "upgrades run as code", bool(attempts), f"{len(attempts)} recorded upgrade run(s)"),
        Criterion(
            3,
            "a track record",
            len(finished) >= MIN_RUNS,
            f"{len(finished)} finished run(s), {MIN_RUNS} needed",
        ),
        Criterion(
            3,
            "success rate",
            rate is not None and rate >= MIN_SUCCESS_RATE,
            f"{_percent(rate)} of finished runs upgraded, {MIN_SUCCESS_RATE:.0%} needed",
        ),
        Criterion(
            3,
            "zero API downtime",
            bool(probed) and failures == 0,
            f"{failures} failed of {requests} probe requests over {len(probed)} control-plane run(s)"
            if probed
            else "no control-plane run measured the API",
        ),
        Criterion(
            3,
            "proven backup before every control-plane change",
            bool(full_runs) and all(r.backup_proven for r in full_runs),
            _count(full_runs, lambda r: r.backup_proven, "full upgrade run(s) proved their etcd backup"),
        ),
        Criterion(
            3,
            "batches gated by validation",
            any(r.gated for r in attempts) and all(r.gated for r in attempts if r.verdict != "failed"),
            _count(attempts, lambda r: r.gated, "run(s) judged every batch before the next"),
        ),
        Criterion(
            4,
            "risk assessed before the run",
            bool(recent_full) and all(r.risk_assessed for r in recent_full),
            _count(
                recent_full,
                lambda r: r.risk_assessed,
                f"of the last {len(recent_full)} full upgrade run(s) assessed risk first",
            ),
        ),
        Criterion(
            4,
            "adaptive batching",
            any(r.adaptive for r in recent),
            _count(
                recent, lambda r: r.adaptive, f"of the last {len(recent)} run(s) used batch_policy=adaptive"
            ),
        ),
        Criterion(
            4,
            "unattended runs",
            any(r.unattended and r.succeeded for r in recent),
            _count(
                recent,
                lambda r: r.unattended and r.succeeded,
                f"of the last {len(recent)} run(s) were scheduled and upgraded unattended",
            ),
        ),
    ]
    level = 1
    for candidate in (2, 3, 4):
        if all(c.met for c in criteria if c.level <= candidate):
            level = candidate
        else:
            break
    return Maturity(
        level=level,
        runs=len(ordered),
        attempted=len(attempts),
        success_rate=rate,
        median_seconds=statistics.median(durations) if durations else None,
        worst_seconds=max(durations) if durations else None,
        api_failures=failures,
        api_requests=requests,
        worst_node_out_of_service=max(outages) if outages else None,
        criteria=criteria,
    )


def render_markdown(maturity: Maturity, *, generated_at: datetime) -> str:
    """The maturity report an engineer attaches to a platform review."""

    def seconds(value: float | None) -> str:
        return f"{value:.0f}s" if value is not None else "n/a"

    out = [
        "# Slipway upgrade maturity",
        "",
        f"- Level: **{maturity.level} — {maturity.name}** (from {maturity.runs} recorded upgrade run(s), "
        f"{maturity.attempted} attempted; generated {generated_at.isoformat(timespec='seconds')})",
        f"- Success rate: {_percent(maturity.success_rate)}",
        f"- Upgrade duration: median {seconds(maturity.median_seconds)}, "
        f"worst {seconds(maturity.worst_seconds)}",
        f"- API downtime: {maturity.api_failures} failed of {maturity.api_requests} probe requests; "
        f"longest node out of service {seconds(maturity.worst_node_out_of_service)}",
        "",
        "| level | criterion | met | evidence |",
        "|---|---|---|---|",
    ]
    out += [
        f"| {c.level} ({LEVELS[c.level]}) | {c.name} | {'yes' if c.met else 'NO'} | {c.evidence} |"
        for c in maturity.criteria
    ]
    missing = [c for c in maturity.criteria if not c.met and c.level == maturity.level + 1]
    if missing:
        out += ["", f"To reach level {maturity.level + 1}: " + "; ".join(c.name for c in missing) + "."]
    return "\n".join(out) + "\n"


def write_maturity_report(
    maturity: Maturity, *, run_id: str, generated_at: datetime
) -> dict[str, ObjectStoragePath]:
    """``maturity.json`` and ``maturity.md`` under the artefact store's folder of
    ``k8s_upgrade_history``."""
    folder = report_dir(HISTORY_DAG, run_id)
    make_dirs(folder)
    json_path, md_path = folder / "maturity.json", folder / "maturity.md"
    json_path.write_text(json.dumps(maturity.to_dict(), indent=2, sort_keys=True))
    md_path.write_text(render_markdown(maturity, generated_at=generated_at))
    return {"json": json_path, "markdown": md_path}


def load_run_records(api: client.ApiClient) -> list[dict[str, Any]]:
    """Every run record in the cluster (the orchestrator may list ConfigMaps in its namespace)."""
    maps = client.CoreV1Api(api).list_namespaced_config_map(
        NAMESPACE, label_selector="app.kubernetes.io/managed-by=slipway"
    )
    return records_from(maps.items)  # one list: the records and their timeline chunks


def _percent(rate: float | None) -> str:
    return f"{rate:.0%}" if rate is not None else "n/a"


def _count(runs: Sequence[RunFacts], test: Callable[[RunFacts], bool], what: str) -> str:
    return f"{sum(1 for r in runs if test(r))} {what}" if runs else "no runs"
