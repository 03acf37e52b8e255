"""Start, find and stop the cluster's processes, each with a pid file and a log file.

Processes run in their own session so they outlive the command that started them
(``slipway-local up`` returns; the cluster keeps running) and can be stopped one by one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class ProcessError(RuntimeError):
    """A process could not be started or did not become healthy."""


@dataclass(frozen=True)
class ProcessInfo:
    name: str
    pid: int
    argv: list[str]
    log: Path


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3 is the state; a zombie has exited and only waits to be reaped.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Supervisor:
    """Owns the pid files of one cluster's processes."""

    def __init__(self, run_dir: Path, log_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def info(self, name: str) -> ProcessInfo | None:
        path = self._pidfile(name)
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return ProcessInfo(name, data["pid"], data["argv"], Path(data["log"]))

    def is_running(self, name: str) -> bool:
        info = self.info(name)
        if info is None:
            return False
        child = self._children.get(info.pid)
        if child is not None:
            return child.poll() is None
        return _alive(info.pid) and self._same_program(info)

    @staticmethod
    def _same_program(info: ProcessInfo) -> bool:
        # A recycled pid must not make a dead component look alive.
        try:
            cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            return False
        return Path(cmdline).name == Path(info.argv[0]).name

    def names(self) -> list[str]:
        if not self.run_dir.exists():
            return []
        return sorted(p.stem for p in self.run_dir.glob("*.json"))

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ProcessInfo:
        if self.is_running(name):
            raise ProcessError(f"{name} is already running (pid {self.info(name).pid})")  # type: ignore[union-attr]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as fh:
            fh.write(f"\n=== start {time.strftime('%H:%M:%S')}: {' '.join(argv)}\n".encode())
            fh.flush()
            proc = subprocess.Popen(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self._children[proc.pid] = proc
        info = ProcessInfo(name, proc.pid, argv, log)
        self._pidfile(name).write_text(json.dumps({"pid": proc.pid, "argv": argv, "log": str(log)}))
        return info

    def stop(self, name: str, timeout: float = 60.0, sig: int = signal.SIGTERM) -> bool:
        """Stop one process gracefully (SIGKILL after ``timeout``); True if it was running."""
        info = self.info(name)
        if info is None:
            return False
        was_running = self.is_running(name)
        if was_running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, sig)
            if not self._wait_gone(info, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(info.pid, signal.SIGKILL)
                self._wait_gone(info, 10)
        self._pidfile(name).unlink(missing_ok=True)
        return was_running

    def _wait_gone(self, info: ProcessInfo, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        child = self._children.get(info.pid)
        while time.monotonic() < deadline:
            if child is not None:
                try:
                    child.wait(timeout=0.2)
                    return True
                except subprocess.TimeoutExpired:
                    continue
            if not _alive(info.pid):
                return True
            time.sleep(0.1)
        return False

    def stop_all(self, timeout: float = 30.0) -> list[str]:
        stopped = []
        for name in reversed(self.names()):
            if self.stop(name, timeout=timeout):
                stopped.append(name)
        return stopped

    def tail(self, name: str, lines: int = 5) -> str:
        log = self.log_dir / f"{name}.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
