"""What must still hold after any fault: the invariants a fault test (or an operator) checks.

- no workload below its PodDisruptionBudget (now, and at any moment a :class:`PdbWatcher` saw);
- no stray cordon: every cordoned node is cordoned by a run that still holds a live cluster
  lease, or is quarantined on purpose (``external`` cordons are someone else's and allowed);
- versions within the version-skew policy (:func:`slipway.versions.skew_violations`);
- etcd data intact: every member's ``hashkv`` and key count agree at one revision, and the
  sentinel keys written before the fault are still there with their values;
- the run record truthful: each batch it calls passed or rolled back left its nodes at the
  versions it claims, and none of them cordoned by that run.

Each check returns human-readable violations; :func:`check_invariants` returns them all
(empty: every invariant held). The pure parts take plain objects and are unit-tested.
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError, ProtocolError

from slipway import lease
from slipway.etcd.client import EtcdEndpoints, EtcdError, etcdctl, put
from slipway.etcd.safety import check_data
from slipway.inventory import ControlPlaneReader
from slipway.kube import nodes as kube_nodes
from slipway.versions import Version, skew_violations

SENTINEL_PREFIX = "/slipway-sentinel/"
# The workers' batch states the record can claim (slipway.workers keeps the same strings).
PASSED, ROLLED_BACK = "passed", "rolled-back"
# etcd may be settling right after a fault: look for this long before a difference stands.
ETCD_CHECK_TIMEOUT_SECONDS = 60.0


# ---- PodDisruptionBudgets ------------------------------------------------------------------------


def pdb_shortfall(pdb: client.V1PodDisruptionBudget) -> str | None:
    """Pure: why ``pdb``'s workload is below its budget right now, or None."""
    status = pdb.status
    if status is None or status.desired_healthy is None or status.current_healthy is None:
        return None
    if status.current_healthy >= status.desired_healthy:
        return None
    return (
        f"{pdb.metadata.namespace}/{pdb.metadata.name}: {status.current_healthy} healthy "
        f"< {status.desired_healthy} required"
    )


def pdb_violations(pdbs: Iterable[client.V1PodDisruptionBudget]) -> list[str]:
    return [f"below PDB: {why}" for pdb in pdbs if (why := pdb_shortfall(pdb))]


