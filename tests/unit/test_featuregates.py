"""Unit tests for feature-gate and flag findings."""

from __future__ import annotations

import json

import pytest

from slipway.featuregates import (
    COMPONENTS,
    FEATURE_GATES,
    FLAG_CHANGES,
    GateFinding,
    check_gates,
    parse_feature_gates,
)
from slipway.versions import Version, minor_key


def v(text: str) -> Version:
    return Version.parse(text)


def gates(
    setting: dict[str, bool], current: str, target: str, component: str = "kubelet"
) -> list[GateFinding]:
    return check_gates(component, setting, [], v(current), v(target))


def flags(given: list[str], current: str, target: str, component: str = "kubelet") -> list[GateFinding]:
    return check_gates(component, {}, given, v(current), v(target))


class TestParseFeatureGates:
    def test_parses_pairs(self) -> None:
        assert parse_feature_gates("A=true,B=false") == {"A": True, "B": False}

    def test_tolerates_spaces_empty_items_and_go_bool_spellings(self) -> None:
        assert parse_feature_gates(" A = TRUE , B=0,, C=t,D=False ,") == {
            "A": True,
            "B": False,
            "C": True,
            "D": False,
        }
        assert parse_feature_gates("") == {}

    def test_last_setting_wins(self) -> None:
        assert parse_feature_gates("A=true,A=false") == {"A": False}

    @pytest.mark.parametrize("bad", ["A", "A=yes", "=true", "A=tRUE", "A=", "A=true=false"])
    def test_rejects_and_names_the_bad_item(self, bad: str) -> None:
        with pytest.raises(ValueError) as raised:
            parse_feature_gates(f"Good=true,{bad},Other=false")
        assert str(raised.value) == f"feature gate {bad!r}: expected NAME=true or NAME=false"


class TestTable:
    def test_every_gate_changed_state_somewhere(self) -> None:
        assert len(FEATURE_GATES) > 150
        for gate in FEATURE_GATES.values():
            assert gate.locked_in or gate.deprecated_in or gate.removed_in, gate
            assert gate.stage in {"alpha", "beta", "ga", "deprecated"}, gate
            if gate.locked_in and gate.removed_in:
                assert minor_key(gate.locked_in) < minor_key(gate.removed_in), gate

    def test_known_upstream_facts(self) -> None:
        assert FEATURE_GATES["SidecarContainers"].removed_in == "1.37"
        assert FEATURE_GATES["ValidatingAdmissionPolicy"].removed_in == "1.32"
        assert FEATURE_GATES["InPlacePodVerticalScaling"].locked_in == "1.35"
        assert FEATURE_GATES["KMSv1"].deprecated_in == "1.28"

    def test_flag_changes_name_real_components(self) -> None:
        for change in FLAG_CHANGES:
            assert change.component in COMPONENTS
            assert change.deprecated_in or change.removed_in
            assert not change.flag.startswith("-")


class TestGateFindings:
    def test_gate_removed_in_target_is_a_blocker(self) -> None:
        (finding,) = gates({"SidecarContainers": True}, "1.36.3", "1.37.2")
        assert (finding.severity, finding.kind, finding.name, finding.release) == (
            "blocker",
            "feature-gate",
            "SidecarContainers",
            "1.37",
        )
        assert finding.in_upgrade_window
        assert "was removed in 1.37" in finding.message and "kubelet 1.37.2" in finding.message
        assert "Delete SidecarContainers" in finding.mitigation

    def test_gate_removed_before_current_is_still_a_blocker_but_not_new(self) -> None:
        (finding,) = gates({"ServerSideApply": True}, "1.33.0", "1.34.4")
        assert (finding.severity, finding.release, finding.in_upgrade_window) == ("blocker", "1.32", False)

    def test_locked_gate_set_to_its_locked_value_is_a_warning(self) -> None:
        (finding,) = gates({"SidecarContainers": True}, "1.35.4", "1.36.3")
        assert finding.severity == "warning"
        assert (
            finding.message
            == "feature gate SidecarContainers is locked to true since 1.33 and is removed in 1.37"
        )

    def test_locked_gate_set_against_its_lock_is_a_blocker(self) -> None:
        (finding,) = gates({"InPlacePodVerticalScaling": False}, "1.34.4", "1.35.4", "kube-apiserver")
        assert finding.severity == "blocker"
        assert finding.message == (
            "feature gate InPlacePodVerticalScaling is locked to true since 1.35; "
            "kube-apiserver 1.35.4 refuses InPlacePodVerticalScaling=false"
        )

    def test_gate_not_yet_locked_in_target_is_fine(self) -> None:
        assert gates({"InPlacePodVerticalScaling": False}, "1.33.13", "1.34.4") == []

    def test_deprecated_gate(self) -> None:
        (relied,) = gates({"KMSv1": True}, "1.29.14", "1.30.14", "kube-apiserver")
        assert (relied.severity, relied.release) == ("warning", "1.28")
        assert relied.mitigation.startswith("Stop relying on KMSv1=true")
        (default,) = gates({"KMSv1": False}, "1.29.14", "1.30.14", "kube-apiserver")
        assert "only repeats the default" in default.mitigation

    def test_deprecated_then_locked_gate(self) -> None:
        (finding,) = gates({"GitRepoVolumeDriver": True}, "1.35.4", "1.36.3")
        assert (finding.severity, finding.release) == ("blocker", "1.36")

    def test_gates_without_changes_produce_nothing(self) -> None:
        assert gates({"CPUManagerPolicyAlphaOptions": True, "NoSuchGate": False}, "1.36.3", "1.37.2") == []


