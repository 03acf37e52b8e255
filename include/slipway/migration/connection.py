"""The ``slipway_migration`` Airflow connection: which kubeconfig (and context) reaches each cluster.

Extras (JSON)::

    {"source_kubeconfig": "/abs/source.kubeconfig", "source_context": "optional",
     "target_kubeconfig": "/abs/target.kubeconfig", "target_context": "optional"}

Both kubeconfigs should carry the migrator identity (``manifests/migrator-rbac.yaml``), never an
admin. Refused key by key, one line each, before any cluster is contacted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config

from slipway.migration.errors import MigrationError
from slipway.models import unknown_field

CONN_ID = "slipway_migration"
SIDES = ("source", "target")
KNOWN = tuple(f"{side}_{key}" for side in SIDES for key in ("kubeconfig", "context"))
MAX_CONTEXT = 253


@dataclass(frozen=True)
class ClusterRef:
    """One side of the migration: a kubeconfig file and, optionally, one of its contexts."""

    kubeconfig: Path
    context: str | None = None

    def api_client(self) -> client.ApiClient:
        cfg = client.Configuration()
        config.load_kube_config(
            config_file=str(self.kubeconfig), context=self.context, client_configuration=cfg
        )
        cfg.retries = 3
        return client.ApiClient(configuration=cfg)


@dataclass(frozen=True)
class MigrationConnection:
    source: ClusterRef
    target: ClusterRef


def _context(extra: dict[str, Any], key: str, problems: list[tuple[str, str]]) -> str | None:
    value = extra.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CONTEXT:
        problems.append((key, f"must be a non-empty context name of at most {MAX_CONTEXT} characters"))
        return None
    return value


def _kubeconfig(extra: dict[str, Any], key: str, problems: list[tuple[str, str]]) -> Path | None:
    value = extra.get(key)
    if value is None:
        problems.append((key, "required: the kubeconfig file of the migrator identity on this cluster"))
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append((key, "must be a path to a kubeconfig file"))
        return None
    path = Path(value)
    if not path.is_absolute():
        problems.append((key, f"{value!r} is relative: give an absolute path"))
    elif not path.is_file():
        problems.append((key, f"{value} is not a readable file"))
    return path


def parse_connection(extra: dict[str, Any] | None) -> MigrationConnection:
    """The connection's extras as source and target; every bad key is named in one error."""
    what = f"{CONN_ID} connection"
    if not isinstance(extra, dict):
        raise MigrationError([("extra", "must be a JSON object")], what)
    problems: list[tuple[str, str]] = [(key, unknown_field(key, KNOWN)) for key in extra if key not in KNOWN]
    refs = []
    for side in SIDES:
        path = _kubeconfig(extra, f"{side}_kubeconfig", problems)
        context = _context(extra, f"{side}_context", problems)
        refs.append(ClusterRef(path, context) if path else None)
    source, target = refs
    same_file = source and target and source.kubeconfig.resolve() == target.kubeconfig.resolve()
    if same_file and source and target and source.context == target.context:
        problems.append(("target_kubeconfig", "names the same kubeconfig and context as the source"))
    if problems or source is None or target is None:
        raise MigrationError(problems, what)
    return MigrationConnection(source, target)
