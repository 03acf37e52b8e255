"""The artefact store: where reports, the preflight's files and etcd snapshot copies live.

Any worker may run any task, so what a later task reads (a report, the pre-upgrade snapshot
a rollback restores) cannot stay on one worker's disk. The store is Airflow's
:class:`~airflow.sdk.ObjectStoragePath`:

- ``SLIPWAY_ARTEFACTS_URL`` unset: the local folder ``SLIPWAY_REPORTS_DIR`` (default
  ``reports``, made absolute), as before the store existed;
- ``file:///srv/slipway``: a folder every worker mounts;
- ``s3://bucket/prefix`` (any fsspec protocol with its package installed on every worker),
  with the Airflow connection ``SLIPWAY_ARTEFACTS_CONN_ID`` for the credentials.

The setting is validated when the store is first used, not at DAG parse time, and Airflow is
imported then too: parsing a DAG file must stay cheap. Locations travel as strings
(:func:`location`): a plain local path for a local store, so records and readers that open
them with :class:`pathlib.Path` keep working; the store's URL otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

URL_ENV = "SLIPWAY_ARTEFACTS_URL"
CONN_ENV = "SLIPWAY_ARTEFACTS_CONN_ID"
REPORTS_ENV = "SLIPWAY_REPORTS_DIR"
DEFAULT_REPORTS_DIR = "reports"
LOCAL_PROTOCOLS = ("", "file", "local")
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_CHUNK = 1 << 20


class ArtefactStoreError(ValueError):
    """The store's settings cannot be used; the message starts with the setting's name."""


def local_root() -> Path:
    """This worker's local artefact folder, ``SLIPWAY_REPORTS_DIR`` made absolute; working
    files that tools write on local disk (etcdctl's snapshots) go here first."""
    return Path(os.environ.get(REPORTS_ENV) or DEFAULT_REPORTS_DIR).expanduser().absolute()


def parse_url(url: str | None, conn_id: str | None) -> tuple[str, str | None]:
    """The store's URL and connection id, checked; no URL means the local reports folder.

    :raises ArtefactStoreError: one line naming the setting and the reason.
    """
    conn = (conn_id or "").strip() or None
    if conn is not None and not _CONN_ID.match(conn):
        raise ArtefactStoreError(f"{CONN_ENV}: {conn!r} is not an Airflow connection id")
    text = (url or "").strip()
    if not text:
        if conn is not None:
            raise ArtefactStoreError(
                f"{CONN_ENV}: set, but {URL_ENV} is not: a connection needs a remote store"
            )
        return local_root().as_uri(), None
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if not scheme or "://" not in text:
        raise ArtefactStoreError(
            f"{URL_ENV}: {text!r} is not a URL: give file:///folder or s3://bucket/prefix"
        )
    if parts.query or parts.fragment:
        raise ArtefactStoreError(f"{URL_ENV}: {text!r} may not have a query or a fragment")
    if scheme in LOCAL_PROTOCOLS:
        if parts.netloc not in ("", "localhost"):
            raise ArtefactStoreError(
                f"{URL_ENV}: {text!r} names host {parts.netloc!r}: a local folder is file:///absolute/path"
            )
        if conn is not None:
            raise ArtefactStoreError(
                f"{CONN_ENV}: a connection is for a remote store, {URL_ENV} is a local folder"
            )
        if not parts.path.startswith("/"):
            raise ArtefactStoreError(f"{URL_ENV}: {text!r} needs an absolute folder")
        return f"file://{parts.path.rstrip('/') or '/'}", None
    if not parts.netloc:
        raise ArtefactStoreError(f"{URL_ENV}: {text!r} names no bucket: {scheme}://bucket/prefix")
    _check_protocol(scheme)
    return text.rstrip("/"), conn


def _check_protocol(scheme: str) -> None:
    """The protocol is one fsspec knows and its package is installed on this worker."""
    from fsspec.registry import get_filesystem_class

    try:
        get_filesystem_class(scheme)
    except ValueError:
        raise ArtefactStoreError(f"{URL_ENV}: {scheme}:// is not a storage protocol fsspec knows") from None
    except ImportError as err:
        raise ArtefactStoreError(f"{URL_ENV}: {scheme}:// needs a package on every worker: {err}") from None


def root() -> ObjectStoragePath:
    """The store's root, from the settings now in force.

    :raises ArtefactStoreError: when ``SLIPWAY_ARTEFACTS_URL`` or ``..._CONN_ID`` is unusable.
    """
    from airflow.sdk import ObjectStoragePath

    url, conn = parse_url(os.environ.get(URL_ENV), os.environ.get(CONN_ENV))
    return ObjectStoragePath(url, conn_id=conn)


def is_default() -> bool:
    """Whether the store is this worker's local reports folder (no ``SLIPWAY_ARTEFACTS_URL``)."""
    return not (os.environ.get(URL_ENV) or "").strip()


def local_path(path: ObjectStoragePath) -> Path | None:
    """The file on this machine's disk for a path in a local store; None for a remote one."""
    if path.protocol not in LOCAL_PROTOCOLS:
        return None
    return Path(path.path)


def location(path: ObjectStoragePath) -> str:
    """How a record names an artefact: a local path, or the remote store's URL."""
    local = local_path(path)
    return str(local) if local is not None else str(path)


def from_location(text: str) -> ObjectStoragePath:
    """The store path a :func:`location` string names (the store's connection for URLs)."""
    from airflow.sdk import ObjectStoragePath

    if "://" not in text:
        return ObjectStoragePath(Path(text).absolute().as_uri())
    conn = (os.environ.get(CONN_ENV) or "").strip() or None
    scheme = urlsplit(text).scheme.lower()
    return ObjectStoragePath(text, conn_id=None if scheme in LOCAL_PROTOCOLS else conn)


def make_dirs(folder: ObjectStoragePath, *, private: bool = False) -> None:
    """Create ``folder`` (object stores have none: nothing to do there); 0700 when private."""
    local = local_path(folder)
    if local is None:
        return
    local.mkdir(parents=True, exist_ok=True)
    if private:
        os.chmod(local, PRIVATE_DIR_MODE)  # mkdir's mode is masked by the umask


def write_text(path: ObjectStoragePath, text: str) -> ObjectStoragePath:
    """Write one text artefact, creating its folder in a local store."""
    make_dirs(path.parent)
    path.write_text(text)
    return path


def upload(source: Path, target: ObjectStoragePath, *, private: bool = False) -> ObjectStoragePath:
    """Copy a local file into the store; in a local store a private copy is 0600 in 0700 folders.

    The copy is written under a temporary name and moved in place locally, so a reader never
    sees half a file there; an object store makes an object visible only once it is whole.
    """
    make_dirs(target.parent, private=private)
    local = local_path(target)
    if local is not None:
        partial = local.with_name(f".{local.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE if private else 0o644)
        with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        os.replace(partial, local)
        return target
    with source.open("rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)
    return target


def download(source: ObjectStoragePath, target: Path) -> Path:
    """Copy an artefact to a new local file, 0600 (the caller checks it before use).

    :raises FileExistsError: when ``target`` exists (never overwritten).
    """
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target
