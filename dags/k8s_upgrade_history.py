"""How mature are this cluster's upgrades? Measured weekly from Slipway's run records.

One task reads every run record in the cluster and writes a maturity report: the level the
recorded upgrades reach (manual → scripted → automated → intelligent), the success rate,
duration and downtime figures behind it, and what is missing for the next level.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import dag, get_current_context, task

from slipway.airflow import runbooks
from slipway.airflow.defaults import default_args
from slipway.lazy import lazy

if TYPE_CHECKING:
    from slipway.airflow import runtime
    from slipway.reports import maturity
else:
    maturity = lazy("slipway.reports.maturity")
    runtime = lazy("slipway.airflow.runtime")


@task(doc_md=runbooks.ASSESS_MATURITY, retries=2)
def assess_maturity() -> dict[str, Any]:
    from slipway.artefacts import location

    records = maturity.load_run_records(runtime.orchestrator_api())
    facts = [f for f in (maturity.run_facts(r) for r in records) if f is not None]
    found = maturity.assess(facts)
    paths = maturity.write_maturity_report(
        found, run_id=get_current_context()["run_id"], generated_at=datetime.now(UTC)
    )
    return {
        "level": found.level,
        "name": found.name,
        "runs": found.runs,
        "success_rate": found.success_rate,
        "report": location(paths["markdown"]),  # a local path, or the artefact store's URL
    }


@dag(
    dag_id="k8s_upgrade_history",  # maturity.HISTORY_DAG (a literal: parsing loads no client)
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["slipway", "kubernetes", "report"],
    default_args=default_args(),
    doc_md=__doc__,
)
def k8s_upgrade_history() -> None:
    assess_maturity()


k8s_upgrade_history()
