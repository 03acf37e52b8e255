"""The control-plane upgrader protocol: one small interface, one implementation per platform.

The order is the seed's control-plane-first sequence (§1.2): etcd members (the leader
last), then the kube-apiservers one at a time, then kube-controller-manager, then
kube-scheduler. Rollback walks the same list backwards. Every step is idempotent: the
version the component is *running* is the truth, so a step whose component already
runs the wanted version does nothing and succeeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from slipway.versions import Version

ComponentKind = Literal[
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "control-plane-node"
]
Action = Literal["upgrade", "rollback"]
PAST_TENSE: dict[Action, str] = {"upgrade": "upgraded", "rollback": "rolled back"}


class ComponentRef(BaseModel):
    """One upgradable piece of the control plane: an etcd member, an apiserver instance, …

    ``control-plane-node`` is for platforms (kubeadm) that upgrade every component of a
    node in one go.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ComponentKind
    name: str = Field(min_length=1)
    node: str | None = None

    @property
    def product(self) -> Literal["etcd", "kubernetes"]:
        """Which release line the component follows: etcd members have their own versions."""
        return "etcd" if self.kind == "etcd" else "kubernetes"


class StepResult(BaseModel):
    """What one upgrade or rollback step did; small and JSON-shaped for XCom."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    component: str
    kind: ComponentKind
    action: Action
    from_version: str | None = Field(description="running version before the step; None if it was down")
    to_version: str
    changed: bool = Field(description="False when the component already ran to_version (a no-op)")
    message: str
    started_at: datetime = Field(description="wall-clock start, for the run's timeline")
    duration_seconds: float = Field(ge=0)
    evidence: dict[str, Any] = Field(default_factory=dict)


def step_result(
    ref: ComponentRef,
    action: Action,
    from_version: str | None,
    to_version: str,
    started: float,
    *,
    changed: bool,
    message: str,
    evidence: dict[str, Any] | None = None,
) -> StepResult:
    """A :class:`StepResult` for ``ref``, timed from ``started`` (a ``time.monotonic()`` value)."""
    elapsed = time.monotonic() - started
    return StepResult(
        component=ref.name,
        kind=ref.kind,
        action=action,
        from_version=from_version,
        to_version=to_version,
        changed=changed,
        message=message,
        started_at=datetime.now(UTC) - timedelta(seconds=elapsed),
        duration_seconds=round(elapsed, 2),
        evidence=evidence or {},
    )


class ControlPlaneError(RuntimeError):
    """A control-plane step could not be done; the message names the component and the reason."""


class StepRefused(ControlPlaneError):
    """A precondition failed (skew, quorum, load balancer); nothing was changed."""


class StepFailed(ControlPlaneError):
    """The step ran but the component did not come back healthy at the wanted version."""


def check_direction(ref: ComponentRef, current: str | None, version: str, action: Action) -> None:
    """Refuse an "upgrade" to an older version and a "rollback" to a newer one.

    :raises StepRefused: naming the component and both versions.
    """
    if current is None:
        return
    newer = Version.parse(version) > Version.parse(current)
    if action == "upgrade" and not newer:
        raise StepRefused(f"refusing to upgrade {ref.name} from {current} to older {version}: use rollback")
    if action == "rollback" and newer:
        raise StepRefused(f"refusing to roll back {ref.name} from {current} to newer {version}: use upgrade")


def move_component(
    ref: ComponentRef,
    version: str,
    action: Action,
    *,
    subject: str,
    read_version: Callable[[], str | None],
    change: Callable[[str | None], tuple[str, dict[str, Any]]],
    settle_seconds: float,
    not_reached: Callable[[], str],
    interval: float = 0.25,
) -> StepResult:
    """The skeleton every upgrader's step shares, so each is idempotent the same way.

    Already at ``version`` → a no-op result; otherwise the direction is checked, ``change``
    does the platform's work (and returns the step's message and evidence), and the step
    only counts once ``read_version`` reports ``version`` — else :class:`StepFailed` with
    ``not_reached()``.
    """
    from slipway.localcluster.health import NotHealthy, wait_until

    started = time.monotonic()
    current = read_version()
    if current == version:
        message = f"{subject} already runs {version}: nothing to do"
        return step_result(ref, action, current, version, started, changed=False, message=message)
    check_direction(ref, current, version, action)
    message, evidence = change(current)
    try:
        wait_until(
            f"{subject} reports {version}",
            lambda: read_version() == version,
            settle_seconds,
            interval=interval,
        )
    except NotHealthy as err:
        raise StepFailed(not_reached()) from err
    return step_result(
        ref, action, current, version, started, changed=True, message=message, evidence=evidence
    )


@runtime_checkable
class ControlPlaneUpgrader(Protocol):
    """Upgrade or roll back a control plane one component at a time."""

    def components(self) -> list[ComponentRef]:
        """Every component in upgrade order (rollback uses the reverse)."""
        ...

    def current_version(self, ref: ComponentRef) -> str | None:
        """The version ``ref`` runs now, read from the component itself; None when it is down."""
        ...

    def upgrade(self, ref: ComponentRef, version: str) -> StepResult:
        """Move ``ref`` to ``version``; a no-op success when it already runs it.

        :raises StepRefused: when the step would break a rule (skew, quorum); nothing changed.
        :raises StepFailed: when the component did not come back healthy at ``version``.
        """
        ...

    def rollback(self, ref: ComponentRef, version: str) -> StepResult:
        """Put ``ref`` back on ``version`` (its previous binaries); a no-op when it runs it."""
        ...

    def verify(self, ref: ComponentRef) -> bool:
        """Whether ``ref`` is healthy and serving now."""
        ...


@dataclass(frozen=True)
class ControlPlaneTarget:
    """The two versions a control-plane upgrade moves to: Kubernetes and etcd."""

    kubernetes: str
    etcd: str

    def version_for(self, ref: ComponentRef) -> str:
        return self.etcd if ref.product == "etcd" else self.kubernetes


def upgrade_control_plane(
    upgrader: ControlPlaneUpgrader,
    target: ControlPlaneTarget,
    *,
    after_step: Callable[[StepResult], None] | None = None,
) -> list[StepResult]:
    """Run every upgrade step in order, stopping at the first error.

    :param after_step: called after each step (a DAG records progress; a test checks invariants).
    """
    results = []
    for ref in upgrader.components():
        result = upgrader.upgrade(ref, target.version_for(ref))
        results.append(result)
        if after_step is not None:
            after_step(result)
    return results


def rollback_control_plane(
    upgrader: ControlPlaneUpgrader,
    previous: ControlPlaneTarget,
    *,
    kinds: tuple[ComponentKind, ...] | None = None,
) -> list[StepResult]:
    """Put components back on ``previous`` in reverse upgrade order (scheduler first, etcd last).

    etcd members keep their leader-last order: the leader still moves only once.

    :param kinds: only these kinds (a selective rollback, §5.1); default all.
    """
    refs = [r for r in upgrader.components() if kinds is None or r.kind in kinds]
    ordered = [r for r in reversed(refs) if r.kind != "etcd"] + [r for r in refs if r.kind == "etcd"]
    return [upgrader.rollback(ref, previous.version_for(ref)) for ref in ordered]
