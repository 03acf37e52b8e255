"""The environment that runs this project's DAGs against a local cluster (demo, tests, compose).

Connections are passed as ``AIRFLOW_CONN_*`` variables that point at kubeconfig *files*:
credentials stay in Airflow Connections, never in DAG code, logs or XCom.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KUBE_CONN_ID = "kubernetes_default"
PLATFORM_CONN_ID = "slipway_platform"


def airflow_env(
    airflow_home: Path,
    *,
    admin_kubeconfig: Path,
    orchestrator_kubeconfig: Path,
    cluster_name: str,
    state_root: Path,
    reports_dir: Path,
    api_port: int = 28080,
) -> dict[str, str]:
    """Variables for `airflow standalone`/`dag.test()` on the local cluster."""
    platform = {
        "conn_type": "generic",
        "extra": {
            "platform": "local",
            "cluster_name": cluster_name,
            "state_root": str(state_root),
            # The local node upgrader plays the kubelet's part and may act as admin.
            "admin_kubeconfig": str(admin_kubeconfig),
        },
    }
    kube = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(orchestrator_kubeconfig)}}
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        f"AIRFLOW_CONN_{KUBE_CONN_ID.upper()}": json.dumps(kube),
        f"AIRFLOW_CONN_{PLATFORM_CONN_ID.upper()}": json.dumps(platform),
        "SLIPWAY_REPORTS_DIR": str(reports_dir),
    }
