"""Secrets are never written: a real worker-upgrade run with a webhook token, a webhook
user:password, a health-check URL with credentials and an inline kubeconfig, then every
place a run writes to is searched for them.

Two dag.test() runs on a 3-worker local cluster, through the connections a user sets:
the first asks for a health check whose URL carries credentials (refused, and the refusal
must not repeat them); the second has a health check that fails (nothing listens on its
port), so the batch rolls back, the incident pages the ``slipway_notify`` webhook and that
fails too (nothing listens there either). Then the run-record ConfigMaps, the report files,
every XCom value, the task logs and the temp folder are searched for the token, the
passwords and the kubeconfig's client key.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import KUBERNETES_NEW, KUBERNETES_OLD
from slipway.runrecord import NAMESPACE, RunRecord
from tests.conftest import REPO, running_cluster
from tests.dags.dagrun import cluster_env, remove_never_evictable_samples, verdict

TOKEN = f"tok{secrets.token_hex(12)}"
WEBHOOK_PASSWORD = f"whpw{secrets.token_hex(12)}"
BEARER = f"bearer{secrets.token_hex(12)}"
HEALTH_PASSWORD = f"hcpw{secrets.token_hex(12)}"
CONF = {
    "target_version": KUBERNETES_NEW,
    "soak_seconds": 3,
    "force_bare_pods": True,
    "delete_emptydir_data": True,
    "blocked_drain_policy": "quarantine",
}


@pytest.fixture
def cluster(airflow_db: Path) -> Iterator[LocalCluster]:
    with running_cluster(
        "secrets", 900, 3, kubernetes_version=KUBERNETES_NEW, kubelet_version=KUBERNETES_OLD
    ) as local:
        yield local


def _dead_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _inline_kubeconfig(path: Path) -> tuple[dict[str, Any], str]:
    """The orchestrator kubeconfig with its certificates and key embedded as ``*-data`` (as a
    kubeconfig pasted into a connection is), and the key's base64 text."""
    config = yaml.safe_load(path.read_text())
    for section, what in (("clusters", "cluster"), ("users", "user")):
        for item in config[section]:
            entry = item[what]
            for field in ("certificate-authority", "client-certificate", "client-key"):
                if field in entry:
                    data = (path.parent / entry.pop(field)).read_bytes()
                    entry[f"{field}-data"] = base64.b64encode(data).decode()
    key = config["users"][0]["user"]["client-key-data"]
    return config, key


def _run(conf: dict[str, Any]) -> tuple[str, str]:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags["k8s_worker_upgrade"]
    dag_run = dag.test(run_conf=conf)
    return str(dag_run.state), str(dag_run.run_id)


def _xcom_values(run_ids: list[str]) -> list[str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(XComModel).where(XComModel.run_id.in_(run_ids))).all()
        return [f"{row.task_id}/{row.key}: {json.dumps(row.value, default=str)}" for row in rows]


def _files_text(root: Path) -> dict[str, str]:
    return {
        str(path): path.read_bytes().decode(errors="replace") for path in root.rglob("*") if path.is_file()
    }


