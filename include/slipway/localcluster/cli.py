"""``slipway-local``: build, start, inspect, change and stop the embedded local cluster.

Every failure prints one line starting with ``error:`` and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from slipway.localcluster import binaries
from slipway.localcluster.cluster import ClusterError, LocalCluster
from slipway.localcluster.config import ClusterConfig, default_state_root
from slipway.localcluster.health import NotHealthy
from slipway.localcluster.kit import ETCD_VERSIONS, KUBERNETES_VERSIONS
from slipway.localcluster.workloads import install_samples


def _cluster(args: argparse.Namespace) -> LocalCluster:
    root = Path(args.state_dir) if args.state_dir else default_state_root()
    try:
        cfg = ClusterConfig.load(args.name, root)
    except FileNotFoundError:
        cfg = ClusterConfig(name=args.name, state_root=root)
    return LocalCluster(cfg)


def cmd_up(args: argparse.Namespace) -> int:
    root = Path(args.state_dir) if args.state_dir else default_state_root()
    if args.kubernetes_version not in KUBERNETES_VERSIONS:
        raise ClusterError(
            f"--kubernetes-version {args.kubernetes_version!r} is not in the local kit "
            f"({', '.join(KUBERNETES_VERSIONS)})"
        )
    if args.etcd_version not in ETCD_VERSIONS:
        raise ClusterError(
            f"--etcd-version {args.etcd_version!r} is not in the local kit ({', '.join(ETCD_VERSIONS)})"
        )
    cfg = ClusterConfig(
        name=args.name,
        state_root=root,
        base_port=args.base_port,
        nodes=args.nodes,
        kubernetes_version=args.kubernetes_version,
        etcd_version=args.etcd_version,
        kubelet_version=args.kubelet_version,
    )
    cluster = LocalCluster(cfg)
    started = time.monotonic()
    cluster.up()
    if args.workloads:
        install_samples(cluster.admin_client())
    print(f"cluster {cfg.name!r} up in {time.monotonic() - started:.1f}s: {cfg.server_url}")
    print(f"admin kubeconfig:        {cluster.admin_kubeconfig}")
    print(f"orchestrator kubeconfig: {cluster.orchestrator_kubeconfig}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stopped = _cluster(args).down(purge=args.purge)
    print(f"stopped {len(stopped)} processes" + (" and removed all state" if args.purge else ""))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    print(json.dumps(_cluster(args).status(), indent=2))
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    cluster.restart_component(args.component, args.version)
    print(f"{args.component} running {cluster.versions().get(args.component, '')}")
    return 0


def cmd_workloads(args: argparse.Namespace) -> int:
    applied = install_samples(_cluster(args).admin_client())
    print(f"applied {len(applied)} objects; all sample workloads available")
    return 0


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    print(cluster.admin_kubeconfig if args.identity == "admin" else cluster.orchestrator_kubeconfig)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    return binaries.main(args.releases)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="slipway-local", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("--name", default="slipway", help="cluster name (default: slipway)")
    p.add_argument(
        "--state-dir", default=None, help="state root (default: $SLIPWAY_STATE_DIR or ~/.local/state/slipway)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster (idempotent)")
    up.add_argument("--nodes", type=int, default=12, help="simulated worker nodes (default 12)")
    up.add_argument(
        "--base-port", type=int, default=31000, help="first of 100 loopback ports (default 31000)"
    )
    up.add_argument("--kubernetes-version", default=KUBERNETES_VERSIONS[0])
    up.add_argument("--etcd-version", default=ETCD_VERSIONS[0])
    up.add_argument(
        "--kubelet-version", default=None, help="simulated kubelets' version (default: control plane's)"
    )
    up.add_argument("--workloads", action="store_true", help="also install the sample workloads")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop every process")
    down.add_argument("--purge", action="store_true", help="also delete data, certificates and logs")
    down.set_defaults(func=cmd_down)
    sub.add_parser("status", help="which components run which version").set_defaults(func=cmd_status)
    restart = sub.add_parser("restart", help="restart one component, optionally at another version")
    restart.add_argument("component")
    restart.add_argument("--version", default=None)
    restart.set_defaults(func=cmd_restart)
    sub.add_parser("workloads", help="install the sample workloads").set_defaults(func=cmd_workloads)
    kc = sub.add_parser("kubeconfig", help="print the path of a kubeconfig")
    kc.add_argument("--identity", choices=("admin", "orchestrator"), default="admin")
    kc.set_defaults(func=cmd_kubeconfig)
    build = sub.add_parser("build", help="build the official binaries (cached by version)")
    build.add_argument("releases", nargs="*", help="product=version; default: the whole kit")
    build.set_defaults(func=cmd_build)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (ClusterError, NotHealthy, binaries.BinaryError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
