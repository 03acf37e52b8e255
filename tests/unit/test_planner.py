"""Unit tests for the multi-hop upgrade planner.

``TestSkewPolicyRules`` checks the planner against each rule of the official *Version Skew
Policy* (https://kubernetes.io/releases/version-skew-policy/): HA kube-apiservers within one
minor; kubelet never newer than kube-apiserver and at most three minors older (two for a
kubelet older than 1.25); kube-controller-manager/kube-scheduler never newer and at most one
minor older; "Supported component upgrade order": kube-apiserver never skips a minor. etcd
upgrades one minor at a time (etcd's upgrade guides: "upgrade one minor version at a time").
"""

from __future__ import annotations

import itertools
import json

import pytest

from slipway.planner import ClusterVersions, Hop, PlanRefused, UpgradePath, plan_upgrade, verify_path
from slipway.versions import RELEASES, Version, latest_patch, minor_gap, skew_violations


def v(text: str) -> Version:
    return Version.parse(text)


def cluster(
    control_plane: str | list[str], kubelets: dict[str, str] | None = None, etcd: str | None = None
) -> ClusterVersions:
    """Three apiservers (or the given ones), one CM and scheduler at the oldest, nodes and etcd."""
    apiservers = (
        [v(cp) for cp in control_plane] if isinstance(control_plane, list) else [v(control_plane)] * 3
    )
    oldest = min(apiservers)
    nodes = kubelets if kubelets is not None else {"w-1": str(oldest), "w-2": str(oldest)}
    return ClusterVersions(
        apiservers=apiservers,
        controller_managers=[oldest],
        schedulers=[oldest],
        kubelets={node: v(version) for node, version in nodes.items()},
        etcd=v(etcd or RELEASES[oldest.minor_line].etcd),
    )


def kinds(path: UpgradePath) -> list[str]:
    return [hop.kind for hop in path.hops]


def control_plane_targets(path: UpgradePath) -> list[str]:
    return [str(hop.to_version) for hop in path.hops if hop.kind == "control-plane"]


def assert_skew_holds_after_every_hop(start: ClusterVersions, path: UpgradePath) -> None:
    """Replay the plan and check the skew policy after each hop, and that it ends at the target."""
    apiservers, kubelets, etcd = list(start.apiservers), dict(start.kubelets), start.etcd
    control = list(start.control_plane)
    for hop in path.hops:
        if hop.kind == "etcd":
            assert hop.from_version == etcd
            etcd = hop.to_version
        elif hop.kind == "control-plane":
            apiservers = [hop.to_version] * len(apiservers)
            control = [hop.to_version]
        else:
            kubelets.update(dict.fromkeys(hop.nodes, hop.to_version))
        assert skew_violations(apiservers, control, control, kubelets) == [], f"after {hop}"
    assert set(apiservers) == {path.target}
    assert set(kubelets.values()) == {path.target}


class TestMultiMinorUpgrade:
    def test_1_28_to_1_32_is_four_control_plane_hops_to_latest_patches(self) -> None:
        path = plan_upgrade(cluster("1.28.3"), v("1.32.13"))
        assert control_plane_targets(path) == ["1.29.14", "1.30.14", "1.31.14", "1.32.13"]
        assert path.minors_crossed == 4
        assert path.direction == "upgrade"
        assert path.risk == "high"
        assert path.testing == "full-regression"

    def test_control_plane_hops_chain_one_minor_at_a_time(self) -> None:
        path = plan_upgrade(cluster("1.28.3"), "1.32.13")
        hops = [hop for hop in path.hops if hop.kind == "control-plane"]
        assert hops[0].from_version == v("1.28.3")
        for before, after in itertools.pairwise(hops):
            assert after.from_version == before.to_version
            assert minor_gap(after.from_version, after.to_version) == 1
        assert all(
            hop.components == ("kube-apiserver", "kube-controller-manager", "kube-scheduler") for hop in hops
        )

    def test_last_hop_goes_to_the_requested_patch_not_the_latest(self) -> None:
        assert control_plane_targets(plan_upgrade(cluster("1.30.2"), v("1.32.4"))) == ["1.31.14", "1.32.4"]

    def test_1_25_to_newest_keeps_skew_at_every_step(self) -> None:
        start = cluster("1.25.0", etcd="3.5.4")
        path = plan_upgrade(start, v("1.37.2"))
        assert len(control_plane_targets(path)) == 12
        assert path.minors_crossed == 12
        assert_skew_holds_after_every_hop(start, path)

    def test_plan_from_a_mid_upgrade_ha_control_plane(self) -> None:
        start = cluster(["1.28.15", "1.29.14", "1.29.14"], {"w-1": "1.28.15"})
        path = plan_upgrade(start, v("1.30.14"))
        assert control_plane_targets(path) == ["1.29.14", "1.30.14"]
        assert path.hops[1].from_version == v("1.28.15")


