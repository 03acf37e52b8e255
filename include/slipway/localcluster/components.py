"""Command lines of the control-plane components, built from the cluster's layout.

Flags follow what kubeadm sets, plus the graceful-shutdown settings that let one
kube-apiserver restart behind the load balancer without a failed request.
"""

from __future__ import annotations

from pathlib import Path

from slipway.localcluster import audit, binaries
from slipway.localcluster.config import ClusterConfig
from slipway.localcluster.kit import etcd_release, kubernetes_release, kwok_release

# /readyz fails at once on SIGTERM; the apiserver keeps serving for this long so the
# load balancer's health check (every second, down after two failures) drains it first.
APISERVER_SHUTDOWN_DELAY_SECONDS = 5
SERVICE_CIDR = "10.96.0.0/16"


def etcd_name(i: int) -> str:
    return f"etcd-{i}"


def apiserver_name(i: int) -> str:
    return f"kube-apiserver-{i}"


def etcd_argv(cfg: ClusterConfig, i: int, version: str, *, new_cluster: bool) -> list[str]:
    pki = cfg.pki_dir
    peers = ",".join(
        f"{etcd_name(j)}=https://127.0.0.1:{cfg.etcd_peer_port(j)}" for j in range(cfg.etcd_members)
    )
    return [
        str(binaries.binary(etcd_release(version), "etcd")),
        f"--name={etcd_name(i)}",
        f"--data-dir={cfg.state_dir / 'etcd' / etcd_name(i)}",
        f"--listen-client-urls=https://127.0.0.1:{cfg.etcd_client_port(i)}",
        f"--advertise-client-urls=https://127.0.0.1:{cfg.etcd_client_port(i)}",
        f"--listen-peer-urls=https://127.0.0.1:{cfg.etcd_peer_port(i)}",
        f"--initial-advertise-peer-urls=https://127.0.0.1:{cfg.etcd_peer_port(i)}",
        f"--listen-metrics-urls=http://127.0.0.1:{cfg.etcd_metrics_port(i)}",
        f"--initial-cluster={peers}",
        f"--initial-cluster-state={'new' if new_cluster else 'existing'}",
        f"--initial-cluster-token=slipway-{cfg.name}",
        f"--cert-file={pki / f'etcd-server-{i}.crt'}",
        f"--key-file={pki / f'etcd-server-{i}.key'}",
        f"--trusted-ca-file={pki / 'etcd-ca.crt'}",
        "--client-cert-auth=true",
        f"--peer-cert-file={pki / f'etcd-server-{i}.crt'}",
        f"--peer-key-file={pki / f'etcd-server-{i}.key'}",
        f"--peer-trusted-ca-file={pki / 'etcd-ca.crt'}",
        "--peer-client-cert-auth=true",
        "--snapshot-count=10000",
        "--quota-backend-bytes=2147483648",
        "--logger=zap",
        "--log-level=warn",
    ]


def etcd_endpoints(cfg: ClusterConfig) -> list[str]:
    return [f"https://127.0.0.1:{cfg.etcd_client_port(i)}" for i in range(cfg.etcd_members)]


def apiserver_argv(cfg: ClusterConfig, i: int, version: str) -> list[str]:
    pki = cfg.pki_dir
    return [
        str(binaries.binary(kubernetes_release(version), "kube-apiserver")),
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={cfg.apiserver_port(i)}",
        f"--etcd-servers={','.join(etcd_endpoints(cfg))}",
        f"--etcd-cafile={pki / 'etcd-ca.crt'}",
        f"--etcd-certfile={pki / 'apiserver-etcd-client.crt'}",
        f"--etcd-keyfile={pki / 'apiserver-etcd-client.key'}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        # 1.37 refuses a loopback advertise address for the `kubernetes` Service endpoints;
        # nothing in a kwok cluster dials them, so the reconciler is off for every version.
        "--endpoint-reconciler-type=none",
        f"--shutdown-delay-duration={APISERVER_SHUTDOWN_DELAY_SECONDS}s",
        *_watch_grace_flag(version),
        "--profiling=false",
        # Who asked for what and what RBAC decided (Metadata only): the proof of least privilege.
        f"--audit-policy-file={audit.write_policy(cfg)}",
        f"--audit-log-path={audit.log_path(cfg, i)}",
        f"--audit-log-maxsize={audit.MAX_SIZE_MB}",
        f"--audit-log-maxbackup={audit.MAX_BACKUPS}",
        "--v=0",
    ]


def _watch_grace_flag(version: str) -> list[str]:
    # Added in 1.27 (1.25's kube-apiserver refuses it as an unknown flag); before it, open
    # watches simply end at shutdown and clients re-list.
    minor = int(version.split(".")[1])
    return ["--shutdown-watch-termination-grace-period=5s"] if minor >= 27 else []


def controller_manager_argv(cfg: ClusterConfig, version: str) -> list[str]:
    pki = cfg.pki_dir
    kubeconfig = cfg.state_dir / "controller-manager.kubeconfig"
    return [
        str(binaries.binary(kubernetes_release(version), "kube-controller-manager")),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={cfg.controller_manager_port}",
        "--leader-elect=true",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--controllers=*,bootstrapsigner,tokencleaner",
        "--v=0",
    ]


def scheduler_argv(cfg: ClusterConfig, version: str) -> list[str]:
    kubeconfig = cfg.state_dir / "scheduler.kubeconfig"
    return [
        str(binaries.binary(kubernetes_release(version), "kube-scheduler")),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={cfg.scheduler_port}",
        "--leader-elect=true",
        "--v=0",
    ]


def kwok_argv(cfg: ClusterConfig, stages: Path) -> list[str]:
    return [
        str(binaries.binary(kwok_release(), "kwok")),
        f"--kubeconfig={cfg.state_dir / 'kwok.kubeconfig'}",
        f"--config={stages}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--node-lease-duration-seconds=40",
        "--cidr=10.244.0.0/16",
        "--node-ip=10.0.0.1",
        f"--server-address=127.0.0.1:{cfg.kwok_port}",
    ]
