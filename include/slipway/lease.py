"""One cluster, one upgrade: the cluster Lease that says which run may change the cluster.

A ``coordination.k8s.io/v1`` Lease ``slipway-upgrade`` in ``slipway-system`` holds
``"<dag_id>/<run_id>"`` as its holder. The holder keeps ``renewTime`` fresh while it
runs; a lease whose ``renewTime + leaseDurationSeconds`` is in the past is expired, and
anyone may take it over. Every write carries the ``resourceVersion`` it was decided on,
so of two acquirers racing for a free or expired lease exactly one wins: the other gets
a 409 (Conflict or AlreadyExists), reads the winner back and is refused.

Released leases keep their object with no holder, so releasing needs no delete right.
No Airflow imports: the Airflow tasks in ``slipway.airflow.stage_lease`` wrap these.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.kube import nodes as kube_nodes

NAMESPACE = "slipway-system"
NAME = "slipway-upgrade"
DEFAULT_DURATION_SECONDS = 120
CONFLICT = 409  # also AlreadyExists on create
NOT_FOUND = 404
# Each retry re-reads the lease; two racers settle in one round, so a few always suffice.
MAX_RETRIES = 5


class LeaseError(RuntimeError):
    """The lease could not be read or written as asked; the message says why in one line."""


class LeaseHeld(LeaseError):
    """Another run holds a live lease: it names the holder and when the lease expires."""

    def __init__(self, state: LeaseState) -> None:
        self.state = state
        expires = state.expires_at
        when = expires.strftime("%Y-%m-%dT%H:%M:%SZ") if expires else "unknown"
        super().__init__(
            f"cluster lease {NAMESPACE}/{NAME} is held by {state.holder}, live until {when} "
            "unless renewed: one upgrade per cluster at a time"
        )


class LeaseLost(LeaseError):
    """A renewal found that this holder no longer holds the lease (expired and taken, or released)."""


class NotHolder(LeaseError):
    """A release by someone who does not hold the lease."""


@dataclass(frozen=True)
class LeaseState:
    """The lease as read from the cluster."""

    holder: str | None
    duration: int
    renewed: datetime | None
    acquired: datetime | None
    transitions: int
    resource_version: str

    @property
    def expires_at(self) -> datetime | None:
        if self.renewed is None:
            return None
        return self.renewed + timedelta(seconds=self.duration)

    def to_dict(self) -> dict[str, Any]:
        """A small JSON view (for XCom and the run record)."""
        return {
            "holder": self.holder,
            "duration_seconds": self.duration,
            "renewed": _stamp(self.renewed),
            "expires": _stamp(self.expires_at),
            "transitions": self.transitions,
        }


# ---- pure helpers ------------------------------------------------------------------------------


def holder_for(dag_id: str, run_id: str) -> str:
    """The holder identity of one Airflow run (dag ids cannot contain ``/``)."""
    return f"{dag_id}/{run_id}"


def run_of(holder: str) -> str:
    """The run id part of a holder identity (what Slipway records as a node's cordon owner)."""
    return holder.split("/", 1)[1] if "/" in holder else holder


def is_live(state: LeaseState | None, now: datetime | None = None) -> bool:
    """A holder is named and ``renewTime + leaseDurationSeconds`` is still ahead."""
    if state is None or not state.holder or state.expires_at is None:
        return False
    return (now or _now()) < state.expires_at


# ---- reads -------------------------------------------------------------------------------------


def read(api: client.ApiClient) -> LeaseState | None:
    """The lease, or None when it was never created."""
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(NAME, NAMESPACE)
    except ApiException as err:
        if err.status == NOT_FOUND:
            return None
        raise
    spec = lease.spec or client.V1LeaseSpec()
    return LeaseState(
        holder=spec.holder_identity or None,
        duration=int(spec.lease_duration_seconds or DEFAULT_DURATION_SECONDS),
        renewed=_utc(spec.renew_time),
        acquired=_utc(spec.acquire_time),
        transitions=int(spec.lease_transitions or 0),
        resource_version=lease.metadata.resource_version,
    )


def holder(api: client.ApiClient, now: datetime | None = None) -> str | None:
    """Who holds a live lease now, or None (no lease, released, or expired)."""
    state = read(api)
    return state.holder if state is not None and is_live(state, now) else None


def cordoned_by_other_live_run(
    api: client.ApiClient, nodes: Iterable[client.V1Node], run_id: str
) -> set[str]:
    """Names of ``nodes`` cordoned by a run other than ``run_id`` that holds a live lease:
    that run is still working on them, so nobody else may pick or adopt them."""
    live = holder(api)
    if live is None or run_of(live) == run_id:
        return set()
    owner = run_of(live)
    return {
        n.metadata.name for n in nodes if kube_nodes.is_cordoned(n) and kube_nodes.cordon_owner(n) == owner
    }


# ---- writes ------------------------------------------------------------------------------------


def acquire(api: client.ApiClient, holder: str, duration: int = DEFAULT_DURATION_SECONDS) -> LeaseState:
    """Take the lease for ``holder``: create it, take over an expired or released one, or
    renew it when ``holder`` has it already (idempotent). Raises :class:`LeaseHeld` when
    another holder's lease is live."""
    _check(holder, duration)
    coordination = client.CoordinationV1Api(api)
    for _ in range(MAX_RETRIES):
        now = _now()
        current = read(api)
        if current is None:
            body = _body(holder, duration, renewed=now, acquired=now, transitions=0)
            try:
                coordination.create_namespaced_lease(NAMESPACE, body)
            except ApiException as err:
                if err.status == CONFLICT:
                    continue  # someone created it first: read theirs and decide again
                raise
            return _expect(api, holder)
        if current.holder not in (None, holder) and is_live(current, now):
            raise LeaseHeld(current)
        taking = current.holder != holder  # counted like client-go: every change of holder
        transitions = current.transitions + (1 if taking else 0)
        acquired = now if taking or current.acquired is None else current.acquired
        body = _body(holder, duration, renewed=now, acquired=acquired, transitions=transitions)
        if _replace(coordination, body, current.resource_version):
            return _expect(api, holder)
    raise LeaseError(f"cluster lease {NAMESPACE}/{NAME}: gave up after {MAX_RETRIES} conflicting writes")


def renew(api: client.ApiClient, holder: str, duration: int | None = None) -> LeaseState:
    """Move ``renewTime`` to now for the lease ``holder`` holds (keeping its duration unless
    ``duration`` is given). Raises :class:`LeaseHeld` when another holder has a live lease,
    :class:`LeaseLost` when the lease is gone, released, or taken over and expired since."""
    coordination = client.CoordinationV1Api(api)
    for _ in range(MAX_RETRIES):
        now = _now()
        current = read(api)
        if current is None or current.holder is None:
            raise LeaseLost(f"cluster lease {NAMESPACE}/{NAME} is not held by {holder}: it was released")
        if current.holder != holder:
            if is_live(current, now):
                raise LeaseHeld(current)
            raise LeaseLost(
                f"cluster lease {NAMESPACE}/{NAME} is not held by {holder}: {current.holder} took it over"
            )
        body = _body(
            holder,
            duration or current.duration,
            renewed=now,
            acquired=current.acquired or now,
            transitions=current.transitions,
        )
        if _replace(coordination, body, current.resource_version):
            return _expect(api, holder)
    raise LeaseError(f"cluster lease {NAMESPACE}/{NAME}: gave up after {MAX_RETRIES} conflicting writes")


def release(api: client.ApiClient, holder: str) -> bool:
    """Clear the holder when ``holder`` holds the lease; True when this call released it.

    Idempotent: no lease, or a released one, is a no-op. Raises :class:`NotHolder` when
    someone else holds it (live or not): a run never releases another run's lease."""
    coordination = client.CoordinationV1Api(api)
    for _ in range(MAX_RETRIES):
        current = read(api)
        if current is None or current.holder is None:
            return False
        if current.holder != holder:
            raise NotHolder(
                f"cluster lease {NAMESPACE}/{NAME} is held by {current.holder}, not {holder}: not released"
            )
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {  # no holderIdentity: free for anyone
                "leaseDurationSeconds": current.duration,
                "leaseTransitions": current.transitions,
                **({"renewTime": _micro(current.renewed)} if current.renewed else {}),
                **({"acquireTime": _micro(current.acquired)} if current.acquired else {}),
            },
        }
        if _replace(coordination, body, current.resource_version):
            return True
    raise LeaseError(f"cluster lease {NAMESPACE}/{NAME}: gave up after {MAX_RETRIES} conflicting writes")


