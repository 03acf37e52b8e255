"""``slipway-local``: build, start, inspect, change and stop the embedded local cluster.

Every failure prints one line starting with ``error:`` and exits non-zero. Arguments are
checked before anything is started, stopped or removed (:func:`validate_args`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from slipway.localcluster import binaries, components
from slipway.localcluster.cluster import ClusterError, LocalCluster
from slipway.localcluster.config import ClusterConfig, default_state_root, name_problem
from slipway.localcluster.health import NotHealthy
from slipway.localcluster.kit import (
    ETCD_VERSIONS,
    KUBERNETES_VERSIONS,
    Release,
    etcd_release,
    kubernetes_release,
)
from slipway.localcluster.workloads import install_samples

MAX_NODES = 5000


class CliError(ValueError):
    """A command line was refused; the message is ``--flag: reason`` on one line."""


def _root(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) if args.state_dir else default_state_root()


def _component_release(cfg: ClusterConfig, component: str, version: str | None) -> tuple[Release, str] | None:
    """The release and binary ``component`` would run at ``version`` (None for components
    that have no version of their own: the load balancer and kwok).

    :raises CliError: for an unknown component, or a version the kit does not have.
    """
    names = [components.etcd_name(i) for i in range(cfg.etcd_members)]
    names += [components.apiserver_name(i) for i in range(cfg.apiservers)]
    names += ["kube-controller-manager", "kube-scheduler"]
    if component not in [*names, "haproxy", "kwok"]:
        raise CliError(
            f"component: unknown component {component!r}; one of {', '.join([*names, 'haproxy', 'kwok'])}"
        )
    if component in ("haproxy", "kwok"):
        if version is not None:
            raise CliError(f"--version: {component} has no Kubernetes or etcd version to change")
        return None
    if version is None:
        return None
    if component.startswith("etcd-"):
        if version not in ETCD_VERSIONS:
            raise CliError(
                f"--version: etcd {version!r} is not in the local kit ({', '.join(ETCD_VERSIONS)})"
            )
        return etcd_release(version), "etcd"
    if version not in KUBERNETES_VERSIONS:
        raise CliError(
            f"--version: Kubernetes {version!r} is not in the local kit ({', '.join(KUBERNETES_VERSIONS)})"
        )
    binary = "kube-apiserver" if component.startswith("kube-apiserver-") else component
    return kubernetes_release(version, with_kubectl=False), binary


def validate_args(args: argparse.Namespace) -> None:
    """Refuse a bad command line before anything is started, stopped or removed.

    :raises CliError: ``--flag: reason``, one line.
    """
    problem = name_problem(args.name)
    if problem:
        raise CliError(f"--name: {problem}")
    if args.state_dir is not None and (not args.state_dir.strip() or "\x00" in args.state_dir):
        raise CliError(f"--state-dir: {args.state_dir!r} is not a folder")
    command = args.command
    if command == "up":
        if not 0 <= args.nodes <= MAX_NODES:
            raise CliError(f"--nodes: {args.nodes} must be between 0 and {MAX_NODES}")
        if not 1024 <= args.base_port <= 65000:
            raise CliError(f"--base-port: {args.base_port} must be between 1024 and 65000")
        for flag, value, known in (
            ("--kubernetes-version", args.kubernetes_version, KUBERNETES_VERSIONS),
            ("--etcd-version", args.etcd_version, ETCD_VERSIONS),
        ):
            if value not in known:
                raise CliError(f"{flag}: {value!r} is not in the local kit ({', '.join(known)})")
        if args.kubelet_version is not None and args.kubelet_version not in KUBERNETES_VERSIONS:
            raise CliError(
                f"--kubelet-version: {args.kubelet_version!r} is not in the local kit "
                f"({', '.join(KUBERNETES_VERSIONS)})"
            )
    if command == "down" and args.purge:
        state = _root(args) / args.name
        if state.exists() and not (state / "cluster.json").is_file():
            # Only a folder this CLI created (it holds cluster.json) is ever removed.
            raise CliError(f"--name: {state} holds no local cluster (no cluster.json); nothing is removed")
    if command == "restart":
        try:
            cfg = ClusterConfig.load(args.name, _root(args))
        except FileNotFoundError:
            cfg = ClusterConfig(name=args.name, state_root=_root(args))
        found = _component_release(cfg, args.component, args.version)
        if found is not None:
            release, name = found
            try:
                binaries.binary(release, name)
            except binaries.BinaryError as err:
                # Checked before the component is stopped: a restart must not end in a stop.
                raise CliError(f"--version: {err}") from None


def _cluster(args: argparse.Namespace) -> LocalCluster:
    root = _root(args)
    try:
        cfg = ClusterConfig.load(args.name, root)
    except FileNotFoundError:
        cfg = ClusterConfig(name=args.name, state_root=root)
    return LocalCluster(cfg)


def cmd_up(args: argparse.Namespace) -> int:
    root = _root(args)
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
        validate_args(args)
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
