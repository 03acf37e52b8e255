"""The environment that runs this project's DAGs against a local cluster (demo, tests, compose).

Connections are passed as ``AIRFLOW_CONN_*`` variables that point at kubeconfig *files*:
credentials stay in Airflow Connections, never in DAG code, logs or XCom.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slipway.localcluster.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]
KUBE_CONN_ID = "kubernetes_default"
PLATFORM_CONN_ID = "slipway_platform"
# kubeadm only: a kubeconfig for the slipway-kubeadm-upgrader ServiceAccount (kubeadm-upgrader-rbac.yaml).
KUBEADM_CONN_ID = "slipway_kubeadm"


def airflow_env(
    airflow_home: Path, cluster: LocalCluster, *, reports_dir: Path, api_port: int = 28080
) -> dict[str, str]:
    """Variables for `airflow standalone`/`dag.test()` on the local cluster."""
    admin_kubeconfig, orchestrator_kubeconfig = cluster.admin_kubeconfig, cluster.orchestrator_kubeconfig
    cluster_name, state_root = cluster.cfg.name, cluster.cfg.state_root
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
        # Scheduled DAGs change clusters on their own (GitOps sync, windowed worker upgrades):
        # every DAG starts paused; whoever means to run one unpauses it (the demo its own).
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__API__PORT": str(api_port),
        # Task processes report to the API server's execution API: it must name the same port.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        # Every task process parses its DAG file; on a 2-core machine under load that can
        # take longer than the 30 s default, and a dozen parallel tasks only thrash.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__CORE__PARALLELISM": "6",
        # The demo's 12 workers go in six batches; fewer slots also parse faster.
        "SLIPWAY_MAX_BATCHES": os.environ.get("SLIPWAY_MAX_BATCHES", "8"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        f"AIRFLOW_CONN_{KUBE_CONN_ID.upper()}": json.dumps(kube),
        f"AIRFLOW_CONN_{PLATFORM_CONN_ID.upper()}": json.dumps(platform),
        "SLIPWAY_REPORTS_DIR": str(reports_dir),
    }