class TestFlagFindings:
    def test_removed_flag_is_a_blocker(self) -> None:
        (finding,) = flags(["--pod-infra-container-image=registry.k8s.io/pause:3.10"], "1.34.4", "1.35.4")
        assert (finding.severity, finding.kind, finding.name, finding.release) == (
            "blocker",
            "flag",
            "--pod-infra-container-image",
            "1.35",
        )
        assert "container runtime" in finding.mitigation

    def test_flag_deprecated_before_removal_is_a_warning(self) -> None:
        (finding,) = flags(["--pod-infra-container-image=pause"], "1.33.13", "1.34.4")
        assert finding.severity == "warning"
        assert finding.message == "flag --pod-infra-container-image is deprecated and is removed in 1.35"

    def test_cadvisor_flags_removed_in_1_37(self) -> None:
        found = flags(
            ["--containerd=/run/containerd/containerd.sock", "--housekeeping-interval=10s"],
            "1.36.3",
            "1.37.2",
        )
        assert [(f.severity, f.name) for f in found] == [("blocker", "--containerd")]

    def test_flags_only_count_for_their_component(self) -> None:
        assert flags(["--pod-infra-container-image=pause"], "1.34.4", "1.35.4", "kube-scheduler") == []

    def test_flag_names_without_dashes(self) -> None:
        assert len(flags(["runonce"], "1.31.14", "1.32.13")) == 1

    @pytest.mark.parametrize(("value", "blocked"), [("aws", True), ("external", False), ("", False)])
    def test_controller_manager_cloud_provider_values(self, value: str, blocked: bool) -> None:
        found = flags([f"--cloud-provider={value}"], "1.31.14", "1.32.13", "kube-controller-manager")
        assert len(found) == int(blocked)
        if blocked:
            assert found[0].message == (
                "--cloud-provider=aws: kube-controller-manager 1.32.13 accepts only 'external' or ''"
            )

    def test_apiserver_cloud_flags_removed_in_1_33(self) -> None:
        found = flags(
            ["--cloud-provider=gce", "--cloud-config=/etc/gce.conf"], "1.32.13", "1.33.13", "kube-apiserver"
        )
        assert {(f.severity, f.name) for f in found} == {
            ("blocker", "--cloud-provider"),
            ("blocker", "--cloud-config"),
        }

    def test_deprecated_scheduler_flag(self) -> None:
        (finding,) = flags(["--kube-api-qps=100"], "1.36.3", "1.37.2", "kube-scheduler")
        assert (finding.severity, finding.in_upgrade_window) == ("warning", False)


class TestCheckGates:
    def test_blockers_come_first(self) -> None:
        found = check_gates(
            "kubelet",
            {"NodeSwap": True, "SidecarContainers": True},
            ["--containerd=x"],
            v("1.36.3"),
            v("1.37.2"),
        )
        assert [f.severity for f in found] == ["blocker", "blocker", "warning"]
        assert found[-1].name == "NodeSwap"

    def test_rejects_unknown_component(self) -> None:
        with pytest.raises(ValueError, match="component: 'kube-proxy' is not one of"):
            check_gates("kube-proxy", {}, [], v("1.36.3"), v("1.37.2"))

    def test_findings_are_json_shaped(self) -> None:
        (finding,) = gates({"SidecarContainers": True}, "1.36.3", "1.37.2")
        assert json.loads(json.dumps(finding.to_dict()))["severity"] == "blocker"
