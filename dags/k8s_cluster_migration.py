"""Move namespaces from one cluster to another (issue 12, first slice: configuration and
stateless workloads, built-in copy path).

assess → (a dry run ends here) → copy configuration → verify checksums → copy workloads →
validate (checksums + available on the target) → switch traffic (HAProxy weights 0 → 10 → 50 →
100 %, rolled back on a failed probe) → report. Source, target and the front door come from the
``slipway_migration`` connection (the migrator identity's kubeconfigs, ``migrator-rbac.yaml``);
the source is only read and keeps running. Not built yet: volume data (rclone), Velero.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from slipway.airflow.defaults import default_args
from slipway.airflow.stage_migration import (
    assess,
    copy_configuration,
    copy_workloads,
    migration_params,
    proceed,
    switch_traffic,
    validate_migration,
    validate_workloads,
    verify_configuration,
    write_migration_report,
)


@dag(
    dag_id="k8s_cluster_migration",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=migration_params(),
    tags=["slipway", "kubernetes", "migration"],
    default_args=default_args(),
    doc_md=__doc__,
)
def k8s_cluster_migration() -> None:
    summary = assess(validate_migration())
    config_copy = copy_configuration(summary)
    proceed(summary) >> config_copy
    config_check = verify_configuration(summary)
    workload_copy = copy_workloads(summary)
    workload_check = validate_workloads(summary)
    traffic = switch_traffic()
    config_copy >> config_check >> workload_copy >> workload_check >> traffic
    write_migration_report(summary, config_copy, config_check, workload_copy, workload_check, traffic)


k8s_cluster_migration()
