"""How the ``slipway`` CLI prints: human-readable durations, aligned tables, one page per command.

Pure: every function takes the plain dicts the commands gathered (the same dicts ``-o json``
prints), so the table output is unit-tested without a cluster.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from datetime import datetime
from typing import Any

# Long cells (event messages, check summaries) are cut in tables; -o json keeps them whole.
MAX_CELL = 72


def human_duration(seconds: float | None) -> str:
    """``42s``, ``17m 36s``, ``1h 31m``, ``2d 4h``; ``n/a`` for None."""
    if seconds is None:
        return "n/a"
    total = round(abs(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def ago(seconds: float | None) -> str:
    """``12m ago`` for a past moment, ``in 26s`` for a future one (``seconds`` = now - then)."""
    if seconds is None:
        return "n/a"
    return f"in {human_duration(-seconds)}" if seconds < 0 else f"{human_duration(seconds)} ago"


def _cell(value: Any, limit: int = MAX_CELL) -> str:
    text = "-" if value is None or value == "" else str(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], limit: int = MAX_CELL, *, wrap: int = 0
) -> str:
    """Columns aligned like ``kubectl get``: upper-case header, two spaces between columns.

    Cells longer than ``limit`` are cut with ``…``; with ``wrap`` the last column is instead
    wrapped at that width onto indented continuation lines, so nothing is lost.
    """
    cells = [
        [_cell(c, limit if not wrap or i < len(row) - 1 else 10**6) for i, c in enumerate(row)]
        for row in rows
    ]
    lasts = [textwrap.wrap(r[-1], wrap) or [""] if wrap else [r[-1]] for r in cells]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header[:-1])]
    widths.append(max([len(header[-1]), *(len(line) for last in lasts for line in last)]))
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True))]
    indent = sum(w + 2 for w in widths[:-1])
    for row, last in zip(cells, lasts, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip([*row[:-1], last[0]], widths, strict=True)))
        lines += [" " * indent + line for line in last[1:]]
    return "\n".join(line.rstrip() for line in lines)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=_plain)


def as_yaml(data: Any) -> str:
    import yaml

    # Round-trip through JSON so dates and other objects print as the JSON output does.
    return str(yaml.safe_dump(json.loads(as_json(data)), sort_keys=False, allow_unicode=True))


# ---- plan ---------------------------------------------------------------------------------------


def _versions_line(current: dict[str, Any]) -> str:
    def kind(values: list[str]) -> str:
        counts: dict[str, int] = {}
        for v in values:
            counts[v] = counts.get(v, 0) + 1
        return ", ".join(f"{v} ×{n}" if n > 1 else v for v, n in sorted(counts.items())) or "unknown"

    kubelets = list(current.get("kubelets", {}).values())
    return (
        f"kube-apiserver {kind(current.get('apiservers', []))}; "
        f"controller-manager {kind(current.get('controller_managers', []))}; "
        f"scheduler {kind(current.get('schedulers', []))}; etcd {current.get('etcd', '?')}; "
        f"kubelet {kind(kubelets)} on {len(kubelets)} node(s)"
    )


def render_plan(result: dict[str, Any]) -> str:
    plan, risk = result["plan"], result["risk"]
    out = [f"Cluster now: {_versions_line(plan['current'])}"]
    out.append(
        f"Target {plan['target']}: {plan['direction']} across {plan['minors_crossed']} minor(s), "
        f"path risk {plan['risk']}, testing {plan['testing']}"
    )
    out.append("")
    hops = plan.get("hops", [])
    if hops:
        out.append(
            table(
                ["step", "kind", "from", "to", "nodes", "risk", "testing", "reason"],
                [
                    [
                        h["step"],
                        h["kind"],
                        h["from"],
                        h["to"],
                        len(h["nodes"]) if h["nodes"] else "",
                        h["risk"],
                        h["testing"],
                        h["reason"],
                    ]
                    for h in hops
                ],
                wrap=60,
            )
        )
    else:
        out.append("No hops: every component already runs the target.")
    for hop in hops:
        for removal in hop.get("api_removals", []):
            out.append(f"  step {hop['step']} stops serving {_removal(removal)}")
    out += [f"Note: {note}" for note in plan.get("notes", [])]
    out.append("")
    pools = ", ".join(plan.get("pools", [])) or "none"
    out.append(
        f"Workers: {plan.get('worker_nodes', 0)} node(s) in {plan.get('batches', 0)} batch(es); pools {pools}"
    )
    out.append(f"Decision from the plan alone (no checks run): {risk['decision']}")
    out += [f"  - {reason}" for reason in risk.get("reasons", [])]
    out.append(f"Next: `slipway preflight --to {plan['target']}` runs every check against the cluster.")
    return "\n".join(out)


def _removal(removal: dict[str, Any]) -> str:
    text = f"{removal['api_version']} {removal['kind']}"
    return f"{text} (use {removal['replacement']})" if removal.get("replacement") else text


# ---- preflight ----------------------------------------------------------------------------------


def render_preflight(result: dict[str, Any]) -> str:
    out = []
    plan = result.get("plan")
    if plan:
        out.append(
            f"Plan to {plan['target']}: {len(plan.get('hops', []))} hop(s) across {plan['minors_crossed']} "
            f"minor(s), path risk {plan['risk']}; {plan.get('worker_nodes', 0)} worker node(s) in "
            f"{plan.get('batches', 0)} batch(es)"
        )
    if result.get("plan_refused"):
        out.append(f"Plan refused: {result['plan_refused']}")
    out.append("")
    rows: list[list[Any]] = [
        [c["name"], c["severity"], "yes" if c["passed"] else "NO", c["summary"]] for c in result["checks"]
    ]
    rows += [[s["name"], "skipped", "-", s["reason"]] for s in result.get("skipped", [])]
    rows += [[e["name"], "error", "NO", f"could not run: {e['error']}"] for e in result.get("errors", [])]
    out.append(table(["check", "severity", "passed", "summary"], rows, wrap=80))
    failed = [c for c in result["checks"] if not c["passed"] and c.get("mitigation")]
    if failed:
        out += ["", "Mitigations:"]
        out += [f"  - {c['name']}: {c['mitigation']}" for c in failed]
    risk = result["risk"]
    out += ["", "Risk matrix:"]
    out.append(
        table(
            ["category", "risk", "probability", "impact", "score", "level"],
            [
                [i["category"], i["name"], i["probability"], i["impact"], i["score"], i["level"]]
                for i in risk["items"]
            ],
        )
    )
    out += ["", f"Decision: {risk['decision']}"]
    out += [f"  - {reason}" for reason in risk.get("reasons", [])]
    if result.get("errors"):
        names = ", ".join(e["name"] for e in result["errors"])
        out.append(f"Preflight incomplete: {names} could not run; the upgrade DAG would stop at that check.")
    return "\n".join(out)


# ---- status -------------------------------------------------------------------------------------


def render_lease(lease: dict[str, Any] | None) -> str:
    where = "Lease slipway-system/slipway-upgrade"
    if lease is None:
        return f"{where}: none (no upgrade holds the cluster)"
    holder = lease.get("holder") or "nobody"
    renewed = ago(lease.get("renewed_seconds_ago"))
    if lease["live"]:
        return (
            f"{where}: held by {holder} (renewed {renewed}, expires {ago(-lease['expires_in_seconds'])}, "
            f"duration {human_duration(lease.get('duration_seconds'))})"
        )
    if not lease.get("holder"):
        return f"{where}: free (released; no upgrade holds the cluster)"
    if lease.get("expires_in_seconds") is None:
        return f"{where}: free (holder {holder}, never renewed)"
    return f"{where}: free (last holder {holder}, expired {ago(-lease['expires_in_seconds'])})"


def render_status(result: dict[str, Any]) -> str:
    out = [render_lease(result["lease"]), ""]
    runs = result["runs"]
    if runs:
        shown = f" (newest {len(runs)} of {result['total_runs']})" if result["total_runs"] > len(runs) else ""
        out.append(f"Runs{shown}:")
        out.append(
            table(
                ["run", "dag", "target", "started", "took", "phase", "state", "last event"],
                [
                    [
                        r["run_id"],
                        r["dag_id"],
                        r["target"],
                        ago(r["started_seconds_ago"]),
                        human_duration(r["seconds"]),
                        r["phase"],
                        r["state"] if r["state"] != "finished" else r["verdict"],
                        _event(r["last_event"]),
                    ]
                    for r in runs
                ],
                limit=60,
            )
        )
    else:
        out.append("Runs: no runs (no slipway-run-* records in slipway-system)")
    out.append("")
    nodes = result["nodes"]
    if nodes:
        out.append("Cordoned or quarantined nodes:")
        out.append(
            table(
                ["node", "pool", "cordoned by", "since", "quarantined", "last step"],
                [
                    [
                        n["name"],
                        n["pool"],
                        n["cordoned_by"] if n["cordoned"] else "(not cordoned)",
                        ago(n["cordoned_seconds_ago"]),
                        n["quarantine_reason"] or "yes" if n["quarantined"] else "",
                        f"{n['step']} ({n['step_run']})" if n.get("step") else "",
                    ]
                    for n in nodes
                ],
                limit=60,
            )
        )
    else:
        out.append(f"Nodes: none cordoned or quarantined ({result['node_count']} node(s) read)")
    return "\n".join(out)


def _event(event: dict[str, Any] | None) -> str:
    if not event:
        return ""
    return f"{event['kind']}: {event.get('message', '')}"


# ---- history ------------------------------------------------------------------------------------


def render_history(maturity: dict[str, Any]) -> str:
    rate = maturity.get("success_rate")
    out = [
        f"Maturity: level {maturity['level']} — {maturity['name']} "
        f"(from {maturity['runs']} recorded upgrade run(s), {maturity['attempted']} attempted)",
        f"Success rate: {f'{rate:.0%}' if rate is not None else 'n/a'}",
        f"Upgrade duration: median {human_duration(maturity.get('median_seconds'))}, "
        f"worst {human_duration(maturity.get('worst_seconds'))}",
        f"API downtime: {maturity['api_failures']} failed of {maturity['api_requests']} probe requests; "
        f"longest node out of service {human_duration(maturity.get('worst_node_out_of_service'))}",
        "",
        table(
            ["level", "criterion", "met", "evidence"],
            [
                [c["level"], c["name"], "yes" if c["met"] else "NO", c["evidence"]]
                for c in maturity["criteria"]
            ],
            wrap=70,
        ),
    ]
    missing = [
        c["name"] for c in maturity["criteria"] if not c["met"] and c["level"] == maturity["level"] + 1
    ]
    if missing:
        out += ["", f"To reach level {maturity['level'] + 1}: {'; '.join(missing)}."]
    return "\n".join(out)
