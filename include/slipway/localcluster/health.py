"""Health probes over HTTPS with the cluster's own certificates, and waiting on them."""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Callable
from pathlib import Path


class NotHealthy(RuntimeError):
    pass


def https_get(
    host: str,
    port: int,
    path: str,
    *,
    ca: Path | None = None,
    cert: tuple[Path, Path] | None = None,
    timeout: float = 3.0,
) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else ssl._create_unverified_context()
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def probe(host: str, port: int, path: str, **kwargs: object) -> bool:
    try:
        status, _ = https_get(host, port, path, **kwargs)  # type: ignore[arg-type]
    except (OSError, http.client.HTTPException, ssl.SSLError):
        return False
    return status == 200


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.25,
) -> None:
    """Poll ``check`` until it holds; fail early when ``alive`` says the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise NotHealthy(f"{what}: the process exited")
        time.sleep(interval)
    raise NotHealthy(f"{what}: not healthy after {timeout:.0f}s")
