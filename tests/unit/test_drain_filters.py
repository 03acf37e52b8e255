"""The drain's pod filters are pure functions of a V1Pod and the options: tested on pods built here."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client

from slipway.kube.drain import (
    MAX_NAMED_PODS,
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
    describe_blockers,
    describe_refusals,
    eviction_body,
    name_pods,
    overdue_seconds,
    pod_key,
)
from slipway.kube.pdb import pdb_for_pod, selector_matches
from slipway.models import parse_request
from slipway.versions import newest_release
from slipway.workers import drain_options


def make_pod(
    name: str = "web-1",
    namespace: str = "shop",
    *,
    owner: str | None = "ReplicaSet",
    phase: str = "Running",
    empty_dir: bool = False,
    mirror: bool = False,
    deleted: bool = False,
    deleted_ago: float = 0.0,
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
            deletion_timestamp=datetime.now(UTC) - timedelta(seconds=deleted_ago) if deleted else None,
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
        (make_pod(deleted=True, mirror=True, owner=None), "mirror"),
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
    assert (
        "1 pod without a controller, nothing would recreate them (set force to evict): shop/debug-shell"
        in str(err)
    )
    assert "1 pod with emptyDir data that eviction would lose (set delete_emptydir_data to evict): " in str(
        err
    )
    # Each pod's own message (which volume, which DaemonSet) stays in the plan.
    assert "shop/image-cache-1 keeps data in emptyDir volume scratch" in refusals[1].message


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
    assert str(err) == (
        "drain of node general-03 blocked after 600s (1 other pod evicted): "
        "1 pod blocked by PDB shop/payments-api (0 disruptions allowed): shop/payments-api-xyz"
    )
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


# ---- kubectl parity: grace period -1, terminating pods, grouped messages -----------------------


def test_grace_period_minus_one_sends_no_grace_so_each_pod_keeps_its_own() -> None:
    pod = make_pod()
    own = eviction_body(pod, DrainOptions(grace_period_seconds=-1)).delete_options
    assert own.grace_period_seconds is None  # what kubectl sends for --grace-period=-1
    assert eviction_body(pod, DEFAULTS).delete_options.grace_period_seconds == 300
    assert eviction_body(pod, DrainOptions(grace_period_seconds=0)).delete_options.grace_period_seconds == 0
    with pytest.raises(ValueError, match="drain option grace_period_seconds: -2 must be 0 or more, or -1"):
        DrainOptions(grace_period_seconds=-2)
    with pytest.raises(ValueError, match="drain option skip_wait_for_delete_timeout_seconds: -1"):
        DrainOptions(skip_wait_for_delete_timeout_seconds=-1)


def test_the_form_accepts_minus_one_and_the_drain_receives_it() -> None:
    request = parse_request({"target_version": str(newest_release()), "drain_grace_period_seconds": -1})
    assert drain_options(request).grace_period_seconds == -1
    assert drain_options(parse_request({"target_version": str(newest_release())})).grace_period_seconds == 300


def test_terminating_pod_is_awaited_not_skipped() -> None:
    status = classify_pod(make_pod(deleted=True), DEFAULTS)
    assert (status.behaviour, status.reason, status.pod) == (Behaviour.WAIT, "terminating", "shop/web-1")
    assert "waits until it is gone" in status.message


def test_terminating_pods_are_still_judged_by_the_other_filters_as_in_kubectl() -> None:
    bare = make_pod("debug-shell", owner=None, deleted=True)
    assert classify_pod(bare, DEFAULTS).reason == "unreplicated"
    assert classify_pod(bare, DrainOptions(force=True)).behaviour is Behaviour.WAIT
    daemon = classify_pod(make_pod("ne", "monitoring", owner="DaemonSet", deleted=True), DEFAULTS)
    assert (daemon.behaviour, daemon.reason) == (Behaviour.SKIP, "daemonset")


@pytest.mark.parametrize(
    ("deleted_ago", "skip_wait", "behaviour"),
    [
        (400.0, 300, Behaviour.SKIP),  # due 400 s ago, more than 300: kubectl skips it
        (400.0, 0, Behaviour.WAIT),  # 0: every terminating pod is awaited (kubectl's default)
        (300.5, 300, Behaviour.WAIT),  # whole seconds, as kubectl counts: 300 is not above 300
        (-200.0, 1, Behaviour.WAIT),  # deletionTimestamp in the future: its grace period still runs
    ],
)
def test_pods_terminating_past_skip_wait_for_delete_timeout_are_skipped_and_say_so(
    deleted_ago: float, skip_wait: int, behaviour: Behaviour
) -> None:
    pod = make_pod(deleted=True, deleted_ago=deleted_ago)
    status = classify_pod(pod, DrainOptions(skip_wait_for_delete_timeout_seconds=skip_wait))
    assert status.behaviour is behaviour
    if behaviour is Behaviour.SKIP:
        assert status.reason == "terminating-too-long"
        assert (
            "due to be gone 400s ago, more than skip_wait_for_delete_timeout_seconds (300s)" in status.message
        )


def test_overdue_seconds_reads_the_raw_json_timestamp() -> None:
    now = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    assert overdue_seconds("2026-01-01T00:00:00Z", now) == 300.0
    assert overdue_seconds(None, now) is None


def test_finished_daemonset_pod_is_evicted_like_any_finished_pod() -> None:
    status = classify_pod(make_pod("ne", "monitoring", owner="DaemonSet", phase="Failed"), DEFAULTS)
    assert (status.behaviour, status.reason) == (Behaviour.EVICT, "completed")


def test_name_pods_names_five_then_counts_the_rest() -> None:
    pods = [f"shop/p-{i}" for i in range(1, 9)]
    assert name_pods(pods) == "shop/p-1, shop/p-2, shop/p-3, shop/p-4, shop/p-5 and 3 more"
    assert name_pods(pods[:5]) == "shop/p-1, shop/p-2, shop/p-3, shop/p-4, shop/p-5"
    assert MAX_NAMED_PODS == 5


def test_blockers_are_grouped_by_what_holds_them() -> None:
    pdb = "PDB shop/payments-api (0 disruptions allowed: maxUnavailable is 0)"
    blockers = [Blocker(f"shop/payments-api-{i}", pdb, "shop/payments-api") for i in range(1, 9)]
    blockers.append(Blocker("shop/web-1", "evicted, still terminating at the timeout"))
    assert describe_blockers(blockers) == (
        f"8 pods blocked by {pdb}: shop/payments-api-1, shop/payments-api-2, shop/payments-api-3, "
        "shop/payments-api-4, shop/payments-api-5 and 3 more; "
        "1 pod evicted, still terminating at the timeout: shop/web-1"
    )
    err = DrainBlocked(
        DrainResult("general-03", evicted=["shop/web-1", "shop/a"], blockers=blockers, seconds=600)
    )
    assert str(err).startswith(
        "drain of node general-03 blocked after 600s (1 other pod evicted): 8 pods blocked"
    )
    assert str(err).count("shop/payments-api-") == 5


def test_refusals_are_grouped_by_reason_with_at_most_five_named() -> None:
    refused = (
        *(classify_pod(make_pod(f"shell-{i:02}", owner=None), DEFAULTS) for i in range(12)),
        classify_pod(make_pod("cache-1", empty_dir=True), DEFAULTS),
        PodStatus("shop/x", Behaviour.REFUSE, "system", "shop/x is a system pod"),
    )
    message = str(DrainRefused(DrainPlan("general-03", (), (), refused)))
    assert message == (
        "drain of node general-03 refused: 12 pods without a controller, nothing would recreate them "
        "(set force to evict): shop/shell-00, shop/shell-01, shop/shell-02, shop/shell-03, shop/shell-04 "
        "and 7 more; 1 pod with emptyDir data that eviction would lose (set delete_emptydir_data to "
        "evict): shop/cache-1; 1 pod refused (system): shop/x"
    )
    assert describe_refusals(refused[-1:]) == "1 pod refused (system): shop/x"


def test_plan_and_result_name_the_pods_awaited() -> None:
    waiting = classify_pod(make_pod("web-2", deleted=True), DEFAULTS)
    plan = DrainPlan("general-03", (classify_pod(make_pod(), DEFAULTS),), (), (), wait=(waiting,))
    data = json.loads(json.dumps(plan.to_dict()))
    assert (data["evict"], data["wait"]) == (["shop/web-1"], ["shop/web-2"])
    assert plan.summary().startswith("node general-03: 1 to evict, 1 terminating to await, 0 left alone")
    overdue = PodStatus("shop/old", Behaviour.SKIP, "terminating-too-long", "...")
    result = DrainResult("general-03", drained=True, awaited=["shop/web-2"], skipped=[overdue])
    assert result.to_dict()["awaited"] == ["shop/web-2"]
    assert "1 already terminating awaited" in result.summary()
    assert result.summary().endswith("past skip_wait_for_delete_timeout_seconds: shop/old")


def test_a_403_from_a_freshly_restarted_apiserver_is_retried_then_refused() -> None:
    """A restarted apiserver may deny an allowed eviction until its RBAC informers sync
    (kubernetes/kubernetes#92506): a 403 is retried a few times, then it is a refusal."""
    from kubernetes import client as k8s

    from slipway.kube.drain import FORBIDDEN, FORBIDDEN_RETRIES, DrainOptions, _Evictor, _Task

    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="web-1", namespace="shop", uid="u1"))
    evictor = _Evictor(k8s.ApiClient(), "node-1", DrainOptions(), deadline=0.0)
    task = _Task(pod, None, backoff=0.1)
    for _ in range(FORBIDDEN_RETRIES):
        evictor._record(task, FORBIDDEN, "informers not synced")
        assert task.state == "pending"
    evictor._record(task, FORBIDDEN, "forbidden")
    assert task.state == "failed"