class TestEtcdHops:
    def test_etcd_moves_before_the_control_plane_hop_that_needs_it(self) -> None:
        path = plan_upgrade(cluster("1.28.3", etcd="3.5.9"), v("1.32.13"))
        etcd = v("3.5.9")
        for hop in path.hops:
            if hop.kind == "etcd":
                etcd = hop.to_version
            elif hop.kind == "control-plane":
                assert etcd >= v(RELEASES[hop.to_version.minor_line].etcd), f"etcd {etcd} too old for {hop}"
        assert [str(h.to_version) for h in path.hops if h.kind == "etcd"] == [
            "3.5.10",
            "3.5.12",
            "3.5.15",
            "3.5.16",
        ]

    def test_local_kit_upgrade_1_36_to_1_37(self) -> None:
        path = plan_upgrade(cluster("1.36.3", etcd="3.6.16"), v("1.37.2"))
        assert kinds(path) == ["etcd", "control-plane", "kubelet"]
        etcd, control, kubelet = path.hops
        assert (str(etcd.from_version), str(etcd.to_version)) == ("3.6.16", "3.7.3")
        assert (str(control.from_version), str(control.to_version)) == ("1.36.3", "1.37.2")
        assert kubelet.nodes == ("w-1", "w-2")
        assert path.minors_crossed == 1
        assert path.testing == "smoke"

    def test_etcd_reaches_the_floor_before_crossing_into_3_6(self) -> None:
        path = plan_upgrade(cluster("1.33.13", etcd="3.5.21"), v("1.34.4"))
        hops = [(str(h.from_version), str(h.to_version)) for h in path.hops if h.kind == "etcd"]
        assert hops == [("3.5.21", "3.5.32"), ("3.5.32", "3.6.4")]

    def test_etcd_never_skips_a_minor(self) -> None:
        path = plan_upgrade(cluster("1.33.13", etcd="3.4.13"), v("1.34.4"))
        targets = [str(h.to_version) for h in path.hops if h.kind == "etcd"]
        assert targets == ["3.5.21", "3.5.32", "3.6.4"]

    def test_newer_etcd_is_left_alone(self) -> None:
        path = plan_upgrade(cluster("1.30.14", etcd="3.5.21"), v("1.31.14"))
        assert "etcd" not in kinds(path)

    def test_etcd_only_plan_when_control_plane_already_at_target(self) -> None:
        path = plan_upgrade(cluster("1.37.2", etcd="3.6.16"), v("1.37.2"))
        assert kinds(path) == ["etcd"]
        assert path.hops[0].to_version == v("3.7.3")


