"""``k8s_upgrade_history`` end to end: run records in the real cluster → maturity report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client

from slipway.localcluster.cluster import LocalCluster
from slipway.reports import maturity
from slipway.runrecord import NAMESPACE, RunRecord
from tests.dags.dagrun import run_dag
from tests.unit.test_maturity import run_record

pytestmark = pytest.mark.cluster


def test_history_dag_measures_the_recorded_runs(
    local_cluster: LocalCluster, airflow_db: Path, tmp_path: Path
) -> None:
    api = local_cluster.orchestrator_client()
    seeded = [RunRecord(api, f"test-history-{n}") for n in range(3)]
    try:
        for n, rec in enumerate(seeded):
            rec.update(**run_record(n, failures=n % 2) | {"run_id": rec.run_id})
        everything = maturity.load_run_records(api)
        assert {r["run_id"] for r in everything} >= {rec.run_id for rec in seeded}
        expected = maturity.assess(f for f in map(maturity.run_facts, everything) if f is not None)

        state, _ = run_dag(maturity.HISTORY_DAG, {}, local_cluster, tmp_path)

        assert state == "success"
        (written,) = (tmp_path / maturity.HISTORY_DAG).glob("*/maturity.json")
        report = json.loads(written.read_text())
        assert (report["level"], report["runs"]) == (expected.level, expected.runs)
        assert report["api_failures"] == expected.api_failures >= 1  # the seeded run with a failure
        downtime = next(c for c in report["criteria"] if c["name"] == "zero API downtime")
        assert downtime["met"] is False
        assert "zero API downtime | NO" in written.with_suffix(".md").read_text()
    finally:
        core = client.CoreV1Api(local_cluster.admin_client())  # the orchestrator may not delete records
        for rec in seeded:
            core.delete_namespaced_config_map(rec.name, NAMESPACE)
