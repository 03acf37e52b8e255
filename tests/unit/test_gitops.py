"""§4.1 desired state from git, with plain data (rendering itself is tested with kubectl)."""

from __future__ import annotations

import pytest

from slipway.gitops import DESIRED_STATE, GitOpsError, desired_conf, drift
from slipway.models import parse_request
from slipway.versions import Version

V = Version.parse


def configmap(data: dict[str, str], name: str = DESIRED_STATE) -> dict[str, object]:
    return {"kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_values_are_strings_and_json_lists_and_objects_are_decoded() -> None:
    conf = desired_conf(
        [
            {"kind": "Namespace", "metadata": {"name": "x"}},
            configmap(
                {
                    "target_version": "1.37.2",
                    "node_pools": '["general", "compute"]',
                    "health_checks": '[{"kind": "http", "url": "http://app/healthz"}]',
                }
            ),
        ],
        "staging",
    )
    assert conf["target_version"] == "1.37.2" and conf["node_pools"] == ["general", "compute"]
    assert parse_request(conf).health_checks[0].url == "http://app/healthz"


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([], "overlay prod: expected one ConfigMap slipway-desired-state, found 0"),
        ([configmap({}), configmap({})], "found 2"),
        ([configmap({"node_pools": "[general"})], "overlay prod: node_pools: not valid JSON"),
    ],
)
def test_a_broken_desired_state_names_the_overlay(documents: list[dict[str, object]], message: str) -> None:
    with pytest.raises(GitOpsError, match=message.replace("[", r"\[")):
        desired_conf(documents, "prod")


def test_drift_names_what_differs() -> None:
    desired = parse_request({"target_version": "1.37.2"})
    assert drift(desired, V("1.37.2"), [V("1.37.2")] * 3) == []
    assert drift(desired, V("1.36.3"), [V("1.36.3")] * 3) == [
        "control plane at 1.36.3, desired 1.37.2",
        "3 of 3 kubelet(s) below 1.37.2 (lowest 1.36.3)",
    ]
    assert drift(desired, V("1.37.2"), [V("1.37.2"), V("1.35.9")]) == [
        "1 of 2 kubelet(s) below 1.37.2 (lowest 1.35.9)"
    ]


def test_git_never_starts_a_downgrade() -> None:
    refused = r"1\.36\.3 is older than the cluster \(runs 1\.37\.2\); a downgrade"
    with pytest.raises(GitOpsError, match=refused):
        drift(parse_request({"target_version": "1.36.3"}), V("1.37.2"), [V("1.37.2")])