class TestKubeletHops:
    def test_kubelets_three_minors_behind_wait_for_the_final_hop(self) -> None:
        path = plan_upgrade(cluster("1.30.14", {"w-1": "1.28.15"}, etcd="3.5.15"), v("1.31.14"))
        assert kinds(path) == ["control-plane", "kubelet"]
        final = path.hops[-1]
        assert (final.from_version, final.to_version, final.nodes) == (v("1.28.15"), v("1.31.14"), ("w-1",))
        assert final.risk == "high"
        assert final.testing == "full-regression"

    def test_kubelets_catch_up_mid_path_to_the_current_control_plane(self) -> None:
        start = cluster("1.28.15", {"w-1": "1.28.15", "w-2": "1.26.15"}, etcd="3.5.16")
        path = plan_upgrade(start, v("1.31.14"))
        assert kinds(path) == ["control-plane", "kubelet", "control-plane", "control-plane", "kubelet"]
        catch_up = path.hops[1]
        assert catch_up.nodes == ("w-2",)
        assert (catch_up.from_version, catch_up.to_version) == (v("1.26.15"), v("1.29.14"))
        assert path.hops[2].to_version == v("1.30.14")
        assert path.hops[-1].nodes == ("w-1", "w-2")
        assert_skew_holds_after_every_hop(start, path)

    def test_kubelets_already_outside_skew_are_repaired_first(self) -> None:
        path = plan_upgrade(cluster("1.30.14", {"w-1": "1.25.16"}, etcd="3.5.15"), v("1.31.14"))
        assert kinds(path) == ["kubelet", "control-plane", "kubelet"]
        assert path.hops[0].to_version == v("1.30.14")

    def test_only_nodes_off_target_are_touched(self) -> None:
        start = cluster(["1.37.2"] * 3, {"w-1": "1.37.2", "w-2": "1.36.3"}, etcd="3.7.3")
        path = plan_upgrade(start, v("1.37.2"))
        assert kinds(path) == ["kubelet"]
        assert path.hops[0].nodes == ("w-2",)


class TestPatchAndNoOp:
    def test_patch_only_upgrade_is_one_control_plane_hop(self) -> None:
        path = plan_upgrade(cluster("1.36.1", etcd="3.6.16"), v("1.36.3"))
        assert kinds(path) == ["control-plane", "kubelet"]
        assert (path.hops[0].from_version, path.hops[0].to_version) == (v("1.36.1"), v("1.36.3"))
        assert (path.risk, path.testing, path.minors_crossed) == ("low", "smoke", 0)

    def test_nothing_to_do(self) -> None:
        path = plan_upgrade(cluster("1.37.2", etcd="3.7.3"), v("1.37.2"))
        assert (path.direction, path.hops, path.risk, path.testing) == ("none", [], "none", "none")


class TestRisk:
    def test_single_minor_without_removals_is_low(self) -> None:
        hop = _control_hop(plan_upgrade(cluster("1.29.14", etcd="3.5.12"), v("1.30.14")))
        assert (hop.risk, hop.testing, hop.api_removals) == ("low", "smoke", ())

    def test_crossing_api_removals_raises_risk_and_names_them(self) -> None:
        hop = _control_hop(plan_upgrade(cluster("1.31.14", etcd="3.5.16"), v("1.32.13")))
        assert hop.risk == "medium"
        removed = {(r.api_version, r.kind) for r in hop.api_removals}
        assert ("flowcontrol.apiserver.k8s.io/v1beta3", "FlowSchema") in removed

    def test_plan_risk_is_high_beyond_one_minor_even_with_low_hops(self) -> None:
        path = plan_upgrade(cluster("1.29.14", etcd="3.5.15"), v("1.31.14"))
        assert {hop.risk for hop in path.hops if hop.kind == "control-plane"} == {"low"}
        assert (path.risk, path.testing) == ("high", "full-regression")


def _control_hop(path: UpgradePath) -> Hop:
    (hop,) = [h for h in path.hops if h.kind == "control-plane"]
    return hop


