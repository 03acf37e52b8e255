"""Feature gates and flags the target release rejects or deprecates (§2.2 feature-gate management)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from slipway.checks.result import finding, listed, names
from slipway.featuregates import COMPONENTS, GateFinding, check_gates, parse_feature_gates
from slipway.inventory import ControlPlaneReader
from slipway.models import CheckResult
from slipway.versions import Version

NAME = "feature-gates"
GATES_FLAG = "--feature-gates"


def gates_in(flags: Sequence[str]) -> dict[str, bool]:
    """Every ``--feature-gates`` value in ``flags`` merged (a later flag wins, as in the components).

    :raises ValueError: naming the malformed gate.
    """
    gates: dict[str, bool] = {}
    for flag in flags:
        name, _, value = flag.partition("=")
        if name == GATES_FLAG:
            gates |= parse_feature_gates(value)
    return gates


def judge_gates(
    component_flags: Mapping[str, Mapping[str, Sequence[str]]], current: Version, target: Version
) -> CheckResult:
    """Blocker when a component would refuse to start on ``target``; warning for deprecations.

    :param component_flags: kind → instance → flags, from a control-plane reader (and kubelets if known).
    """
    findings: list[tuple[str, GateFinding]] = []
    problems: list[str] = []
    checked = 0
    for kind, instances in sorted(component_flags.items()):
        if kind not in COMPONENTS:
            continue  # etcd has no Kubernetes feature gates
        for instance, flags in sorted(instances.items()):
            checked += 1
            try:
                gates = gates_in(flags)
            except ValueError as err:
                problems.append(f"{kind} {instance}: {err}")
                continue
            findings += [(instance, f) for f in check_gates(kind, gates, list(flags), current, target)]
    blockers = [(i, f) for i, f in findings if f.severity == "blocker"]
    evidence = {
        "instances_checked": checked,
        "findings": listed([{"instance": i, **f.to_dict()} for i, f in findings]),
        "unparsable": problems,
    }
    if blockers or problems:
        described = [f"{i}: {f.message}" for i, f in blockers] + problems
        return finding(
            NAME,
            "blocker",
            f"{len(described)} gate or flag problem(s) would stop components on {target}: "
            + names(described, 3),
            evidence,
            blockers[0][1].mitigation if blockers else "Fix the malformed --feature-gates value.",
        )
    if findings:
        return finding(
            NAME,
            "warning",
            f"{len(findings)} deprecated gate(s) or flag(s) on the way to {target}: "
            + names([f"{i}: {f.message}" for i, f in findings], 3),
            evidence,
            findings[0][1].mitigation,
        )
    return finding(NAME, "ok", f"no gate or flag of {checked} instance(s) is affected by {target}", evidence)


def check_feature_gates(reader: ControlPlaneReader, current: Version, target: Version) -> CheckResult:
    """``feature-gates``: the flags each control-plane instance runs with, judged for ``target``."""
    return judge_gates(reader.flags(), current, target)
