"""The front door of a migration: HAProxy in front of two backends that stand for each cluster's
ingress, and the blue-green traffic switch through HAProxy's runtime API.

Weights move 0 → 10 → 50 → 100 % to the target; after every step a probe sends requests
through the front door and counts the failed ones and which backend answered. A failed probe
request, or the target's health check going down, rolls the weights back (100 % source) and
raises :class:`SwitchRolledBack`. Every step is idempotent: weights are set, never added to.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from slipway.localcluster.haproxy import haproxy_binary

BACKEND = "app"
SOURCE, TARGET = "source", "target"
STEPS = (0, 10, 50, 100)


class SwitchRolledBack(RuntimeError):
    """The switch stopped at a step and put every request back on the source."""

    def __init__(self, step: int, reason: str, steps: list[StepResult]) -> None:
        self.step, self.reason, self.steps = step, reason, steps
        super().__init__(f"traffic switch rolled back at {step} % to the target: {reason}")


def render_config(port: int, source: int, target: int, sock: Path) -> str:
    """HTTP front door on ``port``; the source takes every request until the switch starts.

    Health checks every 500 ms (down after 2 failures in a row: one slow answer on a busy host
    is no rollback) and ``retry-on`` with redispatch: a
    request whose connection fails is retried on the other server instead of failing.
    """
    return f"""global
    maxconn 2000
    stats socket {sock} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 503

frontend front-door
    bind 127.0.0.1:{port}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 2
    server {SOURCE} 127.0.0.1:{source} weight 100
    server {TARGET} 127.0.0.1:{target} weight 0
"""


class RuntimeApi:
    """HAProxy's runtime API over its admin socket (one command per connection)."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(str(self.sock))
            conn.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def set_weight(self, server: str, weight: int) -> None:
        answer = self.command(f"set weight {BACKEND}/{server} {weight}").strip()
        if answer:  # HAProxy answers nothing on success
            raise RuntimeError(f"haproxy refused set weight {server} {weight}: {answer}")

    def weight(self, server: str) -> int:
        # "100 (initial 100)"
        return int(self.command(f"get weight {BACKEND}/{server}").split()[0])

    def status(self, server: str) -> str:
        """UP, DOWN, MAINT, ... from ``show stat`` (CSV: pxname, svname, ..., status is field 18)."""
        for row in self.command("show stat").splitlines():
            cols = row.split(",")
            if len(cols) > 17 and cols[0] == BACKEND and cols[1] == server:
                return cols[17]
        raise RuntimeError(f"server {BACKEND}/{server} not in haproxy's stats")


class FrontDoor:
    """One HAProxy process: started by :meth:`start`, stopped by :meth:`stop` (by its own pid)."""

    def __init__(self, state_dir: Path, port: int, source_port: int, target_port: int) -> None:
        self.state_dir, self.port = state_dir, port
        self.source_port, self.target_port = source_port, target_port
        self.sock = state_dir / "front-door.sock"
        self.api = RuntimeApi(self.sock)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.state_dir / "front-door.cfg"
        cfg.write_text(render_config(self.port, self.source_port, self.target_port, self.sock))
        log = (self.state_dir / "front-door.log").open("ab")
        self.proc = subprocess.Popen([haproxy_binary(), "-db", "-f", str(cfg)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.api.status(SOURCE) == "UP":
                    return
            except OSError:
                pass  # the socket is not there yet
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"front door did not come up (log: {self.state_dir / 'front-door.log'})")
            time.sleep(0.1)  # polling the admin socket until the source is UP, bounded above

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@dataclass
class ProbeResult:
    sent: int = 0
    failed: int = 0
    answered_by: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def probe(url: str, requests: int, timeout: float = 5.0) -> ProbeResult:
    """``requests`` sequential GETs through the front door; a backend names itself in its body."""
    result = ProbeResult()
    for _ in range(requests):
        result.sent += 1
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                result.answered_by[answer.read().decode().strip()] += 1
        except (urllib.error.URLError, OSError) as err:
            result.failed += 1
            if len(result.errors) < 5:
                result.errors.append(str(err))
    return result


@dataclass
class StepResult:
    percent: int
    sent: int
    failed: int
    answered_by: dict[str, int]


def set_split(api: RuntimeApi, percent: int) -> None:
    """``percent`` of new requests to the target, the rest to the source.

    The side that gains weight is raised first: lowering first would leave both servers at
    weight 0 for an instant (going back from 100 % to 0 %), and HAProxy answers 503 then.
    """
    if percent >= api.weight(TARGET):
        api.set_weight(TARGET, percent)
        api.set_weight(SOURCE, 100 - percent)
    else:
        api.set_weight(SOURCE, 100 - percent)
        api.set_weight(TARGET, percent)


def switch(
    api: RuntimeApi,
    url: str,
    *,
    steps: Sequence[int] = STEPS,
    requests_per_step: int = 40,
    on_step: Callable[[int], None] | None = None,
) -> list[StepResult]:
    """Move traffic to the target step by step, probing after each; roll back on any failure.

    :param on_step: called after the weights of a step are set, before its probe (tests use
        it to break the target mid-switch).
    :raises SwitchRolledBack: weights back at 100 % source, with every step's figures.
    """
    done: list[StepResult] = []
    for percent in steps:
        set_split(api, percent)
        if on_step:
            on_step(percent)
        result = probe(url, requests_per_step)
        done.append(StepResult(percent, result.sent, result.failed, dict(result.answered_by)))
        target_status = api.status(TARGET)
        reason = ""
        if result.failed:
            reason = f"{result.failed} of {result.sent} probe requests failed ({'; '.join(result.errors)})"
        elif percent > 0 and not target_status.startswith("UP"):
            reason = f"the target backend is {target_status}"
        if reason:
            set_split(api, 0)
            raise SwitchRolledBack(percent, reason, done)
    return done
