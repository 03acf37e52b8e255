"""Which plans one run of ``k8s_cluster_upgrade`` executes exactly as printed.

One run moves etcd at most once, the control plane at most one minor (to the request's
target), then every kubelet to that target in batches. A plan with more than that — a
second control-plane hop, a kubelet catch-up hop before the control plane moves, a second
etcd hop — would be executed differently from how it is printed, so the run refuses it and
says which run to trigger first: the plan is then executed as successive runs, each of
which is exactly its own plan.
"""

from __future__ import annotations

from typing import Any


def hops_of(plan: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, from, to) of each hop of a plan summary, in order."""
    return [(str(h["kind"]), str(h["from"]), str(h["to"])) for h in plan.get("hops", [])]


def one_run_shape(plan: dict[str, Any], target: str) -> bool:
    """The plan's hops are [etcd]? [control-plane]? [kubelet]?, in that order, with the
    control-plane and the kubelet hop (when present) ending at ``target``."""
    kinds = [kind for kind, _, _ in hops_of(plan)]
    expected = [k for k in ("etcd", "control-plane", "kubelet") if k in kinds]
    if kinds != expected:
        return False
    return all(to == target for kind, _, to in hops_of(plan) if kind in ("control-plane", "kubelet"))


def not_one_run(plan: dict[str, Any], target: str) -> str | None:
    """Why one run cannot execute ``plan`` exactly as printed (None when it can), naming the
    run to trigger first."""
    if "refused" in plan or one_run_shape(plan, target):
        return None
    hops = hops_of(plan)
    printed = "; ".join(f"{i}. {kind} {a} -> {b}" for i, (kind, a, b) in enumerate(hops, start=1))
    kinds = [kind for kind, _, _ in hops]
    first_cp = kinds.index("control-plane") if "control-plane" in kinds else len(hops)
    catch_up = [to for kind, _, to in hops[:first_cp] if kind == "kubelet"]
    if catch_up:
        first = f"k8s_worker_upgrade with target_version={catch_up[0]} (the kubelet catch-up)"
    elif first_cp == len(hops):
        return f"the plan to {target} has {len(hops)} hops ({printed}); one run executes one etcd hop"
    else:
        first = f"k8s_cluster_upgrade with target_version={hops[first_cp][2]} (the first control-plane hop)"
    return (
        f"the plan to {target} has {len(hops)} hops ({printed}); one run executes one control-plane "
        f"minor with its etcd hop and then the kubelets, so it would not run what the plan says: "
        f"trigger {first} first, then plan again"
    )