# ---- internals ---------------------------------------------------------------------------------


def _check(holder: str, duration: int) -> None:
    if not holder or "/" not in holder:
        raise ValueError(f"holder: {holder!r} is not '<dag_id>/<run_id>'")
    if not 1 <= duration <= 86_400:
        raise ValueError(f"duration: {duration} is outside 1..86400 seconds")


def _replace(coordination: client.CoordinationV1Api, body: dict[str, Any], version: str) -> bool:
    """Write ``body`` only if the lease is still at ``version``; False on a lost race."""
    body["metadata"]["resourceVersion"] = version
    try:
        coordination.replace_namespaced_lease(NAME, NAMESPACE, body)
    except ApiException as err:
        if err.status == CONFLICT:
            return False
        raise
    return True


def _expect(api: client.ApiClient, holder: str) -> LeaseState:
    state = read(api)
    if state is None or state.holder != holder:  # only a writer bypassing resourceVersion gets here
        raise LeaseLost(f"cluster lease {NAMESPACE}/{NAME} changed right after {holder} wrote it")
    return state


def _body(
    holder: str, duration: int, *, renewed: datetime, acquired: datetime, transitions: int
) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "renewTime": _micro(renewed),
            "acquireTime": _micro(acquired),
            "leaseTransitions": transitions,
        },
    }


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _micro(value: datetime) -> str:
    # MicroTime wants exactly six fractional digits; isoformat() drops them at .000000.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stamp(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None
