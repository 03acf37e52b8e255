"""What the fleet does next, decided from the clusters' recorded outcomes only.

:func:`next_action` is a pure function of the plan, each cluster's recorded outcome (from its
own ``k8s_cluster_upgrade`` run), the recorded approval decisions and the time. A resumed
fleet run asks it again and continues where the records say it stopped; nothing is kept in
memory between two decisions.

Rules, in order:

- a failed, rolled-back or rejected cluster, or a rejected approval, halts the fleet: nothing
  more starts (clusters already running finish on their own), every untouched cluster stays
  untouched, and the halt names the cluster or gate;
- stages run in order; a stage opens once its before-gates pass, and is done when every
  cluster in it succeeded and its groups' and its own after-gates passed;
- inside a stage, groups share ``max_concurrency`` slots, filled in group order, then file
  order; a group's clusters wait for the group's before-gates;
- between two stages the fleet soaks ``soak_seconds`` after the last cluster of the earlier
  stage finished; there is no soak after the last stage;
- a window gate passes while its maintenance window is open; once a cluster behind it has
  started, it stays passed (the decision was taken then).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from slipway.fleet.model import Fleet, Gate
from slipway.windows import MaintenanceSchedule, parse_windows

Outcome = Literal["succeeded", "failed", "rolled-back", "rejected", "running", "not-started"]
ApprovalState = Literal["approved", "rejected", "pending"]
ActionKind = Literal["start", "wait", "soak", "gate", "halt", "done"]
HALTING: tuple[Outcome, ...] = ("failed", "rolled-back", "rejected")
TOUCHED: tuple[Outcome, ...] = ("succeeded", "failed", "rolled-back", "rejected", "running")


@dataclass(frozen=True)
class GatePlan:
    id: str  # "<stage>/before/0", "<stage>/<group>/after/1": stable, used in records and HITL subjects
    kind: Literal["approval", "window"]
    window: str | None = None


@dataclass(frozen=True)
class GroupPlan:
    name: str
    clusters: tuple[str, ...]
    before: tuple[GatePlan, ...] = ()
    after: tuple[GatePlan, ...] = ()


@dataclass(frozen=True)
class StagePlan:
    name: str
    groups: tuple[GroupPlan, ...]
    max_concurrency: int = 1
    soak_seconds: int = 0
    before: tuple[GatePlan, ...] = ()
    after: tuple[GatePlan, ...] = ()

    @property
    def clusters(self) -> tuple[str, ...]:
        return tuple(c for g in self.groups for c in g.clusters)

    @property
    def gates(self) -> tuple[GatePlan, ...]:
        return (*self.before, *(x for g in self.groups for x in (*g.before, *g.after)), *self.after)


@dataclass(frozen=True)
class FleetPlan:
    """The strategy resolved to cluster names: small, JSON-able, what the DAG's tasks share."""

    name: str
    stages: tuple[StagePlan, ...]
    excluded: tuple[str, ...] = ()

    @property
    def clusters(self) -> tuple[str, ...]:
        """Every cluster of the wave, in the order the strategy would start them."""
        return tuple(c for s in self.stages for c in s.clusters)

    @property
    def approvals(self) -> tuple[str, ...]:
        """Ids of every approval gate, in strategy order (one Airflow approval each)."""
        return tuple(g.id for s in self.stages for g in s.gates if g.kind == "approval")

    def stage_of(self, cluster: str) -> str:
        return next(s.name for s in self.stages if cluster in s.clusters)

    def group_of(self, cluster: str) -> str:
        return next(g.name for s in self.stages for g in s.groups if cluster in g.clusters)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FleetPlan:
        def gates(items: Sequence[Mapping[str, Any]]) -> tuple[GatePlan, ...]:
            return tuple(GatePlan(**dict(g)) for g in items)

        return cls(
            name=data["name"],
            excluded=tuple(data.get("excluded", ())),
            stages=tuple(
                StagePlan(
                    name=s["name"],
                    max_concurrency=s["max_concurrency"],
                    soak_seconds=s["soak_seconds"],
                    before=gates(s["before"]),
                    after=gates(s["after"]),
                    groups=tuple(
                        GroupPlan(
                            name=g["name"],
                            clusters=tuple(g["clusters"]),
                            before=gates(g["before"]),
                            after=gates(g["after"]),
                        )
                        for g in s["groups"]
                    ),
                )
                for s in data["stages"]
            ),
        )


