"""kubeadm upgrades: the runbook commands and the privileged pod, for each phase. No cluster."""

from __future__ import annotations

import re
from typing import Any, cast

import pytest
from kubernetes import client

from slipway.upgraders.controlplane import ComponentRef, StepFailed, StepRefused
from slipway.upgraders.kubeadm import (
    CONTAINER_NAME,
    KubeadmControlPlaneUpgrader,
    PodOutcome,
    apt_version,
    check_image,
    kubeadm_commands,
    kubeadm_script,
    kubeadm_upgrade_pod,
    pkgs_repo,
    pod_name,
    run_digest,
)

IMAGE = "registry.example/slipway-nsenter@sha256:" + "ab" * 32
RUN = "manual__2026-12-02T16:00:00+00:00"


def test_apt_versions_and_repository_follow_pkgs_k8s_io() -> None:
    assert apt_version("1.37.2") == "1.37.2-1.1"
    assert apt_version("v1.36.3") == "1.36.3-1.1"
    assert pkgs_repo("1.37.2") == "https://pkgs.k8s.io/core:/stable:/v1.37/deb/"


def test_apply_phase_runs_the_first_control_plane_node_runbook_in_order() -> None:
    commands = kubeadm_commands("1.37.2", "apply")
    assert commands == [
        "install -d -m 0755 /etc/apt/keyrings",
        "curl -fsSL https://pkgs.k8s.io/core:/stable:/v1.37/deb/Release.key "
        "| gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg",
        "echo 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] "
        "https://pkgs.k8s.io/core:/stable:/v1.37/deb/ /' > /etc/apt/sources.list.d/kubernetes.list",
        "apt-get update -q",
        "apt-mark unhold kubeadm",
        "apt-get install -y -q kubeadm=1.37.2-1.1",
        "apt-mark hold kubeadm",
        'test "$(kubeadm version -o short)" = v1.37.2',
        "kubeadm upgrade plan v1.37.2",
        "kubeadm upgrade apply v1.37.2 --yes",
        "apt-mark unhold kubelet kubectl",
        "apt-get install -y -q kubelet=1.37.2-1.1 kubectl=1.37.2-1.1",
        "apt-mark hold kubelet kubectl",
        "systemctl daemon-reload",
        "systemctl restart kubelet",
    ]


def test_node_phase_runs_upgrade_node_and_never_apply() -> None:
    commands = kubeadm_commands("1.37.2", "node")
    assert "kubeadm upgrade node" in commands
    assert not any("upgrade apply" in c or "upgrade plan" in c for c in commands)
    # kubeadm first, its node upgrade next, the kubelet last.
    kubeadm_install = commands.index("apt-get install -y -q kubeadm=1.37.2-1.1")
    assert kubeadm_install < commands.index("kubeadm upgrade node")
    assert commands.index("kubeadm upgrade node") < commands.index(
        "apt-get install -y -q kubelet=1.37.2-1.1 kubectl=1.37.2-1.1"
    )
    assert commands[-1] == "systemctl restart kubelet"


def test_downgrade_allows_older_packages_and_forces_apply_without_plan() -> None:
    commands = kubeadm_commands("1.36.3", "apply", downgrade=True)
    assert "apt-get install -y -q --allow-downgrades kubeadm=1.36.3-1.1" in commands
    assert "kubeadm upgrade apply v1.36.3 --yes --force" in commands
    assert not any("upgrade plan" in c for c in commands)
    assert "https://pkgs.k8s.io/core:/stable:/v1.36/deb/" in commands[1]


def test_bad_phase_or_version_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="phase: 'worker' must be 'apply'"):
        kubeadm_commands("1.37.2", "worker")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("malformed version '1.37'")):
        kubeadm_commands("1.37", "node")


