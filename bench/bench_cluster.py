"""Local cluster and preflight figures at 12 and 1,000 nodes: start time, the cluster's peak
memory (sum of every process's VmHWM), and the time and peak memory of a full preflight
(every check, including the proven etcd backup). Prints one line per size.

    python bench/bench_cluster.py [--sizes 12 1000] [--base-port 30300]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from slipway.check_names import CHECK_TASKS
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.config import ClusterConfig
from slipway.localcluster.kit import KUBERNETES_NEW
from slipway.localcluster.workloads import install_samples
from slipway.models import parse_request
from slipway.platform import Platform, PlatformSettings
from slipway.preflight import Preflight


def peak_rss_mib(cluster: LocalCluster) -> float:
    total_kib = 0
    for name in cluster.sup.names():
        info = cluster.sup.info(name)
        if info is None:
            continue
        for line in Path(f"/proc/{info.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


def preflight(cluster: LocalCluster, artefacts: Path) -> tuple[float, int]:
    settings = PlatformSettings(
        platform="local",
        cluster_name=cluster.cfg.name,
        state_root=str(cluster.cfg.state_root),
        admin_kubeconfig=str(cluster.admin_kubeconfig),
    )
    run = Preflight(
        Platform(settings, cluster.orchestrator_client()),
        parse_request({"target_version": KUBERNETES_NEW}),
        artefacts,
    )
    started = time.monotonic()
    run.plan_summary()
    findings = [r for name in CHECK_TASKS for r in run.run(name)]
    return time.monotonic() - started, len(findings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 1000])
    parser.add_argument("--base-port", type=int, default=30300)
    args = parser.parse_args(argv)
    for size in args.sizes:
        root = Path(tempfile.mkdtemp(prefix="slipway-bench-"))
        cluster = LocalCluster(
            ClusterConfig(name=f"bench-{size}", base_port=args.base_port, nodes=size, state_root=root)
        )
        try:
            started = time.monotonic()
            cluster.up(node_timeout=1200)
            up_seconds = time.monotonic() - started
            install_samples(cluster.admin_client(), timeout=1200)
            seconds, findings = preflight(cluster, root / "artefacts")
            peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"{size:5d} nodes: cluster up {up_seconds:.1f}s, "
                f"cluster peak RSS {peak_rss_mib(cluster):.0f} MiB; "
                f"preflight {seconds:.1f}s ({findings} results), "
                f"preflight process peak RSS {peak_self:.0f} MiB",
                flush=True,
            )
        finally:
            cluster.down(purge=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
