"""Shape of a local cluster: where it keeps its files, which ports and versions it uses."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from slipway.localcluster.kit import ETCD_OLD, KUBERNETES_OLD

DEFAULT_POOLS = ("general", "compute", "memory")
POOL_SHAPES = {  # allocatable of a simulated node per pool: cpu millis, memory bytes, pods
    "general": (4000, 16 * 2**30, 110),
    "compute": (8000, 16 * 2**30, 110),
    "memory": (4000, 64 * 2**30, 110),
}
CONTROL_PLANE_SHAPE = (4000, 16 * 2**30, 110)
# The name becomes a folder under the state root that `down --purge` removes: a DNS-label-like
# name can never be "", "/", ".." or a path, so the purge stays inside the state root.
CLUSTER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


class ConfigError(ValueError):
    """A local cluster setting was refused; the message is ``field: reason`` on one line."""


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a local cluster (None when it can)."""
    if not isinstance(name, str) or not CLUSTER_NAME.match(name):
        shown = repr(name) if len(repr(name)) <= 40 else f"{repr(name)[:37]}..."
        return (
            f"{shown} is not a cluster name: 1-32 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return None


def default_state_root() -> Path:
    return Path(os.environ.get("SLIPWAY_STATE_DIR", Path.home() / ".local" / "state" / "slipway"))


@dataclass
class ClusterConfig:
    """Everything that decides how a local cluster is laid out; stored beside its state."""

    name: str = "slipway"
    base_port: int = 31000
    etcd_members: int = 3
    apiservers: int = 2
    control_plane_nodes: int = 3
    nodes: int = 12
    pools: tuple[str, ...] = DEFAULT_POOLS
    kubernetes_version: str = KUBERNETES_OLD
    etcd_version: str = ETCD_OLD
    # Simulated kubelets may lag the control plane (up to three minors, as the skew policy allows).
    kubelet_version: str | None = None
    state_root: Path = field(default_factory=default_state_root)

    def __post_init__(self) -> None:
        # Checked on construction: no path is ever derived from a bad name.
        problem = name_problem(self.name)
        if problem:
            raise ConfigError(f"name: {problem}")

    @property
    def state_dir(self) -> Path:
        return self.state_root / self.name

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    # Port layout: one block of 100 ports from base_port, so two clusters never collide
    # as long as their bases are 100 apart.
    def etcd_client_port(self, i: int) -> int:
        return self.base_port + 1 + i

    def etcd_peer_port(self, i: int) -> int:
        return self.base_port + 11 + i

    def etcd_metrics_port(self, i: int) -> int:
        return self.base_port + 21 + i

    def apiserver_port(self, i: int) -> int:
        return self.base_port + 41 + i

    @property
    def lb_port(self) -> int:
        return self.base_port + 40

    @property
    def haproxy_stats_port(self) -> int:
        return self.base_port + 39

    @property
    def controller_manager_port(self) -> int:
        return self.base_port + 57

    @property
    def scheduler_port(self) -> int:
        return self.base_port + 59

    @property
    def kwok_port(self) -> int:
        return self.base_port + 80

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.lb_port}"

    def all_ports(self) -> dict[int, str]:
        ports = {self.lb_port: "load balancer", self.haproxy_stats_port: "load balancer stats"}
        for i in range(self.etcd_members):
            ports[self.etcd_client_port(i)] = f"etcd-{i} client"
            ports[self.etcd_peer_port(i)] = f"etcd-{i} peer"
            ports[self.etcd_metrics_port(i)] = f"etcd-{i} metrics"
        for i in range(self.apiservers):
            ports[self.apiserver_port(i)] = f"kube-apiserver-{i}"
        ports[self.controller_manager_port] = "kube-controller-manager"
        ports[self.scheduler_port] = "kube-scheduler"
        ports[self.kwok_port] = "kwok"
        return ports

    def validate(self) -> None:
        """Refuse a layout that cannot work, naming the field."""
        problem = name_problem(self.name)
        if problem:
            raise ConfigError(f"name: {problem}")
        if not 1024 <= self.base_port <= 65000:
            raise ValueError(f"base_port: {self.base_port} must be between 1024 and 65000")
        if self.etcd_members not in (1, 3, 5):
            raise ValueError(f"etcd_members: {self.etcd_members} must be 1, 3 or 5 (an odd quorum)")
        if not 1 <= self.apiservers <= 9:
            raise ValueError(f"apiservers: {self.apiservers} must be between 1 and 9")
        if not 0 <= self.nodes <= 5000:
            raise ValueError(f"nodes: {self.nodes} must be between 0 and 5000")
        unknown = [p for p in self.pools if p not in POOL_SHAPES]
        if unknown or not self.pools:
            raise ValueError(f"pools: unknown pool(s) {unknown}; known: {', '.join(POOL_SHAPES)}")

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = asdict(self) | {"state_root": str(self.state_root), "pools": list(self.pools)}
        (self.state_dir / "cluster.json").write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, name: str = "slipway", state_root: Path | None = None) -> ClusterConfig:
        problem = name_problem(name)
        if problem:
            raise ConfigError(f"name: {problem}")
        root = state_root or default_state_root()
        path = root / name / "cluster.json"
        if not path.exists():
            raise FileNotFoundError(f"no local cluster named {name!r} under {root}: run `slipway-local up`")
        data = json.loads(path.read_text())
        data["state_root"] = Path(data["state_root"])
        data["pools"] = tuple(data["pools"])
        return cls(**data)
