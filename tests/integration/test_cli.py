"""The ``slipway`` CLI, run as a subprocess against the real local cluster.

Read-only use of the shared session cluster: the only objects written are one run record
and the upgrade Lease, created here and deleted at the end, and the etcd snapshot file the
``--with-backup`` preflight writes under the test's temporary folder.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from slipway import lease
from slipway.check_names import CHECK_TASKS
from slipway.checks.versions import cluster_versions
from slipway.cli import DECISION_EXIT
from slipway.inventory import LocalControlPlaneReader, collect_inventory
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.kit import ETCD_OLD, KUBERNETES_NEW, KUBERNETES_OLD
from slipway.planner import plan_upgrade
from slipway.runrecord import NAMESPACE, RunRecord

pytestmark = pytest.mark.cluster

ENTRY_POINT = Path(sys.executable).parent / "slipway"
RUN_ID = "manual__cli-test"
DAG_ID = "k8s_cluster_upgrade"


def slipway(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed entry point when ``uv pip install -e .`` made one, else the module."""
    command = [str(ENTRY_POINT)] if ENTRY_POINT.exists() else [sys.executable, "-m", "slipway.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def flags(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The orchestrator's kubeconfig (least privilege) and the local platform's extras file."""
    cfg = local_cluster.cfg
    extras = {
        "platform": "local",
        "cluster_name": cfg.name,
        "state_root": str(cfg.state_root),
        "admin_kubeconfig": str(local_cluster.admin_kubeconfig),
    }
    platform = tmp_path_factory.mktemp("cli") / "platform.yaml"
    platform.write_text(yaml.safe_dump(extras))
    return ["--kubeconfig", str(local_cluster.orchestrator_kubeconfig), "--platform", str(platform)]


def test_plan_prints_the_planners_hops_and_exits_with_the_plan_decision(
    local_cluster: LocalCluster, flags: list[str]
) -> None:
    table = slipway("plan", "--to", KUBERNETES_NEW, *flags)
    assert table.returncode in (0, 2), table.stderr
    as_json = slipway(*flags, "plan", "--to", KUBERNETES_NEW, "-o", "json")
    assert as_json.returncode == table.returncode, as_json.stderr
    result = json.loads(as_json.stdout)
    assert table.returncode == DECISION_EXIT[result["risk"]["decision"]]

    # The same path the planner computes in-process from the same cluster.
    api = local_cluster.orchestrator_client()
    inventory = collect_inventory(api, LocalControlPlaneReader(local_cluster).versions())
    expected = plan_upgrade(cluster_versions(inventory), KUBERNETES_NEW).to_dict()
    assert [{k: h[k] for k in ("kind", "from", "to", "nodes", "risk")} for h in result["plan"]["hops"]] == [
        {k: h[k] for k in ("kind", "from", "to", "nodes", "risk")} for h in expected["hops"]
    ]
    kinds = [h["kind"] for h in result["plan"]["hops"]]
    assert kinds == ["etcd", "control-plane", "kubelet"]
    lines = table.stdout.splitlines()
    for hop in result["plan"]["hops"]:
        assert any(
            line.split()[:4] == [str(hop["step"]), hop["kind"], hop["from"], hop["to"]] for line in lines
        ), table.stdout
    assert f"etcd {ETCD_OLD}" in table.stdout and f"kube-apiserver {KUBERNETES_OLD}" in table.stdout
    assert f"Decision from the plan alone (no checks run): {result['risk']['decision']}" in table.stdout


def test_plan_refused_for_a_downgrade_exits_1(flags: list[str]) -> None:
    done = slipway("plan", "--to", "1.35.0", *flags)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().startswith("slipway: plan refused: target: 1.35.0 is older than")
    assert len(done.stderr.strip().splitlines()) == 1


def test_preflight_lists_every_check_and_exits_with_the_decision(
    local_cluster: LocalCluster, flags: list[str], tmp_path: Path
) -> None:
    core = client.CoreV1Api(local_cluster.admin_client())
    records_before = {cm.metadata.name for cm in core.list_namespaced_config_map(NAMESPACE).items}
    artefacts = tmp_path / "artefacts"

    table = slipway("preflight", "--to", KUBERNETES_NEW, *flags, "--artefacts", str(artefacts))
    assert table.returncode in (0, 1, 2), table.stderr
    first_words = {line.split()[0] for line in table.stdout.splitlines() if line and not line[0].isspace()}
    assert any(line.split()[:2] == ["etcd-backup", "skipped"] for line in table.stdout.splitlines()), (
        table.stdout
    )
    assert "Risk matrix:" in table.stdout and "could not run" not in table.stdout
    decision = next(line for line in table.stdout.splitlines() if line.startswith("Decision: "))
    assert table.returncode == DECISION_EXIT[decision.removeprefix("Decision: ")]
    assert not artefacts.exists()  # no snapshot without --with-backup

    # With --with-backup the proven-backup check runs too: a snapshot restored and checked.
    proven = slipway(
        *flags,
        "preflight",
        "--to",
        KUBERNETES_NEW,
        "--with-backup",
        "--artefacts",
        str(artefacts),
        "-o",
        "json",
    )
    result = json.loads(proven.stdout)
    assert result["ran"] == list(CHECK_TASKS)
    assert result["errors"] == [] and result["skipped"] == []
    # Every result the checks gave is a row of the table run (the backup's row said skipped).
    assert {c["name"] for c in result["checks"]} - {"etcd-backup"} <= first_words, table.stdout
    backup = [c for c in result["checks"] if c["name"] == "etcd-backup"]
    assert backup and backup[0]["passed"], backup
    assert (artefacts / "etcd-pre-upgrade.db").stat().st_size > 0
    assert proven.returncode == DECISION_EXIT[result["decision"]]
    assert result["risk"]["decision"] == result["decision"]
    assert {i["name"] for i in result["risk"]["items"]} == {
        "compatibility",
        "data_loss",
        "downtime",
        "resource_constraints",
    }
    records_after = {cm.metadata.name for cm in core.list_namespaced_config_map(NAMESPACE).items}
    assert records_after == records_before  # preflight wrote no run record


def test_status_without_runs_says_no_runs(flags: list[str]) -> None:
    done = slipway("status", *flags)
    assert done.returncode == 0, done.stderr
    assert "no runs" in done.stdout
    assert "Lease slipway-system/slipway-upgrade: none" in done.stdout
    data = json.loads(slipway(*flags, "status", "-o", "json").stdout)
    assert data["runs"] == [] and data["lease"] is None and data["node_count"] >= 15


@pytest.fixture
def run_and_lease(local_cluster: LocalCluster) -> Iterator[RunRecord]:
    """A run record in the middle of its worker phase and a live lease held by that run."""
    admin = local_cluster.admin_client()
    record = RunRecord(admin, RUN_ID)
    record.update(dag_id=DAG_ID, request={"target_version": KUBERNETES_NEW, "strategy": "in-place"})
    for kind, message in (
        ("run-started", f"{DAG_ID}: upgrade to {KUBERNETES_NEW}"),
        ("risk-assessed", "decision proceed; findings: none"),
        ("backup-proven", "etcd snapshot proven"),
        ("batch-opened", "batch 0: general-00"),
    ):
        record.event(kind, message)
    lease.acquire(admin, lease.holder_for(DAG_ID, RUN_ID), duration=600)  # as the upgrade DAG takes it
    try:
        yield record
    finally:
        client.CoordinationV1Api(admin).delete_namespaced_lease(lease.NAME, lease.NAMESPACE)
        client.CoreV1Api(admin).delete_namespaced_config_map(record.name, NAMESPACE)


def test_status_report_and_history_show_a_run_and_its_lease(
    local_cluster: LocalCluster, flags: list[str], run_and_lease: RunRecord
) -> None:
    table = slipway("status", *flags)
    assert table.returncode == 0, table.stderr
    assert f"held by {DAG_ID}/{RUN_ID}" in table.stdout
    row = next(line for line in table.stdout.splitlines() if line.startswith(RUN_ID))
    assert DAG_ID in row and KUBERNETES_NEW in row and "workers" in row and "running" in row
    assert "batch-opened: batch 0" in row

    status = yaml.safe_load(slipway("status", "-o", "yaml", *flags).stdout)
    assert status["lease"]["live"] and status["lease"]["run_id"] == RUN_ID
    assert 0 < status["lease"]["expires_in_seconds"] <= 600
    (run,) = status["runs"]
    assert (run["run_id"], run["phase"], run["state"], run["holds_lease"]) == (
        RUN_ID,
        "workers",
        "running",
        True,
    )
    assert run["record"] == run_and_lease.name

    markdown = slipway("report", RUN_ID, *flags)
    assert markdown.returncode == 0, markdown.stderr
    assert markdown.stdout.startswith(f"# Slipway run report: {RUN_ID}")
    assert "**batch-opened** batch 0: general-00" in markdown.stdout
    by_name = json.loads(slipway("report", run_and_lease.name, "-o", "json", *flags).stdout)
    assert by_name["run_id"] == RUN_ID and by_name["dag_id"] == DAG_ID and "verdict" in by_name
    assert [e["kind"] for e in by_name["events"]][-1] == "batch-opened"

    missing = slipway("report", "manual__never-ran", *flags)
    assert missing.returncode == 3
    assert "RUN: no run record for 'manual__never-ran'" in missing.stderr and RUN_ID in missing.stderr

    # Released as the DAG's teardown releases it: the lease is free, the run no longer running.
    assert lease.release(local_cluster.admin_client(), lease.holder_for(DAG_ID, RUN_ID))
    released = json.loads(slipway("status", "-o", "json", *flags).stdout)
    assert released["lease"]["live"] is False and released["lease"]["holder"] == ""
    assert released["runs"][0]["state"] == "not running"

    history = slipway("history", *flags, "-o", "json")
    assert history.returncode == 0, history.stderr
    maturity: dict[str, Any] = json.loads(history.stdout)
    assert (maturity["runs"], maturity["attempted"], maturity["level"]) == (1, 1, 2)
    assert "Maturity: level 2 — scripted" in slipway("history", *flags).stdout


def test_unreachable_cluster_is_one_line_and_exit_4(local_cluster: LocalCluster, tmp_path: Path) -> None:
    """The real cluster's kubeconfig pointed at a port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once the socket closes
    config = yaml.safe_load(local_cluster.orchestrator_kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(yaml.safe_dump(config))
    for command in (["status"], ["plan", "--to", KUBERNETES_NEW], ["history", "-o", "json"]):
        done = slipway("--kubeconfig", str(dead), *command)
        assert done.returncode == 4, (command, done.stderr)
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert lines[0].startswith(f"slipway: cannot reach the cluster at https://127.0.0.1:{port}: ")
