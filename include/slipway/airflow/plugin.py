"""The Airflow plugin: Slipway's timetable (needed for DAG serialisation) and the run report page.

The report page is a FastAPI app the API server mounts at ``/slipway`` (Airflow 3's way to
serve extra pages; Flask views are gone). An external view puts it on every DAG run as an
"Upgrade report" tab, which the UI renders in a frame with the run's own ids filled in.
The API server does not guard plugin apps: the page asks Airflow's auth manager whether the
caller may read the DAG's runs, with the same session cookie or bearer token the UI uses.
"""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from slipway.airflow.timetable import MaintenanceWindowTimetable
from slipway.airflow.urls import URL_PREFIX, report_path
from slipway.reports.web import ReportPathError, html_report_path

# The page is self-contained (inline style, inline SVG): nothing else may load or run in it.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
)


async def may_read_dag_runs(request: Request) -> None:
    """Airflow's own check that the caller may read this DAG's runs (401/403 otherwise).

    Imported per request: the API server has these modules loaded already, while the scheduler
    and the DAG processor load this plugin only for the timetable and need none of them.
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from fastapi.security import HTTPBearer

    credentials = await HTTPBearer(auto_error=False)(request)
    user = await get_user(request, None, credentials)
    # The check reads the DAG's team from the metadata DB: a blocking call, off the event loop.
    await asyncio.to_thread(requires_access_dag("GET", DagAccessEntity.RUN), request, user)


def report_app() -> FastAPI:
    """``GET /reports/{dag_id}/{run_id}``: the run's HTML report from the artefact store."""
    app = FastAPI(title="Slipway run reports", docs_url=None, redoc_url=None, openapi_url=None)

    # ``:path`` so that an id with a slash reaches the check and is refused by name (400),
    # instead of silently matching nothing.
    @app.get("/reports/{dag_id}/{run_id:path}", response_class=HTMLResponse)
    def upgrade_report(dag_id: str, run_id: str, _: None = Depends(may_read_dag_runs)) -> HTMLResponse:
        from slipway.artefacts import ArtefactStoreError

        try:
            path = html_report_path(dag_id, run_id)
        except ReportPathError as err:
            raise HTTPException(status_code=400, detail=str(err)) from None
        except ArtefactStoreError as err:  # the deployment's setting, not the caller's ids
            raise HTTPException(status_code=500, detail=str(err)) from None
        try:
            page = path.read_text()
        except (FileNotFoundError, IsADirectoryError):
            raise HTTPException(
                status_code=404,
                detail=f"no report for run {run_id} of {dag_id} yet: "
                "the report task writes it at the end of the run",
            ) from None
        return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    return app


REPORT_APP = report_app()


class SlipwayPlugin(AirflowPlugin):
    name = "slipway"
    timetables = [MaintenanceWindowTimetable]  # noqa: RUF012 (AirflowPlugin declares it so)
    fastapi_apps: list[dict[str, Any]] = [  # noqa: RUF012
        {"app": REPORT_APP, "url_prefix": URL_PREFIX, "name": "Slipway run reports"}
    ]
    external_views: list[dict[str, Any]] = [  # noqa: RUF012
        {
            "name": "Upgrade report",
            # Relative (no leading slash) so it works behind a proxy's path prefix; the UI fills the ids in.
            "href": report_path("{DAG_ID}", "{RUN_ID}").lstrip("/"),
            "destination": "dag_run",
            "url_route": "slipway-upgrade-report",
        }
    ]
