"""Unit tests for the release table and the version-skew policy.

Every ``TestSkew``/``TestUpgradeOrder`` case is one rule of the official *Version Skew Policy*
(https://kubernetes.io/releases/version-skew-policy/), quoted in its docstring:
kube-apiserver (HA instances within one minor), kubelet (not newer than kube-apiserver, up
to three minors older, only two when the kubelet is older than 1.25),
kube-controller-manager/kube-scheduler (not newer, at most one minor older), kubectl, and
"Supported component upgrade order" (kube-apiserver never skips a minor; its prerequisites).
"""

from __future__ import annotations

from datetime import date

import pytest

from slipway.versions import (
    RELEASES,
    Version,
    apiserver_upgrade_violations,
    is_known,
    kubelet_max_minors_behind,
    latest_patch,
    minor_gap,
    minor_key,
    newest_release,
    release_for,
    skew_violations,
)


def v(text: str) -> Version:
    return Version.parse(text)


class TestParse:
    @pytest.mark.parametrize(
        "text",
        ["1.36.3", "v1.36.3", "v1.36.3-gomodule", "1.36.3-eks-abc", "v1.36.3+k3s1", "  1.36.3\n"],
    )
    def test_accepts_plain_prefixed_and_suffixed(self, text: str) -> None:
        assert Version.parse(text) == Version(1, 36, 3)

    def test_suffix_is_dropped_from_str(self) -> None:
        assert str(v("v1.32.4-eks-abc")) == "1.32.4"

    @pytest.mark.parametrize("text", ["1.36", "abc", "1.36.x", "", "v1", "1.36.3.4", "one.two.three"])
    def test_rejects_malformed_with_the_contract_message(self, text: str) -> None:
        with pytest.raises(ValueError) as raised:
            Version.parse(text)
        assert str(raised.value) == f"malformed version {text!r}: expected MAJOR.MINOR.PATCH such as 1.36.3"

    def test_minor_line_and_str(self) -> None:
        assert v("v1.36.3").minor_line == "1.36"
        assert str(v("v1.36.3")) == "1.36.3"

    def test_orders_numerically_not_lexically(self) -> None:
        assert v("1.9.0") < v("1.10.0") < v("1.10.1")
        assert max([v("1.36.3"), v("1.37.0"), v("1.36.10")]) == v("1.37.0")

    def test_minor_key_and_gap(self) -> None:
        assert minor_key(v("1.37.2")) == minor_key("1.37") == (1, 37)
        assert minor_gap(v("1.28.3"), v("1.32.0")) == 4
        assert minor_gap(v("1.32.0"), v("1.28.3")) == -4
        with pytest.raises(ValueError, match="major versions differ"):
            minor_gap(v("1.28.0"), v("2.0.0"))


class TestReleaseTable:
    def test_covers_every_minor_from_1_25_to_1_37_in_order(self) -> None:
        assert list(RELEASES) == [f"1.{m}" for m in range(25, 38)]

    def test_patch_lists_start_at_zero_and_have_no_gaps(self) -> None:
        for minor, release in RELEASES.items():
            assert release.minor == minor
            assert release.patches == tuple(f"{minor}.{p}" for p in range(len(release.patches)))

    def test_dates_are_ordered(self) -> None:
        releases = list(RELEASES.values())
        for release in releases:
            assert release.released < release.end_of_life
        assert [r.released for r in releases] == sorted(r.released for r in releases)
        assert RELEASES["1.37"].released == date(2026, 8, 26)

    def test_latest_patches_match_upstream_and_the_kit(self) -> None:
        assert newest_release() == v("1.37.2")
        assert latest_patch("1.37") == v("1.37.2")
        assert latest_patch("1.36") == v("1.36.3")
        assert latest_patch("1.32") == v("1.32.13")
        assert latest_patch("1.25") == v("1.25.16")

    def test_etcd_defaults(self) -> None:
        assert RELEASES["1.25"].etcd.startswith("3.5.")
        assert RELEASES["1.26"].etcd.startswith("3.5.")
        assert RELEASES["1.36"].etcd == "3.6.16"
        assert RELEASES["1.37"].etcd == "3.7.3"
        etcd = [v(r.etcd) for r in RELEASES.values()]
        assert etcd == sorted(etcd), "etcd never goes backwards from one minor to the next"

    def test_latest_patch_of_unknown_minor_names_it(self) -> None:
        with pytest.raises(ValueError, match=r"unknown Kubernetes minor '1\.24'"):
            latest_patch("1.24")

    @pytest.mark.parametrize(
        ("text", "known"),
        [("1.36.3", True), ("1.25.0", True), ("1.36.4", False), ("1.24.17", False), ("1.38.0", False)],
    )
    def test_is_known(self, text: str, known: bool) -> None:
        assert is_known(v(text)) is known

    def test_release_for(self) -> None:
        assert release_for(v("1.36.9")).minor == "1.36"
        with pytest.raises(ValueError, match=r"1\.38\.0"):
            release_for(v("1.38.0"))


