"""The invariant checker's pure parts, on plain Kubernetes objects."""

from __future__ import annotations

from kubernetes import client

from slipway.kube.nodes import CORDONED_BY, EXTERNAL_CORDON, QUARANTINED
from slipway.validation.invariants import pdb_violations, record_problems, skew_problems, stray_cordons
from tests.unit.kube_objects import system_info

RUN = "manual__2026-12-02"


def node(
    name: str,
    *,
    cordoned: bool = False,
    owner: str | None = None,
    quarantined: bool = False,
    kubelet: str = "v1.36.3",
) -> client.V1Node:
    return client.V1Node(
        metadata=client.V1ObjectMeta(
            name=name,
            annotations={CORDONED_BY: owner} if owner else {},
            labels={QUARANTINED: "true"} if quarantined else {},
        ),
        spec=client.V1NodeSpec(unschedulable=cordoned),
        status=client.V1NodeStatus(node_info=system_info(kubelet)),
    )


def pdb(current: int | None, desired: int | None) -> client.V1PodDisruptionBudget:
    return client.V1PodDisruptionBudget(
        metadata=client.V1ObjectMeta(name="web", namespace="shop"),
        status=client.V1PodDisruptionBudgetStatus(
            current_healthy=current, desired_healthy=desired, disruptions_allowed=0, expected_pods=3
        ),
    )


def test_pdb_below_budget_is_named_at_or_above_is_not() -> None:
    assert pdb_violations([pdb(1, 2)]) == ["below PDB: shop/web: 1 healthy < 2 required"]
    assert pdb_violations([pdb(2, 2), pdb(3, 2), pdb(None, None)]) == []


def test_stray_cordon_named_unless_live_run_quarantined_or_external() -> None:
    nodes = [
        node("a", cordoned=True, owner=RUN),
        node("b", cordoned=True, owner="old-run"),
        node("c", cordoned=True, owner="old-run", quarantined=True),
        node("d", cordoned=True, owner=EXTERNAL_CORDON),
        node("e", cordoned=True),
        node("f", owner="old-run"),  # stale annotation, not cordoned: not a cordon at all
    ]
    found = stray_cordons(nodes, f"k8s_worker_upgrade/{RUN}")
    assert [f.split()[3] for f in found] == ["b", "e"]
    assert "cordoned by old-run, which holds no live lease" in found[0]
    assert "cordoned by nobody recorded" in found[1]
    # Without a live lease the live run's cordon is stray too.
    assert [f.split()[3] for f in stray_cordons(nodes, None)] == ["a", "b", "e"]
    assert [f.split()[3] for f in stray_cordons(nodes, None, allowed_owners=[RUN, "old-run"])] == ["e"]


def test_skew_within_policy_and_outside() -> None:
    ok = {
        "kube-apiserver": {"kube-apiserver-0": "1.37.2", "kube-apiserver-1": "1.36.3"},
        "kube-controller-manager": {"kube-controller-manager": "1.36.3"},
        "kube-scheduler": {"kube-scheduler": "1.36.3"},
    }
    assert skew_problems(ok, {"w1": "v1.35.4"}) == []
    bad = ok | {"kube-scheduler": {"kube-scheduler": "1.37.2"}}
    problems = skew_problems(bad, {"w1": "v1.32.0"})
    assert any("kube-scheduler is 1.37.2, newer than" in p for p in problems), problems
    assert any("kubelet on node w1 is 1.32.0" in p for p in problems), problems
    assert skew_problems({}, {}) == ["version skew: no kube-apiserver version could be read"]


def test_record_truthful_and_untruthful() -> None:
    record = {
        "run_id": RUN,
        "events": [{"kind": "batch-rolled-back"}],
        "batches": [
            {"index": 0, "nodes": ["a"], "state": "passed", "from_versions": {"a": "1.35.4"}},
            {"index": 1, "nodes": ["b"], "state": "rolled-back", "from_versions": {"b": "1.35.4"}},
            {"index": 2, "nodes": ["c"], "state": "running", "from_versions": {"c": "1.35.4"}},
        ],
    }
    truthful = [
        node("a"),
        node("b", kubelet="v1.35.4"),
        node("c", kubelet="v1.35.4", cordoned=True, owner=RUN),
    ]
    assert record_problems(record, truthful, "1.36.3") == []
    lying = [node("a", kubelet="v1.35.4"), node("b", cordoned=True, owner=RUN, kubelet="v1.35.4")]
    assert record_problems(record, lying, "v1.36.3") == [
        "run record: batch 0 is passed but node a runs 1.35.4, not v1.36.3",
        "run record: batch 1 is rolled-back but b is still cordoned",
        "run record: batch 2 names node c, which is gone",
    ]
    assert record_problems({"run_id": RUN}, [], None) == ["run record: no events recorded"]
