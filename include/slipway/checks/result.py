"""Building :class:`~slipway.models.CheckResult` the same way in every check family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slipway.models import CheckResult, JSONValue, Severity

# Evidence travels through XCom and into reports: enough names to act on, never a whole cluster.
MAX_LISTED = 20


def finding(
    name: str, severity: Severity, summary: str, evidence: JSONValue | None = None, mitigation: str = ""
) -> CheckResult:
    """A check result; blockers and warnings fail, ``ok`` and ``info`` pass."""
    return CheckResult(
        name=name,
        severity=severity,
        passed=severity in ("ok", "info"),
        summary=summary,
        evidence=evidence if evidence is not None else {},
        mitigation=mitigation,
    )


def listed(items: Sequence[Any], limit: int = MAX_LISTED) -> list[Any]:
    """The first ``limit`` items, and a last entry saying how many were left out."""
    if len(items) <= limit:
        return list(items)
    return [*items[:limit], f"... and {len(items) - limit} more"]


def names(items: Sequence[str], limit: int = 5) -> str:
    """``a, b, c and 4 more`` for a summary line."""
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])} and {len(items) - limit} more"
