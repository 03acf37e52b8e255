"""Which plans one run of ``k8s_cluster_upgrade`` executes exactly as printed.

One run moves etcd along its hops (a chain: the 3.5 patch the guide requires, then 3.6,
every member each time), the control plane at most one minor (to the request's target),
then every kubelet to that target in batches. A plan with more than that — a second
control-plane hop, a kubelet catch-up hop before the control plane moves — would be
executed differently from how it is printed, so the run refuses it and says which run to
trigger first: the plan is then executed as successive runs, each of which is exactly its
own plan.
"""

from __future__ import annotations

import itertools
from typing import Any


def hops_of(plan: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, from, to) of each hop of a plan summary, in order."""
    return [(str(h["kind"]), str(h["from"]), str(h["to"])) for h in plan.get("hops", [])]


def etcd_path(plan: dict[str, Any]) -> list[str]:
    """The etcd versions one run moves every member to, in order (empty: etcd stays)."""
    return [to for kind, _, to in hops_of(plan) if kind == "etcd"]


def one_run_shape(plan: dict[str, Any], target: str) -> bool:
    """The plan's hops are [etcd]* [control-plane]? [kubelet]?, in that order, the etcd hops
    a chain (each starting where the last ended), the control-plane and the kubelet hop (when
    present) ending at ``target``."""
    hops = hops_of(plan)
    kinds = [kind for kind, _, _ in hops]
    etcd = [(a, b) for kind, a, b in hops if kind == "etcd"]
    expected = ["etcd"] * len(etcd) + [k for k in ("control-plane", "kubelet") if k in kinds]
    if kinds != expected or any(a != b for (_, b), (a, _) in itertools.pairwise(etcd)):
        return False
    return all(to == target for kind, _, to in hops if kind in ("control-plane", "kubelet"))


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
        return f"the plan to {target} has {len(hops)} hops ({printed}); no control-plane hop to run them in"
    else:
        first = f"k8s_cluster_upgrade with target_version={hops[first_cp][2]} (the first control-plane hop)"
    return (
        f"the plan to {target} has {len(hops)} hops ({printed}); one run executes one control-plane "
        f"minor with its etcd hop and then the kubelets, so it would not run what the plan says: "
        f"trigger {first} first, then plan again"
    )