def test_script_stops_at_the_first_failure_and_traces_each_step() -> None:
    script = kubeadm_script("1.37.2", "node")
    lines = script.splitlines()
    assert lines[0] == "set -euxo pipefail"
    assert lines[1] == "export DEBIAN_FRONTEND=noninteractive"
    assert lines[2:] == kubeadm_commands("1.37.2", "node")


@pytest.mark.parametrize("phase", ["apply", "node"])
def test_pod_is_privileged_on_the_host_pinned_to_its_node(phase: str) -> None:
    pod = kubeadm_upgrade_pod("cp-1", "1.37.2", phase, IMAGE, run_id=RUN)  # type: ignore[arg-type]
    spec = pod["spec"]
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
    # The opt-in namespace, the only one Pod Security lets run privileged pods.
    assert pod["metadata"]["namespace"] == "slipway-kubeadm"
    assert pod["metadata"]["labels"]["slipway.dev/phase"] == phase
    assert pod["metadata"]["labels"]["slipway.dev/target-version"] == "1.37.2"
    assert pod["metadata"]["labels"]["slipway.dev/run"] == run_digest(RUN)
    assert pod["metadata"]["annotations"] == {"slipway.dev/node": "cp-1", "slipway.dev/run-id": RUN}
    assert spec["nodeName"] == "cp-1"
    assert spec["hostPID"] is True and spec["hostNetwork"] is True
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["activeDeadlineSeconds"] > 0
    (container,) = spec["containers"]
    assert container["name"] == CONTAINER_NAME == "base"  # what KubernetesPodOperator merges with
    assert container["image"] == IMAGE
    assert container["securityContext"] == {"privileged": True}
    command = container["command"]
    assert command[:7] == ["nsenter", "--target=1", "--mount", "--uts", "--ipc", "--net", "--pid"]
    assert command[7:10] == ["--", "/bin/bash", "-c"]
    assert command[10] == kubeadm_script("1.37.2", phase)  # type: ignore[arg-type]


def test_pod_tolerates_control_plane_cordon_and_not_ready_taints() -> None:
    tolerations = kubeadm_upgrade_pod("cp-1", "1.37.2", "apply", IMAGE, run_id=RUN)["spec"]["tolerations"]
    assert {
        "key": "node-role.kubernetes.io/control-plane",
        "operator": "Exists",
        "effect": "NoSchedule",
    } in tolerations
    assert {
        "key": "node.kubernetes.io/unschedulable",
        "operator": "Exists",
        "effect": "NoSchedule",
    } in tolerations
    assert {"operator": "Exists", "effect": "NoExecute"} in tolerations


def test_pod_namespace_and_deadline_can_be_chosen() -> None:
    pod = kubeadm_upgrade_pod(
        "w-1", "1.37.2", "node", IMAGE, namespace="ops", run_id=RUN, deadline_seconds=600
    )
    assert pod["metadata"]["namespace"] == "ops"
    assert pod["spec"]["activeDeadlineSeconds"] == 600


def test_a_node_name_longer_than_a_label_value_is_fine() -> None:
    node = "ip-10-0-12-34.eu-west-1.compute.internal.example.corp.with.a.long.suffix"
    assert len(node) > 63
    pod = kubeadm_upgrade_pod(node, "1.37.2", "node", IMAGE, run_id=RUN)
    assert pod["metadata"]["annotations"]["slipway.dev/node"] == node
    assert pod["spec"]["nodeName"] == node
    assert all(len(v) <= 63 for v in pod["metadata"]["labels"].values())


@pytest.mark.parametrize(
    "image",
    [
        "registry.k8s.io/kubeadm-upgrader:latest",
        "registry.example/nsenter:1.0",
        "registry.example/nsenter@sha256:abc",
        "registry.example/nsenter@sha256:" + "AB" * 32,
        "",
    ],
)
def test_an_image_not_pinned_by_digest_is_refused_by_name(image: str) -> None:
    with pytest.raises(ValueError, match=r"^kubeadm_image: .* must be pinned by digest"):
        check_image(image)
    with pytest.raises(ValueError, match="kubeadm_image"):
        kubeadm_upgrade_pod("cp-1", "1.37.2", "node", image, run_id=RUN)
    with pytest.raises(ValueError, match="kubeadm_image"):
        KubeadmControlPlaneUpgrader(cast(client.CoreV1Api, None), RecordingRunner(FakeCore({})), image)
    assert check_image(IMAGE) == IMAGE


