"""Finding one run's HTML report from the ids a web request names, refusing any other path.

The ids come from a URL, so nothing in them may leave the reports folder: no separators, no
``.``/``..``, no control characters, and the resolved path (symlinks followed) must still lie
under the reports root.
"""

from __future__ import annotations

import re
from pathlib import Path

from slipway.reports.run import report_dir, reports_root

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


def html_report_path(dag_id: str, run_id: str) -> Path:
    """Where the HTML report of ``run_id`` of ``dag_id`` is (it may not exist yet).

    :raises ReportPathError: for ids that could name a path outside the reports folder.
    """
    _check("dag_id", dag_id)
    if not DAG_ID.match(dag_id):
        raise ReportPathError("dag_id: only letters, digits, '_', '.' and '-'")
    _check("run_id", run_id)
    root = reports_root().resolve()
    path = (report_dir(dag_id, run_id) / HTML_NAME).resolve()
    if not path.is_relative_to(root):
        raise ReportPathError("run_id: names a path outside the reports folder")
    return path
