"""Where the cluster differs: which node upgrader, control-plane upgrader and reader a run uses.

The platform is described by the Airflow connection ``slipway_platform`` (its extras),
so the DAGs stay the same for the local cluster and for kubeadm clusters.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kubernetes import client
from pydantic import BaseModel, ConfigDict, ValidationError

from slipway.etcd import EtcdEndpoints
from slipway.inventory import ControlPlaneReader, KubeadmControlPlaneReader, LocalControlPlaneReader
from slipway.kube.client import api_client
from slipway.upgraders.controlplane import ControlPlaneUpgrader, EtcdRestorer, FaultInjector
from slipway.upgraders.nodes import KubeadmNodeUpgrader, LocalInPlaceUpgrader, NodeUpgrader
from slipway.upgraders.surge import LocalBlueGreenUpgrader, LocalSurgeUpgrader

# Strategies that add nodes need a platform that can create them (a cloud node pool, or
# the local cluster playing one); a kubeadm cluster's machines come from outside Slipway.
TWIN_STRATEGIES = ("surge", "blue-green")


class PlatformSettings(BaseModel):
    """The ``slipway_platform`` connection's extras."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    platform: Literal["local", "kubeadm"] = "local"
    cluster_name: str = "slipway"
    state_root: str | None = None
    admin_kubeconfig: str | None = None
    # The kubeadm upgrade pods' image, pinned by digest (a tag can be moved): required on kubeadm.
    kubeadm_image: str | None = None
    # etcd access for kubeadm clusters (files on the Airflow worker, never their contents).
    etcd_endpoints: list[str] = []
    etcd_bin_dir: str = "/usr/local/bin"
    etcd_cacert: str | None = None
    etcd_cert: str | None = None
    etcd_key: str | None = None
    # The scheduled DAGs whose runs may change this cluster on their own. None by default: a
    # DAG someone unpaused still refuses a cluster nobody enabled for it (manual runs are not
    # affected; a GitOps-triggered upgrade is a manual run of the upgrade DAG).
    scheduled_dags: list[Literal["k8s_worker_upgrade", "k8s_gitops_sync"]] = []


class PlatformError(ValueError):
    pass


def refuse_unless_enabled_for_schedule(settings: PlatformSettings, dag_id: str, run_type: object) -> None:
    """A scheduled run changes only a cluster whose platform connection lists its DAG."""
    if str(getattr(run_type, "value", run_type)) != "scheduled" or dag_id in settings.scheduled_dags:
        return
    raise PlatformError(
        f"slipway_platform.scheduled_dags: cluster {settings.cluster_name!r} is not enabled for "
        f"scheduled runs of {dag_id}; add {dag_id!r} to the platform connection's scheduled_dags "
        "to let them change it"
    )


@dataclass(frozen=True)
class Capabilities:
    """What a platform lets Slipway do. The DAG consults these, never whether a method exists.

    :param etcd_access: Slipway reaches etcd's client API (health, hashes, snapshots).
    :param data_restore: it can restore etcd from a snapshot (stop the writers, restore every member).
    :param add_nodes: it can create nodes (surge and blue-green twins).
    :param run_pods_on_nodes: nodes run real pods (the kubeadm upgrade pods); kwok nodes do not.
    :param fault_injection: it honours the game-day ConfigMap slipway-system/slipway-chaos;
        never a production platform.
    """

    etcd_access: bool
    data_restore: bool
    add_nodes: bool
    run_pods_on_nodes: bool
    fault_injection: bool

    def to_dict(self) -> dict[str, bool]:
        return dict(self.__dict__)


def parse_settings(extra: dict[str, Any]) -> PlatformSettings:
    """The connection's extras, validated; every problem named by its key, on one line.

    :raises PlatformError: ``connection slipway_platform extras refused: key: reason; ...``.
    """
    from slipway.localcluster.config import name_problem

    refused = "connection slipway_platform extras refused"
    if not isinstance(extra, dict):
        raise PlatformError(f"{refused}: extras: must be a JSON object, got {type(extra).__name__}")
    try:
        settings = PlatformSettings.model_validate(extra)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise PlatformError(f"{refused}: {problems}") from err
    found = [f"cluster_name: {problem}"] if (problem := name_problem(settings.cluster_name)) else []
    for key in ("state_root", "admin_kubeconfig", "etcd_bin_dir", "etcd_cacert", "etcd_cert", "etcd_key"):
        path = getattr(settings, key)
        # Files on the Airflow worker: absolute, so no working directory decides which.
        if path is not None and (not path.startswith("/") or "\x00" in path):
            found.append(f"{key}: {path!r} is not an absolute path")
    for i, endpoint in enumerate(settings.etcd_endpoints):
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("https", "http") or not parts.hostname or "@" in parts.netloc:
            found.append(f"etcd_endpoints[{i}]: {endpoint!r} is not https://host:port (without credentials)")
    if settings.platform == "kubeadm":
        from slipway.upgraders.kubeadm import check_image

        try:
            check_image(settings.kubeadm_image or "")
        except ValueError as err:
            found.append(str(err))
    if found:
        raise PlatformError(f"{refused}: {'; '.join(found)}")
    return settings


