"""The preflight checks by name, in the order they run and report: one task each in the DAGs.

Kept apart from :mod:`slipway.preflight` (which imports every check and the kubernetes
client) because the DAG files need the names while they are parsed.
"""

from __future__ import annotations

CHECK_TASKS = (
    "upgrade-path",
    "version-skew",
    "removed-apis",
    "feature-gates",
    "pod-disruption-budgets",
    "workloads",
    "capacity",
    "etcd-health",
    "etcd-backup",
    "node-readiness",
    "control-plane-health",
    "maintenance-window",
)
