"""How each workload kind moves: the form's ``strategy`` field, checked twice before anything
changes — alone (a kind the migration does not know, a strategy that does not exist, one the kind
can never take) and against the workloads the assessment found (blue-green for a workload with
claims, sync-then-cutover for one without). Pure functions over plain object dicts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

from slipway.migration.errors import MigrationError

if TYPE_CHECKING:
    from slipway.migration.assess import Assessment

Strategy = Literal["blue-green", "sync-then-cutover", "copy-only", "skip"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
# What the code can do per kind. A DaemonSet follows the target's own nodes: it is never copied.
ALLOWED: dict[str, tuple[str, ...]] = {
    "Deployment": STRATEGIES,
    "StatefulSet": STRATEGIES,
    "DaemonSet": ("skip",),
}
# The strategies whose workloads take part in the front door's traffic switch.
SWITCHED = ("blue-green", "sync-then-cutover")
# Velero resource names of the kinds (excluded from the Backup when skipped).
VELERO_RESOURCES = {
    "Deployment": "deployments.apps",
    "StatefulSet": "statefulsets.apps",
    "DaemonSet": "daemonsets.apps",
}

DESCRIPTION = (
    "How each workload kind moves, as a JSON object of kind to strategy, e.g. "
    '{"Deployment": "blue-green", "StatefulSet": "sync-then-cutover", "DaemonSet": "skip"}. '
    "blue-green: copied to the target and started there, then the front door moves the traffic "
    "(workloads without claims). sync-then-cutover: the data is synced while the source runs, then "
    "the source is frozen at 0, the last changes copied and the workload started on the target "
    "(workloads with claims). copy-only: copied and started on the target, no traffic switch (when no "
    "moved workload is blue-green or sync-then-cutover, traffic stays on the source); workloads "
    "without claims only. skip: left on the source as it is and listed in the report as not moved "
    "(the only choice for a DaemonSet). A kind not named moves the default way: without claims "
    "blue-green, with claims sync-then-cutover; a DaemonSet not skipped stops a real run."
)


def field_problems(strategy: Mapping[str, str]) -> list[tuple[str, str]]:
    """What is wrong with the form's value alone: one ``strategy.<Kind>`` problem per entry."""
    problems = []
    for kind, chosen in strategy.items():
        field = f"strategy.{kind}"
        if kind not in ALLOWED:
            problems.append((field, f"not a workload kind the migration handles ({', '.join(ALLOWED)})"))
        elif chosen not in STRATEGIES:
            problems.append((field, f"{chosen!r} is not a strategy ({', '.join(STRATEGIES)})"))
        elif chosen not in ALLOWED[kind]:
            problems.append(
                (field, f"{chosen}: a {kind} follows the target's nodes and is never copied; only skip")
            )
    return problems


def default(stateful: bool) -> str:
    return "sync-then-cutover" if stateful else "blue-green"


def chosen_for(kind: str, stateful: bool, strategy: Mapping[str, str]) -> str | None:
    """The strategy a workload of ``kind`` moves with (None: a kind with no way to move, such as a
    DaemonSet not skipped, or a bare Pod: the assessment's blockers say why)."""
    if kind in strategy:
        return strategy[kind]
    if kind in ("Deployment", "StatefulSet"):
        return default(stateful)
    return None


def workload_problem(name: str, stateful: bool, chosen: str) -> str | None:
    """Why ``chosen`` cannot move this workload (None when it can)."""
    if stateful and chosen in ("blue-green", "copy-only"):
        return (
            f"{chosen} cannot move {name}: it mounts PersistentVolumeClaims, whose data moves only "
            "with sync-then-cutover (or skip it)"
        )
    if not stateful and chosen == "sync-then-cutover":
        return (
            f"sync-then-cutover cannot move {name}: it mounts no PersistentVolumeClaim, there is no "
            "data to sync (use blue-green or copy-only)"
        )
    return None


def per_workload(
    workloads: Iterable[tuple[str, str, bool]], strategy: Mapping[str, str]
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Each workload's strategy from ``(key, kind, stateful)`` triples, and the problems
    (``strategy.<Kind>``, reason) of the combinations the code cannot do."""
    chosen: dict[str, str] = {}
    problems = []
    for name, kind, stateful in sorted(workloads):
        one = chosen_for(kind, stateful, strategy)
        if one is None:
            continue
        why = workload_problem(name, stateful, one)
        if why:
            problems.append((f"strategy.{kind}", why))
        chosen[name] = one
    return chosen, problems


def apply_to(
    result: Assessment, stateful: Mapping[str, list[str]], strategy: Mapping[str, str]
) -> dict[str, str]:
    """Judge the assessment's workloads by the form's strategy: a skipped kind's workloads (and the
    claims only they mount, ``stateful`` mapping each workload with claims to its claims' keys)
    leave what is copied and what blocks the run. Returns each workload's strategy.

    :raises MigrationError: one ``strategy.<Kind>`` line per workload the strategy cannot move.
    """
    skip = set(skipped_kinds(strategy))
    for name in [n for n in result.dependencies if n.split("/", 1)[0] in skip]:
        for one in [name, *stateful.get(name, [])]:
            result.blockers.pop(one, None)
            if one in result.objects:
                result.objects.remove(one)
    workloads = [(n, n.split("/", 1)[0], n in stateful) for n in result.dependencies]
    chosen, problems = per_workload(workloads, strategy)
    if problems:
        raise MigrationError(problems, "migration request")
    return chosen


def skipped_kinds(strategy: Mapping[str, str]) -> list[str]:
    return sorted(kind for kind, chosen in strategy.items() if chosen == "skip")


def velero_excluded(strategy: Mapping[str, str]) -> list[str]:
    """Resources the Velero Backup leaves out for the strategy: skipped kinds, and DaemonSets
    always (they are never copied)."""
    kinds = set(skipped_kinds(strategy)) | {"DaemonSet"}
    return sorted(VELERO_RESOURCES[k] for k in kinds)


def switches_traffic(chosen: Mapping[str, str]) -> bool:
    """Whether the front door's switch runs: no workload at all (configuration only, as before)
    or at least one moved blue-green or sync-then-cutover."""
    return not chosen or any(s in SWITCHED for s in chosen.values())


def markdown(chosen: Mapping[str, str]) -> str:
    if not chosen:
        return ""
    lines = ["", "## Strategy per workload", "", "| workload | strategy |", "|---|---|"]
    lines += [
        f"| `{name}` | {s}{' (not moved)' if s == 'skip' else ''} |" for name, s in sorted(chosen.items())
    ]
    return "\n".join(lines) + "\n"


def describe(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The report's part: strategy per workload and what was left on the source."""
    chosen = summary.get("strategies") or {}
    return {"per_workload": chosen, "not_moved": sorted(n for n, s in chosen.items() if s == "skip")}
