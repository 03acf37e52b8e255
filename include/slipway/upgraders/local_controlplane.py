"""Control-plane upgrader for the local HA cluster (``slipway.localcluster``).

It drives the cluster through its control surface (stop/start component X at version V)
and adds what a careful operator adds around each restart:

- etcd: one member at a time, the leader last; the other members must be healthy
  (quorum survives the stop); after the restart every member is healthy with a leader;
  after the last member all members agree on ``hashkv`` at one revision. Rolling back
  below the cluster version goes through etcd's downgrade protocol
  (``etcdctl downgrade enable``) before any binary is swapped.
- kube-apiserver: one instance at a time with no failed request. SIGTERM makes its
  ``/readyz`` fail at once; HAProxy (checks every 1 s, out after 2 failures) takes it out
  during the apiserver's shutdown delay; only then does it stop listening. The new
  version starts, and the next instance waits until HAProxy reports this one UP again.
  Each step first checks the version-skew policy and that another instance is UP.
- controller-manager and scheduler: skew check, then restart (leader election covers
  the gap).

Running versions come from the components themselves
(:class:`~slipway.inventory.LocalControlPlaneReader`), etcd operations from
:mod:`slipway.etcd`. Data rollback (§5.1) is :meth:`LocalControlPlaneUpgrader.restore_etcd`;
game-day faults (the local platform only) are :meth:`LocalControlPlaneUpgrader.diverge_etcd_member`.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import logging
import secrets
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from slipway.etcd import (
    DEFAULT_BUMP_REVISION,
    Consistency,
    EtcdEndpoints,
    EtcdError,
    check_consistency,
    endpoint_status,
    key_count,
    move_leader_away,
    restore_snapshot,
    snapshot_status,
)
from slipway.etcd.client import etcdctl, put
from slipway.etcd.faults import overwrite_in_place
from slipway.etcd.store import ProvenSnapshot, SnapshotRefused, verify_digest
from slipway.inventory import LocalControlPlaneReader
from slipway.localcluster import binaries, components
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import NotHealthy, https_get, probe, wait_until
from slipway.localcluster.kit import etcd_release, kubernetes_release
from slipway.upgraders.controlplane import (
    PAST_TENSE,
    Action,
    ComponentRef,
    RestoreResult,
    StepFailed,
    StepRefused,
    StepResult,
    move_component,
)
from slipway.versions import Version, skew_violations

log = logging.getLogger(__name__)

# Written by the game-day fault outside /registry: the apiserver never reads it.
FAULT_MARKER_KEY = "/slipway-fault/diverged"
LB_BACKEND = "kube-apiservers"  # the backend name in slipway.localcluster.haproxy
LB_UP = "UP"
HTTP_OK = 200


@dataclass(frozen=True)
class LocalTimeouts:
    """Explicit limits for each wait, in seconds; the defaults suit a loaded 2-core machine."""

    component_start: float = 120.0
    component_stop: float = 60.0
    lb_drain: float = 30.0
    lb_up: float = 60.0
    etcd_quorum: float = 60.0
    etcd_hash: float = 60.0
    etcd_downgrade: float = 120.0
    version_report: float = 30.0


class LocalControlPlaneUpgrader:
    """:class:`~slipway.upgraders.controlplane.ControlPlaneUpgrader` for a :class:`LocalCluster`.

    :param allow_api_downtime: permit restarting the only kube-apiserver that is UP.
    """

    def __init__(
        self,
        cluster: LocalCluster,
        timeouts: LocalTimeouts | None = None,
        *,
        allow_api_downtime: bool = False,
    ) -> None:
        self.cluster = cluster
        self.cfg = cluster.cfg
        self.timeouts = timeouts or LocalTimeouts()
        self.allow_api_downtime = allow_api_downtime
        self.reader = LocalControlPlaneReader(cluster)

    @cached_property
    def _core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.cluster.orchestrator_client())

    # ---- the protocol --------------------------------------------------------------
    def components(self) -> list[ComponentRef]:
        members = [components.etcd_name(i) for i in range(self.cfg.etcd_members)]
        leader = self.etcd_leader()
        # The leader goes last: every restart before it keeps the leadership where it is.
        members = [m for m in members if m != leader] + [m for m in members if m == leader]
        return [ComponentRef(kind="etcd", name=m) for m in members] + self._kube_components()

    def _kube_components(self) -> list[ComponentRef]:
        return [
            *(
                ComponentRef(kind="kube-apiserver", name=components.apiserver_name(i))
                for i in range(self.cfg.apiservers)
            ),
            ComponentRef(kind="kube-controller-manager", name="kube-controller-manager"),
            ComponentRef(kind="kube-scheduler", name="kube-scheduler"),
        ]

    def current_version(self, ref: ComponentRef) -> str | None:
        return self.reader.versions().get(ref.kind, {}).get(ref.name)

    def upgrade(self, ref: ComponentRef, version: str) -> StepResult:
        return self._move(ref, version, "upgrade")

    def rollback(self, ref: ComponentRef, version: str) -> StepResult:
        return self._move(ref, version, "rollback")

    def verify(self, ref: ComponentRef) -> bool:
        if ref.kind == "etcd":
            return self.cluster.etcd_healthy(_index(ref))
        if ref.kind == "kube-apiserver":
            return self.cluster.apiserver_ready(_index(ref)) and self.lb_status(ref.name) == LB_UP
        manager = ref.kind == "kube-controller-manager"
        return probe(
            "127.0.0.1", self.cfg.controller_manager_port if manager else self.cfg.scheduler_port, "/healthz"
        )

    # ---- one step ------------------------------------------------------------------
    def _move(self, ref: ComponentRef, version: str, action: Action) -> StepResult:
        def restart(current: str | None) -> tuple[str, dict[str, Any]]:
            self._check_binaries(ref, version)
            evidence: dict[str, Any] = {}
            if ref.kind == "etcd":
                evidence = self._restart_etcd(ref, current, version, action)
            else:
                self._check_skew(ref, current, version, action)
                if ref.kind == "kube-apiserver":
                    evidence = self._restart_apiserver(ref, current, version)
                else:
                    self.cluster.restart_component(ref.name, version, self.timeouts.component_start)
            log.info("%s %s: %s -> %s", action, ref.name, current, version)
            return f"{ref.name} {PAST_TENSE[action]} from {current or 'stopped'} to {version}", evidence

        # Read back from the component itself; its /metrics may need a moment to authorize us.
        return move_component(
            ref,
            version,
            action,
            subject=ref.name,
            read_version=lambda: self.current_version(ref),
            change=restart,
            settle_seconds=self.timeouts.version_report,
            not_reached=lambda: (
                f"{ref.name} runs {self.current_version(ref) or 'nothing'} after its restart at {version}"
            ),
        )

    @staticmethod
    def _check_binaries(ref: ComponentRef, version: str) -> None:
        # Before anything stops: a missing binary must not leave the component down.
        release = etcd_release(version) if ref.product == "etcd" else kubernetes_release(version)
        if not binaries.is_available(release):
            raise StepRefused(f"refusing to restart {ref.name} at {version}: {release.key} is not built")

    def _check_skew(self, ref: ComponentRef, current: str | None, version: str, action: Action) -> None:
        """Refuse a step whose result breaks the version-skew policy in a way the cluster did not already."""
        running = self.reader.versions()
        versions = {r.name: running.get(r.kind, {}).get(r.name) for r in self._kube_components()}
        try:
            kubelets = {
                n.metadata.name: Version.parse(n.status.node_info.kubelet_version)
                for n in self._core.list_node().items
            }
        except (ApiException, HTTPError) as err:
            raise StepRefused(
                f"refusing to {action} {ref.name}: cannot read kubelet versions: {err}"
            ) from err
        kube = self._kube_components()
        before = _skew(kube, versions, kubelets)
        introduced = [v for v in _skew(kube, versions | {ref.name: version}, kubelets) if v not in before]
        if introduced:
            raise StepRefused(
                f"refusing to {action} {ref.name} from {current or 'stopped'} to {version}: "
                + "; ".join(introduced)
            )

    # ---- kube-apiserver --------------------------------------------------------------
    def _restart_apiserver(self, ref: ComponentRef, current: str | None, version: str) -> dict[str, Any]:
        others = [
            components.apiserver_name(i)
            for i in range(self.cfg.apiservers)
            if components.apiserver_name(i) != ref.name
        ]
        not_up = {name: self.lb_status(name) for name in others if self.lb_status(name) != LB_UP}
        if (not others or not_up) and not self.allow_api_downtime:
            raise StepRefused(
                f"refusing to restart {ref.name}: no other kube-apiserver is UP in the load balancer "
                f"({', '.join(f'{n} {s}' for n, s in not_up.items()) or 'it is the only one'}); "
                "the API would go down"
            )
        started = time.monotonic()
        evidence: dict[str, Any] = {}
        if current is not None:
            with ThreadPoolExecutor(max_workers=1) as pool:
                stopping = pool.submit(self.cluster.stop_component, ref.name, self.timeouts.component_stop)
                wait_until(
                    f"load balancer takes {ref.name} out",
                    lambda: stopping.done() or not self.lb_status(ref.name).startswith(LB_UP),
                    self.timeouts.lb_drain,
                )
                # Zero downtime needs the load balancer to drop it while it still serves.
                evidence["drained_before_exit"] = not stopping.done()
                evidence["lb_out_after_seconds"] = round(time.monotonic() - started, 2)
                stopping.result()
            evidence["exited_after_seconds"] = round(time.monotonic() - started, 2)
        self.cluster.start_component(ref.name, version, self.timeouts.component_start)
        self._wait_lb_up(ref.name)
        evidence["lb_up_after_seconds"] = round(time.monotonic() - started, 2)
        return evidence

    def _wait_lb_up(self, name: str) -> None:
        wait_until(
            f"load balancer reports {name} UP", lambda: self.lb_status(name) == LB_UP, self.timeouts.lb_up
        )

    def lb_status(self, name: str) -> str:
        """HAProxy's status of one apiserver (``UP``, ``DOWN``, ``UP 1/2`` while going down, …)."""
        try:
            table = _haproxy_command(self.cfg.run_dir / "haproxy.sock", "show stat")
        except OSError as err:
            return f"UNKNOWN ({err})"
        for row in csv.DictReader(io.StringIO(table.removeprefix("# "))):
            if row.get("pxname") == LB_BACKEND and row.get("svname") == name:
                return row.get("status") or "UNKNOWN"
        return "MISSING"

    # ---- etcd ------------------------------------------------------------------------
    def etcd(self, version: str | None = None) -> EtcdEndpoints:
        """Every member's endpoint, with the tools of ``version`` (default: the oldest member's).

        etcdctl speaks to servers one minor apart, so the oldest running release serves all.
        """
        recorded = self.cluster.versions()
        members = [
            recorded.get(components.etcd_name(i), self.cfg.etcd_version) for i in range(self.cfg.etcd_members)
        ]
        return EtcdEndpoints.for_local_cluster(self.cfg, version or min(members, key=Version.parse))

    def _endpoint(self, index: int) -> str:
        return f"https://127.0.0.1:{self.cfg.etcd_client_port(index)}"

    def _member(self, endpoint: str) -> str:
        ports = {self.cfg.etcd_client_port(i): components.etcd_name(i) for i in range(self.cfg.etcd_members)}
        return ports.get(int(endpoint.rsplit(":", 1)[1]), endpoint)

    def etcd_leader(self) -> str | None:
        """The etcd leader's member name; None when etcd does not answer."""
        try:
            statuses = endpoint_status(self.etcd()).results
        except EtcdError:
            return None
        return next((self._member(ep) for ep, s in statuses.items() if s.is_leader), None)

    def _restart_etcd(
        self, ref: ComponentRef, current: str | None, version: str, action: Action
    ) -> dict[str, Any]:
        i = _index(ref)
        quorum = self.cfg.etcd_members // 2 + 1
        healthy_others = [j for j in range(self.cfg.etcd_members) if j != i and self.cluster.etcd_healthy(j)]
        if len(healthy_others) < quorum:
            raise StepRefused(
                f"refusing to restart {ref.name}: only {len(healthy_others)} other member(s) healthy, "
                f"quorum needs {quorum}; the cluster would lose quorum"
            )
        cluster_version = self._etcd_cluster_version(healthy_others[0])
        target = Version.parse(version)
        evidence: dict[str, Any] = {
            "leader_before": self.etcd_leader(),
            "cluster_version": cluster_version.minor_line,
        }
        if action == "upgrade" and target.minor - cluster_version.minor > 1:
            raise StepRefused(
                f"refusing to upgrade {ref.name} to {version}: the etcd cluster is at "
                f"{cluster_version.minor_line}; etcd upgrades one minor at a time"
            )
        if action == "rollback" and current is not None and Version.parse(current).minor > target.minor:
            evidence |= self._prepare_downgrade(ref, target, cluster_version)
        # The leader restarts as a follower: hand leadership to a member already at the target.
        running = self.reader.versions().get("etcd", {})
        moved = move_leader_away(
            self.etcd(),
            self._endpoint(i),
            prefer=[
                self._endpoint(j) for j in healthy_others if running.get(components.etcd_name(j)) == version
            ],
        )
        if moved:
            evidence["leader_moved_to"] = self._member(moved)
        self.cluster.restart_component(ref.name, version, self.timeouts.component_start)
        wait_until("etcd quorum with every member healthy", self._etcd_all_healthy, self.timeouts.etcd_quorum)
        evidence["leader_after"] = self.etcd_leader()
        versions = self.reader.versions().get("etcd", {})
        if all(versions.get(components.etcd_name(j)) == version for j in range(self.cfg.etcd_members)):
            evidence["consistency"] = self.etcd_consistency().to_dict()
        return evidence

    def _prepare_downgrade(
        self, ref: ComponentRef, target: Version, cluster_version: Version
    ) -> dict[str, Any]:
        """Make ``ref``'s data readable by the older minor before its binary is swapped.

        etcd refuses an older binary on storage a newer cluster version wrote: the cluster
        version is lowered first (once, for all members), then this member's storage follows.
        """
        evidence = {}
        if cluster_version.minor > target.minor:
            etcdctl(
                self.etcd(),
                ["downgrade", "enable", target.minor_line],
                what=f"etcd downgrade enable {target.minor_line}",
                expect_json=False,
            )
            evidence["downgrade_enabled"] = target.minor_line
        member = self.etcd().only(self._endpoint(_index(ref)))

        def storage_ready() -> bool:
            try:
                stored = [s.storage_version for s in endpoint_status(member).results.values()]
            except EtcdError:
                return False
            return bool(stored) and all(
                s and Version.parse(s).minor_line == target.minor_line for s in stored
            )

        wait_until(
            f"{ref.name} storage version at {target.minor_line}", storage_ready, self.timeouts.etcd_downgrade
        )
        return evidence

    def _etcd_all_healthy(self) -> bool:
        return all(self.cluster.etcd_healthy(j) for j in range(self.cfg.etcd_members))

    def _etcd_cluster_version(self, i: int) -> Version:
        """The cluster version (``etcdcluster``) member ``i`` reports; it moves only when every member can."""
        pki = self.cfg.pki_dir
        try:
            status, body = https_get(
                "127.0.0.1",
                self.cfg.etcd_client_port(i),
                "/version",
                ca=pki / "etcd-ca.crt",
                cert=(pki / "etcd-admin.crt", pki / "etcd-admin.key"),
            )
            if status == HTTP_OK:
                return Version.parse(str(json.loads(body)["etcdcluster"]))
        except (OSError, http.client.HTTPException, ssl.SSLError, ValueError, KeyError) as err:
            raise StepRefused(f"cannot read the etcd cluster version from etcd-{i}: {err}") from err
        raise StepRefused(
            f"cannot read the etcd cluster version from etcd-{i}: /version answered HTTP {status}"
        )

    def etcd_consistency(self) -> Consistency:
        """Wait until every member has the same ``hashkv`` at one revision.

        :raises StepFailed: naming each member's hash when they still differ at the deadline.
        """
        seen: list[Consistency] = []

        def agree() -> bool:
            try:
                seen.append(check_consistency(self.etcd()))
            except EtcdError:
                return False
            return seen[-1].consistent

        try:
            wait_until("etcd members agree on hashkv", agree, self.timeouts.etcd_hash, interval=1.0)
        except NotHealthy as err:
            problems = "; ".join(seen[-1].problems) if seen else "no member answered"
            raise StepFailed(f"etcd data is not consistent: {problems}") from err
        return seen[-1]

    # ---- data rollback -----------------------------------------------------------------
    def restore_etcd(self, snapshot: ProvenSnapshot, version: str | None = None) -> RestoreResult:
        """Data rollback: every member restored from ``snapshot`` (revision bumped), then proven.

        Checks the file's sha256 against the proof's first. Stops the writers (scheduler,
        controller-manager, apiservers) and every member, keeps the old data dirs beside the
        new ones, restores each member with the ``etcdutl`` of the release it will run
        (``version``, default the one it ran) with ``--bump-revision --mark-compacted``, starts
        the members, proves they agree on ``hashkv`` and hold at least the snapshot's keys, then
        starts the apiservers (waiting until the load balancer has them UP), controller-manager
        and scheduler. Fresh data dirs need no downgrade protocol, so a restore at the previous
        release is also the etcd version rollback. The API is down meanwhile: a data rollback
        is an outage by nature.

        :raises StepFailed: when the snapshot is refused or the restored data is not consistent.
        """
        started = time.monotonic()
        path = Path(snapshot.path)
        try:
            verify_digest(snapshot)
            status = snapshot_status(self.etcd(), path)
        except (EtcdError, SnapshotRefused) as err:
            raise StepFailed(f"refusing to restore etcd from {path}: {err}") from err
        writers = [
            "kube-scheduler",
            "kube-controller-manager",
            *(components.apiserver_name(i) for i in reversed(range(self.cfg.apiservers))),
        ]
        members = [components.etcd_name(i) for i in range(self.cfg.etcd_members)]
        recorded = self.cluster.versions()
        releases = {name: version or recorded.get(name, self.cfg.etcd_version) for name in members}
        for name, release in releases.items():
            self._check_binaries(ComponentRef(kind="etcd", name=name), release)
        tools = {name: self.etcd(release) for name, release in releases.items()}
        for name in writers + members:
            self.cluster.stop_component(name, self.timeouts.component_stop)
        peers = {name: f"https://127.0.0.1:{self.cfg.etcd_peer_port(i)}" for i, name in enumerate(members)}
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        previous = []
        for name in members:
            data_dir = self.cfg.state_dir / "etcd" / name
            if data_dir.exists():
                kept = data_dir.with_name(f"{name}.before-restore-{stamp}")
                data_dir.rename(kept)
                previous.append(str(kept))
            try:
                restore_snapshot(
                    tools[name],
                    path,
                    data_dir,
                    name,
                    peers,
                    bump_revision=DEFAULT_BUMP_REVISION,
                    initial_cluster_token=f"slipway-{self.cfg.name}",
                )
            except EtcdError as err:
                raise StepFailed(f"etcd restore of {name} from {path} failed: {err}") from err
        for i, name in enumerate(members):
            # All at once: a lone restored member has no quorum and would never report healthy.
            self.cluster._start_etcd(i, releases[name], new_cluster=False)
        for i in range(self.cfg.etcd_members):
            self.cluster.wait_etcd(i, self.timeouts.etcd_quorum)
        etcd = self.etcd()
        keys = key_count(etcd)
        revision = min(s.revision for s in endpoint_status(etcd).results.values())
        consistency = self.etcd_consistency()
        if keys < snapshot.keys:  # the live keys the backup proof saw restored
            raise StepFailed(
                f"etcd restore from {path} lost data: {keys} keys, the snapshot has {snapshot.keys}"
            )
        if revision < status.revision + DEFAULT_BUMP_REVISION:
            raise StepFailed(
                f"etcd restore from {path}: revision {revision} was not bumped past "
                f"{status.revision} + {DEFAULT_BUMP_REVISION}"
            )
        for name in reversed(writers):
            self.cluster.start_component(name, timeout=self.timeouts.component_start)
            if name.startswith("kube-apiserver-"):
                self._wait_lb_up(name)
        return RestoreResult(
            snapshot=str(path),
            sha256=snapshot.sha256,
            snapshot_revision=status.revision,
            snapshot_keys=snapshot.keys,
            keys_after_restore=keys,
            revision_after_restore=revision,
            etcd_version=", ".join(sorted(set(releases.values()))),
            consistency=consistency.to_dict(),
            previous_data_dirs=previous,
            duration_seconds=round(time.monotonic() - started, 1),
        )

    # ---- game-day faults ---------------------------------------------------------------
    def diverge_etcd_member(self, member: str) -> dict[str, Any]:
        """Make ``member``'s data differ from its peers', as a flipped bit on its disk would.

        Writes a marker key through the cluster, waits until every member applied it, stops
        ``member``, changes the marker's value inside its database file (same length, so the
        file stays readable), and starts it again. Its ``hashkv`` then differs from its
        peers'; reads of the marker from it return the changed value.

        :raises StepFailed: when the change did not take (the hashes still agree).
        """
        names = [components.etcd_name(i) for i in range(self.cfg.etcd_members)]
        if member not in names:
            raise StepRefused(f"no etcd member {member!r} to diverge: one of {', '.join(names)}")
        etcd = self.etcd()
        value = f"slipway-fault-{secrets.token_hex(16)}"
        revision = put(etcd, FAULT_MARKER_KEY, value)
        wait_until(
            f"every etcd member applied revision {revision}",
            lambda: _applied(etcd, revision, self.cfg.etcd_members),
            self.timeouts.etcd_quorum,
        )
        self.cluster.stop_component(member, self.timeouts.component_stop)
        db = self.cfg.state_dir / "etcd" / member / "member" / "snap" / "db"
        changed = overwrite_in_place(db, value.encode(), value.replace("fault", "FAULT").encode())
        evidence: dict[str, Any] = {"member": member, "key": FAULT_MARKER_KEY, "revision": revision}
        evidence["places_changed"] = changed
        try:
            self.cluster.start_component(member, timeout=self.timeouts.component_start)
        except NotHealthy as err:
            # A release that checks its data against its peers at start refuses to serve.
            evidence["refused_to_start"] = str(err)
            return evidence
        seen = check_consistency(self.etcd())
        if seen.consistent:
            raise StepFailed(
                f"fault injection on {member} did not take: {changed} place(s) changed in {db}, "
                "hashes still agree"
            )
        evidence["hashes"] = seen.hashes
        return evidence

    # ---- observability ---------------------------------------------------------------
    def metrics_text(self, name: str) -> str:
        """``/metrics`` of one component, read as the orchestrator (its RBAC allows ``/metrics``)."""
        pki = self.cfg.pki_dir
        identity = (pki / "orchestrator.crt", pki / "orchestrator.key")
        if name.startswith("kube-apiserver-"):
            port, ca = self.cfg.apiserver_port(int(name.rsplit("-", 1)[1])), pki / "ca.crt"
        elif name == "kube-controller-manager":
            # Controller-manager and scheduler serve a self-signed certificate: no CA to check.
            port, ca = self.cfg.controller_manager_port, None
        elif name == "kube-scheduler":
            port, ca = self.cfg.scheduler_port, None
        else:
            raise ValueError(
                f"no /metrics for {name!r}: one of kube-apiserver-N, kube-controller-manager, kube-scheduler"
            )
        status, body = https_get("127.0.0.1", port, "/metrics", ca=ca, cert=identity, timeout=10)
        if status != HTTP_OK:
            raise OSError(f"{name} /metrics answered HTTP {status}")
        return body


def _haproxy_command(sock_path: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(str(sock_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _skew(
    refs: list[ComponentRef], versions: dict[str, str | None], kubelets: dict[str, Version]
) -> list[str]:
    def of(kind: str) -> list[Version]:
        return [Version.parse(v) for r in refs if r.kind == kind and (v := versions.get(r.name))]

    apiservers = of("kube-apiserver")
    if not apiservers:
        return []  # nothing serves the API: there is no skew to measure against
    return skew_violations(apiservers, of("kube-controller-manager"), of("kube-scheduler"), kubelets)


def _applied(etcd: EtcdEndpoints, revision: int, members: int) -> bool:
    try:
        statuses = endpoint_status(etcd).results
    except EtcdError:
        return False
    return len(statuses) == members and all(s.revision >= revision for s in statuses.values())


def _index(ref: ComponentRef) -> int:
    return int(ref.name.rsplit("-", 1)[1])
