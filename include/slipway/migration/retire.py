"""Retiring the source after a finished migration: an explicit run, never part of the copy.

Every Deployment and StatefulSet of the selection must first be proven on the target (the
source's declared form checksum-equal to the copy, and available there) and, with a front door,
all traffic must already go to the target; only then is each source workload scaled to 0 with
its replicas recorded (the freeze annotations of the stateful cut-over), so scaling it back is
one patch. Nothing is deleted: the source stays the way back until its owner removes it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass

from slipway.migration import stateful
from slipway.migration.clusters import Side, copyable, prove_copied, read_objects, wait_available
from slipway.migration.errors import MigrationError
from slipway.migration.objects import WORKLOAD_KINDS, key


@dataclass(frozen=True)
class Retired:
    """One source workload scaled to 0 (or found so by an earlier try of this run)."""

    workload: str
    replicas: int
    already: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def retire_source(
    source: Side,
    target: Side,
    namespaces: list[str],
    timeout: float,
    *,
    target_percent: int | None,
    skip: Collection[str] = (),
) -> list[Retired]:
    """Prove the target holds every workload, then scale each source workload to 0.

    :param target_percent: the front door's share of traffic on the target (None: no front
        door); anything below 100 is refused before the source is touched.
    :param skip: kinds the form's strategy left on the source: neither proven nor retired.
    :raises MigrationError: nothing to retire, or traffic not all on the target.
    :raises slipway.migration.errors.ChecksumMismatch: a workload missing or different on the target.
    :raises slipway.migration.errors.NotAvailable: a target workload not available in time.
    """
    if target_percent is not None and target_percent < 100:
        raise MigrationError(
            [("retire_source", f"the front door sends {100 - target_percent}% of traffic to the source")],
            "source retirement",
        )
    kinds = [k for k in WORKLOAD_KINDS if k.kind not in skip]
    workloads = copyable(read_objects(source, namespaces, kinds), kinds)
    if not workloads:
        raise MigrationError(
            [("namespaces", "hold no Deployment or StatefulSet on the source: nothing to retire")],
            "source retirement",
        )
    on_target = copyable(read_objects(target, namespaces, kinds), kinds)
    prove_copied([stateful.declared(w) for w in workloads], on_target)
    wait_available(target, namespaces, kinds, timeout)
    done = []
    for workload in workloads:
        frozen = stateful.freeze(source, key(workload), timeout)
        done.append(Retired(key(workload), frozen.replicas, frozen.already))
    return done
