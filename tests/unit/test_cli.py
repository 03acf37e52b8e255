"""The ``slipway`` CLI without a cluster: flags, refusals before any request, exit codes, rendering."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from slipway import cli, cli_render
from slipway.cli_cluster import current_phase, run_summary


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A bare TCP listener standing where the cluster would be: it answers nothing, it only
    lets a test see whether the CLI opened a connection."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def _kubeconfig(path: Path, server: str, contexts: tuple[str, ...] = ("test",)) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": name, "context": {"cluster": "c", "user": "u"}} for name in contexts],
        "current-context": contexts[0],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def kubeconfig(tmp_path: Path, listener: socket.socket) -> Path:
    return _kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{listener.getsockname()[1]}")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


REFUSALS = [
    (["plan", "--to", "1.99.0"], "--to: "),
    (["plan", "--to", "banana"], "--to: "),
    (["plan"], "--to"),
    (["-o", "xml", "status"], "-o/--output"),
    (["status", "-o", "xml"], "-o/--output"),
    (["status", "--limit", "0"], "--limit"),
    (["status", "--limit", "many"], "--limit"),
    (["preflight", "--to", "1.37.2", "--with-backup"], "--with-backup: needs --platform"),
    (["status", "--context", "nope"], "--context: no context 'nope'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "COMMAND"),
]


@pytest.mark.parametrize(("argv", "names"), REFUSALS)
def test_bad_flags_are_refused_in_one_line_before_any_connection(
    argv: list[str],
    names: str,
    kubeconfig: Path,
    listener: socket.socket,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(["--kubeconfig", str(kubeconfig), *argv], capsys)
    assert code == cli.USAGE
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert names in err
    assert _connections(listener) == 0


def test_bad_request_fields_and_platform_files_name_their_flag(
    tmp_path: Path, kubeconfig: Path, listener: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    request = tmp_path / "request.yaml"
    request.write_text("batch_size: 0\nstrategy: sideways\n")
    code, _, err = _run(
        ["--kubeconfig", str(kubeconfig), "plan", "--to", "1.37.2", "--request", str(request)], capsys
    )
    assert code == cli.USAGE
    assert "--request batch_size:" in err and "--request strategy:" in err
    assert len(err.strip().splitlines()) == 1

    platform = tmp_path / "platform.json"
    platform.write_text('{"platform": "openstack"}')
    code, _, err = _run(
        ["--kubeconfig", str(kubeconfig), "--platform", str(platform), "plan", "--to", "1.37.2"], capsys
    )
    assert code == cli.USAGE and err.startswith("slipway: error: --platform: ") and "platform" in err

    platform.write_text(
        json.dumps({"platform": "local", "cluster_name": "absent", "state_root": str(tmp_path)})
    )
    code, _, err = _run(
        ["--kubeconfig", str(kubeconfig), "--platform", str(platform), "plan", "--to", "1.37.2"], capsys
    )
    assert code == cli.USAGE and "--platform: no local cluster named 'absent'" in err

    code, _, err = _run(["--kubeconfig", str(tmp_path / "missing"), "status"], capsys)
    assert code == cli.USAGE and "--kubeconfig: " in err and "missing" in err
    assert _connections(listener) == 0


def test_global_flags_work_before_and_after_the_command() -> None:
    parser = cli.build_parser()
    before = parser.parse_args(
        ["--kubeconfig", "k", "--context", "c", "-o", "json", "--platform", "p", "status"]
    )
    after = parser.parse_args(
        ["status", "--kubeconfig", "k", "--context", "c", "-o", "json", "--platform", "p"]
    )
    assert vars(before) == vars(after)
    assert (after.kubeconfig, after.context, after.output, after.platform) == ("k", "c", "json", "p")
    mixed = parser.parse_args(["-o", "yaml", "plan", "--to", "1.37.2", "--context", "prod"])
    assert (mixed.output, mixed.context, mixed.to) == ("yaml", "prod", "1.37.2")
    # A flag only given before the command keeps its value; defaults fill the rest.
    assert parser.parse_args(["--context", "x", "history"]).output == "table"


def test_help_is_plain_text_and_documents_every_exit_code() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "slipway.cli", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    for line in ("0  ok", "1  blockers", "2  needs approval", "3  usage", "4  cannot reach the cluster"):
        assert line in done.stdout
    assert "``" not in done.stdout and ":param" not in done.stdout and ".. " not in done.stdout
    for command in ("plan", "preflight", "status", "report", "history"):
        sub = subprocess.run(
            [sys.executable, "-m", "slipway.cli", command, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert sub.returncode == 0 and "exit codes:" in sub.stdout and "--kubeconfig" in sub.stdout


def test_the_cli_does_not_import_airflow() -> None:
    probe = (
        "import sys, slipway.cli, slipway.cli_cluster, slipway.cli_render; "
        "print(any(m.startswith('airflow') for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.3, "0s"),
        (42, "42s"),
        (60, "1m"),
        (1056, "17m 36s"),
        (5460, "1h 31m"),
        (7200, "2h"),
        (187200, "2d 4h"),
        (None, "n/a"),
    ],
)
def test_durations_read_like_a_person_wrote_them(seconds: float | None, text: str) -> None:
    assert cli_render.human_duration(seconds) == text


def test_ago_says_past_and_future() -> None:
    assert cli_render.ago(90) == "1m 30s ago"
    assert cli_render.ago(-26) == "in 26s"


def test_table_aligns_columns_and_cuts_long_cells() -> None:
    text = cli_render.table(["name", "note"], [["a", "x" * 100], ["bbbb", None]], limit=10)
    lines = text.splitlines()
    assert lines[0] == "NAME  NOTE"
    assert lines[1] == "a     " + "x" * 9 + "…"
    assert lines[2] == "bbbb  -"


def _event(kind: str, minute: int, **details: Any) -> dict[str, Any]:
    return {
        "at": f"2026-12-02T03:{minute:02d}:00+00:00",
        "kind": kind,
        "message": f"{kind} happened",
        **details,
    }


RUNNING = {
    "run_id": "manual__night",
    "dag_id": "k8s_cluster_upgrade",
    "request": {"target_version": "1.37.2"},
    "events": [
        _event("run-started", 0),
        _event("risk-assessed", 2),
        _event("backup-proven", 3),
        _event("batch-opened", 9),
    ],
}
NOW = datetime(2026, 12, 2, 3, 10, tzinfo=UTC)


def test_phase_is_the_furthest_phase_the_timeline_started() -> None:
    assert current_phase(RUNNING) == "workers"
    assert current_phase({"events": [_event("run-started", 0)]}) == "preparation"
    assert current_phase({"events": []}) == "starting"
    preflight = {
        "dag_id": "k8s_upgrade_preflight",
        "events": [_event("run-started", 0), _event("risk-assessed", 1)],
    }
    assert current_phase(preflight) == "preparation"
    assert current_phase(RUNNING | {"report": {"markdown": "x.md"}}) == "finished"


def test_a_run_is_running_only_while_it_holds_a_live_lease() -> None:
    live = {"live": True, "run_id": "manual__night", "holder": "k8s_cluster_upgrade/manual__night"}
    summary = run_summary(RUNNING, live, NOW)
    assert (summary["state"], summary["verdict"], summary["holds_lease"]) == ("running", None, True)
    assert summary["started_seconds_ago"] == 600 and summary["seconds"] == 600  # running: until now
    assert summary["last_event"]["kind"] == "batch-opened"
    stopped = run_summary(RUNNING, live | {"live": False}, NOW)
    assert (stopped["state"], stopped["seconds"]) == ("not running", 540)  # until its last event
    finished = run_summary(RUNNING | {"report": {}, "worker_phase": {"reason": "done"}}, None, NOW)
    assert (finished["state"], finished["verdict"]) == ("finished", "upgraded")


def test_status_table_shows_runs_lease_and_nodes_with_human_durations() -> None:
    lease = {
        "holder": "k8s_cluster_upgrade/manual__night",
        "run_id": "manual__night",
        "live": True,
        "renewed_seconds_ago": 4.0,
        "expires_in_seconds": 26.0,
        "duration_seconds": 30,
    }
    node = {
        "name": "general-00",
        "pool": "general",
        "cordoned": True,
        "cordoned_by": "manual__night",
        "cordoned_seconds_ago": 75.0,
        "quarantined": True,
        "quarantine_reason": "PDB shop/db blocks eviction",
        "step": "drained",
        "step_run": "manual__night",
    }
    status = {
        "lease": lease,
        "runs": [run_summary(RUNNING, lease, NOW)],
        "total_runs": 1,
        "nodes": [node],
        "node_count": 15,
    }
    text = cli_render.render_status(status)
    assert "held by k8s_cluster_upgrade/manual__night (renewed 4s ago, expires in 26s" in text
    assert "manual__night" in text and "workers" in text and "running" in text and "10m ago" in text
    assert "10m" in text  # the run's duration so far, not raw seconds
    assert "general-00" in text and "1m 15s ago" in text and "PDB shop/db blocks eviction" in text

    empty = cli_render.render_status(
        {"lease": None, "runs": [], "total_runs": 0, "nodes": [], "node_count": 15}
    )
    assert "no runs" in empty and "none (no upgrade holds the cluster)" in empty
    expired = cli_render.render_lease(lease | {"live": False, "expires_in_seconds": -180.0})
    assert "free (last holder k8s_cluster_upgrade/manual__night, expired 3m ago)" in expired
    released = cli_render.render_lease(lease | {"holder": "", "run_id": "", "live": False})
    assert "free (released; no upgrade holds the cluster)" in released


def test_structured_output_round_trips() -> None:
    data = {"when": NOW, "items": [{"a": 1}], "text": "é"}
    assert yaml.safe_load(cli_render.as_yaml(data)) == {
        "when": NOW.isoformat(),
        "items": [{"a": 1}],
        "text": "é",
    }


def test_a_closed_port_is_exit_4_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once it is closed
    config = _kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{port}")
    code, out, err = _run(["status", "--kubeconfig", str(config)], capsys)
    assert code == cli.UNREACHABLE and out == ""
    assert (
        err.strip()
        == f"slipway: cannot reach the cluster at https://127.0.0.1:{port}: [Errno 111] Connection refused"
    )


def test_preflight_table_says_what_was_skipped_and_what_could_not_run() -> None:
    item = {
        "category": "technical",
        "name": "data_loss",
        "probability": 1,
        "impact": 4,
        "score": 4,
        "level": "low",
    }
    result = {
        "checks": [
            {"name": "capacity", "severity": "ok", "passed": True, "summary": "room for every batch"},
            {
                "name": "pod-disruption-budgets",
                "severity": "blocker",
                "passed": False,
                "summary": "shop/db allows no disruption",
                "mitigation": "Raise maxUnavailable.",
            },
        ],
        "skipped": [{"name": "etcd-backup", "reason": "not run: pass --with-backup"}],
        "errors": [{"name": "etcd-health", "error": "PlatformError: etcd_endpoints are required"}],
        "risk": {"items": [item], "decision": "refuse", "reasons": ["blocker pod-disruption-budgets: ..."]},
    }
    lines = cli_render.render_preflight(result).splitlines()
    assert any(line.split()[:3] == ["etcd-backup", "skipped", "-"] for line in lines)
    assert any(
        line.split()[:3] == ["etcd-health", "error", "NO"] and "could not run" in line for line in lines
    )
    assert "  - pod-disruption-budgets: Raise maxUnavailable." in lines
    assert "Decision: refuse" in lines
    assert lines[-1].startswith("Preflight incomplete: etcd-health could not run")
