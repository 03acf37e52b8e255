"""Modules loaded on first use, so parsing a DAG file stays cheap.

Airflow parses every DAG file in the dag-processor again and again, and a DAG file needs
only the graph: the task *bodies* need the kubernetes client, the checks and the
upgraders, which take seconds to import on a busy machine. The stage modules name those
modules through :func:`lazy`; the import runs the first time an attribute is read (in a
task, at run time). ``tests/dags/test_dag_integrity.py`` holds the DAG files to it.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy(name: str) -> ModuleType:
    """``name`` imported on first attribute access (or the module itself, if already loaded)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def api_exception() -> type[Exception]:
    """The kubernetes client's ``ApiException``, imported when an ``except`` clause needs it."""
    from kubernetes.client.exceptions import ApiException

    found: type[Exception] = ApiException
    return found
