"""The zero-downtime API probe in a process of its own, so it spans several Airflow tasks.

``start`` launches it detached (a baseline phase first, then the upgrade phase) and
returns once the baseline is measured; ``stop`` ends it and returns its report. Both are
idempotent on the run's artefact folder, so a cleared task does not start a second probe.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from slipway.localcluster.health import wait_until
from slipway.validation.probe import ApiProbe, ProbeSettings

BASELINE_REQUESTS = 100
# Requests per second on the new-connection path: each one is a TCP and TLS handshake.
NEW_CONNECTION_RATE = 5.0
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 90.0


def _paths(folder: Path) -> tuple[Path, Path, Path]:
    return folder / "probe.pid", folder / "probe.ready", folder / "probe-report.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def start(kubeconfig: Path, folder: Path, max_seconds: float = 7200.0) -> int:
    """Start the probe (unless this folder's probe already runs); returns its pid."""
    folder.mkdir(parents=True, exist_ok=True)
    pid_file, ready, _ = _paths(folder)
    if pid_file.exists() and _alive(int(pid_file.read_text())):
        return int(pid_file.read_text())
    ready.unlink(missing_ok=True)
    log = (folder / "probe.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slipway.probe_process",
            "--kubeconfig",
            str(kubeconfig),
            "--folder",
            str(folder),
            "--max-seconds",
            str(max_seconds),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file.write_text(str(proc.pid))
    wait_until("API probe baseline", ready.exists, START_TIMEOUT_SECONDS, alive=lambda: proc.poll() is None)
    return proc.pid


def stop(folder: Path) -> dict[str, Any]:
    """Stop the probe and return its report (the saved one if it already stopped)."""
    pid_file, _, report = _paths(folder)
    if pid_file.exists():
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        wait_until("API probe report", report.exists, STOP_TIMEOUT_SECONDS)
        pid_file.unlink(missing_ok=True)
    if not report.exists():
        raise RuntimeError(f"no API probe ran in {folder}")
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the upgrade report shows."""
    p99, base = report.get("p99_seconds") or 0.0, report.get("baseline_p99_seconds") or 0.0
    fresh = report.get("new_connections") or {}
    return {
        "requests": report["requests"],
        "failures": report["failures"],
        "dropped_by_etcd": report.get("dropped_by_etcd", 0),
        "retries": report.get("retries", 0),
        "p99_ms": p99 * 1000,
        "baseline_p99_ms": base * 1000,
        "p99_ratio": (p99 / base) if base else 0.0,
        "disruption_seconds": report.get("disruption_seconds", 0.0),
        "failure_samples": _samples(report),
        "new_connections": {
            k: fresh.get(k, 0) for k in ("requests", "failures", "dropped_by_etcd", "disruption_seconds")
        }
        | {"failure_samples": _samples(fresh)},
    }


def _samples(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: s[k] for k in ("at", "verb", "error")} for s in report.get("failure_samples", [])][:5]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Slipway API probe process")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--max-seconds", type=float, default=7200.0)
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    _, ready, report = _paths(folder)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    # slipway-probe (the default): the orchestrator's Role there may create and delete
    # ConfigMaps; in slipway-system it may not delete any (the run records live there).
    settings = ProbeSettings(max_duration_seconds=args.max_seconds)
    probe = ApiProbe.from_kubeconfig(args.kubeconfig, settings)
    fresh = ApiProbe.from_kubeconfig(
        args.kubeconfig,
        ProbeSettings(
            max_duration_seconds=args.max_seconds, rate_per_second=NEW_CONNECTION_RATE, connections="new"
        ),
    )
    for each in (probe, fresh):
        each.start()
    wait_until("probe baseline", lambda: probe.count("baseline") >= BASELINE_REQUESTS, START_TIMEOUT_SECONDS)
    for each in (probe, fresh):
        each.end_baseline()
    ready.write_text("ready")
    stopping.wait(args.max_seconds)
    for each in (probe, fresh):
        each.halt()
    result = probe.stop().model_dump(mode="json") | {"new_connections": fresh.stop().model_dump(mode="json")}
    tmp = report.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.rename(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