class TestSkew:
    def test_supported_cluster_has_no_violations(self) -> None:
        assert skew_violations([v("1.32.1")] * 3, [v("1.32.1")], [v("1.31.4")], {"w-1": v("1.29.0")}) == []

    def test_apiservers_two_minors_apart(self) -> None:
        found = skew_violations([v("1.30.2"), v("1.32.0")], [], [], {})
        assert found == [
            "kube-apiserver instances at 1.30.2 and 1.32.0 are 2 minors apart; "
            "HA kube-apiservers must be within 1 minor of each other"
        ]

    def test_kubelet_newer_than_oldest_apiserver(self) -> None:
        found = skew_violations([v("1.32.4"), v("1.33.0")], [], [], {"w-7": v("1.33.0")})
        assert len(found) == 1
        assert "kubelet on node w-7 is 1.33.0, newer than the oldest kube-apiserver 1.32.4" in found[0]

    def test_kubelet_patch_newer_than_apiserver_is_fine(self) -> None:
        assert skew_violations([v("1.32.0")], [], [], {"w-1": v("1.32.4")}) == []

    def test_kubelet_three_older_ok_four_older_not(self) -> None:
        assert skew_violations([v("1.32.0")], [], [], {"w-1": v("1.29.9")}) == []
        found = skew_violations([v("1.32.0")], [], [], {"w-1": v("1.28.15")})
        assert found == [
            "kubelet on node w-1 is 1.28.15, 4 minors older than kube-apiserver 1.32.0; "
            "at most 3 older is supported"
        ]

    def test_kubelet_limits_follow_the_oldest_apiserver(self) -> None:
        apiservers = [v("1.32.0"), v("1.31.5")]
        assert skew_violations(apiservers, [], [], {"w-1": v("1.28.0")}) == []
        assert len(skew_violations(apiservers, [], [], {"w-1": v("1.27.0")})) == 1
        assert len(skew_violations(apiservers, [], [], {"w-1": v("1.32.0")})) == 1

    @pytest.mark.parametrize("component", ["kube-controller-manager", "kube-scheduler"])
    def test_controller_manager_and_scheduler(self, component: str) -> None:
        def check(version: str) -> list[str]:
            lagging = [v(version)]
            if component == "kube-controller-manager":
                return skew_violations([v("1.32.0")], lagging, [], {})
            return skew_violations([v("1.32.0")], [], lagging, {})

        assert check("1.31.0") == []
        assert check("1.33.0") == [
            f"{component} is 1.33.0, newer than the oldest kube-apiserver 1.32.0; "
            f"{component} must not be newer than kube-apiserver"
        ]
        assert check("1.30.0") == [
            f"{component} is 1.30.0, 2 minors older than kube-apiserver 1.32.0; at most 1 older is supported"
        ]

    def test_controller_manager_during_ha_upgrade(self) -> None:
        apiservers = [v("1.32.0"), v("1.31.0")]
        assert skew_violations(apiservers, [v("1.30.0")], [v("1.31.0")], {}) == []
        assert len(skew_violations(apiservers, [v("1.32.0")], [], {})) == 1

    def test_kubectl_within_one_minor_of_every_apiserver(self) -> None:
        apiservers = [v("1.32.0"), v("1.31.0")]
        assert skew_violations(apiservers, [], [], {}, kubectl=v("1.32.3")) == []
        assert skew_violations(apiservers, [], [], {}, kubectl=v("1.31.0")) == []
        found = skew_violations(apiservers, [], [], {}, kubectl=v("1.30.0"))
        assert found == [
            "kubectl 1.30.0 is more than 1 minor from kube-apiserver 1.32.0; "
            "kubectl is supported within one minor (older or newer) of kube-apiserver"
        ]
        assert len(skew_violations([v("1.32.0")], [], [], {}, kubectl=v("1.34.0"))) == 1

    def test_every_violation_is_reported(self) -> None:
        found = skew_violations(
            [v("1.30.0"), v("1.32.0")], [v("1.28.0")], [v("1.33.0")], {"a": v("1.26.0"), "b": v("1.31.0")}
        )
        assert len(found) == 5

    def test_no_apiserver_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="apiservers"):
            skew_violations([], [], [], {"w-1": v("1.30.0")})


