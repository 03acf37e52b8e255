"""The control-plane upgrader protocol: one small interface, one implementation per platform.

The order is the seed's control-plane-first sequence (§1.2): etcd members (the leader
last), then the kube-apiservers one at a time, then kube-controller-manager, then
kube-scheduler. Rollback walks the same list backwards. Every step is idempotent: the
version the component is *running* is the truth, so a step whose component already
runs the wanted version does nothing and succeeds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from slipway.versions import Version

if TYPE_CHECKING:
    from slipway.etcd.store import ProvenSnapshot

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


class RestoreResult(BaseModel):
    """Evidence of a data rollback: what was restored and how consistency was proven."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    snapshot: str
    sha256: str = Field(description="digest of the snapshot, checked against the proof before the restore")
    snapshot_revision: int
    snapshot_keys: int
    keys_after_restore: int
    revision_after_restore: int
    etcd_version: str = Field(description="the release every member runs on the restored data")
    consistency: dict[str, Any] = Field(description="hashkv of every member at one revision")
    previous_data_dirs: list[str]
    duration_seconds: float = Field(ge=0)


@runtime_checkable
class EtcdRestorer(Protocol):
    """Data rollback (§5.1): every etcd member back on a proven snapshot.

    Only platforms whose ``Capabilities.data_restore`` is true provide one
    (``Platform.etcd_restorer``); the DAG asks the capability, never the method.
    """

    def restore_etcd(self, snapshot: ProvenSnapshot, version: str | None = None) -> RestoreResult:
        """Stop the writers and every member, restore each from ``snapshot`` (after checking its
        digest) with the revision bump Kubernetes needs, start the members at ``version``
        (default: what each ran), prove they agree, start the writers.

        :raises StepFailed: when the snapshot is refused or the restored data does not check out.
        """
        ...


@runtime_checkable
class FaultInjector(Protocol):
    """Game-day faults for rehearsing the rollback; only platforms whose
    ``Capabilities.fault_injection`` is true (the local cluster) provide one."""

    def diverge_etcd_member(self, member: str) -> dict[str, Any]:
        """Make ``member``'s data differ from its peers', as disk corruption would; returns evidence."""
        ...


# The game-day switch: keys of the ConfigMap slipway-system/slipway-chaos (local platform only).
FAULT_FAIL_VERIFICATION = "fail-control-plane-verification"
FAULT_FAIL_STEP = "fail-upgrade-step"
FAULT_DIVERGE_ETCD = "diverge-etcd-member"
FAULT_KEYS = (FAULT_FAIL_VERIFICATION, FAULT_FAIL_STEP, FAULT_DIVERGE_ETCD)
_ETCD_MEMBER = re.compile(r"^etcd-[0-9]{1,2}$")


@dataclass(frozen=True)
class ControlPlaneFaults:
    """Faults requested for this run: fail verification, fail one upgrade step after its first
    instance moved, or make one etcd member's data diverge right after the etcd step."""

    fail_verification: bool = False
    fail_step: str | None = None
    diverge_etcd_member: str | None = None

    @property
    def any(self) -> bool:
        return self.fail_verification or bool(self.fail_step or self.diverge_etcd_member)


def parse_faults(data: Mapping[str, str]) -> ControlPlaneFaults:
    """The chaos ConfigMap's data as faults.

    :raises ValueError: one line naming each bad key and why.
    """
    problems = [
        f"{key}: unknown fault, one of {', '.join(FAULT_KEYS)}" for key in data if key not in FAULT_KEYS
    ]
    verification = data.get(FAULT_FAIL_VERIFICATION, "false")
    if verification not in ("true", "false"):
        problems.append(f"{FAULT_FAIL_VERIFICATION}: {verification!r} is not true or false")
    step = data.get(FAULT_FAIL_STEP) or None
    if step is not None and step not in get_args(ComponentKind):
        problems.append(f"{FAULT_FAIL_STEP}: {step!r} is not one of {', '.join(get_args(ComponentKind))}")
    member = data.get(FAULT_DIVERGE_ETCD) or None
    if member is not None and not _ETCD_MEMBER.match(member):
        problems.append(f"{FAULT_DIVERGE_ETCD}: {member!r} is not an etcd member name (etcd-N)")
    if problems:
        raise ValueError("; ".join(problems))
    return ControlPlaneFaults(verification == "true", step, member)


def control_plane_touched(control_plane: dict[str, Any]) -> bool:
    """Whether this run's record shows an upgrade step that started (so a rollback is due
    when anything failed), from the run record's ``control_plane`` section."""
    return bool(control_plane.get("steps") or control_plane.get("step_failures"))


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
