"""The pure parts of the preflight checks, the inventory and the etcd judges, on plain data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kubernetes import client

from slipway.batching import plan_batches
from slipway.checks.apis import (
    AppliedObject,
    judge_manifests,
    judge_requested,
    judge_served,
    last_applied_api,
    object_ref,
)
from slipway.checks.capacity import (
    PodDemand,
    Toleration,
    describe_shortfall,
    fit_batch,
    judge_capacity,
    largest_fitting,
    node_rooms,
    pod_demand,
    requirement_holds,
    tolerates,
    why_not_eligible,
)
from slipway.checks.controlplane import judge_control_plane
from slipway.checks.etcd import judge_backup, judge_etcd_consistency, judge_etcd_health
from slipway.checks.gates import gates_in, judge_gates
from slipway.checks.nodes import check_node_readiness
from slipway.checks.pdbs import judge_pdbs
from slipway.checks.result import MAX_LISTED, listed
from slipway.checks.versions import check_upgrade_path, check_version_skew
from slipway.checks.window import check_maintenance_window
from slipway.checks.workloads import (
    Workload,
    critical_reason,
    judge_critical,
    judge_emptydir,
    judge_single_replicas,
    judge_stateful,
)
from slipway.etcd.client import (
    Alarm,
    EtcdEndpoints,
    KVHash,
    Member,
    MemberStatus,
    PerEndpoint,
    parse_alarms,
    parse_hashkv,
    parse_members,
    parse_status,
    reason_from,
)
from slipway.etcd.health import judge_hashes, judge_health
from slipway.etcd.snapshot import BackupProof, restore_plan
from slipway.inventory import (
    HEALTHY,
    build_version,
    image_version,
    metric_samples,
    node_info,
    static_pod_flags,
    static_pod_health,
    static_pod_versions,
)
from slipway.models import Batch, ClusterInventory, NodeInfo, Resources, Taint, UpgradeRequest, parse_request
from slipway.versions import Version
from slipway.windows import MaintenanceSchedule, parse_windows

V136, V137 = Version(1, 36, 3), Version(1, 37, 2)
GIB = 2**30


def request(**overrides: Any) -> UpgradeRequest:
    return parse_request({"target_version": "1.37.2", **overrides})


def node(
    name: str,
    pool: str = "general",
    *,
    cpu: int = 4000,
    memory: int = 16 * GIB,
    pods: int = 110,
    ready: bool = True,
    cordoned: bool = False,
    taints: list[Taint] | None = None,
    control_plane: bool = False,
    kubelet: str = "1.36.3",
) -> NodeInfo:
    return NodeInfo(
        name=name,
        pool=pool,
        kubelet_version=kubelet,
        ready=ready,
        unschedulable=cordoned,
        control_plane=control_plane,
        allocatable=Resources(cpu_millis=cpu, memory_bytes=memory, pods=pods),
        labels={"slipway.dev/node-pool": pool},
        taints=taints or [],
    )


def inventory(nodes: list[NodeInfo], **versions: dict[str, str]) -> ClusterInventory:
    return ClusterInventory(
        apiserver_versions=versions.get(
            "apiservers", {"kube-apiserver-0": "1.36.3", "kube-apiserver-1": "1.36.3"}
        ),
        controller_manager_versions=versions.get("kcm", {"kube-controller-manager": "1.36.3"}),
        scheduler_versions=versions.get("scheduler", {"kube-scheduler": "1.36.3"}),
        etcd_versions=versions.get("etcd", {"etcd-0": "3.6.16"}),
        nodes=nodes,
        collected_at=datetime(2026, 11, 28, tzinfo=UTC),
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ---- metrics and last-applied parsing -------------------------------------------------------------


class TestMetricText:
    TEXT = "\n".join(
        [
            "# HELP apiserver_requested_deprecated_apis [STABLE] Gauge of deprecated APIs requested",
            "# TYPE apiserver_requested_deprecated_apis gauge",
            'apiserver_requested_deprecated_apis{group="",removed_release="",resource="endpoints",'
            'subresource="",version="v1"} 1',
            'apiserver_requested_deprecated_apis{group="networking.k8s.io",removed_release="1.37",'
            'resource="servicecidrs",subresource="status",version="v1beta1"} 1 1764290000000',
            'apiserver_requested_deprecated_apis_total{group="x"} 4',
            'kubernetes_build_info{git_version="v1.36.3",major="1",note="say \\"hi\\", ok"} 1',
            "process_open_fds 12",
        ]
    )

    def test_samples_with_labels_timestamps_and_escapes(self) -> None:
        samples = metric_samples(self.TEXT, "apiserver_requested_deprecated_apis")
        assert [s[0]["resource"] for s in samples] == ["endpoints", "servicecidrs"]
        assert samples[1][0]["removed_release"] == "1.37" and samples[1][1] == 1.0
        build = metric_samples(self.TEXT, "kubernetes_build_info")[0][0]
        assert build["note"] == 'say "hi", ok'
        assert metric_samples(self.TEXT, "process_open_fds") == [({}, 12.0)]

    def test_build_version(self) -> None:
        assert build_version(self.TEXT) == "1.36.3"
        assert build_version("process_open_fds 1") is None


class TestLastApplied:
    def test_reads_api_version_and_kind(self) -> None:
        manifest = {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1beta3",
            "kind": "FlowSchema",
            "metadata": {},
        }
        annotations = {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(manifest)}
        assert last_applied_api(annotations) == ("flowcontrol.apiserver.k8s.io/v1beta3", "FlowSchema")

    @pytest.mark.parametrize(
        "text", ["", "{not json", "[1, 2]", '{"kind": "Deployment"}', '{"apiVersion": 3}']
    )
    def test_missing_or_malformed_is_ignored(self, text: str) -> None:
        assert last_applied_api({"kubectl.kubernetes.io/last-applied-configuration": text}) is None
        assert last_applied_api(None) is None

    def test_object_ref(self) -> None:
        assert object_ref("Deployment", {"namespace": "shop", "name": "web"}) == "Deployment shop/web"
        assert object_ref("FlowSchema", {"name": "legacy"}) == "FlowSchema legacy"


class TestRemovedApis:
    def test_manifest_on_removed_api_is_a_blocker_naming_the_object(self) -> None:
        objects = [
            AppliedObject("FlowSchema legacy", "flowcontrol.apiserver.k8s.io/v1beta3", "FlowSchema"),
            AppliedObject("Deployment shop/web", "apps/v1", "Deployment"),
        ]
        result = judge_manifests(objects, V136, V137)
        assert (result.severity, result.passed) == ("blocker", False)
        assert "FlowSchema legacy" in result.summary and "removed in 1.32" in result.summary
        assert isinstance(result.evidence, dict)
        assert result.evidence["scanned"] == 2
        assert result.evidence["removed"][0]["status"].startswith("removed in 1.32, before the current")
        assert "flowcontrol.apiserver.k8s.io/v1" in result.mitigation

    def test_removal_that_this_upgrade_brings(self) -> None:
        objects = [AppliedObject("ServiceCIDR extra", "networking.k8s.io/v1beta1", "ServiceCIDR")]
        result = judge_manifests(objects, V136, V137)
        assert result.severity == "blocker"
        assert isinstance(result.evidence, dict)
        assert result.evidence["removed"][0]["status"] == "removed by this upgrade (in 1.37)"
        # 1.36 still serves it, deprecated: worth knowing, not a blocker.
        assert judge_manifests(objects, V136, Version(1, 36, 3)).severity == "info"

    def test_deprecated_only_is_info(self) -> None:
        objects = [AppliedObject("DeviceClass gpu", "resource.k8s.io/v1beta1", "DeviceClass")]
        result = judge_manifests(objects, V136, V137)
        assert (result.severity, result.passed) == ("info", True)
        assert "DeviceClass gpu" in result.summary

    def test_requested_removed_api_blocks_deprecated_informs(self) -> None:
        samples = metric_samples(TestMetricText.TEXT, "apiserver_requested_deprecated_apis")
        result = judge_requested(samples, V137)
        assert result.severity == "blocker"
        assert "servicecidrs/status.networking.k8s.io/v1beta1 (removed in 1.37)" in result.summary
        assert judge_requested(samples, Version(1, 36, 3)).severity == "info"
        zero = [(samples[1][0], 0.0)]
        assert judge_requested(zero, V137).severity == "ok"

    def test_served_api_the_target_drops(self) -> None:
        served = {"networking.k8s.io/v1beta1": {"ServiceCIDR", "IPAddress"}, "apps/v1": {"Deployment"}}
        result = judge_served(served, V136, V137)
        # Served is not used: the manifests/requests/audit checks judge use (issue 9).
        assert (result.severity, result.passed) == ("info", True)
        assert "IPAddress networking.k8s.io/v1beta1 (removed in 1.37)" in result.summary
        assert judge_served({"apps/v1": {"Deployment"}}, V136, V137).severity == "ok"


# ---- capacity -----------------------------------------------------------------------------------


class TestScheduling:
    TAINT = Taint(key="dedicated", value="gpu", effect="NoSchedule")

    @pytest.mark.parametrize(
        ("toleration", "expected"),
        [
            (Toleration(operator="Exists"), True),
            (Toleration(key="dedicated", operator="Exists"), True),
            (Toleration(key="dedicated", value="gpu"), True),
            (Toleration(key="dedicated", value="cpu"), False),
            (Toleration(key="dedicated", value="gpu", effect="NoExecute"), False),
            (Toleration(key="other", operator="Exists"), False),
        ],
    )
    def test_toleration_matching(self, toleration: Toleration, expected: bool) -> None:
        assert tolerates([toleration], self.TAINT) is expected

    @pytest.mark.parametrize(
        ("requirement", "expected"),
        [
            (("zone", "In", ("a", "b")), True),
            (("zone", "NotIn", ("a",)), False),
            (("zone", "Exists", ()), True),
            (("gpu", "DoesNotExist", ()), True),
            (("cores", "Gt", ("8",)), True),
            (("cores", "Lt", ("8",)), False),
            (("zone", "Gt", ("1",)), False),
        ],
    )
    def test_node_affinity_requirements(
        self, requirement: tuple[str, str, tuple[str, ...]], expected: bool
    ) -> None:
        assert requirement_holds(requirement, {"zone": "a", "cores": "16"}) is expected

    def test_eligibility_names_the_reason(self) -> None:
        pod = PodDemand("shop/a", "n0", 100, 100, node_selector={"slipway.dev/node-pool": "memory"})
        room = node_rooms([node("n1")], [])["n1"]
        assert why_not_eligible(pod, room) == "nodeSelector slipway.dev/node-pool=memory"
        tainted = node_rooms([node("n2", taints=[self.TAINT])], [])["n2"]
        assert why_not_eligible(PodDemand("shop/b", "n0", 1, 1), tainted) == "taint dedicated:NoSchedule"
        assert (
            why_not_eligible(
                PodDemand("shop/c", "n0", 1, 1, tolerations=(Toleration(operator="Exists"),)), tainted
            )
            is None
        )
        affinity = PodDemand(
            "shop/d", "n0", 1, 1, affinity_terms=((("slipway.dev/node-pool", "In", ("compute",)),),)
        )
        assert why_not_eligible(affinity, room) == "required node affinity"


class TestCapacity:
    NODES: ClassVar[list[NodeInfo]] = [node("general-0"), node("general-1"), node("general-2")]

    def test_batch_that_fits(self) -> None:
        pods = [PodDemand(f"shop/web-{i}", "general-0", 1000, GIB) for i in range(3)]
        fit = fit_batch(Batch(index=0, pool="general", nodes=["general-0"]), self.NODES, pods)
        assert fit.fits and set(fit.placed.values()) <= {"general-1", "general-2"}
        assert judge_capacity([fit.batch], self.NODES, pods).severity == "ok"

    def test_shortfall_names_batch_pod_and_numbers(self) -> None:
        # Every node is 3 CPU full; the drained node's 3-CPU pod cannot move.
        pods = [PodDemand(f"shop/hog-{i}", f"general-{i}", 3000, GIB) for i in range(3)]
        batch = Batch(index=4, pool="general", nodes=["general-0"])
        result = judge_capacity([batch], self.NODES, pods)
        assert (result.severity, result.passed) == ("blocker", False)
        assert "batch 4 (pool general: general-0) is short 3000m CPU, 1024Mi for 1 pod(s)" in result.summary
        assert "shop/hog-0 needs 3000m CPU" in result.summary and "has 1000m CPU" in result.summary
        assert isinstance(result.evidence, dict)
        short = result.evidence["short"][0]
        assert short["shortfall"] == {"cpu_millis": 3000, "memory_bytes": GIB, "pods": 1}

    def test_largest_fitting_keeps_a_batch_that_fits(self) -> None:
        pods = [PodDemand("shop/web-0", "general-0", 1000, GIB)]
        batch = Batch(index=2, pool="general", nodes=["general-0", "general-1"])
        fitted, whole = largest_fitting(batch, self.NODES, pods)
        assert fitted == batch and whole.fits

    def test_largest_fitting_cuts_the_batch_to_what_fits_now(self) -> None:
        # general-2 has room for one 3-CPU pod: draining general-0 alone fits, both do not.
        pods = [PodDemand("shop/a", "general-0", 3000, GIB), PodDemand("shop/b", "general-1", 3000, GIB)]
        batch = Batch(index=1, pool="general", nodes=["general-0", "general-1"])
        fitted, whole = largest_fitting(batch, self.NODES, pods)
        assert fitted is not None and fitted.nodes == ["general-0"] and fitted.index == 1
        assert not whole.fits and "shop/" in describe_shortfall(whole)

    def test_largest_fitting_tries_each_node_alone(self) -> None:
        # general-0's pod fits nowhere; general-1's small pod does (its bare pod stays).
        pods = [
            PodDemand("shop/big", "general-0", 3500, GIB),
            PodDemand("shop/small", "general-1", 500, GIB),
            PodDemand("shop/bare", "general-1", 3000, GIB, moves=False),
            PodDemand("shop/fill", "general-2", 3000, GIB),
        ]
        batch = Batch(index=0, pool="general", nodes=["general-0", "general-1"])
        fitted, _ = largest_fitting(batch, self.NODES, pods)
        assert fitted is not None and fitted.nodes == ["general-1"]

    def test_largest_fitting_refuses_when_every_other_node_is_cordoned(self) -> None:
        # The run's earlier batches quarantined (cordoned) the rest of the pool.
        nodes = [node("general-0"), node("general-1", cordoned=True), node("general-2", cordoned=True)]
        pods = [PodDemand(f"shop/web-{i}", "general-0", 100, GIB) for i in range(5)]
        fitted, whole = largest_fitting(Batch(index=3, pool="general", nodes=["general-0"]), nodes, pods)
        assert fitted is None
        line = describe_shortfall(whole)
        assert line.startswith("batch 3 (pool general: general-0) is short 500m CPU, 5120Mi for 5 pod(s): ")
        assert "no schedulable node is left" in line and "(+2 more)" in line

    def test_a_node_held_for_quarantine_moves_nothing_and_takes_nothing(self) -> None:
        # general-0 holds a pod no eviction will move: it is quarantined, not drained.
        pods = [
            PodDemand("shop/pinned", "general-0", 3500, GIB),
            PodDemand("shop/web", "general-1", 3000, GIB),
        ]
        batch = Batch(index=0, pool="general", nodes=["general-0", "general-1"])
        assert not fit_batch(batch, self.NODES, pods).fits
        fit = fit_batch(batch, self.NODES, pods, held={"general-0"})
        assert fit.fits and fit.placed == {"shop/web": "general-2"}  # not onto the held node
        fitted, _ = largest_fitting(batch, self.NODES, pods, held={"general-0"})
        assert fitted == batch

    def test_pod_slots_count(self) -> None:
        nodes = [node("a", pods=2), node("b", pods=2)]
        pods = [PodDemand(f"ns/p{i}", "a" if i < 2 else "b", 1, 1) for i in range(4)]
        assert not fit_batch(Batch(index=0, pool="general", nodes=["a"]), nodes, pods).fits

    def test_bare_pods_and_cordoned_or_unready_nodes(self) -> None:
        nodes = [node("a"), node("b", cordoned=True), node("c", ready=False), node("d", cpu=100)]
        bare = PodDemand("ns/bare", "a", 3000, GIB, moves=False)
        fit = fit_batch(Batch(index=0, pool="general", nodes=["a"]), nodes, [bare])
        assert fit.fits and fit.evicted == []
        moved = PodDemand("ns/rs-pod", "a", 3000, GIB)
        fit = fit_batch(Batch(index=0, pool="general", nodes=["a"]), nodes, [moved])
        assert [p.ref for p, _ in fit.unplaced] == ["ns/rs-pod"]
        assert "roomiest of 1 node(s) it may run on (d)" in fit.unplaced[0][1]

    def test_no_eligible_node_says_why(self) -> None:
        nodes = [
            node("a"),
            node("cp", taints=[Taint(key="node-role.kubernetes.io/control-plane", effect="NoSchedule")]),
        ]
        pods = [PodDemand("ns/p", "a", 10, 10)]
        fit = fit_batch(Batch(index=0, pool="general", nodes=["a"]), nodes, pods)
        assert "no schedulable node is left that it may run on" in fit.unplaced[0][1]
        assert "taint node-role.kubernetes.io/control-plane:NoSchedule" in fit.unplaced[0][1]

    def test_pod_demand_from_v1pod(self) -> None:
        def container(cpu: str, memory: str) -> client.V1Container:
            return client.V1Container(
                name="c",
                image="i",
                resources=client.V1ResourceRequirements(requests={"cpu": cpu, "memory": memory}),
            )

        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(
                name="api-1",
                namespace="shop",
                owner_references=[
                    client.V1OwnerReference(
                        api_version="apps/v1", kind="ReplicaSet", name="api", uid="u", controller=True
                    )
                ],
            ),
            spec=client.V1PodSpec(
                node_name="general-0",
                containers=[container("250m", "256Mi"), container("250m", "256Mi")],
                init_containers=[container("1", "128Mi")],
                overhead={"cpu": "10m"},
                node_selector={"slipway.dev/node-pool": "general"},
                tolerations=[client.V1Toleration(operator="Exists", effect="NoSchedule")],
            ),
            status=client.V1PodStatus(phase="Running"),
        )
        demand = pod_demand(pod)
        assert (demand.cpu_millis, demand.memory_bytes) == (1010, 512 * 2**20)
        assert demand.moves and demand.node == "general-0"
        assert demand.tolerations == (Toleration(operator="Exists", effect="NoSchedule"),)
        pod.metadata.owner_references = None
        assert not pod_demand(pod).moves  # a bare pod is not recreated: it needs no room


# ---- inventory ----------------------------------------------------------------------------------


def static_pod(component: str, image: str, node_name: str, *, ready: bool = True) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=f"{component}-{node_name}",
            namespace="kube-system",
            labels={"component": component, "tier": "control-plane"},
        ),
        spec=client.V1PodSpec(
            node_name=node_name,
            containers=[
                client.V1Container(
                    name=component,
                    image=image,
                    command=[component, "--feature-gates=Foo=true", "--v=2"],
                    args=["--secure-port=6443", "not-a-flag"],
                )
            ],
        ),
        status=client.V1PodStatus(
            phase="Running",
            conditions=[client.V1PodCondition(type="Ready", status="True" if ready else "False")],
            container_statuses=[
                client.V1ContainerStatus(
                    name=component,
                    image=image,
                    image_id="",
                    ready=ready,
                    restart_count=4,
                    state=client.V1ContainerState(
                        waiting=None if ready else client.V1ContainerStateWaiting(reason="CrashLoopBackOff")
                    ),
                )
            ],
        ),
    )


class TestKubeadmStaticPods:
    @pytest.mark.parametrize(
        ("image", "version"),
        [
            ("registry.k8s.io/kube-apiserver:v1.36.3", "1.36.3"),
            ("registry.k8s.io/etcd:3.6.4-0", "3.6.4"),
            ("localhost:5000/kube-scheduler:v1.35.1@sha256:" + "a" * 64, "1.35.1"),
            ("registry.k8s.io/kube-apiserver", None),
            ("registry.k8s.io/kube-apiserver:latest", None),
        ],
    )
    def test_image_version(self, image: str, version: str | None) -> None:
        assert image_version(image) == version

    def test_versions_health_and_flags_per_node(self) -> None:
        pods = [
            static_pod("kube-apiserver", "registry.k8s.io/kube-apiserver:v1.36.3", "cp-0"),
            static_pod("kube-apiserver", "registry.k8s.io/kube-apiserver:v1.37.2", "cp-1", ready=False),
            static_pod("etcd", "registry.k8s.io/etcd:3.6.16-0", "cp-0"),
            static_pod("kube-proxy", "registry.k8s.io/kube-proxy:v1.36.3", "cp-0"),
        ]
        assert static_pod_versions(pods) == {
            "kube-apiserver": {"cp-0": "1.36.3", "cp-1": "1.37.2"},
            "etcd": {"cp-0": "3.6.16"},
        }
        health = static_pod_health(pods)
        assert health["kube-apiserver"] == {
            "cp-0": HEALTHY,
            "cp-1": "container kube-apiserver waiting: CrashLoopBackOff",
        }
        flags = static_pod_flags(pods)
        assert flags["kube-apiserver"]["cp-0"] == ["--feature-gates=Foo=true", "--v=2", "--secure-port=6443"]


def test_node_info_from_v1node() -> None:
    v1 = client.V1Node(
        metadata=client.V1ObjectMeta(name="cp-0", labels={"node-role.kubernetes.io/control-plane": ""}),
        spec=client.V1NodeSpec(
            unschedulable=True,
            taints=[client.V1Taint(key="node-role.kubernetes.io/control-plane", effect="NoSchedule")],
        ),
        status=client.V1NodeStatus(
            allocatable={"cpu": "3500m", "memory": "15Gi", "pods": "110"},
            conditions=[client.V1NodeCondition(type="Ready", status="True")],
            node_info=client.V1NodeSystemInfo(
                architecture="amd64",
                boot_id="",
                container_runtime_version="",
                kernel_version="",
                kube_proxy_version="",
                kubelet_version="v1.36.3",
                machine_id="",
                operating_system="linux",
                os_image="",
                system_uuid="",
            ),
        ),
    )
    info = node_info(v1)
    assert (info.pool, info.control_plane, info.ready, info.unschedulable) == (
        "control-plane",
        True,
        True,
        True,
    )
    assert info.allocatable == Resources(cpu_millis=3500, memory_bytes=15 * GIB, pods=110)
    assert info.kubelet_version == "1.36.3"
    assert info.taints == [Taint(key="node-role.kubernetes.io/control-plane", effect="NoSchedule")]


# ---- etcd judges -------------------------------------------------------------------------------

MEMBERS = [
    Member("a1", "etcd-0", ("https://e0:2380",), ("https://e0:2379",)),
    Member("b2", "etcd-1", ("https://e1:2380",), ("https://e1:2379",)),
    Member("c3", "etcd-2", ("https://e2:2380",), ("https://e2:2379",)),
]


def status(i: int, *, leader: str = "b2", version: str = "3.6.16", db: int = 10 * 2**20) -> MemberStatus:
    return MemberStatus(
        endpoint=f"https://e{i}:2379",
        member_id=MEMBERS[i].id,
        version=version,
        storage_version="3.6.0",
        db_size=db,
        db_size_in_use=db,
        db_quota=2 * GIB,
        leader_id=leader,
        raft_term=2,
        raft_index=100,
        raft_applied_index=100,
        revision=90,
    )


class TestEtcdParsing:
    def test_members_status_hash_alarms(self) -> None:
        members = parse_members(
            {
                "members": [
                    {"ID": 1877657415264912697, "name": "etcd-0", "peerURLs": ["p"], "clientURLs": ["c"]},
                    {"ID": 10, "peerURLs": ["p2"]},
                ]
            }
        )
        by_name = {m.name: m for m in members}
        assert by_name["etcd-0"] == Member("1a0ec7788ebe4539", "etcd-0", ("p",), ("c",))
        assert by_name["(unstarted a)"].client_urls == ()
        entry = {
            "Endpoint": "https://e0:2379",
            "Status": {
                "header": {"member_id": 10, "revision": 629, "raft_term": 2},
                "version": "3.6.16",
                "dbSize": 1077248,
                "leader": 10,
                "raftIndex": 651,
                "raftTerm": 2,
                "raftAppliedIndex": 651,
                "dbSizeInUse": 1000000,
                "storageVersion": "3.6.0",
                "dbSizeQuota": 2147483648,
            },
        }
        parsed = parse_status(entry)
        assert parsed.is_leader and parsed.revision == 629 and parsed.db_quota == 2 * GIB
        kv = parse_hashkv(
            {
                "Endpoint": "x",
                "HashKV": {
                    "header": {"member_id": 11},
                    "hash": 7,
                    "compact_revision": -1,
                    "hash_revision": 630,
                },
            }
        )
        assert kv == KVHash("x", "b", 7, 630, -1)
        assert [
            a.alarm
            for a in parse_alarms({"alarms": [{"memberID": 10, "alarm": 1}, {"memberID": 11, "alarm": 2}]})
        ] == [
            "NOSPACE",
            "CORRUPT",
        ]

    def test_reason_from_skips_logs_and_stack_frames(self) -> None:
        stderr = '{"level":"warn","msg":"retrying"}\nError: context deadline exceeded\n'
        assert reason_from(stderr) == "context deadline exceeded"
        panic = "panic: assertion failed: page 0\n\ngoroutine 1 [running]:\n\tgo.etcd.io/bbolt/x.go:3\n"
        assert reason_from(panic) == "the tool crashed reading it (panic: assertion failed: page 0)"
        assert reason_from("") == "no output"


class TestEtcdHealth:
    def test_healthy_cluster(self) -> None:
        statuses = PerEndpoint({s.endpoint: s for s in (status(0), status(1), status(2))})
        health = judge_health(
            MEMBERS, statuses, PerEndpoint({f"https://e{i}:2379": 0.01 for i in range(3)}), []
        )
        assert health.healthy and health.leader == "etcd-1" and not health.warnings
        result = judge_etcd_health(health)
        assert result.severity == "ok" and "leader etcd-1" in result.summary

    def test_down_member_alarm_and_leader_disagreement_are_named(self) -> None:
        statuses = PerEndpoint(
            {s.endpoint: s for s in (status(0), status(1, leader="a1"))},
            {"https://e2:2379": "context deadline exceeded"},
        )
        health = judge_health(MEMBERS, statuses, PerEndpoint(), [Alarm("b2", "NOSPACE")])
        assert (
            "etcd member etcd-2 (https://e2:2379) is unhealthy: context deadline exceeded" in health.problems
        )
        assert "etcd alarm NOSPACE is raised on member etcd-1" in health.problems
        assert any("disagree on the leader" in p for p in health.problems)
        assert judge_etcd_health(health).severity == "blocker"

    def test_quota_and_versions_warn(self) -> None:
        statuses = PerEndpoint(
            {s.endpoint: s for s in (status(0, db=int(1.7 * GIB)), status(1, version="3.7.3"))}
        )
        health = judge_health(MEMBERS[:2], statuses, PerEndpoint(), [])
        assert health.healthy
        assert any(
            "etcd-0: database 1.70 GiB" in w and "85% of the 2.00 GiB quota" in w for w in health.warnings
        )
        assert any("different versions (etcd-0 3.6.16, etcd-1 3.7.3)" in w for w in health.warnings)
        assert judge_etcd_health(health).severity == "warning"

    def test_hashes(self) -> None:
        same = PerEndpoint(
            {f"https://e{i}:2379": KVHash(f"https://e{i}:2379", "x", 5, 90, 10) for i in range(3)}
        )
        assert judge_hashes(90, same, MEMBERS).consistent
        differ = PerEndpoint(same.results | {"https://e2:2379": KVHash("https://e2:2379", "x", 6, 90, 10)})
        result = judge_etcd_consistency(judge_hashes(90, differ, MEMBERS))
        assert result.severity == "blocker" and "etcd-2 6" in result.summary
        compacting = PerEndpoint(
            same.results | {"https://e2:2379": KVHash("https://e2:2379", "x", 6, 90, 50)}
        )
        assert "compaction is in progress" in judge_hashes(90, compacting, MEMBERS).problems[0]

    def test_backup_judgement(self) -> None:
        proof = BackupProof("/b/s.db", "ab" * 32, 10, 90, 40, "3.6.0", 90, 40, True, 1.2)
        assert judge_backup(proof).severity == "ok"
        bad = BackupProof(
            "/b/s.db", "ab" * 32, 10, 0, 0, "", 0, 0, False, 0.1, "etcd snapshot /b/s.db is unreadable"
        )
        result = judge_backup(bad)
        assert result.severity == "blocker" and "/b/s.db is unreadable" in result.summary

    def test_restore_plan_bumps_and_marks_compacted(self, tmp_path: Path) -> None:
        (tmp_path / "etcdutl").touch()
        etcd = EtcdEndpoints(endpoints=("https://e0:2379",), bin_dir=tmp_path)
        plan = restore_plan(
            etcd, Path("/b/s.db"), {"etcd-0": "https://e0:2380"}, "/var/lib/etcd-restored/{name}"
        )
        command = plan.commands["etcd-0"]
        assert "--bump-revision=1000000000" in command and "--mark-compacted" in command
        assert "--data-dir=/var/lib/etcd-restored/etcd-0" in command
        with pytest.raises(ValueError, match="bump_revision must be > 0"):
            restore_plan(etcd, Path("/b/s.db"), {"etcd-0": "u"}, "/d/{name}", bump_revision=0)


# ---- PDBs, workloads, nodes, control plane -------------------------------------------------------


def test_pdbs_warn_naming_budget_and_pods() -> None:
    entries = [
        {
            "pdb": "shop/web",
            "reason": "1 healthy, 2 needed",
            "permanent": False,
            "disruptions_allowed": 0,
            "pods": ["shop/web-1"],
            "nodes": ["n1"],
        },
        {
            "pdb": "shop/ledger",
            "reason": "minAvailable 1 with 1 pod",
            "permanent": True,
            "disruptions_allowed": 0,
            "pods": ["shop/ledger-1"],
            "nodes": ["n2"],
        },
    ]
    result = judge_pdbs(entries, request(blocked_drain_policy="quarantine"))
    assert (result.severity, result.passed) == ("warning", False)
    assert result.summary.index("shop/ledger") < result.summary.index("shop/web")  # permanent first
    assert "pods shop/ledger-1" in result.summary and "blocked_drain_policy=quarantine" in result.mitigation
    assert judge_pdbs(entries, request(), nodes=["n9"]).severity == "ok"


def workload(ref: str, replicas: int = 2, **fields: Any) -> Workload:
    kind, _, rest = ref.partition(" ")
    namespace = rest.split("/")[0]
    return Workload(
        ref=ref,
        kind=kind,
        namespace=namespace,
        pods=tuple(f"{namespace}/p{i}" for i in range(replicas)),
        nodes=("n1",),
        **fields,
    )


class TestWorkloads:
    def test_critical_reasons(self) -> None:
        assert critical_reason(workload("Deployment kube-system/coredns")) == "namespace kube-system"
        assert critical_reason(workload("Deployment a/b", priority_class="system-node-critical")) is not None
        assert (
            critical_reason(workload("Deployment a/b", priority=1_000_000)) == "priority 1000000 (no class)"
        )
        assert (
            critical_reason(workload("Deployment a/b", labels=(("tier", "pay"),)), [("tier", "pay")])
            == "label tier=pay"
        )
        assert critical_reason(workload("Deployment a/b", priority=999_999)) is None

    def test_critical_exposed_or_guarded(self) -> None:
        guarded = workload("Deployment shop/gw", 3, priority=1_000_000, guarded_by="shop/gw")
        assert judge_critical([guarded], request()).severity == "info"
        lonely = workload("Deployment shop/pay", 1, priority=1_000_000, guarded_by="shop/pay")
        result = judge_critical([guarded, lonely], request())
        assert result.severity == "warning" and "Deployment shop/pay" in result.summary
        assert judge_critical([workload("Deployment shop/web")], request()).severity == "ok"

    def test_single_stateful_emptydir(self) -> None:
        loads = [
            workload("Deployment shop/ledger", 1),
            workload("Pod shop/debug", 1),
            workload("StatefulSet shop/db", 3, claims=("data-db-0",)),
            workload("Deployment shop/cache", 2, emptydir_volumes=("scratch",)),
        ]
        single = judge_single_replicas(loads)
        assert single.severity == "warning" and "Deployment shop/ledger, Pod shop/debug" in single.summary
        assert "1 bare pod(s)" in single.summary
        assert "StatefulSet shop/db" in judge_stateful(loads).summary
        refused = judge_emptydir(loads, request())
        assert "refuse" in refused.summary and "Deployment shop/cache (scratch)" in refused.summary
        assert "delete the emptyDir data" in judge_emptydir(loads, request(delete_emptydir_data=True)).summary


def test_node_readiness() -> None:
    assert check_node_readiness(inventory([node("a"), node("b")])).severity == "ok"
    cordoned = check_node_readiness(inventory([node("a"), node("b", cordoned=True)]))
    assert (cordoned.severity, cordoned.passed) == ("info", True)
    down = check_node_readiness(inventory([node("a", ready=False), node("b")]))
    assert down.severity == "blocker" and "NotReady: a" in down.summary


def test_control_plane_health() -> None:
    healthy = {
        "kube-apiserver": {"kube-apiserver-0": HEALTHY},
        "kube-controller-manager": {"kcm": HEALTHY},
        "kube-scheduler": {"sched": HEALTHY},
    }
    assert judge_control_plane(healthy).severity == "ok"
    sick = healthy | {
        "kube-apiserver": {"kube-apiserver-0": HEALTHY, "kube-apiserver-1": "/readyz returned 500: [-]etcd"}
    }
    result = judge_control_plane(sick)
    assert (
        result.severity == "blocker"
        and "kube-apiserver kube-apiserver-1: /readyz returned 500" in result.summary
    )
    missing = judge_control_plane({k: v for k, v in healthy.items() if k != "kube-scheduler"})
    assert "no kube-scheduler instance found" in missing.summary


# ---- versions, gates, window --------------------------------------------------------------------


def test_version_skew_and_path() -> None:
    fine = inventory([node("a"), node("b")])
    assert check_version_skew(fine).severity == "ok"
    path = check_upgrade_path(fine, V137)
    assert path.severity == "info" and "etcd 3.6.16->3.7.3" in path.summary
    ahead = inventory([node("a", kubelet="1.37.2")])
    skew = check_version_skew(ahead)
    assert skew.severity == "blocker" and "kubelet on node a is 1.37.2" in skew.summary
    assert check_upgrade_path(inventory([node("a")]), Version(1, 35, 4)).severity == "blocker"
    assert check_upgrade_path(inventory([node("a")], etcd={}), V137).severity == "blocker"


def test_feature_gates_from_flags() -> None:
    assert gates_in(["--feature-gates=A=true,B=false", "--v=2", "--feature-gates=A=false"]) == {
        "A": False,
        "B": False,
    }
    flags = {
        "kube-apiserver": {"kube-apiserver-0": ["--feature-gates=AdmissionWebhookMatchConditions=true"]},
        "kube-controller-manager": {"kcm": ["--concurrent-service-syncs=5"]},
        "etcd": {"etcd-0": ["--feature-gates=Whatever=true"]},
    }
    result = judge_gates(flags, V136, V137)
    assert result.severity == "blocker"
    assert (
        "kube-apiserver-0: feature gate AdmissionWebhookMatchConditions was removed in 1.33" in result.summary
    )
    assert "kcm: flag --concurrent-service-syncs was removed in 1.37" in result.summary
    warn = judge_gates({"kube-scheduler": {"s": ["--kubeconfig=/k"]}}, V136, V137)
    assert warn.severity == "warning"
    broken = judge_gates({"kube-scheduler": {"s": ["--feature-gates=Nope"]}}, V136, V137)
    assert broken.severity == "blocker" and "expected NAME=true" in broken.summary
    assert judge_gates({"kube-scheduler": {"s": ["--v=2"]}}, V136, V137).severity == "ok"


class TestWindow:
    NODES: ClassVar[list[NodeInfo]] = [node(f"general-{i}") for i in range(4)]

    def plan(self, req: UpgradeRequest) -> Any:
        return plan_batches(self.NODES, req)

    def test_no_window(self) -> None:
        req = request()
        result = check_maintenance_window(req, self.plan(req), at("2026-11-28T02:00:00"))
        assert result.severity == "info" and "predicted to take 1:02:00" in result.summary
        open_ended = request(window_start="2026-11-28T01:00:00Z")
        assert check_maintenance_window(open_ended, self.plan(open_ended), at("2026-11-28T02:00:00")).passed

    def test_fits_pauses_or_blocks(self) -> None:
        req = request(window_start="2026-11-28T01:00:00Z", window_end="2026-11-28T05:00:00Z")
        plan = self.plan(req)
        # 4 batches x (900 s per node + 30 s soak) = 62 min.
        assert check_maintenance_window(req, plan, at("2026-11-28T01:00:00")).severity == "ok"
        pause = check_maintenance_window(req, plan, at("2026-11-28T04:00:00"))
        assert pause.severity == "warning" and "pause when the window closes" in pause.summary
        late = check_maintenance_window(req, plan, at("2026-11-28T04:45:00"))
        assert late.severity == "blocker" and "not even one batch" in late.summary
        closed = check_maintenance_window(req, plan, at("2026-11-28T06:00:00"))
        assert closed.severity == "blocker" and "already closed" in closed.summary
        # With history a node takes 75 s: 4 x (75 + 30) s plus the 10 min margin fits in 20 min.
        history = check_maintenance_window(req, plan, at("2026-11-28T04:40:00"), history=[60.0, 90.0])
        assert history.severity == "ok"

    def test_schedule(self) -> None:
        req = request()
        schedule = parse_windows(["Sat 01:00-05:00 UTC"])
        result = check_maintenance_window(
            req, self.plan(req), at("2026-11-28T01:30:00"), schedule=MaintenanceSchedule(schedule)
        )
        assert result.severity == "ok"  # 2026-11-28 is a Saturday
        assert isinstance(result.evidence, dict) and result.evidence["available_seconds"] == 12600


def test_evidence_lists_are_capped() -> None:
    items = list(range(MAX_LISTED + 5))
    assert listed(items)[-1] == "... and 5 more" and len(listed(items)) == MAX_LISTED + 1
