"""The load balancer in front of the kube-apiservers (HAProxy, as many HA clusters use).

It health-checks ``/readyz`` every second and takes an apiserver out after two
failures, so an apiserver that is shutting down (its ``/readyz`` fails at once while
it keeps serving for the shutdown delay) is drained before it stops listening.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from slipway.localcluster.components import apiserver_name
from slipway.localcluster.config import ClusterConfig


class HAProxyMissing(RuntimeError):
    pass


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )
    if not found:
        raise HAProxyMissing("haproxy not found: install it (Debian: apt-get install haproxy)")
    return found


def render_config(cfg: ClusterConfig) -> str:
    servers = "\n".join(
        f"    server {apiserver_name(i)} 127.0.0.1:{cfg.apiserver_port(i)}" for i in range(cfg.apiservers)
    )
    return f"""global
    maxconn 4000
    stats socket {cfg.run_dir / "haproxy.sock"} mode 600 level admin

defaults
    mode tcp
    timeout connect 3s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch

frontend kube-apiserver
    bind 127.0.0.1:{cfg.lb_port}
    default_backend kube-apiservers

backend kube-apiservers
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server check check-ssl verify none inter 1s fall 2 rise 2
{servers}

frontend stats
    mode http
    bind 127.0.0.1:{cfg.haproxy_stats_port}
    stats enable
    stats uri /stats
"""


def write_config(cfg: ClusterConfig) -> Path:
    path = cfg.state_dir / "haproxy.cfg"
    path.write_text(render_config(cfg))
    return path


def haproxy_argv(cfg: ClusterConfig) -> list[str]:
    return [haproxy_binary(), "-db", "-f", str(write_config(cfg))]