class TestDowngrade:
    def test_refused_without_allow_downgrade(self) -> None:
        with pytest.raises(
            ValueError, match=r"target: 1\.36\.3 is older than .*1\.37\.2.*allow_downgrade=True"
        ):
            plan_upgrade(cluster("1.37.2"), v("1.36.3"))

    def test_refused_when_only_a_kubelet_is_newer(self) -> None:
        with pytest.raises(ValueError, match="kubelet on w-9"):
            plan_upgrade(cluster("1.36.3", {"w-9": "1.37.2"}), v("1.36.3"))

    def test_rollback_lowers_kubelets_before_the_control_plane(self) -> None:
        start = cluster("1.37.2", etcd="3.7.3")
        path = plan_upgrade(start, v("1.35.4"), allow_downgrade=True)
        assert path.direction == "downgrade"
        assert kinds(path) == ["kubelet", "control-plane", "kubelet", "control-plane"]
        assert control_plane_targets(path) == ["1.36.3", "1.35.4"]
        assert all(hop.risk == "high" for hop in path.hops if hop.kind == "control-plane")
        assert "etcd" not in kinds(path)
        assert any("etcd is not downgraded" in note for note in path.notes)
        assert_skew_holds_after_every_hop(start, path)

    def test_rollback_of_a_half_upgraded_control_plane(self) -> None:
        start = cluster(["1.37.2", "1.36.3", "1.36.3"], {"w-1": "1.36.3"}, etcd="3.7.3")
        path = plan_upgrade(start, v("1.36.3"), allow_downgrade=True)
        assert kinds(path) == ["control-plane"]
        assert (path.hops[0].from_version, path.hops[0].to_version) == (v("1.37.2"), v("1.36.3"))


class TestRefusals:
    @pytest.mark.parametrize(
        ("target", "reason"),
        [
            ("1.38.0", r"target: 1\.38\.0 is newer than the newest known release 1\.37\.2"),
            ("1.36.9", r"target: 1\.36\.9 is not a released patch \(known: 1\.36\.0 to 1\.36\.3\)"),
            ("1.24.17", r"target: 1\.24\.17 is outside the release table"),
            ("1.37", r"target: malformed version '1\.37'"),
        ],
    )
    def test_bad_targets(self, target: str, reason: str) -> None:
        with pytest.raises(ValueError, match=reason):
            plan_upgrade(cluster("1.36.3"), target)

    def test_apiservers_two_minors_apart(self) -> None:
        with pytest.raises(ValueError, match=r"apiservers: 1\.30\.0 and 1\.32\.0 are 2 minors apart"):
            plan_upgrade(cluster(["1.30.0", "1.32.0"]), v("1.33.13"))

    def test_controller_manager_ahead_of_every_apiserver(self) -> None:
        start = cluster("1.30.14")
        broken = ClusterVersions(
            start.apiservers, [v("1.31.0")], start.schedulers, start.kubelets, start.etcd
        )
        with pytest.raises(
            ValueError, match=r"controller_managers: 1\.31\.0 is newer than every kube-apiserver"
        ):
            plan_upgrade(broken, v("1.32.13"))

    def test_empty_apiservers_or_nodes(self) -> None:
        start = cluster("1.30.14")
        with pytest.raises(ValueError, match="apiservers"):
            plan_upgrade(ClusterVersions([], [], [], start.kubelets, start.etcd), v("1.31.14"))
        with pytest.raises(ValueError, match="kubelets"):
            plan_upgrade(ClusterVersions(start.apiservers, [], [], {}, start.etcd), v("1.31.14"))


class TestSerialisation:
    def test_from_dict_round_trip(self) -> None:
        start = cluster("1.36.3", {"w-2": "1.35.4", "w-1": "1.36.3"}, etcd="3.6.16")
        assert ClusterVersions.from_dict(start.to_dict()) == start

    def test_from_dict_names_the_bad_field(self) -> None:
        data = cluster("1.36.3").to_dict()
        with pytest.raises(ValueError, match=r"kubelets\[w-1\]: malformed version 'latest'"):
            ClusterVersions.from_dict({**data, "kubelets": {"w-1": "latest"}})
        with pytest.raises(ValueError, match="missing field 'etcd'"):
            ClusterVersions.from_dict({k: val for k, val in data.items() if k != "etcd"})

    def test_plan_is_json_serialisable(self) -> None:
        path = plan_upgrade(cluster("1.35.4", etcd="3.6.8"), v("1.37.2"))
        data = json.loads(json.dumps(path.to_dict()))
        assert data["target"] == "1.37.2"
        assert [hop["step"] for hop in data["hops"]] == list(range(1, len(path.hops) + 1))
        assert data["risk"] == "high"
        assert data["hops"][0] == {
            "step": 1,
            "kind": "etcd",
            "from": "3.6.8",
            "to": "3.6.16",
            "components": ["etcd"],
            "nodes": [],
            "risk": "low",
            "testing": "smoke",
            "reason": "Kubernetes 1.36 ships with etcd 3.6.16",
            "api_removals": [],
        }
        removals = {(r["api_version"], r["kind"]) for hop in data["hops"] for r in hop["api_removals"]}
        assert ("networking.k8s.io/v1beta1", "ServiceCIDR") in removals