@dataclass
class Platform:
    """Factories for the platform-specific parts; Slipway's own steps use ``api`` (orchestrator)."""

    settings: PlatformSettings
    api: client.ApiClient
    # Runs a kubeadm pod to its end; the Airflow adapter passes the provider-backed runner.
    run_pod: Any = None
    # The run whose kubeadm pods these are (their run-unique names); the Airflow run id.
    run_id: str = ""

    @property
    def capabilities(self) -> Capabilities:
        if self.settings.platform == "local":
            return Capabilities(
                etcd_access=True,
                data_restore=True,
                add_nodes=True,
                run_pods_on_nodes=False,
                fault_injection=True,
            )
        return Capabilities(
            etcd_access=bool(self.settings.etcd_endpoints),
            data_restore=False,  # a kubeadm etcd restore is the printed restore plan, run by a human
            add_nodes=False,
            run_pods_on_nodes=True,
            fault_injection=False,
        )

    def etcd_restorer(self) -> EtcdRestorer:
        """The data rollback, on platforms with ``capabilities.data_restore``."""
        if not self.capabilities.data_restore:
            raise PlatformError(
                f"the {self.settings.platform} platform cannot restore etcd by itself: "
                "follow the etcd restore plan"
            )
        from slipway.upgraders.local_controlplane import LocalControlPlaneUpgrader

        return LocalControlPlaneUpgrader(self.local_cluster())

    def fault_injector(self) -> FaultInjector:
        """Game-day faults, on platforms with ``capabilities.fault_injection`` (the local cluster)."""
        if not self.capabilities.fault_injection:
            raise PlatformError(f"the {self.settings.platform} platform takes no injected faults")
        from slipway.upgraders.local_controlplane import LocalControlPlaneUpgrader

        return LocalControlPlaneUpgrader(self.local_cluster())

    def _admin_api(self) -> client.ApiClient:
        if not self.settings.admin_kubeconfig:
            raise PlatformError("slipway_platform: admin_kubeconfig is required for the local platform")
        return api_client(Path(self.settings.admin_kubeconfig))

    def local_cluster(self) -> Any:
        from slipway.localcluster.cluster import LocalCluster
        from slipway.localcluster.config import ClusterConfig

        root = Path(self.settings.state_root) if self.settings.state_root else None
        return LocalCluster(ClusterConfig.load(self.settings.cluster_name, root))

    def control_plane_reader(self) -> ControlPlaneReader:
        if self.settings.platform == "local":
            return LocalControlPlaneReader(self.local_cluster())
        return KubeadmControlPlaneReader(self.api)

    def etcd(self) -> EtcdEndpoints:
        if self.settings.platform == "local":
            cluster = self.local_cluster()
            etcd_version = cluster.versions().get("etcd-0")
            return EtcdEndpoints.for_local_cluster(cluster.cfg, etcd_version)
        if not self.settings.etcd_endpoints:
            raise PlatformError("slipway_platform: etcd_endpoints are required for the kubeadm platform")
        return EtcdEndpoints(
            endpoints=tuple(self.settings.etcd_endpoints),
            bin_dir=Path(self.settings.etcd_bin_dir),
            cacert=Path(self.settings.etcd_cacert) if self.settings.etcd_cacert else None,
            cert=Path(self.settings.etcd_cert) if self.settings.etcd_cert else None,
            key=Path(self.settings.etcd_key) if self.settings.etcd_key else None,
        )

    def control_plane_upgrader(self) -> ControlPlaneUpgrader:
        if self.settings.platform == "local":
            from slipway.upgraders.local_controlplane import LocalControlPlaneUpgrader

            return LocalControlPlaneUpgrader(self.local_cluster())
        from slipway.upgraders.kubeadm import KubeadmControlPlaneUpgrader

        return KubeadmControlPlaneUpgrader(
            client.CoreV1Api(self.api), self.run_pod, self.settings.kubeadm_image or "", run_id=self.run_id
        )

    def strategy_problem(self, strategy: str) -> str | None:
        """Why this platform cannot run ``strategy``, or None (checked before anything changes)."""
        if strategy in TWIN_STRATEGIES and not self.capabilities.add_nodes:
            return (
                f"{strategy} adds nodes, which the {self.settings.platform} platform cannot do "
                "(its machines are provisioned outside Slipway); use strategy=in-place"
            )
        return None

    def node_upgrader(self, strategy: str) -> NodeUpgrader:
        problem = self.strategy_problem(strategy)
        if problem:
            raise PlatformError(f"strategy: {problem}")
        if self.settings.platform == "local":
            admin = self._admin_api()
            if strategy == "surge":
                return LocalSurgeUpgrader(admin)
            if strategy == "blue-green":
                return self.blue_green()
            return LocalInPlaceUpgrader(admin)
        if not self.capabilities.run_pods_on_nodes:
            raise PlatformError(
                f"strategy: the {self.settings.platform} platform runs no upgrade pods on nodes"
            )
        return KubeadmNodeUpgrader(
            self.api, self.run_pod, self.settings.kubeadm_image or "", run_id=self.run_id
        )

    def blue_green(self) -> LocalBlueGreenUpgrader:
        problem = self.strategy_problem("blue-green")
        if problem:
            raise PlatformError(f"strategy: {problem}")
        return LocalBlueGreenUpgrader(self._admin_api())
