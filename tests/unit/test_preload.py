"""The task hosts (scheduler, Celery worker, DAG processor) import the tasks' modules once,
when Airflow loads Slipway's plugin; nothing else does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slipway.airflow.preload import MODULES, hosts_tasks, preload

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["airflow", "scheduler"], True),
        (["/usr/bin/airflow", "celery", "worker", "-q", "default"], True),
        (["airflow", "dag-processor"], True),
        (["airflow", "api-server", "--port", "8080"], False),
        (["airflow", "tasks", "test", "k8s_cluster_upgrade"], False),
        (["airflow", "dags", "list"], False),
        (["python", "-c"], False),
        (["airflow"], False),
    ],
)
def test_only_processes_that_fork_tasks_preload(argv: list[str], expected: bool) -> None:
    assert hosts_tasks(argv) is expected


def test_a_module_that_fails_to_import_is_named_and_the_rest_still_load() -> None:
    seconds, failed = preload(("json", "slipway.no_such_module", "slipway.versions"))
    assert failed == ["slipway.no_such_module"]
    assert "slipway.versions" in sys.modules
    assert seconds >= 0


def test_every_module_named_exists() -> None:
    _, failed = preload()
    assert failed == []


def _modules_after_loading_the_plugin(argv: list[str], **env: str) -> set[str]:
    code = (
        "import sys, runpy; sys.argv = " + repr(argv) + "; "
        f"runpy.run_path({str(REPO / 'plugins' / 'slipway_plugin.py')!r}); "
        "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | env,
    )
    return set(out.stdout.split())


def test_loading_the_plugin_in_the_scheduler_preloads_the_tasks_modules_and_elsewhere_does_not() -> None:
    # A fresh interpreter each: what a forked task process would inherit from its parent.
    in_scheduler = _modules_after_loading_the_plugin(["airflow", "scheduler"])
    assert set(MODULES) <= in_scheduler
    in_api_server = _modules_after_loading_the_plugin(["airflow", "api-server"])
    assert "slipway.airflow.node_operator" not in in_api_server
    assert "airflow.providers.cncf.kubernetes.hooks.kubernetes" not in in_api_server
    turned_off = _modules_after_loading_the_plugin(["airflow", "scheduler"], SLIPWAY_PRELOAD="0")
    assert "slipway.airflow.node_operator" not in turned_off
