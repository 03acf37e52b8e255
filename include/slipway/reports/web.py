"""Finding one run's HTML report from the ids a web request names, refusing any other path.

The ids come from a URL, so nothing in them may leave the reports folder: no separators, no
``.``/``..``, no control characters; in a local store the resolved path (symlinks followed)
must still lie under the store's root, in a remote one no step of the key may be ``.``/``..``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from slipway import artefacts
from slipway.reports.run import report_dir

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

HTML_NAME = "upgrade-report.html"
MAX_ID_LENGTH = 250  # Airflow's own limit on DAG and run ids
DAG_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ReportPathError(ValueError):
    """An id that cannot name a report; the message starts with the field and says why."""


def _check(field: str, value: str) -> None:
    if not value or len(value) > MAX_ID_LENGTH:
        raise ReportPathError(f"{field}: must be 1 to {MAX_ID_LENGTH} characters, got {len(value)}")
    if value in (".", ".."):
        raise ReportPathError(f"{field}: {value!r} is a path step, not a run")
    if "/" in value or "\\" in value:
        raise ReportPathError(f"{field}: may not contain a path separator")
    if CONTROL.search(value):
        raise ReportPathError(f"{field}: may not contain control characters")


def html_report_path(dag_id: str, run_id: str) -> ObjectStoragePath:
    """Where the HTML report of ``run_id`` of ``dag_id`` is in the artefact store (it may not
    exist yet).

    :raises ReportPathError: for ids that could name a path outside the reports folder.
    :raises slipway.artefacts.ArtefactStoreError: when the store's settings are unusable.
    """
    _check("dag_id", dag_id)
    if not DAG_ID.match(dag_id):
        raise ReportPathError("dag_id: only letters, digits, '_', '.' and '-'")
    _check("run_id", run_id)
    root = artefacts.root()
    path = report_dir(dag_id, run_id) / HTML_NAME
    local, local_root = artefacts.local_path(path), artefacts.local_path(root)
    if local is not None and local_root is not None:
        if not local.resolve().is_relative_to(local_root.resolve()):
            raise ReportPathError("run_id: names a path outside the reports folder")
        return artefacts.from_location(str(local.resolve()))
    if any(step in (".", "..") for step in path.relative_to(root).parts):
        raise ReportPathError("run_id: names a path outside the reports folder")
    return path
