"""The local HA cluster: 3 etcd members, 2 kube-apiservers behind HAProxy, controller-manager,
scheduler and kwok, all official binaries, started and stopped one component at a time.

The control surface the local upgraders drive is :meth:`LocalCluster.restart_component`:
stop component X, start it again with version V, wait until it is healthy.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources
from pathlib import Path

from kubernetes import client

from slipway.kube.client import api_client, apply_manifest, load_manifest
from slipway.localcluster import binaries, certs, components, haproxy, nodes
from slipway.localcluster.config import ClusterConfig
from slipway.localcluster.health import NotHealthy, probe, wait_until
from slipway.localcluster.kit import etcd_release, kubernetes_release, kwok_release
from slipway.localcluster.processes import ProcessError, Supervisor, port_in_use

ORCHESTRATOR_GROUP = "slipway:orchestrators"
ORCHESTRATOR_USER = "slipway-orchestrator"
RBAC_MANIFEST = Path(str(resources.files("slipway") / "manifests" / "orchestrator-rbac.yaml"))
KWOK_STAGES = Path(str(resources.files("slipway") / "localcluster" / "kwok-stages.yaml"))


class ClusterError(RuntimeError):
    """A one-line reason the cluster could not be started, changed or stopped."""


class LocalCluster:
    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.sup = Supervisor(cfg.run_dir, cfg.log_dir)

    # ---- identities -------------------------------------------------------------
    @property
    def admin_kubeconfig(self) -> Path:
        return self.cfg.state_dir / "admin.kubeconfig"

    @property
    def orchestrator_kubeconfig(self) -> Path:
        return self.cfg.state_dir / "orchestrator.kubeconfig"

    def admin_client(self) -> client.ApiClient:
        return api_client(self.admin_kubeconfig)

    def orchestrator_client(self) -> client.ApiClient:
        return api_client(self.orchestrator_kubeconfig)

    # ---- component bookkeeping -------------------------------------------------
    def component_names(self) -> list[str]:
        return (
            [components.etcd_name(i) for i in range(self.cfg.etcd_members)]
            + [components.apiserver_name(i) for i in range(self.cfg.apiservers)]
            + ["haproxy", "kube-controller-manager", "kube-scheduler", "kwok"]
        )

    def _versions_file(self) -> Path:
        return self.cfg.state_dir / "versions.json"

    def versions(self) -> dict[str, str]:
        """Which release each component runs (or last ran), as the cluster recorded it."""
        if not self._versions_file().exists():
            return {}
        data: dict[str, str] = json.loads(self._versions_file().read_text())
        return data

    def _record_version(self, name: str, version: str) -> None:
        data = self.versions() | {name: version}
        self._versions_file().write_text(json.dumps(data, indent=2, sort_keys=True))

    def _default_version(self, name: str) -> str:
        recorded = self.versions().get(name)
        if recorded:
            return recorded
        return self.cfg.etcd_version if name.startswith("etcd-") else self.cfg.kubernetes_version

    # ---- lifecycle ---------------------------------------------------------------
    def up(self, *, node_timeout: float = 600.0) -> None:
        """Start every component that is not running; idempotent on a running cluster."""
        try:
            self.cfg.validate()
        except ValueError as err:
            raise ClusterError(str(err)) from err
        running = [n for n in self.component_names() if self.sup.is_running(n)]
        if len(running) == len(self.component_names()):
            return
        if running:
            self.sup.stop_all()
            raise ClusterError(
                f"cluster {self.cfg.name!r} was half-started ({', '.join(running)} running, "
                f"{len(self.component_names()) - len(running)} missing); stopped what ran: "
                "run `slipway-local up` again"
            )
        self._check_binaries()
        self._check_ports()
        self.cfg.save()
        try:
            self._start_all(node_timeout)
        except (NotHealthy, ProcessError, haproxy.HAProxyMissing, binaries.BinaryError, OSError) as err:
            self.sup.stop_all()
            raise ClusterError(
                f"cluster {self.cfg.name!r} did not start: {err} (logs: {self.cfg.log_dir})"
            ) from err

    def _check_binaries(self) -> None:
        wanted = {
            etcd_release(self._default_version(components.etcd_name(0))),
            kubernetes_release(self._default_version("kube-apiserver-0")),
            kwok_release(),
        }
        missing = [r.key for r in wanted if not binaries.is_available(r)]
        if missing:
            raise ClusterError(f"binaries not built: {', '.join(sorted(missing))}; run `make binaries`")
        try:
            haproxy.haproxy_binary()
        except haproxy.HAProxyMissing as err:
            raise ClusterError(str(err)) from err

    def _check_ports(self) -> None:
        for port, role in sorted(self.cfg.all_ports().items()):
            if port_in_use(port):
                raise ClusterError(
                    f"port {port} ({role}) is already in use on 127.0.0.1: stop what holds it "
                    "or choose another --base-port"
                )

    def _start_all(self, node_timeout: float) -> None:
        self._write_pki()
        fresh = not (self.cfg.state_dir / "etcd").exists()
        for i in range(self.cfg.etcd_members):
            self._start_etcd(i, self._default_version(components.etcd_name(i)), new_cluster=fresh)
        for i in range(self.cfg.etcd_members):
            self.wait_etcd(i)
        for i in range(self.cfg.apiservers):
            self.start_component(components.apiserver_name(i))
        self.sup.start("haproxy", haproxy.haproxy_argv(self.cfg))
        wait_until("load balancer", self.lb_ready, 60, alive=lambda: self.sup.is_running("haproxy"))
        apply_manifest(self.admin_client(), load_manifest(RBAC_MANIFEST))
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            self.start_component(name)
        self._create_nodes(node_timeout)

    def _write_pki(self) -> None:
        pki = self.cfg.pki_dir
        pki.mkdir(parents=True, exist_ok=True)
        etcd_ca = certs.make_ca(pki, "etcd-ca", "slipway-etcd-ca")
        for i in range(self.cfg.etcd_members):
            certs.issue(
                etcd_ca,
                pki,
                f"etcd-server-{i}",
                components.etcd_name(i),
                dns=("localhost",),
                ips=("127.0.0.1",),
                server=True,
            )
        certs.issue(etcd_ca, pki, "apiserver-etcd-client", "kube-apiserver-etcd-client")
        certs.issue(etcd_ca, pki, "etcd-admin", "slipway-etcd-admin")
        ca = certs.make_ca(pki, "ca", "slipway-kubernetes-ca")
        certs.issue(
            ca,
            pki,
            "apiserver",
            "kube-apiserver",
            server=True,
            client=False,
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", "10.96.0.1"),
        )
        certs.make_service_account_keys(pki)
        identities = {
            "admin": ("kubernetes-admin", "system:masters"),
            "controller-manager": ("system:kube-controller-manager", None),
            "scheduler": ("system:kube-scheduler", None),
            # kwok plays every kubelet; the Node authorizer only lets a kubelet touch its
            # own node, so one process simulating all of them needs broad rights.
            "kwok": ("kwok-kubelets", "system:masters"),
            "orchestrator": (ORCHESTRATOR_USER, ORCHESTRATOR_GROUP),
        }
        for stem, (cn, org) in identities.items():
            pair = certs.issue(ca, pki, stem, cn, organization=org)
            certs.write_kubeconfig(
                self.cfg.state_dir / f"{stem}.kubeconfig", self.cfg.server_url, ca.cert, pair, stem
            )

    # ---- components ----------------------------------------------------------------
    def _start_etcd(self, i: int, version: str, *, new_cluster: bool) -> None:
        name = components.etcd_name(i)
        self.sup.start(name, components.etcd_argv(self.cfg, i, version, new_cluster=new_cluster))
        self._record_version(name, version)

    def wait_etcd(self, i: int, timeout: float = 60) -> None:
        name = components.etcd_name(i)
        wait_until(name, lambda: self.etcd_healthy(i), timeout, alive=lambda: self.sup.is_running(name))

    def etcd_healthy(self, i: int) -> bool:
        pki = self.cfg.pki_dir
        return probe(
            "127.0.0.1",
            self.cfg.etcd_client_port(i),
            "/health",
            ca=pki / "etcd-ca.crt",
            cert=(pki / "etcd-admin.crt", pki / "etcd-admin.key"),
        )

    def apiserver_ready(self, i: int) -> bool:
        return probe("127.0.0.1", self.cfg.apiserver_port(i), "/readyz", ca=self.cfg.pki_dir / "ca.crt")

    def lb_ready(self) -> bool:
        return probe("127.0.0.1", self.cfg.lb_port, "/readyz", ca=self.cfg.pki_dir / "ca.crt")

    def start_component(self, name: str, version: str | None = None, timeout: float = 120) -> None:
        """Start one component (at ``version``, default: the one it last ran) and wait until healthy."""
        version = version or self._default_version(name)
        cfg = self.cfg
        alive = lambda: self.sup.is_running(name)  # noqa: E731
        if name.startswith("etcd-"):
            i = int(name.rsplit("-", 1)[1])
            self._start_etcd(i, version, new_cluster=False)
            self.wait_etcd(i, timeout)
            return
        if name.startswith("kube-apiserver-"):
            i = int(name.rsplit("-", 1)[1])
            self.sup.start(name, components.apiserver_argv(cfg, i, version))
            wait_until(name, lambda: self.apiserver_ready(i), timeout, alive=alive)
        elif name == "kube-controller-manager":
            self.sup.start(name, components.controller_manager_argv(cfg, version))
            wait_until(
                name,
                lambda: probe("127.0.0.1", cfg.controller_manager_port, "/healthz"),
                timeout,
                alive=alive,
            )
        elif name == "kube-scheduler":
            self.sup.start(name, components.scheduler_argv(cfg, version))
            wait_until(name, lambda: probe("127.0.0.1", cfg.scheduler_port, "/healthz"), timeout, alive=alive)
        elif name == "kwok":
            self.sup.start(name, components.kwok_argv(cfg, KWOK_STAGES))
            wait_until(name, lambda: _http_ok(cfg.kwok_port, "/healthz"), timeout, alive=alive)
            return
        elif name == "haproxy":
            self.sup.start(name, haproxy.haproxy_argv(cfg))
            wait_until(name, self.lb_ready, timeout, alive=alive)
            return
        else:
            raise ClusterError(f"unknown component {name!r}: one of {', '.join(self.component_names())}")
        self._record_version(name, version)

    def stop_component(self, name: str, timeout: float = 60) -> bool:
        if name not in self.component_names():
            raise ClusterError(f"unknown component {name!r}: one of {', '.join(self.component_names())}")
        return self.sup.stop(name, timeout=timeout)

    def restart_component(self, name: str, version: str | None = None, timeout: float = 120) -> None:
        """The local upgraders' control surface: stop ``name`` gracefully, start it at ``version``."""
        self.stop_component(name)
        self.start_component(name, version, timeout)

    def _create_nodes(self, timeout: float) -> None:
        planned = nodes.planned_nodes(self.cfg)
        api = self.admin_client()
        nodes.create_nodes(api, planned)
        names = {n["metadata"]["name"] for n in planned}
        wait_until(
            f"{len(names)} nodes Ready",
            lambda: nodes.count_ready(api, names) == len(names),
            timeout,
            alive=lambda: self.sup.is_running("kwok"),
            interval=1.0,
        )

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop every process (apiservers gracefully); ``purge`` also deletes all state."""
        stopped = [n for n in reversed(self.component_names()) if self.sup.stop(n, timeout=30)]
        stopped += self.sup.stop_all()
        if purge and self.cfg.state_dir.exists():
            shutil.rmtree(self.cfg.state_dir)
        return stopped

    def status(self) -> dict[str, dict[str, object]]:
        return {
            name: {"running": self.sup.is_running(name), "version": self.versions().get(name, "")}
            for name in self.component_names()
        }

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        wait_until("load balancer", self.lb_ready, max(1.0, deadline - time.monotonic()))


def _http_ok(port: int, path: str) -> bool:
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
