"""One run of k8s_cluster_upgrade executes exactly the plan it prints, or refuses it.

Plans come from the real planner (plain data in, plain data out): the local kit's pair is one
run; the source document's multi-minor paths and a kubelet catch-up are refused with the run
to trigger first."""

from __future__ import annotations

from slipway.plan_execution import etcd_path, not_one_run, one_run_shape
from slipway.planner import plan_upgrade
from tests.unit.test_planner import cluster


def _plan(start: str, target: str, **kwargs: object) -> dict[str, object]:
    return plan_upgrade(cluster(start, **kwargs), target).to_dict()  # type: ignore[arg-type]


def test_one_minor_with_its_etcd_hop_is_one_run() -> None:
    plan = _plan("1.36.3", "1.37.2", etcd="3.6.16")
    assert [h["kind"] for h in plan["hops"]] == ["etcd", "control-plane", "kubelet"]  # type: ignore[index]
    assert one_run_shape(plan, "1.37.2")
    assert not_one_run(plan, "1.37.2") is None


def test_a_patch_upgrade_is_one_run() -> None:
    assert not_one_run(_plan("1.33.4", "1.33.13"), "1.33.13") is None


def test_crossing_several_minors_names_the_first_control_plane_hop() -> None:
    plan = _plan("1.31.14", "1.34.4", etcd="3.5.21")
    why = not_one_run(plan, "1.34.4")
    assert why is not None
    assert "k8s_cluster_upgrade with target_version=1.32." in why
    assert why.count("control-plane") >= 3  # every hop printed


def test_kubelets_too_old_for_the_next_minor_catch_up_in_a_run_of_their_own() -> None:
    # Kubelets 1.28 under a 1.31 control plane: moving it to 1.32 would put them 4 minors behind.
    plan = _plan("1.31.14", "1.32.13", kubelets={"w-1": "1.28.15", "w-2": "1.31.14"})
    kinds = [h["kind"] for h in plan["hops"]]  # type: ignore[attr-defined]
    assert kinds.index("kubelet") < kinds.index("control-plane")
    why = not_one_run(plan, "1.32.13")
    assert why is not None and why.split("trigger ")[1].startswith(
        "k8s_worker_upgrade with target_version=1.31."
    )


def test_a_refused_plan_is_left_to_its_own_refusal() -> None:
    assert not_one_run({"refused": {"reason": "x"}}, "1.37.2") is None


def test_etcd_through_the_guides_3_5_floor_into_3_6_is_one_run() -> None:
    # 1.33 ships etcd 3.5.21; 1.34 needs 3.6.4, and the guide wants 3.5.32 on every member first.
    plan = _plan("1.33.13", "1.34.4", etcd="3.5.21")
    etcd = [(h["from"], h["to"]) for h in plan["hops"] if h["kind"] == "etcd"]  # type: ignore[attr-defined,index]
    assert etcd == [("3.5.21", "3.5.32"), ("3.5.32", "3.6.4")]
    assert not_one_run(plan, "1.34.4") is None
    assert etcd_path(plan) == ["3.5.32", "3.6.4"]


def test_etcd_hops_that_do_not_chain_are_not_one_run() -> None:
    plan = {
        "hops": [
            {"kind": "etcd", "from": "3.5.21", "to": "3.5.32"},
            {"kind": "etcd", "from": "3.5.30", "to": "3.6.4"},
            {"kind": "control-plane", "from": "1.33.13", "to": "1.34.4"},
        ]
    }
    assert not one_run_shape(plan, "1.34.4")