def test_pod_is_valid_for_the_kubernetes_client() -> None:
    pod = kubeadm_upgrade_pod("cp-1", "1.37.2", "apply", IMAGE, run_id=RUN)
    model = client.ApiClient()._ApiClient__deserialize(pod, "V1Pod")  # the client's own loader
    assert isinstance(model, client.V1Pod)
    assert model.spec.host_pid is True and model.spec.containers[0].security_context.privileged is True


def test_pod_names_are_dns_labels_stable_within_a_run_and_unique_to_it() -> None:
    run = run_digest(RUN)
    assert pod_name("cp-1", "1.37.2", "apply", RUN) == f"slipway-kubeadm-apply-cp-1-v1-37-2-{run}"
    assert (
        pod_name("cp-1", "1.36.3", "apply", RUN, downgrade=True)
        == f"slipway-kubeadm-rollback-cp-1-v1-36-3-{run}"
    )
    node = "ip-10-0-12-34.eu-west-1.compute.internal.example.corp"
    long = pod_name(node, "1.37.2", "node", RUN)
    assert len(long) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long)
    assert long.endswith(f"-{run}")
    assert long == pod_name(node, "1.37.2", "node", RUN)  # a retried task finds its pod
    # A later run never finds (and adopts) an earlier run's finished pod.
    assert pod_name(node, "1.37.2", "node", "scheduled__later") != long
    assert pod_name("cp-1", "1.37.2", "apply", "scheduled__later") != pod_name("cp-1", "1.37.2", "apply", RUN)


# ---- the upgrader, against a recorded cluster state ---------------------------------------


class FakeCore:
    """The two reads the upgrader makes, answering from a dict of node -> component versions."""

    def __init__(self, versions: dict[str, dict[str, str]]) -> None:
        self.versions = versions

    def list_node(self, label_selector: str = "", field_selector: str = "") -> client.V1NodeList:
        names = sorted(self.versions)
        if field_selector:
            names = [n for n in names if field_selector == f"metadata.name={n}"]
        return client.V1NodeList(items=[self._node(n) for n in names])

    def _node(self, name: str) -> client.V1Node:
        return client.V1Node(
            metadata=client.V1ObjectMeta(name=name),
            status=client.V1NodeStatus(
                node_info=client.V1NodeSystemInfo(
                    kubelet_version=f"v{self.versions[name]['kubelet']}",
                    architecture="",
                    boot_id="",
                    container_runtime_version="",
                    kernel_version="",
                    kube_proxy_version="",
                    machine_id="",
                    operating_system="",
                    os_image="",
                    system_uuid="",
                ),
                conditions=[client.V1NodeCondition(type="Ready", status="True")],
            ),
        )

    def list_namespaced_pod(self, namespace: str, field_selector: str = "") -> client.V1PodList:
        node = field_selector.removeprefix("spec.nodeName=")
        pods = [
            client.V1Pod(
                metadata=client.V1ObjectMeta(name=f"{component}-{node}", labels={"component": component}),
                spec=client.V1PodSpec(
                    node_name=node,
                    containers=[
                        client.V1Container(name=component, image=f"registry.k8s.io/{component}:v{v}")
                    ],
                ),
                status=client.V1PodStatus(conditions=[client.V1PodCondition(type="Ready", status="True")]),
            )
            for component, v in self.versions.get(node, {}).items()
            if component != "kubelet"
        ]
        return client.V1PodList(items=pods)


