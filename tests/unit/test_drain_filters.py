"""The drain's pod filters are pure functions of a V1Pod and the options: tested on pods built here."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from kubernetes import client

from slipway.kube.drain import (
    POD_FILTERS,
    Behaviour,
    Blocker,
    DrainBlocked,
    DrainOptions,
    DrainPlan,
    DrainRefused,
    DrainResult,
    PodStatus,
    classify_pod,
    pod_key,
)
from slipway.kube.pdb import pdb_for_pod, selector_matches


def make_pod(
    name: str = "web-1",
    namespace: str = "shop",
    *,
    owner: str | None = "ReplicaSet",
    phase: str = "Running",
    empty_dir: bool = False,
    mirror: bool = False,
    deleted: bool = False,
    labels: dict[str, str] | None = None,
) -> client.V1Pod:
    owners = (
        [
            client.V1OwnerReference(
                api_version="apps/v1", kind=owner, name=f"{name}-owner", uid="u", controller=True
            )
        ]
        if owner
        else None
    )
    volumes = (
        [client.V1Volume(name="scratch", empty_dir=client.V1EmptyDirVolumeSource())] if empty_dir else None
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=namespace,
            owner_references=owners,
            labels=labels,
            annotations={"kubernetes.io/config.mirror": "hash"} if mirror else None,
            deletion_timestamp=datetime.now(UTC) if deleted else None,
        ),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")], volumes=volumes),
        status=client.V1PodStatus(phase=phase),
    )


DEFAULTS = DrainOptions()


def test_defaults_are_the_seeds_drain_settings() -> None:
    assert DEFAULTS.grace_period_seconds == 300
    assert DEFAULTS.timeout_seconds == 600
    assert DEFAULTS.ignore_daemonsets is True
    assert DEFAULTS.delete_emptydir_data is False
    assert DEFAULTS.force is False
    assert DEFAULTS.backoff_initial_seconds < DEFAULTS.backoff_max_seconds


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"concurrency": 0}, "drain option concurrency: 0 must be greater than 0"),
        ({"timeout_seconds": -1}, "drain option timeout_seconds: -1 must be greater than 0"),
        (
            {"backoff_max_seconds": 0.1},
            "drain option backoff_max_seconds: 0.1 is below backoff_initial_seconds",
        ),
    ],
)
def test_options_that_cannot_work_are_refused_by_name(change: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DrainOptions(**change)  # type: ignore[arg-type]


def test_replicated_pod_is_evicted() -> None:
    status = classify_pod(make_pod(), DEFAULTS)
    assert (status.behaviour, status.reason, status.pod) == (Behaviour.EVICT, "ok", "shop/web-1")


@pytest.mark.parametrize(
    ("pod", "reason"),
    [
        (make_pod(deleted=True), "deleted"),
        (make_pod(owner=None, mirror=True), "mirror"),
        (make_pod("node-exporter-x", "monitoring", owner="DaemonSet"), "daemonset"),
    ],
)
def test_pods_the_drain_leaves_alone_are_skipped(pod: client.V1Pod, reason: str) -> None:
    status = classify_pod(pod, DEFAULTS)
    assert status.behaviour is Behaviour.SKIP
    assert status.reason == reason
    assert pod_key(pod) in status.message


def test_daemonset_pod_is_refused_when_daemonsets_are_not_ignored() -> None:
    status = classify_pod(
        make_pod("ne", "monitoring", owner="DaemonSet"), DrainOptions(ignore_daemonsets=False)
    )
    assert status.behaviour is Behaviour.REFUSE
    assert "DaemonSet monitoring/ne-owner" in status.message


def test_emptydir_pod_is_refused_unless_its_data_may_be_deleted() -> None:
    pod = make_pod("image-cache-1", empty_dir=True)
    refused = classify_pod(pod, DEFAULTS)
    assert (refused.behaviour, refused.reason) == (Behaviour.REFUSE, "local-storage")
    assert "shop/image-cache-1" in refused.message and "scratch" in refused.message
    allowed = classify_pod(pod, DrainOptions(delete_emptydir_data=True))
    assert (allowed.behaviour, allowed.reason) == (Behaviour.EVICT, "local-storage")


def test_bare_pod_is_refused_unless_forced() -> None:
    pod = make_pod("debug-shell", owner=None)
    refused = classify_pod(pod, DEFAULTS)
    assert (refused.behaviour, refused.reason) == (Behaviour.REFUSE, "unreplicated")
    assert "shop/debug-shell" in refused.message and "force" in refused.message
    forced = classify_pod(pod, DrainOptions(force=True))
    assert (forced.behaviour, forced.reason) == (Behaviour.EVICT, "unreplicated")


def test_every_objection_must_be_lifted_before_a_pod_is_evicted() -> None:
    pod = make_pod("scratchpad", owner=None, empty_dir=True)
    assert classify_pod(pod, DrainOptions(force=True)).reason == "local-storage"
    assert classify_pod(pod, DrainOptions(delete_emptydir_data=True)).reason == "unreplicated"
    both = classify_pod(pod, DrainOptions(force=True, delete_emptydir_data=True))
    assert both.behaviour is Behaviour.EVICT
    assert "emptyDir" in both.message and "no controller" in both.message


def test_completed_pods_are_evicted_whatever_they_hold() -> None:
    pod = make_pod("job-1", owner=None, empty_dir=True, phase="Succeeded")
    status = classify_pod(pod, DEFAULTS)
    assert (status.behaviour, status.reason) == (Behaviour.EVICT, "completed")


def test_the_first_skip_wins_over_later_refusals() -> None:
    status = classify_pod(make_pod("ds-cache", owner="DaemonSet", empty_dir=True), DEFAULTS)
    assert (status.behaviour, status.reason) == (Behaviour.SKIP, "daemonset")


def test_adding_a_rule_is_adding_a_filter() -> None:
    def no_kube_system(pod: client.V1Pod, opts: DrainOptions) -> PodStatus:
        if pod.metadata.namespace == "kube-system":
            return PodStatus(pod_key(pod), Behaviour.REFUSE, "system", f"{pod_key(pod)} is a system pod")
        return PodStatus(pod_key(pod), Behaviour.EVICT, "ok", "")

    filters = (*POD_FILTERS, no_kube_system)
    assert classify_pod(make_pod("dns", "kube-system"), DEFAULTS, filters).reason == "system"
    assert classify_pod(make_pod(), DEFAULTS, filters).behaviour is Behaviour.EVICT


def test_refusal_names_every_pod_and_why() -> None:
    refusals = tuple(
        classify_pod(p, DEFAULTS)
        for p in (make_pod("debug-shell", owner=None), make_pod("image-cache-1", empty_dir=True))
    )
    err = DrainRefused(DrainPlan("general-03", (), (), refusals))
    assert str(err).startswith("drain of node general-03 refused: ")
    assert "shop/debug-shell is not managed by a controller" in str(err)
    assert "shop/image-cache-1 keeps data in emptyDir volume scratch" in str(err)


def test_blocked_drain_names_the_pod_and_its_pdb_and_serialises() -> None:
    result = DrainResult(
        "general-03",
        evicted=["shop/web-1"],
        blockers=[
            Blocker(
                "shop/payments-api-xyz", "PDB shop/payments-api (0 disruptions allowed)", "shop/payments-api"
            )
        ],
        too_many_requests=7,
        seconds=600.0,
    )
    err = DrainBlocked(result)
    expected = "drain of node general-03 blocked: shop/payments-api-xyz by PDB shop/payments-api"
    assert str(err).startswith(f"{expected} (0 disruptions allowed)")
    data = json.loads(json.dumps(result.to_dict()))
    assert data["blockers"] == [
        {
            "pod": "shop/payments-api-xyz",
            "pdb": "shop/payments-api",
            "reason": "PDB shop/payments-api (0 disruptions allowed)",
        }
    ]
    assert data["drained"] is False and data["too_many_requests"] == 7


def test_label_selectors_follow_kubernetes_semantics() -> None:
    labels = {"app": "web", "tier": "front"}
    assert selector_matches(client.V1LabelSelector(match_labels={"app": "web"}), labels)
    assert not selector_matches(client.V1LabelSelector(match_labels={"app": "db"}), labels)
    assert selector_matches(client.V1LabelSelector(), labels)  # policy/v1: empty selects all
    assert not selector_matches(None, labels)
    req = client.V1LabelSelectorRequirement
    assert selector_matches(
        client.V1LabelSelector(
            match_expressions=[
                req(key="tier", operator="In", values=["front", "back"]),
                req(key="canary", operator="DoesNotExist"),
                req(key="zone", operator="NotIn", values=["a"]),
                req(key="app", operator="Exists"),
            ]
        ),
        labels,
    )
    assert not selector_matches(
        client.V1LabelSelector(match_expressions=[req(key="tier", operator="NotIn", values=["front"])]),
        labels,
    )


def test_pdb_for_pod_matches_namespace_and_selector() -> None:
    def pdb(name: str, namespace: str, app: str) -> client.V1PodDisruptionBudget:
        return client.V1PodDisruptionBudget(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            spec=client.V1PodDisruptionBudgetSpec(selector=client.V1LabelSelector(match_labels={"app": app})),
        )

    budgets = [pdb("web", "other", "web"), pdb("api", "shop", "api"), pdb("web", "shop", "web")]
    found = pdb_for_pod(budgets, make_pod(labels={"app": "web"}))
    assert found is not None and (found.metadata.namespace, found.metadata.name) == ("shop", "web")
    assert pdb_for_pod(budgets, make_pod(labels={"app": "db"})) is None