def plan_fleet(fleet: Fleet) -> FleetPlan:
    """Resolve every group's selector to cluster names (file order), minus the exclusions."""
    excluded = set(fleet.strategy.exclude)

    def gates(prefix: str, items: Sequence[Gate]) -> tuple[GatePlan, ...]:
        return tuple(GatePlan(f"{prefix}/{i}", g.kind, g.window) for i, g in enumerate(items))

    stages = []
    for stage in fleet.strategy.stages:
        groups = tuple(
            GroupPlan(
                name=group.name,
                clusters=tuple(c.name for c in fleet.clusters if group.matches(c) and c.name not in excluded),
                before=gates(f"{stage.name}/{group.name}/before", group.before),
                after=gates(f"{stage.name}/{group.name}/after", group.after),
            )
            for group in stage.groups
        )
        stages.append(
            StagePlan(
                name=stage.name,
                groups=groups,
                max_concurrency=stage.max_concurrency,
                soak_seconds=stage.soak_seconds,
                before=gates(f"{stage.name}/before", stage.before),
                after=gates(f"{stage.name}/after", stage.after),
            )
        )
    return FleetPlan(fleet.name, tuple(stages), tuple(fleet.strategy.exclude))


def stage_waves(stage: StagePlan) -> list[list[str]]:
    """The clusters of a stage in start order, cut into waves of at most ``max_concurrency``
    (how they go when every cluster takes as long as the others)."""
    order = list(stage.clusters)
    size = stage.max_concurrency
    return [order[i : i + size] for i in range(0, len(order), size)]


@dataclass(frozen=True)
class ClusterRecord:
    """What a cluster's own run records say: its outcome and, once finished, when."""

    outcome: Outcome = "not-started"
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    reason: str
    stage: str | None = None
    clusters: tuple[str, ...] = ()  # start: these; wait: those running; halt: those still running
    gate: str | None = None
    until: datetime | None = None  # soak end, or when a window gate opens
    verdict: str | None = None  # halt/done: the fleet's verdict
    failed: str | None = None  # halt: the cluster (or gate id) that stopped the fleet
    untouched: tuple[str, ...] = field(default=())  # halt: clusters never started

    def to_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["until"] = self.until.isoformat() if self.until else None
        return found


def _window_open(gate: GatePlan, now: datetime) -> tuple[bool, datetime | None]:
    schedule = MaintenanceSchedule(parse_windows([gate.window or ""]))
    if schedule.is_inside(now):
        return True, None
    return False, schedule.next_window(now)[0]


def _gate_blocks(
    gate: GatePlan, approvals: Mapping[str, ApprovalState], now: datetime, stage: str
) -> Action | None:
    """None when the gate passed; otherwise the action that waits for it."""
    if gate.kind == "approval":
        if approvals.get(gate.id, "pending") == "approved":
            return None
        return Action("gate", f"waiting for approval {gate.id}", stage=stage, gate=gate.id)
    is_open, opens = _window_open(gate, now)
    if is_open:
        return None
    return Action(
        "gate", f"waiting for window '{gate.window}' ({gate.id})", stage=stage, gate=gate.id, until=opens
    )