@pytest.mark.cluster
def test_no_secret_reaches_the_record_the_report_xcom_the_logs_or_the_disk(
    cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    home = Path(os.environ["AIRFLOW_HOME"])
    reports = tmp_path / "reports"
    # Every temp file this process makes (the kubernetes client's included) lands here.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))

    kubeconfig, key_b64 = _inline_kubeconfig(cluster.orchestrator_kubeconfig)
    key_pem = base64.b64decode(key_b64).decode()
    key_line = max(key_pem.splitlines(), key=len)  # a line of the key itself, not its header
    hook_port, health_port = _dead_port(), _dead_port()
    webhook = f"http://ops:{WEBHOOK_PASSWORD}@127.0.0.1:{hook_port}/hooks/notify?token={TOKEN}"
    for name, value in cluster_env(cluster, home, reports).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLIPWAY_MAX_BATCHES", "1")  # the first batch fails: one slot keeps the graph small
    monkeypatch.setenv(
        "AIRFLOW_CONN_KUBERNETES_DEFAULT",
        json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(kubeconfig)}}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLIPWAY_NOTIFY", json.dumps({"conn_type": "http", "host": webhook, "password": BEARER})
    )
    remove_never_evictable_samples(cluster)
    secrets_to_find = {
        "token": TOKEN,
        "webhook password": WEBHOOK_PASSWORD,
        "bearer token": BEARER,
        "health-check password": HEALTH_PASSWORD,
        "client key (base64)": key_b64,
        "client key (PEM)": key_line,
    }

    # 1. A health check with credentials in its URL: refused before anything changes.
    with_credentials = f"http://probe:{HEALTH_PASSWORD}@127.0.0.1:{health_port}/healthz?token={TOKEN}"
    refused_state, refused_run = _run(CONF | {"health_checks": [{"kind": "http", "url": with_credentials}]})
    refused_output = capfd.readouterr()
    assert refused_state == "failed"
    refused_record = RunRecord(cluster.orchestrator_client(), refused_run).load()
    assert "batches" not in refused_record  # nothing was drained
    assert "carries credentials" in refused_output.out + refused_output.err

    # 2. A failing health check: the batch rolls back, the incident pages a dead webhook.
    health = f"http://127.0.0.1:{health_port}/healthz"
    state, run_id = _run(CONF | {"health_checks": [{"kind": "http", "url": health}]})
    output = capfd.readouterr()
    record = RunRecord(cluster.orchestrator_client(), run_id).load()
    assert state == "failed"
    assert verdict(record) == "rolled-back", record.get("events")
    failed = [e["message"] for e in record["events"] if e["kind"] == "notification-failed"]
    # The failure names where it went (scheme, host, port), never the key, user or token.
    assert failed and f"webhook http://***@127.0.0.1:{hook_port}/… unreachable" in failed[0], failed

    # Where a run writes: the run records, the reports, XCom, the task logs, the temp folder.
    maps = client.CoreV1Api(cluster.admin_client()).list_namespaced_config_map(NAMESPACE).items
    places = {f"configmap {m.metadata.name}": json.dumps(m.data) for m in maps}
    places |= {f"report {p}": text for p, text in _files_text(reports).items()}
    assert any(name.endswith("upgrade-report.md") for name in places), "no report written"
    places |= {f"xcom {i}": value for i, value in enumerate(_xcom_values([refused_run, run_id]))}
    assert any("select_batch" in v for v in places.values()), "no XCom read"
    # dag.test() runs the tasks in this process: their logs are its output (log files, when
    # a deployment writes them, are searched too).
    places |= {f"log {p}": text for p, text in _files_text(home / "logs").items()}
    places["task output, refused run"] = refused_output.out + refused_output.err
    places["task output, rolled-back run"] = output.out + output.err
    places |= {f"temp file {p}": text for p, text in _files_text(scratch).items()}
    found = [
        f"{what} in {where}"
        for where, text in places.items()
        for what, s in secrets_to_find.items()
        if s in text
    ]
    assert found == []
    leftovers = [p for p in scratch.rglob("*") if p.is_file()]
    assert leftovers == [], "files left in the temp folder"
    # Airflow's own masker knows them too: any task log line carrying one is masked.
    from airflow.sdk.log import mask_logs

    for secret in (TOKEN, WEBHOOK_PASSWORD, BEARER, key_b64):
        assert mask_logs(None, "info", {"event": f"leaked {secret}"})["event"] == "leaked ***"


def test_the_probe_kubeconfig_is_private_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API probe runs in its own process and needs a file: 0600 in a 0700 folder, gone
    once the probe has started, also when starting fails."""
    from slipway.airflow.stage_control_plane import _kubeconfig_for_probe

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    content = json.dumps({"apiVersion": "v1", "kind": "Config", "users": [{"user": {"token": TOKEN}}]})
    monkeypatch.setenv(
        "AIRFLOW_CONN_KUBERNETES_DEFAULT",
        json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": content}}),
    )
    with pytest.raises(RuntimeError, match="probe failed to start"), _kubeconfig_for_probe() as path:
        assert path.read_text() == content
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        raise RuntimeError("probe failed to start")
    assert list(tmp_path.iterdir()) == []