class TestLegacyKubeletRule:
    """ "kubelet may be up to three minor versions older than kube-apiserver (kubelet < 1.25 may
    only be up to two minor versions older than kube-apiserver)"."""

    def test_limit_by_kubelet_version(self) -> None:
        assert kubelet_max_minors_behind(v("1.24.17")) == 2
        assert kubelet_max_minors_behind(v("1.22.0")) == 2
        assert kubelet_max_minors_behind(v("1.25.0")) == 3
        assert kubelet_max_minors_behind(v("1.33.1")) == 3

    def test_kubelet_1_24_two_behind_is_supported(self) -> None:
        assert skew_violations([v("1.26.15")], [], [], {"w-1": v("1.24.17")}) == []

    def test_kubelet_1_23_three_behind_is_not(self) -> None:
        found = skew_violations([v("1.26.15")], [], [], {"w-1": v("1.23.17")})
        assert found == [
            "kubelet on node w-1 is 1.23.17, 3 minors older than kube-apiserver 1.26.15; "
            "at most 2 older is supported for a kubelet older than 1.25"
        ]

    def test_kubelet_1_25_three_behind_is_supported(self) -> None:
        assert skew_violations([v("1.28.15")], [], [], {"w-1": v("1.25.16")}) == []


class TestUpgradeOrder:
    """ "Supported component upgrade order": kube-apiserver first, never skipping a minor; before
    it moves from 1.y to 1.(y+1), controller-manager and scheduler run 1.y and every kubelet is
    within reach of 1.(y+1)."""

    def test_one_minor_with_everything_in_place(self) -> None:
        kubelets = {"w-1": v("1.30.14"), "w-2": v("1.32.13")}
        assert (
            apiserver_upgrade_violations(
                [v("1.32.13")] * 2, [v("1.32.13")], [v("1.32.13")], kubelets, v("1.33.13")
            )
            == []
        )

    def test_half_upgraded_ha_control_plane_may_continue(self) -> None:
        apiservers = [v("1.33.13"), v("1.32.13")]
        assert (
            apiserver_upgrade_violations(apiservers, [v("1.32.13")], [v("1.32.13")], {}, v("1.33.13")) == []
        )

    def test_a_patch_move_leaves_a_one_minor_lag_alone(self) -> None:
        assert (
            apiserver_upgrade_violations([v("1.32.4")], [v("1.31.14")], [v("1.31.14")], {}, v("1.32.13"))
            == []
        )

    def test_never_skip_a_minor(self) -> None:
        found = apiserver_upgrade_violations([v("1.31.14")], [v("1.31.14")], [v("1.31.14")], {}, v("1.33.13"))
        assert found == [
            "kube-apiserver 1.31.14 -> 1.33.13 skips 1 minor(s); kube-apiserver must not skip minor versions "
            "when upgrading"
        ]

    @pytest.mark.parametrize("lagging", ["controller_managers", "schedulers"])
    def test_controller_manager_and_scheduler_must_be_at_the_apiserver_minor_first(
        self, lagging: str
    ) -> None:
        behind, current = [v("1.31.14")], [v("1.32.13")]
        cms, schedulers = (behind, current) if lagging == "controller_managers" else (current, behind)
        found = apiserver_upgrade_violations([v("1.32.13")], cms, schedulers, {}, v("1.33.13"))
        assert len(found) == 1
        assert "is 1.31.14; it must run 1.32 before kube-apiserver moves to 1.33.13" in found[0]

    def test_kubelets_must_be_within_reach_of_the_new_version(self) -> None:
        kubelets = {"old": v("1.29.14"), "older": v("1.28.15"), "legacy": v("1.24.17")}
        found = apiserver_upgrade_violations([v("1.31.14")], [], [], kubelets, v("1.32.13"))
        assert found == [
            "kubelet on node legacy is 1.24.17, 8 minors older than 1.32.13; at most 2 older is supported "
            "for a kubelet older than 1.25",
            "kubelet on node older is 1.28.15, 4 minors older than 1.32.13; at most 3 older is supported",
        ]

    def test_a_downgrade_is_not_an_upgrade(self) -> None:
        found = apiserver_upgrade_violations([v("1.32.13")], [], [], {}, v("1.31.14"))
        assert found == ["kube-apiserver 1.32.13 -> 1.31.14 is a downgrade, not an upgrade"]

    def test_needs_an_apiserver(self) -> None:
        with pytest.raises(ValueError, match="apiservers"):
            apiserver_upgrade_violations([], [], [], {}, v("1.32.0"))
