"""The task defaults every Slipway DAG shares.

Every task has an ``execution_timeout``: a task that hangs (a half-open connection, a
stuck subprocess) fails and takes its retry or the run's rollback branch instead of holding
the run, and the cluster lease, forever. Tasks that legitimately take longer set their own
(a node's upgrade, the control plane's steps, the human approval). Retries back off.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

# Longest a task may run unless it says otherwise; generous for an etcd snapshot or a
# preflight on a big cluster, short enough that a hung task is noticed within a window.
TASK_TIMEOUT = timedelta(hours=1)


def default_args(**overrides: Any) -> dict[str, Any]:
    return {
        "owner": "platform",
        "retries": 1,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=5),
        "execution_timeout": TASK_TIMEOUT,
    } | overrides


# Runs of one upgrade DAG at once. Each run names its cluster (kubernetes_conn_id) and takes
# that cluster's lease, so two runs on one cluster never both act (the second is refused,
# naming the holder); runs on different clusters (a fleet wave's group) go side by side.
MAX_CLUSTERS_AT_ONCE = 16
