"""``[core] hostname_callable`` for the test's Celery workers: both run on this host, so the
FQDN would name them alike; each reports the name its environment gives it instead, and the
task instances' ``hostname`` tells which worker ran them."""

from __future__ import annotations

import os

VARIABLE = "SLIPWAY_WORKER_HOSTNAME"


def worker_hostname() -> str:
    return os.environ[VARIABLE]