def with_control_plane(
    start: ClusterVersions, controller_managers: str | None = None, schedulers: str | None = None
) -> ClusterVersions:
    return ClusterVersions(
        start.apiservers,
        [v(controller_managers)] if controller_managers else start.controller_managers,
        [v(schedulers)] if schedulers else start.schedulers,
        start.kubelets,
        start.etcd,
    )


class TestSkewPolicyRules:
    # -- kube-apiserver: HA instances within one minor, never skip a minor ------------------------

    def test_ha_apiservers_more_than_one_minor_apart_are_refused_with_a_typed_reason(self) -> None:
        with pytest.raises(PlanRefused) as refused:
            plan_upgrade(cluster(["1.30.14", "1.32.13"]), v("1.33.13"))
        assert (refused.value.field, refused.value.rule) == ("apiservers", "apiserver-skew")

    @pytest.mark.parametrize("start_minor", range(25, 37))
    def test_control_plane_never_skips_a_minor_from_any_release(self, start_minor: int) -> None:
        start = cluster(str(latest_patch(f"1.{start_minor}")))
        path = plan_upgrade(start, v("1.37.2"))
        hops = [h for h in path.hops if h.kind == "control-plane"]
        assert [h.to_version.minor for h in hops] == list(range(start_minor + 1, 38))
        for hop in hops:
            assert minor_gap(hop.from_version, hop.to_version) == 1
        assert_skew_holds_after_every_hop(start, path)

    # -- kubelet: never newer, at most 3 older, only 2 when older than 1.25 -----------------------

    def test_kubelet_older_than_1_25_catches_up_at_two_minors(self) -> None:
        start = cluster("1.25.16", {"legacy": "1.23.17", "w-1": "1.25.16"}, etcd="3.5.6")
        path = plan_upgrade(start, v("1.26.15"))
        assert kinds(path) == ["kubelet", "control-plane", "kubelet"]
        catch_up = path.hops[0]
        assert (catch_up.nodes, catch_up.from_version, catch_up.to_version) == (
            ("legacy",),
            v("1.23.17"),
            v("1.25.16"),
        )
        assert_skew_holds_after_every_hop(start, path)

    def test_kubelet_1_25_may_stay_three_minors_behind(self) -> None:
        start = cluster("1.27.16", {"w-1": "1.25.16"}, etcd="3.5.9")
        path = plan_upgrade(start, v("1.28.15"))
        assert kinds(path) == ["control-plane", "kubelet"]

    def test_catch_up_goes_to_the_newest_patch_of_the_control_planes_minor(self) -> None:
        start = cluster("1.28.3", {"w-1": "1.25.16", "w-2": "1.28.3"}, etcd="3.5.10")
        path = plan_upgrade(start, v("1.29.14"))
        catch_up = path.hops[0]
        assert (catch_up.kind, catch_up.nodes) == ("kubelet", ("w-1",))
        assert catch_up.to_version == v("1.28.15"), "not the stale patch the control plane runs"
        assert_skew_holds_after_every_hop(start, path)

    def test_no_kubelet_ever_ends_newer_than_the_apiserver(self) -> None:
        start = cluster("1.30.2", {"w-1": "1.27.16", "w-2": "1.30.2"}, etcd="3.5.15")
        path = plan_upgrade(start, v("1.33.13"))
        apiserver = start.apiservers[0]
        for hop in path.hops:
            if hop.kind == "control-plane":
                apiserver = hop.to_version
            elif hop.kind == "kubelet":
                assert minor_gap(hop.to_version, apiserver) >= 0, hop

    # -- controller-manager / scheduler: never newer, at most one minor older ---------------------

    @pytest.mark.parametrize("component", ["controller_managers", "schedulers"])
    def test_more_than_one_minor_behind_is_refused_never_an_apiserver_downgrade(self, component: str) -> None:
        lagging = {component: "1.28.15"}
        start = with_control_plane(cluster("1.30.14", etcd="3.5.15"), **lagging)
        with pytest.raises(PlanRefused) as refused:
            plan_upgrade(start, v("1.31.14"))
        assert (refused.value.field, refused.value.rule) == (component, "control-plane-skew")
        assert "1.28.15 is 2 minors older than kube-apiserver 1.30.14" in str(refused.value)
        assert refused.value.to_dict()["decision"] == "refuse"

    def test_one_minor_behind_is_planned_without_moving_the_apiserver_backwards(self) -> None:
        start = with_control_plane(cluster("1.30.14", etcd="3.5.15"), "1.29.14", "1.29.14")
        path = plan_upgrade(start, v("1.31.14"))
        for hop in path.hops:
            if hop.kind == "control-plane":
                assert hop.to_version >= max(start.apiservers), hop
        assert control_plane_targets(path) == ["1.30.14", "1.31.14"]

    # -- etcd: one minor at a time ----------------------------------------------------------------

    def test_etcd_without_a_known_next_minor_is_refused_not_skipped(self) -> None:
        with pytest.raises(PlanRefused) as refused:
            plan_upgrade(cluster("1.25.16", etcd="3.3.17"), v("1.26.15"))
        assert (refused.value.field, refused.value.rule) == ("etcd", "etcd-path")
        assert "knows no etcd 3.4 release" in str(refused.value)

    @pytest.mark.parametrize("etcd", ["3.4.13", "3.5.0", "3.5.21", "3.6.4"])
    def test_etcd_hops_never_skip_a_minor(self, etcd: str) -> None:
        path = plan_upgrade(cluster("1.33.13", etcd=etcd), v("1.37.2"))
        for hop in (h for h in path.hops if h.kind == "etcd"):
            assert 0 <= minor_gap(hop.from_version, hop.to_version) <= 1, hop
        assert [h for h in path.hops if h.kind == "etcd"][-1].to_version == v("3.7.3")


