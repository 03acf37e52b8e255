"""The ``slipway_migration`` Airflow connection: which kubeconfig (and context) reaches each cluster.

Extras (JSON)::

    {"source_kubeconfig": "/abs/source.kubeconfig", "source_context": "optional",
     "target_kubeconfig": "/abs/target.kubeconfig", "target_context": "optional",
     "front_door_socket": "/abs/haproxy-admin.sock", "front_door_url": "http://front.example:80/"}

The two ``front_door_*`` keys are optional (both or neither): HAProxy's admin socket, whose
``app`` backend has the servers ``source`` and ``target``, and the URL the switch probes.

Velero (optional, for ``copy_path: velero``): ``velero_bucket_url`` (the S3 API,
``http(s)://host:port``) and ``velero_bucket``, optionally ``velero_prefix`` and
``velero_region``; the bucket's access key and secret key are the connection's login and
password (never extras: Airflow masks a password). ``source_velero_kubeconfig`` and
``target_velero_kubeconfig`` (both or neither) are kubeconfigs of Velero's own ServiceAccount,
made by the admin who installed Velero: with them the DAG runs ``velero server`` for each
cluster on this host (the local platform); without them Velero's servers already run in the
clusters.

Both kubeconfigs should carry the migrator identity (``manifests/migrator-rbac.yaml``), never an
admin. Refused key by key, one line each, before any cluster is contacted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slipway.migration.errors import MigrationError
from slipway.models import unknown_field

if TYPE_CHECKING:
    from kubernetes import client

    from slipway.migration.velero import ObjectStore

CONN_ID = "slipway_migration"
SIDES = ("source", "target")
FRONT_DOOR = ("front_door_socket", "front_door_url")
VELERO_STORE = ("velero_bucket_url", "velero_bucket", "velero_prefix", "velero_region")
VELERO_SERVERS = ("source_velero_kubeconfig", "target_velero_kubeconfig")
KNOWN = (
    *(f"{side}_{key}" for side in SIDES for key in ("kubeconfig", "context")),
    *FRONT_DOOR,
    *VELERO_STORE,
    *VELERO_SERVERS,
)
# ObjectStore's field names as the connection's keys, for its problems.
_STORE_KEYS = {
    "url": "velero_bucket_url",
    "bucket": "velero_bucket",
    "prefix": "velero_prefix",
    "access_key": "login",
}
MAX_CONTEXT = 253


@dataclass(frozen=True)
class ClusterRef:
    """One side of the migration: a kubeconfig file and, optionally, one of its contexts."""

    kubeconfig: Path
    context: str | None = None

    def api_client(self) -> client.ApiClient:
        # Imported here: the DAG file imports this module, and parsing it must stay light.
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(
            config_file=str(self.kubeconfig), context=self.context, client_configuration=cfg
        )
        cfg.retries = 3
        return client.ApiClient(configuration=cfg)


@dataclass(frozen=True)
class FrontDoorRef:
    """HAProxy's admin socket and the URL traffic arrives at."""

    socket: Path
    url: str


@dataclass(frozen=True)
class VeleroRef:
    """The bucket both Velero servers share and, when the DAG runs the servers on this host,
    the kubeconfig of Velero's ServiceAccount on each cluster."""

    store: ObjectStore
    servers: tuple[Path, Path] | None = None  # (source, target)


@dataclass(frozen=True)
class MigrationConnection:
    source: ClusterRef
    target: ClusterRef
    front_door: FrontDoorRef | None = None
    velero: VeleroRef | None = None


def _velero(
    extra: dict[str, Any], login: str | None, password: str | None, problems: list[tuple[str, str]]
) -> VeleroRef | None:
    given = [k for k in (*VELERO_STORE, *VELERO_SERVERS) if extra.get(k) is not None]
    if not given:
        return None
    for key in ("velero_bucket_url", "velero_bucket"):
        if extra.get(key) is None:
            problems.append((key, f"required with {given[0]}: Velero needs the bucket's URL and name"))
    texts = {k: extra.get(k) for k in VELERO_STORE}
    wrong = [k for k, v in texts.items() if v is not None and not isinstance(v, str)]
    problems += [(k, "must be a string") for k in wrong]
    servers = [extra.get(k) for k in VELERO_SERVERS]
    if sum(v is not None for v in servers) == 1:
        missing = next(k for k, v in zip(VELERO_SERVERS, servers, strict=True) if v is None)
        problems.append((missing, "required with the other Velero server kubeconfig: both or neither"))
    paths = [_kubeconfig(extra, k, problems) for k in VELERO_SERVERS] if all(servers) else []
    if wrong or any(extra.get(k) is None for k in ("velero_bucket_url", "velero_bucket")):
        return None
    # Imported here: velero loads the kubernetes client, and the DAG file imports this module.
    from slipway.migration.velero import ObjectStore

    store = ObjectStore(
        url=str(texts["velero_bucket_url"]),
        bucket=str(texts["velero_bucket"]),
        access_key=login or "",
        secret_key=password or "",
        region=str(texts["velero_region"] or "us-east-1"),
        prefix=str(texts["velero_prefix"] or ""),
    )
    found = store.problems()
    keys = "the bucket's access key (login) and secret key (password) are both required"
    problems += [(_STORE_KEYS.get(n, n), keys if n == "access_key" else why) for n, why in found]
    if found or (paths and not all(paths)):
        return None
    source, target = paths or (None, None)
    return VeleroRef(store, (source, target) if source and target else None)


def _front_door(extra: dict[str, Any], problems: list[tuple[str, str]]) -> FrontDoorRef | None:
    given = [k for k in FRONT_DOOR if extra.get(k) is not None]
    if not given:
        return None
    if len(given) == 1:
        missing = next(k for k in FRONT_DOOR if k not in given)
        problems.append((missing, f"required with {given[0]}: the front door needs both"))
        return None
    sock, url = extra["front_door_socket"], extra["front_door_url"]
    if not isinstance(sock, str) or not Path(sock).is_absolute():
        problems.append(("front_door_socket", f"{sock!r} must be an absolute path to HAProxy's admin socket"))
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or "@" in url:
        problems.append(("front_door_url", f"{url!r} must be an http(s) URL without credentials"))
        return None
    return FrontDoorRef(Path(sock), url)


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


def parse_connection(
    extra: dict[str, Any] | None, *, login: str | None = None, password: str | None = None
) -> MigrationConnection:
    """The connection's extras (and login/password: the Velero bucket's keys) as source and
    target; every bad key is named in one error, never a key's value."""
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
    front_door = _front_door(extra, problems)
    velero = _velero(extra, login, password, problems)
    if problems or source is None or target is None:
        raise MigrationError(problems, what)
    return MigrationConnection(source, target, front_door, velero)
