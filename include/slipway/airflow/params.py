"""The trigger form: Airflow Params mirroring :class:`slipway.models.UpgradeRequest`.

The form catches the obvious (types, enums, ranges) in the browser; the first task
re-validates everything with the pydantic model, which also knows the cluster-free
rules (known releases, window order), and refuses with one line per bad field.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from slipway.versions import RELEASES


def known_versions() -> list[str]:
    """Every known patch, newest first: the target dropdown."""
    return [p for minor in reversed(RELEASES.values()) for p in reversed(minor.patches)]


def request_params(*, with_window: bool = True) -> dict[str, Param]:
    params: dict[str, Param] = {
        "target_version": Param(
            known_versions()[0],
            type="string",
            enum=known_versions(),
            title="Target Kubernetes version",
            description="The control plane moves one minor at a time to the latest patch.",
        ),
        "strategy": Param(
            "in-place",
            type="string",
            enum=["in-place", "surge", "blue-green"],
            title="Worker strategy",
            description=(
                "in-place: upgrade each node; surge: add a new node, retire the old after its batch; "
                "blue-green: keep the old nodes until the whole cluster is validated, switch back on "
                "failure (k8s_cluster_upgrade, platforms that can add nodes)."
            ),
        ),
        "batch_policy": Param(
            "fixed",
            type="string",
            enum=["fixed", "adaptive"],
            title="Batch policy",
            description="adaptive grows the batch after clean batches, shrinks after trouble.",
        ),
        "batch_size": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Batch size",
            description="Empty: by cluster size (small 1-2, medium 3-5, large 5-10).",
        ),
        "max_unavailable_percent": Param(
            10.0, type="number", exclusiveMinimum=0, maximum=100, title="Max unavailable (%)"
        ),
        "max_surge_percent": Param(0.0, type="number", minimum=0, maximum=100, title="Max surge (%)"),
        "drain_grace_period_seconds": Param(300, type="integer", minimum=0, title="Drain grace period (s)"),
        "drain_timeout_seconds": Param(600, type="integer", minimum=1, title="Drain timeout (s)"),
        "delete_emptydir_data": Param(False, type="boolean", title="Allow deleting emptyDir data"),
        "force_bare_pods": Param(False, type="boolean", title="Evict pods without a controller"),
        "blocked_drain_policy": Param(
            "wait",
            type="string",
            enum=["wait", "quarantine", "rollback"],
            title="When a PDB blocks a drain",
            description="wait until the drain timeout; quarantine: leave the node "
            "cordoned and labelled, continue; rollback the batch.",
        ),
        "dry_run": Param(False, type="boolean", title="Dry run (plan and check only)"),
        "approval": Param(
            "auto",
            type="string",
            enum=["auto", "always", "never"],
            title="Human approval",
            description="auto: the risk assessment decides.",
        ),
        "soak_seconds": Param(30, type="integer", minimum=1, title="Soak between batches (s)"),
        "node_ready_timeout_seconds": Param(
            600,
            type="integer",
            minimum=1,
            title="Node startup timeout (s)",
            description="How long an upgraded node may take to be Ready.",
        ),
        "latency_policy": Param(
            "report",
            type="string",
            enum=["report", "enforce"],
            title="Latency against the baseline",
            description="report: record apiserver/scheduler p99 per batch; enforce: "
            "also fail the batch when a p99 rises past the tolerance.",
        ),
        "latency_tolerance": Param(
            2.0, type="number", exclusiveMinimum=1, maximum=100, title="Latency tolerance (x baseline p99)"
        ),
        "health_checks": Param(
            [],
            type="array",
            items={
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["http", "deployment", "prometheus"]},
                    "url": {"type": "string"},
                    "namespace": {"type": "string"},
                    "name": {"type": "string"},
                    "query": {"type": "string"},
                    "min_value": {"type": "number"},
                    "max_value": {"type": "number"},
                },
                "required": ["kind"],
            },
            title="Application health checks",
            description='Run between batches, e.g. [{"kind": "http", "url": "https://shop.example/healthz"}, '
            '{"kind": "deployment", "namespace": "shop", "name": "web"}, '
            '{"kind": "prometheus", "url": "http://prometheus:9090", "query": "sum(rate(errors[5m]))", '
            '"max_value": 0.5}].',
        ),
        "node_pools": Param([], type="array", items={"type": "string"}, title="Node pool order"),
        "critical_labels": Param(
            [], type="array", items={"type": "string"}, title="Critical workload labels (key=value)"
        ),
    }
    if with_window:
        params["window_end"] = Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Window closes at (UTC)",
            description="No batch starts that cannot finish before this.",
        )
    return params


def conf_to_request(params: dict[str, Any]) -> dict[str, Any]:
    """Drop unset optional fields so the model's defaults apply."""
    return {k: v for k, v in params.items() if v is not None and k in request_params()}