class TestVerifyPath:
    """The replay guard refuses a plan that breaks the policy, whoever made it."""

    def test_a_control_plane_hop_that_skips_a_minor(self) -> None:
        start = cluster("1.30.14", etcd="3.5.16")
        bad = UpgradePath(
            start,
            v("1.32.13"),
            "upgrade",
            [Hop("control-plane", v("1.30.14"), v("1.32.13"), "high", "full-regression", "skip")],
        )
        with pytest.raises(PlanRefused, match="must not skip minor versions") as refused:
            verify_path(bad)
        assert refused.value.rule == "plan-invariant"

    def test_a_kubelet_hop_ahead_of_the_apiserver(self) -> None:
        start = cluster("1.30.14", etcd="3.5.16")
        bad = UpgradePath(
            start,
            v("1.31.14"),
            "upgrade",
            [Hop("kubelet", v("1.30.14"), v("1.31.14"), "low", "smoke", "early", nodes=("w-1",))],
        )
        with pytest.raises(PlanRefused, match=r"kubelet on node w-1 is 1\.31\.14, newer than"):
            verify_path(bad)

    def test_an_etcd_hop_that_skips_a_minor(self) -> None:
        start = cluster("1.33.13", etcd="3.5.21")
        bad = UpgradePath(
            start, v("1.33.13"), "upgrade", [Hop("etcd", v("3.5.21"), v("3.7.3"), "high", "smoke", "skip")]
        )
        with pytest.raises(PlanRefused, match=r"etcd 3\.5\.21 -> 3\.7\.3 skips a minor"):
            verify_path(bad)

    def test_refusal_is_a_value_error_with_json_for_the_dag(self) -> None:
        with pytest.raises(ValueError) as raised:
            plan_upgrade(cluster("1.36.3"), "1.38.0")
        assert isinstance(raised.value, PlanRefused)
        assert json.loads(json.dumps(raised.value.to_dict())) == {
            "decision": "refuse",
            "field": "target",
            "rule": "unknown-target",
            "reason": "target: 1.38.0 is newer than the newest known release 1.37.2",
        }
