"""Route the tasks that must run near the cluster to a queue of their own.

Most tasks only talk to the Kubernetes API and run on any worker. A few reach what the API
does not serve: etcd itself (snapshot, restore drill, defragmentation, restore, member
upgrades), the control-plane processes of the local platform, the API probe's process
(it asks each apiserver directly, besides the load balancer; the task that stops it meets
it through the cluster and runs anywhere), and the
migration's volume copies (rclone reads the volumes' folders) and local Velero server.
With ``SLIPWAY_CLUSTER_QUEUE`` set (a deployment setting, read when the DAG file is
parsed, like ``SLIPWAY_MAX_BATCHES``), those tasks go to that Celery queue: run one worker
next to the cluster with ``airflow celery worker --queues <that queue>``. Unset, every task
uses the default queue, as on one host.
"""

from __future__ import annotations

import os
import re
from typing import Any

ENV = "SLIPWAY_CLUSTER_QUEUE"

NEAR_CLUSTER_TASKS = frozenset(
    {
        # etcd
        "check_etcd_health",
        "check_etcd_backup",
        "backup_etcd",
        "defragment_etcd",
        "upgrade_etcd",
        "check_etcd_data",
        "rollback_control_plane",
        # the control-plane components
        "upgrade_kube_apiserver",
        "upgrade_kube_controller_manager",
        "upgrade_kube_scheduler",
        "upgrade_control_plane_node",
        # the API probe's process: it asks each apiserver directly
        "start_api_probe",
        # the migration's volume data and Velero server (copy_configuration checks the local
        # velero servers before and after each deferred Backup/Restore wait)
        "copy_configuration",
        "sync_volumes",
        "cut_over_stateful",
        "validate_stateful",
        "rollback_stateful",
        "start_velero",
        "stop_velero",
    }
)

# Celery queue names travel in comma-separated lists (`--queues a,b`) and broker routing keys.
_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def cluster_queue(environ: Any = None) -> str | None:
    """The queue from ``SLIPWAY_CLUSTER_QUEUE``, or None (default queue); a malformed name
    fails the DAG file's import, naming the variable."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not value:
        return None
    if not _QUEUE.match(value):
        raise ValueError(
            f"{ENV}: {value!r} is not a queue name (letters, digits, '_', '.', '-'; at most 64; "
            "no spaces or commas)"
        )
    return value


def route_near_cluster(dag: Any, queue: str | None = None) -> Any:
    """Put ``dag``'s near-cluster tasks on ``queue`` (``SLIPWAY_CLUSTER_QUEUE`` by default)."""
    queue = queue or cluster_queue()
    if queue:
        for task in dag.tasks:
            if task.task_id.rsplit(".", 1)[-1] in NEAR_CLUSTER_TASKS:
                task.queue = queue
    return dag