def next_action(
    plan: FleetPlan,
    records: Mapping[str, ClusterRecord],
    approvals: Mapping[str, ApprovalState],
    now: datetime,
) -> Action:
    """What to do now. Clusters missing from ``records`` are not started."""

    def outcome(name: str) -> Outcome:
        return records.get(name, ClusterRecord()).outcome

    everyone = plan.clusters
    running = tuple(c for c in everyone if outcome(c) == "running")
    untouched = tuple(c for c in everyone if outcome(c) == "not-started")
    for name in everyone:
        if outcome(name) in HALTING:
            verdict = outcome(name)
            return Action(
                "halt",
                f"cluster {name} {verdict} in stage {plan.stage_of(name)}: the fleet stops; "
                f"{len(untouched)} untouched cluster(s) stay untouched",
                stage=plan.stage_of(name),
                clusters=running,
                verdict=verdict,
                failed=name,
                untouched=untouched,
            )
    for gate_id in plan.approvals:
        if approvals.get(gate_id) == "rejected":
            gate_stage = gate_id.split("/", 1)[0]
            return Action(
                "halt",
                f"approval {gate_id} rejected: the fleet stops; "
                f"{len(untouched)} untouched cluster(s) stay untouched",
                stage=gate_stage,
                clusters=running,
                verdict="rejected",
                failed=gate_id,
                untouched=untouched,
            )

    previous_end: datetime | None = None
    previous_soak = 0
    for index, stage in enumerate(plan.stages):
        # A later stage already started: this one's after-gates passed back then.
        later_started = any(outcome(c) != "not-started" for s in plan.stages[index + 1 :] for c in s.clusters)
        members = stage.clusters
        started = [c for c in members if outcome(c) != "not-started"]
        if previous_end is not None and not started:
            soak_end = previous_end + timedelta(seconds=previous_soak)
            if now < soak_end:
                return Action("soak", f"soaking before stage {stage.name}", stage=stage.name, until=soak_end)
        if not started:
            for gate in stage.before:
                blocked = _gate_blocks(gate, approvals, now, stage.name)
                if blocked:
                    return blocked
        # Fill free slots in group order; a group waits for its own before-gates.
        slots = stage.max_concurrency - sum(1 for c in members if outcome(c) == "running")
        starting: list[str] = []
        group_gate: Action | None = None
        for group in stage.groups:
            waiting = [c for c in group.clusters if outcome(c) == "not-started"]
            if not waiting:
                continue
            if not any(outcome(c) != "not-started" for c in group.clusters):
                blocked = next(
                    (b for b in (_gate_blocks(g, approvals, now, stage.name) for g in group.before) if b),
                    None,
                )
                if blocked:
                    group_gate = group_gate or blocked
                    continue
            starting += waiting[: max(slots - len(starting), 0)]
        if starting:
            return Action(
                "start",
                f"stage {stage.name}: start {', '.join(starting)}",
                stage=stage.name,
                clusters=tuple(starting),
            )
        busy = tuple(c for c in members if outcome(c) == "running")
        if busy:
            return Action(
                "wait", f"stage {stage.name}: waiting for {', '.join(busy)}", stage=stage.name, clusters=busy
            )
        if group_gate:
            return group_gate
        for gate in (*(g for grp in stage.groups for g in grp.after), *stage.after):
            if later_started:
                break
            blocked = _gate_blocks(gate, approvals, now, stage.name)
            if blocked:
                return blocked
        ends = [records[c].finished_at for c in members if c in records and records[c].finished_at]
        previous_end = max((e for e in ends if e is not None), default=None)
        previous_soak = stage.soak_seconds
    upgraded = len(everyone)
    return Action("done", f"every stage done: {upgraded} cluster(s) upgraded", verdict="upgraded")


def refused_by_preflight(plan: FleetPlan, refusing: Sequence[str]) -> Action:
    """The wave never started: the fleet-wide preflight refused it (one entry per cluster)."""
    first = refusing[0].split(":", 1)[0] if refusing else None
    return Action(
        "halt",
        "the preflight refused the wave before any cluster changed: " + "; ".join(refusing),
        verdict="refused",
        failed=first,
        untouched=plan.clusters,
    )
