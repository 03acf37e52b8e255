"""The services a CeleryExecutor deployment needs, from Debian's packages, private to a test:
a PostgreSQL cluster (the metadata database and Celery's result backend) and a Redis server
(Celery's broker), each in its own temporary folder on its own port, removed afterwards."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import redis

from slipway.localcluster.health import wait_until

DATABASE = "airflow"


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise RuntimeError("no PostgreSQL server: apt-get install postgresql (make test-distributed does)")
    return Path(found[-1]).parent


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as Debian's `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def postgres(port: int) -> Iterator[str]:
    """A fresh cluster on 127.0.0.1:``port`` with an ``airflow`` database; yields its
    SQLAlchemy URL. The folder is outside pytest's tmp_path: that one is root-only."""
    bin_dir = _postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="slipway-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)

    def run(*argv: str) -> None:
        done = subprocess.run(_as_postgres(list(argv)), check=False, capture_output=True, text=True, cwd=root)
        if done.returncode != 0:
            log = root / "postgres.log"
            said = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{Path(argv[0]).name} failed: {done.stderr.strip()}\n{said}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off"
    ctl = [str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        run(*ctl, "-o", options, "-l", str(root / "postgres.log"), "-w", "-t", "120", "start")
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE)
        yield f"postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        subprocess.run(
            _as_postgres([*ctl, "-m", "immediate", "-w", "stop"]), check=False, capture_output=True, cwd=root
        )
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[str]:
    """A Redis server on 127.0.0.1:``port`` without persistence; yields its URL."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RuntimeError("no redis-server: apt-get install redis-server (make test-distributed does)")
    root = Path(tempfile.mkdtemp(prefix="slipway-redis-"))
    log = (root / "redis.log").open("ab")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(root),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    try:
        wait_until("redis-server", answers, 60, interval=0.2, alive=lambda: proc.poll() is None)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
