"""Import what Slipway's tasks need once, in the Airflow process that forks the task processes.

On Linux every task process is a fork: the LocalExecutor's workers are forks of the
scheduler, a Celery worker's pool processes forks of the worker, and each task's process a
fork of those (the task SDK's supervisor). A fork starts with every module its parent had
imported. Left alone, each task process imports the kubernetes client, the cncf-kubernetes
provider and Slipway's stages itself, then parses its DAG file: seconds per task, three tasks
per batch, paid again on every retry. Imported once in the parent, they cost nothing per task.

The DAG files stay lean on their own (``slipway.lazy``): this changes nothing about what a
DAG file imports, only who pays for it. Only processes that fork tasks (or parse DAG files)
preload; the API server and one-off CLI commands do not.

Slipway's plugin calls :func:`preload_for_task_hosts` when Airflow loads it; Airflow loads
plugins at start-up when ``[core] lazy_load_plugins`` is False (the project's environment,
the compose file), before the executor forks anything.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

# `airflow scheduler` (LocalExecutor forks from it), `airflow celery worker`, and the DAG
# processor (its parsing processes are forks too).
TASK_HOSTS = frozenset({"scheduler", "worker", "dag-processor"})

# What a worker task imports on its way to its first Kubernetes call, and what the DAG files
# import. Plain imports: no client is built, nothing is read from a connection or the cluster.
MODULES = (
    "kubernetes.client",
    "kubernetes.watch",
    "airflow.providers.cncf.kubernetes.hooks.kubernetes",
    "slipway.airflow.runtime",
    "slipway.airflow.node_operator",
    "slipway.airflow.triggers",
    "slipway.airflow.stage_workers",
    "slipway.airflow.stage_control_plane",
    "slipway.airflow.stage_common",
    "slipway.airflow.stage_prepare",
    "slipway.airflow.stage_lease",
    "slipway.airflow.params",
    "slipway.workers",
    "slipway.lease",
    "slipway.runrecord",
    "slipway.kube.drain",
    "slipway.kube.nodes",
    "slipway.kube.pdb",
    "slipway.kube.events",
    "slipway.platform",
    "slipway.validation.health",
)


def hosts_tasks(argv: Sequence[str]) -> bool:
    """Whether this command line (``sys.argv``) is an Airflow process that forks tasks or parsers."""
    return any(arg in TASK_HOSTS for arg in argv[1:4])


def preload(modules: Sequence[str] = MODULES) -> tuple[float, list[str]]:
    """Import ``modules``; (seconds taken, the ones that failed to import). A module that fails
    is left for the task to import (and fail on) itself: preloading never stops a process."""
    started, failed = time.monotonic(), []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # the task will meet the same error, with its context
            failed.append(name)
    return time.monotonic() - started, failed


def preload_for_task_hosts(argv: Sequence[str]) -> None:
    # SLIPWAY_PRELOAD=0 turns it off (to measure what it saves, or to rule it out).
    if not hosts_tasks(argv) or os.environ.get("SLIPWAY_PRELOAD", "1") == "0":
        return
    seconds, failed = preload()
    log.info("slipway: preloaded %d modules for the task processes in %.1fs", len(MODULES), seconds)
    if failed:
        log.warning(
            "slipway: could not preload %s (the tasks will import them themselves)", ", ".join(failed)
        )