class _Watcher:
    """Watches one kind of object in a thread until stopped, watching again when a fault
    cuts the stream; subclasses judge each event."""

    def __init__(self) -> None:
        self.events = 0
        self._stopped = threading.Event()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _list(self) -> Any:
        raise NotImplementedError

    def _judge(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._watch.stop()
        self._thread.join(10)

    def _run(self) -> None:
        # A fault may cut the stream (an apiserver killed): watch again until told to stop.
        while not self._stopped.is_set():
            self._watch = watch.Watch()
            stream = self._watch.stream(self._list(), timeout_seconds=3600)
            try:
                for event in stream:
                    self.events += 1
                    self._judge(event)
            except (ProtocolError, ApiException, HTTPError, OSError):
                self._stopped.wait(0.5)  # the apiserver behind the balancer is going away


class PdbWatcher(_Watcher):
    """Watches every PodDisruptionBudget and records any moment a workload was below its budget."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__()
        self.policy = client.PolicyV1Api(api)
        self.violations: list[str] = []

    def _list(self) -> Any:
        return self.policy.list_pod_disruption_budget_for_all_namespaces

    def _judge(self, event: dict[str, Any]) -> None:
        why = pdb_shortfall(event["object"])
        if why:
            self.violations.append(why)


class CordonWatcher(_Watcher):
    """Watches the nodes and records the most that were cordoned at one moment (and by whom):
    what max-unavailable bounds, whichever runs did the cordoning."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__()
        self.core = client.CoreV1Api(api)
        self.cordoned: dict[str, str] = {}
        self.most = 0
        self.owners: set[str] = set()

    def _list(self) -> Any:
        return self.core.list_node

    def _judge(self, event: dict[str, Any]) -> None:
        node = event["object"]
        name = node.metadata.name
        if event["type"] != "DELETED" and kube_nodes.is_cordoned(node):
            owner = kube_nodes.cordon_owner(node) or "unknown"
            self.cordoned[name] = owner
            self.owners.add(owner)
        else:
            self.cordoned.pop(name, None)
        self.most = max(self.most, len(self.cordoned))


# ---- cordons ------------------------------------------------------------------------------------


def stray_cordons(
    nodes: Iterable[client.V1Node], live_holder: str | None, *, allowed_owners: Iterable[str] = ()
) -> list[str]:
    """Pure: cordoned nodes nobody answers for. A cordon is accounted for when the node is
    quarantined, cordoned by someone outside Slipway (``external``), cordoned by the run that
    holds the live lease (``live_holder``), or by one of ``allowed_owners``."""
    live_run = lease.run_of(live_holder) if live_holder else None
    allowed = set(allowed_owners) | ({live_run} if live_run else set())
    found = []
    for node in nodes:
        if not kube_nodes.is_cordoned(node) or kube_nodes.is_quarantined(node):
            continue
        owner = kube_nodes.cordon_owner(node)
        if owner == kube_nodes.EXTERNAL_CORDON or owner in allowed:
            continue
        found.append(
            f"stray cordon: node {node.metadata.name} is cordoned by "
            f"{owner or 'nobody recorded'}, which holds no live lease and did not quarantine it"
        )
    return found


# ---- versions -----------------------------------------------------------------------------------


def skew_problems(control_plane: Mapping[str, Mapping[str, str]], kubelets: Mapping[str, str]) -> list[str]:
    """Pure: the version-skew policy against kind → instance → version and node → kubelet."""

    def of(kind: str) -> list[Version]:
        return [Version.parse(v) for v in control_plane.get(kind, {}).values() if v]

    apiservers = of("kube-apiserver")
    if not apiservers:
        return ["version skew: no kube-apiserver version could be read"]
    parsed = {node: Version.parse(v) for node, v in kubelets.items() if v}
    return [
        f"version skew: {v}"
        for v in skew_violations(apiservers, of("kube-controller-manager"), of("kube-scheduler"), parsed)
    ]


class SkewWatcher:
    """Looks at every control-plane instance's version and every kubelet's, ``interval`` apart,
    in a thread until stopped, and records each version-skew violation with the versions it
    saw: the policy must hold at every moment of an upgrade, not only at its end.

    A look that cannot be read (the apiserver behind the balancer restarting) is counted in
    ``unreadable`` and is not a violation; ``looks`` counts the ones judged."""

    def __init__(self, api: client.ApiClient, reader: ControlPlaneReader, interval: float = 0.5) -> None:
        self.core = client.CoreV1Api(api)
        self.reader = reader
        self.interval = interval
        self.looks = 0
        self.unreadable = 0
        self.violations: dict[str, str] = {}  # violation -> the versions seen the first time
        self.seen: set[tuple[str, ...]] = set()  # every distinct combination of versions
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join(30)

    def look(self) -> list[str]:
        """One look: the violations now (also recorded)."""
        control_plane = self.reader.versions()
        kubelets = {n.metadata.name: kube_nodes.kubelet_version(n) for n in self.core.list_node().items}
        found = skew_problems(control_plane, kubelets)
        versions = {
            f"{kind}/{name}": v
            for kind in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
            for name, v in control_plane.get(kind, {}).items()
        } | {f"kubelet/{node}": v for node, v in kubelets.items()}
        self.seen.add(tuple(sorted(f"{k}={v}" for k, v in versions.items())))
        for problem in found:
            self.violations.setdefault(problem, ", ".join(f"{k}={v}" for k, v in sorted(versions.items())))
        self.looks += 1
        return found

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.look()
            except (ApiException, HTTPError, OSError, ValueError):
                self.unreadable += 1
            self._stopped.wait(self.interval)


# ---- etcd ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sentinels:
    """Keys written to etcd before a fault, outside ``/registry`` (the apiserver never reads them)."""

    keys: dict[str, str] = field(default_factory=dict)

    @classmethod
    def write(cls, etcd: EtcdEndpoints, label: str, count: int = 3) -> Sentinels:
        token = secrets.token_hex(4)
        keys = {f"{SENTINEL_PREFIX}{label}/{i}": f"{label}-{token}-{i}" for i in range(count)}
        for key, value in keys.items():
            put(etcd, key, value)
        return cls(keys)

    def missing(self, etcd: EtcdEndpoints) -> list[str]:
        """Sentinels absent or changed, read from every member on its own (serializable reads)."""
        problems = []
        for endpoint in etcd.endpoints:
            for key, value in sorted(self.keys.items()):
                try:
                    out = etcdctl(
                        etcd.only(endpoint),
                        ["get", key, "--consistency=s"],
                        what=f"etcd get {key}",
                    )
                except EtcdError as err:
                    problems.append(f"etcd sentinel {key} unreadable at {endpoint}: {err}")
                    continue
                found = [_decode(kv.get("value", "")) for kv in out.data.get("kvs", [])]
                if found != [value]:
                    problems.append(
                        f"etcd sentinel {key} at {endpoint} is {found or 'missing'}, expected {value!r}"
                    )
        return problems


def _decode(value: str) -> str:
    return base64.b64decode(value).decode(errors="replace")


def etcd_problems(etcd: EtcdEndpoints, sentinels: Sentinels | None, timeout: float) -> list[str]:
    check = check_data(etcd, timeout=timeout)
    found = [f"etcd data: {p}" for p in check.problems]
    if len(check.hashes) != len(etcd.endpoints) and check.ok:
        found.append(f"etcd data: only {len(check.hashes)} of {len(etcd.endpoints)} members gave a hash")
    if sentinels is not None:
        found += sentinels.missing(etcd)
    return found


# ---- the run record -----------------------------------------------------------------------------


def record_problems(
    record: Mapping[str, Any], nodes: Iterable[client.V1Node], target: str | None
) -> list[str]:
    """Pure: where the run record's batches disagree with the nodes. A rolled-back batch's nodes
    run their ``from_versions``; a passed batch's nodes run ``target``; neither is still
    cordoned by this run."""
    by_name = {n.metadata.name: n for n in nodes}
    run_id = str(record.get("run_id", ""))
    found = []
    for batch in record.get("batches", []):
        state = batch.get("state")
        for name in batch.get("nodes", []):
            node = by_name.get(name)
            if node is None:
                found.append(f"run record: batch {batch.get('index')} names node {name}, which is gone")
                continue
            running = kube_nodes.kubelet_version(node)
            if state == ROLLED_BACK:
                expected: str | None = str(batch.get("from_versions", {}).get(name, ""))
            elif state == PASSED:
                expected = target
            else:
                continue
            if expected and running != expected.removeprefix("v"):
                found.append(
                    f"run record: batch {batch.get('index')} is {state} but node {name} runs {running}, "
                    f"not {expected}"
                )
            owned = kube_nodes.is_cordoned(node) and kube_nodes.cordon_owner(node) == run_id
            if run_id and owned and not kube_nodes.is_quarantined(node):
                found.append(
                    f"run record: batch {batch.get('index')} is {state} but {name} is still cordoned"
                )
    if record and not record.get("events"):
        found.append("run record: no events recorded")
    return found


# ---- everything ---------------------------------------------------------------------------------


@dataclass
class Checked:
    """Inputs of :func:`check_invariants` beyond the admin client; each part is optional."""

    reader: ControlPlaneReader | None = None
    etcd: EtcdEndpoints | None = None
    sentinels: Sentinels | None = None
    record: Mapping[str, Any] | None = None
    target: str | None = None
    watcher: PdbWatcher | None = None
    allowed_cordon_owners: tuple[str, ...] = ()
    etcd_timeout: float = ETCD_CHECK_TIMEOUT_SECONDS


def check_invariants(
    api: client.ApiClient, what: Checked | None = None, now: datetime | None = None
) -> list[str]:
    """Every invariant violated now (and any PDB shortfall ``what.watcher`` saw); empty: all held."""
    what = what or Checked()
    core = client.CoreV1Api(api)
    found: list[str] = []
    if what.watcher is not None:
        found += [f"below PDB during the operation: {v}" for v in dict.fromkeys(what.watcher.violations)]
    found += pdb_violations(client.PolicyV1Api(api).list_pod_disruption_budget_for_all_namespaces().items)
    nodes = core.list_node().items
    state = lease.read(api)
    live = state.holder if state is not None and lease.is_live(state, now) else None
    found += stray_cordons(nodes, live, allowed_owners=what.allowed_cordon_owners)
    kubelets = {n.metadata.name: kube_nodes.kubelet_version(n) for n in nodes}
    if what.reader is not None:
        control_plane: Mapping[str, Mapping[str, str]] = what.reader.versions()
    else:
        served = client.VersionApi(api).get_code().git_version
        control_plane = {"kube-apiserver": {"served": served}}
    found += skew_problems(control_plane, kubelets)
    if what.etcd is not None:
        found += etcd_problems(what.etcd, what.sentinels, what.etcd_timeout)
    if what.record is not None:
        found += record_problems(what.record, nodes, what.target)
    return found