def _node_at(version: str) -> dict[str, str]:
    return {c: version for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")}


class RecordingRunner:
    """Runs nothing; records each pod and plays kubeadm by moving the node's versions."""

    def __init__(self, core: FakeCore, phase: str = "Succeeded") -> None:
        self.core = core
        self.phase = phase
        self.pods: list[dict[str, Any]] = []

    def __call__(self, pod: dict[str, Any]) -> PodOutcome:
        self.pods.append(pod)
        if self.phase == "Succeeded":
            target = pod["metadata"]["labels"]["slipway.dev/target-version"]
            self.core.versions[pod["spec"]["nodeName"]] = _node_at(target)
        return PodOutcome(self.phase, "E0101 preflight failed: example")


def _upgrader(
    core: FakeCore, runner: RecordingRunner, deleted: list[tuple[str, str]] | None = None
) -> KubeadmControlPlaneUpgrader:
    return KubeadmControlPlaneUpgrader(
        cast(client.CoreV1Api, core),
        runner,
        IMAGE,
        run_id=RUN,
        delete_pod=None if deleted is None else lambda name, ns: deleted.append((ns, name)),
        settle_seconds=1,
    )


def test_first_node_applies_the_others_run_upgrade_node_and_repeats_are_no_ops() -> None:
    core = FakeCore({"cp-a": _node_at("1.36.3"), "cp-b": _node_at("1.36.3"), "cp-c": _node_at("1.36.3")})
    runner = RecordingRunner(core)
    deleted: list[tuple[str, str]] = []
    upgrader = _upgrader(core, runner, deleted)
    refs = upgrader.components()
    assert [r.name for r in refs] == ["cp-a", "cp-b", "cp-c"]
    assert {r.kind for r in refs} == {"control-plane-node"}
    results = [upgrader.upgrade(ref, "1.37.2") for ref in refs]
    assert [r.changed for r in results] == [True, True, True]
    assert [p["metadata"]["labels"]["slipway.dev/phase"] for p in runner.pods] == ["apply", "node", "node"]
    again = [upgrader.upgrade(ref, "1.37.2") for ref in refs]
    assert [r.changed for r in again] == [False, False, False]
    assert len(runner.pods) == 3
    # Every finished pod was deleted once its outcome was kept, in its own namespace.
    assert deleted == [("slipway-kubeadm", p["metadata"]["name"]) for p in runner.pods]


def test_half_upgraded_node_reports_its_lowest_version() -> None:
    core = FakeCore({"cp-a": _node_at("1.37.2") | {"kubelet": "1.36.3"}})
    assert (
        _upgrader(core, RecordingRunner(core)).current_version(
            ComponentRef(kind="control-plane-node", name="cp-a", node="cp-a")
        )
        == "1.36.3"
    )


def test_skipping_a_minor_or_going_the_wrong_way_is_refused() -> None:
    core = FakeCore({"cp-a": _node_at("1.35.4")})
    upgrader = _upgrader(core, RecordingRunner(core))
    ref = upgrader.components()[0]
    with pytest.raises(
        StepRefused, match=re.escape("from 1.35.4 to 1.37.2: kubeadm moves one minor at a time")
    ):
        upgrader.upgrade(ref, "1.37.2")
    with pytest.raises(
        StepRefused, match=re.escape("refusing to upgrade cp-a from 1.35.4 to older 1.34.4: use rollback")
    ):
        upgrader.upgrade(ref, "1.34.4")


def test_rollback_runs_a_downgrade_pod() -> None:
    core = FakeCore({"cp-a": _node_at("1.37.2")})
    runner = RecordingRunner(core)
    result = _upgrader(core, runner).rollback(
        ComponentRef(kind="control-plane-node", name="cp-a", node="cp-a"), "1.36.3"
    )
    assert result.changed and result.action == "rollback"
    assert (
        "kubeadm upgrade apply v1.36.3 --yes --force"
        in runner.pods[0]["spec"]["containers"][0]["command"][-1]
    )


def test_failed_pod_names_node_pod_and_log_and_is_cleaned_up() -> None:
    core = FakeCore({"cp-a": _node_at("1.36.3")})
    deleted: list[tuple[str, str]] = []
    upgrader = _upgrader(core, RecordingRunner(core, phase="Failed"), deleted)
    name = f"slipway-kubeadm-apply-cp-a-v1-37-2-{run_digest(RUN)}"
    with pytest.raises(
        StepFailed,
        match=rf"kubeadm apply on node cp-a to 1.37.2 failed \(pod slipway-kubeadm/{name} Failed\): "
        "E0101 preflight failed",
    ):
        upgrader.upgrade(upgrader.components()[0], "1.37.2")
    assert deleted == [("slipway-kubeadm", name)]


# ---- the Airflow side: the pod's end as data, the node step machine ---------------------------


def test_pod_refs_read_back_as_recorded_on_the_node() -> None:
    from slipway.airflow.pods import PodRef

    ref = PodRef("slipway-kubeadm-node-w1-v1.37.2-0123abcd", "slipway-kubeadm")
    assert PodRef.parse(str(ref)) == ref
    for bad in ("", "just-a-name", "/name", "ns/"):
        with pytest.raises(ValueError, match=r"kubeadm pod: .* is not namespace/name"):
            PodRef.parse(bad)


def test_a_pods_end_says_phase_reason_and_container_exit() -> None:
    from slipway.airflow.pods import _status_words

    pod = client.V1Pod(
        status=client.V1PodStatus(
            phase="Failed",
            reason="DeadlineExceeded",
            message="Pod was active on the node longer than the specified deadline",
            container_statuses=[
                client.V1ContainerStatus(
                    name=CONTAINER_NAME,
                    image=IMAGE,
                    image_id="",
                    ready=False,
                    restart_count=0,
                    state=client.V1ContainerState(
                        terminated=client.V1ContainerStateTerminated(exit_code=137, reason="Error")
                    ),
                )
            ],
        )
    )
    assert _status_words(pod) == (
        "phase Failed; DeadlineExceeded: Pod was active on the node longer than the specified deadline; "
        "container base exited 137 (Error)"
    )


def test_node_step_result_names_the_pod_and_what_it_said() -> None:
    from slipway.upgraders.nodes import KubeadmNodeUpgrader

    pod = "slipway-kubeadm/slipway-kubeadm-node-w1-v1.37.2-0123abcd"
    done = KubeadmNodeUpgrader.result_of("w1", "1.37.2", pod, "Succeeded", "")
    assert (done.action, done.version, done.detail) == ("upgraded", "v1.37.2", f"pod {pod}")
    back = KubeadmNodeUpgrader.result_of("w1", "v1.36.3", pod, "Succeeded", "", downgrade=True)
    assert back.action == "rolled-back"
    with pytest.raises(RuntimeError) as err:
        KubeadmNodeUpgrader.result_of("w1", "1.37.2", pod, "Failed", "x" * 900 + "apt-get: E: broken")
    prefix = f"kubeadm upgrade of node w1 to v1.37.2: pod {pod} ended Failed: "
    message = str(err.value)
    # The last 800 characters of what the pod said: where kubeadm and apt print their errors.
    assert message.startswith(prefix) and message.endswith("apt-get: E: broken")
    assert len(message) == len(prefix) + 800


def test_the_kubeadm_pod_is_a_step_of_the_node_machine() -> None:
    from slipway.airflow.node_operator import STEPS, still_to_do

    assert STEPS.index("drained") < STEPS.index("upgrading") < STEPS.index("upgraded")
    # A task that started the pod resumes by waiting for it: the upgrade is still to be recorded.
    assert still_to_do("upgrading") == ("upgraded", "done")
