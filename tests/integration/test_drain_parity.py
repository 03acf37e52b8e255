"""Slipway's drain decides like ``kubectl drain``, pod by pod, on a real local cluster.

One worker gets six kinds of pod: a bare pod, a pod with an emptyDir volume, a DaemonSet
pod, a pod whose PDB never allows a disruption (maxUnavailable 0), a ReplicaSet pod and a
pod kept Terminating by a finalizer. For each set of kubectl flags, ``kubectl drain
--dry-run=server`` (the real kubectl built in the kit, talking to the same apiserver) and
:func:`plan_drain` with the matching options must put every pod on the node (the sample
workloads' too) in the same place: refused (and why), left alone, evicted or blocked by a
PDB. kubectl's dry run changes nothing, so every variant reads the same node.

Then the real drain: a terminating pod is awaited (the drain reports it when the timeout
passes, skips it past ``skip_wait_for_delete_timeout_seconds``, and returns only once it is
gone after its finalizer is removed from another thread).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.kube import nodes, readiness
from slipway.kube.drain import (
    Blocker,
    DrainBlocked,
    DrainOptions,
    DrainPlan,
    drain_node,
    overdue_seconds,
    plan_drain,
)
from slipway.kube.pdb import blocking_pdbs
from slipway.localcluster.binaries import binary
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_NEW, kubernetes_release
from slipway.localcluster.workloads import unavailable_samples
from tests.conftest import running_cluster

pytestmark = pytest.mark.cluster

WORKERS = 3
NAMESPACE = "drain-parity"
RUN = "manual__test-drain-parity"
FINALIZER = "slipway.dev/test-hold"
SETTLE_SECONDS = 180
SKIP_WAIT = 1  # --skip-wait-for-delete-timeout: the held pod is past its deletionTimestamp for longer
# kubectl retries a 429 every 5 s until --timeout; one retry is enough to see the PDB block.
KUBECTL_TIMEOUT = "2s"
BLOCKED_DRAIN_TIMEOUT_SECONDS = 20.0  # the held pod never goes while its finalizer stays
DRAIN_TIMEOUT_SECONDS = 120.0
# Roles of the six pods the test puts on the node.
BARE, EMPTYDIR, DAEMON, GUARDED, REPLICA, HELD = "bare", "emptydir", "daemonset", "pdb", "replicaset", "held"


# ---- verdicts: what each side says it would do with every pod on the node -------------------

REFUSED = "refused"
LEFT_ALONE = "left alone"
EVICTED = "evicted"
BLOCKED = "blocked by a PDB"

# kubectl names the flag that lifts a refusal; Slipway names the reason.
KUBECTL_FLAG_REASON = {
    "ignore-daemonsets": "daemonset",
    "delete-emptydir-data": "local-storage",
    "force": "unreplicated",
}
POD_KEY = re.compile(r"[a-z0-9][-a-z0-9.]*/[a-z0-9][-a-z0-9.]*")


@dataclass(frozen=True)
class Variant:
    flags: tuple[str, ...]
    opts: DrainOptions
    expected: dict[str, str]  # role -> verdict, so agreement on nothing cannot pass


LIFTED = ("--ignore-daemonsets", "--delete-emptydir-data", "--force")
VARIANTS = {
    "no-flags": Variant(
        (),
        DrainOptions(ignore_daemonsets=False),
        {
            BARE: f"{REFUSED}: unreplicated",
            EMPTYDIR: f"{REFUSED}: local-storage",
            DAEMON: f"{REFUSED}: daemonset",
            HELD: f"{REFUSED}: unreplicated",  # terminating, yet kubectl still judges it: bare
        },
    ),
    "ignore-daemonsets": Variant(
        LIFTED[:1],
        DrainOptions(),
        {
            BARE: f"{REFUSED}: unreplicated",
            EMPTYDIR: f"{REFUSED}: local-storage",
            HELD: f"{REFUSED}: unreplicated",
        },
    ),
    "delete-emptydir-data": Variant(
        LIFTED[:2],
        DrainOptions(delete_emptydir_data=True),
        {BARE: f"{REFUSED}: unreplicated", HELD: f"{REFUSED}: unreplicated"},
    ),
    "force": Variant(
        (*LIFTED, "--grace-period=-1"),
        DrainOptions(delete_emptydir_data=True, force=True, grace_period_seconds=-1),
        # kubectl evicts the terminating pod (the apiserver accepts it, PDB or not) and waits
        # for it; Slipway awaits it without a second eviction: both wait for it to go.
        {
            BARE: EVICTED,
            EMPTYDIR: EVICTED,
            DAEMON: LEFT_ALONE,
            GUARDED: BLOCKED,
            REPLICA: EVICTED,
            HELD: EVICTED,
        },
    ),
    "skip-wait-for-delete-timeout": Variant(
        (*LIFTED, f"--skip-wait-for-delete-timeout={SKIP_WAIT}"),
        DrainOptions(delete_emptydir_data=True, force=True, skip_wait_for_delete_timeout_seconds=SKIP_WAIT),
        {
            BARE: EVICTED,
            EMPTYDIR: EVICTED,
            DAEMON: LEFT_ALONE,
            GUARDED: BLOCKED,
            REPLICA: EVICTED,
            HELD: LEFT_ALONE,
        },
    ),
}


def slipway_verdicts(plan: DrainPlan) -> dict[str, str]:
    """Refusals stop the drain before anything moves, so then they are all it says (as kubectl)."""
    if plan.refuse:
        return {s.pod: f"{REFUSED}: {s.reason}" for s in plan.refuse}
    blocked = {b.pod for b in plan.blocked}
    verdicts = {s.pod: LEFT_ALONE for s in plan.skip}
    verdicts |= {s.pod: EVICTED for s in plan.wait}
    verdicts |= {s.pod: BLOCKED if s.pod in blocked else EVICTED for s in plan.evict}
    return verdicts


@dataclass(frozen=True)
class KubectlDrain:
    verdicts: dict[str, str]
    ignored_daemonset_pods: set[str]  # from its "ignoring DaemonSet-managed Pods" warning
    output: str


def kubectl_drain(
    cluster: LocalCluster, node: str, flags: tuple[str, ...], on_node: set[str], cache: Path
) -> KubectlDrain:
    kubectl = binary(kubernetes_release(KUBERNETES_NEW), "kubectl")
    argv = [str(kubectl), f"--kubeconfig={cluster.admin_kubeconfig}", f"--cache-dir={cache}"]
    argv += ["drain", node, "--dry-run=server", f"--timeout={KUBECTL_TIMEOUT}", *flags]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    out, err = done.stdout, done.stderr
    refused: dict[str, str] = {}
    # "cannot delete Pods that declare no controller (use --force to override): ns/a, ns/b"
    for chunk in err.split("cannot delete ")[1:]:
        found = re.match(r"(.+?) \(use --([\w-]+) to \w+\): ", chunk)
        assert found, f"unexpected kubectl refusal: {chunk!r}"
        pods = re.split(r"\]|\n|, continuing", chunk[found.end() :], maxsplit=1)[0]
        for pod in POD_KEY.findall(pods):
            refused[pod] = f"{REFUSED}: {KUBECTL_FLAG_REASON[found.group(2)]}"
    evicting = set(re.findall(r"^evicting pod (\S+) \(server dry run\)$", out, re.MULTILINE))
    if refused:
        assert not evicting, f"kubectl refused and evicted at once:\n{out}\n{err}"
        verdicts = refused
    else:
        blocked = {
            f"{ns}/{name}"
            for name, ns in re.findall(r'error when evicting pods/"([^"]+)" -n "([^"]+)" \(will retry', err)
        }
        assert evicting <= on_node and blocked <= evicting, f"kubectl named pods not on {node}:\n{out}\n{err}"
        verdicts = {
            pod: BLOCKED if pod in blocked else EVICTED if pod in evicting else LEFT_ALONE for pod in on_node
        }
    warned = re.search(r"ignoring DaemonSet-managed Pods: ([^;\n]*)", err)
    return KubectlDrain(verdicts, set(POD_KEY.findall(warned.group(1))) if warned else set(), f"{out}\n{err}")


# ---- the scene: one node with the six pods -----------------------------------------------------


@dataclass(frozen=True)
class Scene:
    cluster: LocalCluster
    node: str
    pods: dict[str, str]  # role -> namespace/name


def _pods_on(api: client.ApiClient, node: str) -> list[client.V1Pod]:
    return list(
        client.CoreV1Api(api).list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    )


def _keys_on(api: client.ApiClient, node: str) -> set[str]:
    return {f"{p.metadata.namespace}/{p.metadata.name}" for p in _pods_on(api, node)}


def _container() -> dict[str, object]:
    return {"name": "app", "image": "registry.local/app:1"}


def _pinned(node: str) -> dict[str, object]:
    """Required node affinity: replacements of evicted pods wait (Pending) while the node is
    cordoned instead of landing on it again, as they would with spec.nodeName."""
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def _template(app: str, spec: dict[str, object]) -> dict[str, object]:
    return {"metadata": {"labels": {"app": app}}, "spec": {"containers": [_container()], **spec}}


def _controller(app: str, spec: dict[str, object], *, replicas: bool = True) -> dict[str, object]:
    """A Deployment, ReplicaSet or (``replicas=False``) DaemonSet body with one pod."""
    body: dict[str, object] = {"selector": {"matchLabels": {"app": app}}, "template": _template(app, spec)}
    if replicas:
        body["replicas"] = 1
    return {"metadata": {"name": app, "labels": {"app": app}}, "spec": body}


def _running_pod(core: client.CoreV1Api, app: str) -> str | None:
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"app={app}").items
    running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    return f"{NAMESPACE}/{running[0].metadata.name}" if len(running) == 1 else None


def _settled(api: client.ApiClient) -> bool:
    """Samples whole, nothing pending, and only PDBs that never allow a disruption block:
    a transient block (a pod not yet Ready) could be seen by one side and not the other."""
    return (
        not unavailable_samples(api)
        and not readiness.pending_pods(api)
        and all(entry["permanent"] for entry in blocking_pdbs(api))
    )


def _release_held(core: client.CoreV1Api) -> None:
    try:
        core.patch_namespaced_pod(HELD, NAMESPACE, {"metadata": {"finalizers": None}})
    except ApiException as err:
        if err.status != 404:
            raise


def _held_gone(core: client.CoreV1Api) -> bool:
    try:
        core.read_namespaced_pod(HELD, NAMESPACE)
    except ApiException as err:
        if err.status == 404:
            return True
        raise
    return False


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    with running_cluster("drainparity", 800, WORKERS) as cluster:
        api = cluster.admin_client()
        core, apps, policy = client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)
        node = str(nodes.list_workers(api)[0].metadata.name)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        wait_until(
            "default service account",
            lambda: bool(
                core.list_namespaced_service_account(NAMESPACE, field_selector="metadata.name=default").items
            ),
            SETTLE_SECONDS,
        )
        core.create_namespaced_pod(
            NAMESPACE,
            {
                "metadata": {"name": BARE, "labels": {"app": BARE}},
                "spec": {"nodeName": node, "containers": [_container()]},
            },
        )
        core.create_namespaced_pod(
            NAMESPACE,
            {
                "metadata": {"name": HELD, "labels": {"app": HELD}, "finalizers": [FINALIZER]},
                "spec": {"nodeName": node, "containers": [_container()]},
            },
        )
        scratch = {"name": "scratch", "emptyDir": {}}
        apps.create_namespaced_deployment(
            NAMESPACE, _controller(EMPTYDIR, {"affinity": _pinned(node), "volumes": [scratch]})
        )
        apps.create_namespaced_deployment(NAMESPACE, _controller(GUARDED, {"affinity": _pinned(node)}))
        policy.create_namespaced_pod_disruption_budget(
            NAMESPACE,
            {
                "metadata": {"name": GUARDED},
                "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": GUARDED}}},
            },
        )
        apps.create_namespaced_replica_set(NAMESPACE, _controller(REPLICA, {"affinity": _pinned(node)}))
        daemon = _controller(DAEMON, {"nodeSelector": {"kubernetes.io/hostname": node}}, replicas=False)
        apps.create_namespaced_daemon_set(NAMESPACE, daemon)
        roles = (BARE, HELD, EMPTYDIR, GUARDED, REPLICA, DAEMON)
        wait_until("the six pods running", lambda: all(_running_pod(core, r) for r in roles), SETTLE_SECONDS)
        pods = {role: str(_running_pod(core, role)) for role in roles}
        core.delete_namespaced_pod(HELD, NAMESPACE, grace_period_seconds=0)
        wait_until(
            "held pod terminating",
            lambda: core.read_namespaced_pod(HELD, NAMESPACE).metadata.deletion_timestamp is not None,
            SETTLE_SECONDS,
        )
        wait_until("sample workloads settled", lambda: _settled(api), SETTLE_SECONDS)
        try:
            yield Scene(cluster, node, pods)
        finally:
            _release_held(core)


# ---- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_slipway_plan_agrees_with_kubectl_drain_dry_run_pod_by_pod(
    scene: Scene, name: str, tmp_path: Path
) -> None:
    variant = VARIANTS[name]
    admin = scene.cluster.admin_client()
    core = client.CoreV1Api(admin)
    if variant.opts.skip_wait_for_delete_timeout_seconds:
        wait_until(
            f"held pod more than {SKIP_WAIT}s past its deletionTimestamp",
            lambda: (
                (overdue_seconds(core.read_namespaced_pod(HELD, NAMESPACE).metadata.deletion_timestamp) or 0)
                >= SKIP_WAIT + 1
            ),
            SETTLE_SECONDS,
        )
    on_node = _keys_on(admin, scene.node)
    assert set(scene.pods.values()) <= on_node

    plan = plan_drain(scene.cluster.orchestrator_client(), scene.node, variant.opts)
    ours = slipway_verdicts(plan)
    theirs = kubectl_drain(scene.cluster, scene.node, variant.flags, on_node, tmp_path)

    assert ours == theirs.verdicts, f"kubectl drain {' '.join(variant.flags)} said:\n{theirs.output}"
    assert {
        role: ours.get(pod, "") for role, pod in scene.pods.items() if role in variant.expected
    } == variant.expected
    if plan.refuse:  # a refusal names only the refused pods
        assert not {pod for role, pod in scene.pods.items() if role not in variant.expected} & set(ours)
    if not plan.refuse:
        assert theirs.ignored_daemonset_pods == {s.pod for s in plan.skip if s.reason == "daemonset"}
        assert scene.pods[DAEMON] in theirs.ignored_daemonset_pods
    held = scene.pods[HELD]
    if name == "force":
        assert [s.pod for s in plan.wait] == [held]  # awaited, not evicted a second time
    if name == "skip-wait-for-delete-timeout":
        assert {s.pod: s.reason for s in plan.skip}[held] == "terminating-too-long"
    # A dry run changes nothing: the node is still schedulable for the next variant.
    assert not nodes.is_cordoned(core.read_node(scene.node))


def test_terminating_pod_is_awaited_until_gone(scene: Scene) -> None:
    admin, orchestrator = scene.cluster.admin_client(), scene.cluster.orchestrator_client()
    core = client.CoreV1Api(admin)
    node, held = scene.node, scene.pods[HELD]
    # PDBs that never allow a disruption would block this drain for other reasons: remove them all.
    policy = client.PolicyV1Api(admin)
    for pdb in policy.list_pod_disruption_budget_for_all_namespaces().items:
        policy.delete_namespaced_pod_disruption_budget(pdb.metadata.name, pdb.metadata.namespace)
    opts = DrainOptions(timeout_seconds=BLOCKED_DRAIN_TIMEOUT_SECONDS, delete_emptydir_data=True, force=True)

    # 1. The finalizer keeps it Terminating: the drain waits for it and, at the timeout, says so.
    with pytest.raises(DrainBlocked) as err:
        drain_node(orchestrator, node, opts, run_id=RUN)
    result = err.value.result
    assert err.value.blockers == [
        Blocker(held, "already terminating before the drain, still there at the timeout")
    ]
    assert f"1 pod already terminating before the drain, still there at the timeout: {held}" in str(err.value)
    assert result.awaited == [held] and held not in result.evicted
    assert {scene.pods[r] for r in (BARE, EMPTYDIR, GUARDED, REPLICA)} <= set(result.evicted)
    assert _keys_on(admin, node) - {held} == {s.pod for s in result.skipped}  # DaemonSet pods only

    # 2. Past skip_wait_for_delete_timeout_seconds it is not awaited, and the result says so.
    skipping = replace(
        opts, timeout_seconds=DRAIN_TIMEOUT_SECONDS, skip_wait_for_delete_timeout_seconds=SKIP_WAIT
    )
    skipped = drain_node(orchestrator, node, skipping, run_id=RUN)
    assert skipped.drained and skipped.awaited == []
    assert {s.pod: s.reason for s in skipped.skipped}[held] == "terminating-too-long"
    assert f"past skip_wait_for_delete_timeout_seconds: {held}" in skipped.summary()

    # 3. A retried drain (as after a worker crash) returns only once the pod is gone: the
    # finalizer is removed from another thread after the drain has read the node and cordoned it.
    apps = client.AppsV1Api(admin)
    apps.delete_collection_namespaced_deployment(NAMESPACE)
    apps.delete_collection_namespaced_replica_set(NAMESPACE)
    nodes.uncordon(admin, node, RUN, force=True)

    def release_once_cordoned() -> None:
        wait_until("drain cordoned the node", lambda: nodes.is_cordoned(core.read_node(node)), SETTLE_SECONDS)
        _release_held(core)

    with ThreadPoolExecutor(max_workers=1) as pool:
        releaser = pool.submit(release_once_cordoned)
        done = drain_node(
            orchestrator, node, replace(opts, timeout_seconds=DRAIN_TIMEOUT_SECONDS), run_id=RUN
        )
        releaser.result()
    assert done.drained and done.awaited == [held]
    assert _held_gone(core)
    assert nodes.uncordon(orchestrator, node, RUN) is True
