"""Plan a Kubernetes upgrade and check everything before touching the cluster.

Computes the hop-by-hop path, runs every preflight check (removed APIs, PDBs, critical
workloads, capacity per batch, etcd health and a backup proven by a restore drill,
readiness, control-plane health, maintenance window, skew, feature gates), scores the
risk matrix and writes the JSON + Markdown report to attach to a change request.
Nothing changes in the cluster except the etcd snapshot taken for the proof.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from slipway.airflow.defaults import default_args
from slipway.airflow.params import request_params, share_dag_params
from slipway.airflow.routing import route_near_cluster
from slipway.airflow.stage_common import final_verdict, validate_request, write_upgrade_report
from slipway.airflow.stage_prepare import preparation


@dag(
    dag_id="k8s_upgrade_preflight",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params=request_params(),
    tags=["slipway", "kubernetes", "upgrade", "preflight"],
    default_args=default_args(),
    doc_md=__doc__,
)
def k8s_upgrade_preflight() -> None:
    request = validate_request()
    _, risk = preparation(request)
    report = write_upgrade_report()
    risk >> report >> final_verdict()


route_near_cluster(share_dag_params(k8s_upgrade_preflight()))
